"""Which task's rows a built dataset holds, from its columns: each task states its row columns (`TaskModule.columns`),
and this is the one function over the table of tasks that reads them (train/ loading rows, inspect/ drawing them).
"""

from __future__ import annotations

from collections.abc import Iterable

from ftdata.run.stage import task_module
from ftdata.types import Task

__all__ = ["row_columns", "task_of_columns"]


def task_of_columns(columns: Iterable[str]) -> Task:
    """The task whose rows hold `columns` (a built dataset's): the one with the largest share of its own
    `columns` present (then the most of them); SFT when none is.

    >>> task_of_columns(["prompt_ids", "chosen_ids", "rejected_ids"]).value
    'preference'
    >>> task_of_columns(["prompt", "prompt_ids", "answer"]).value
    'prompts'
    """
    have = set(columns)
    scores = {task: _share(task_module(task).columns, have) for task in Task}
    best = max(scores, key=lambda task: scores[task])
    return best if scores[best] > (0.0, 0) else Task.SFT


def _share(wanted: tuple[str, ...], have: set[str]) -> tuple[float, int]:
    found = sum(name in have for name in wanted)
    return found / len(wanted), found


def row_columns() -> frozenset[str]:
    """Every column a task's rows hold (the token columns, not a prompt set's reward columns)."""
    return frozenset(name for task in Task for name in task_module(task).columns)
