"""Each task's measures: what `ftdata stats` prints and a recipe's plan counts, by task, imported.

    sft          run/stats.py          collect         lengths, what each truncation policy and packing would do
    preference   run/pair_stats.py     collect_pairs   prompt and completion lengths, shared prefixes, duplicates
    kto          run/pair_stats.py     collect_pairs
    prompts      run/prompt_stats.py   collect         prompt lengths, reward columns filled, what prompts open

A measure reduces a task's measured items, so it imports its task's module; the task names no measure (it would
import back). A measure is called `(source, stage, run, *, progress)` and returns a stats object (`to_dict`,
`tokenizer`, `planned`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ftdata.run import pair_stats, prompt_stats, stats
from ftdata.run.stage import AnyTask
from ftdata.types import Task

__all__ = ["MEASURES", "Measure", "measure_of"]

Measure = Callable[..., Any]  # (source, stage, run, *, progress) -> a stats object (to_dict, tokenizer, planned)

MEASURES: dict[Task, Measure] = {
    Task.SFT: stats.collect,
    Task.PREFERENCE: pair_stats.collect_pairs,
    Task.KTO: pair_stats.collect_pairs,
    Task.PROMPTS: prompt_stats.collect,
}


def measure_of(task: AnyTask) -> Measure:
    """The measure of `task` (a `TaskModule`): `ftdata stats` and a recipe's survey call it on a source."""
    return MEASURES[task.task]
