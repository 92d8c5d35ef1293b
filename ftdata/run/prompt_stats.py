"""`ftdata stats` of a prompt set (`task=prompts`), measured: its prompt lengths, which reward columns hold a
value and what the generation prompt opens. The rows are the build's (the prompt task through the run loop): the
same rejects, the same length limit. `ftdata.cli.prompt_views` prints it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ftdata.errors import FtdataError
from ftdata.options import RunOptions
from ftdata.run import loop
from ftdata.run.stage import Ran, Stage
from ftdata.run.report import BuildReport, Reject, TaskChoice
from ftdata.types import Task

__all__ = ["PromptStats", "collect"]


@dataclass
class PromptStats:
    """Everything `ftdata stats` reports of a prompt set."""

    source: str
    tokenizer: str
    template: str
    max_prompt_length: int
    counts: BuildReport = field(default_factory=BuildReport)
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    coverage: dict[str, int] = field(default_factory=dict)  # reward column -> prompts that carry a value
    opens: Counter[str] = field(default_factory=Counter)

    @property
    def prompts(self) -> int:
        return len(self.lengths)

    def planned(self) -> tuple[int, int, np.ndarray, np.ndarray]:
        """What a recipe's planner reads: records, rejected records, each prompt's tokens, and no trained token."""
        return self.counts.records, self.counts.n_rejected, self.lengths, np.zeros(len(self.lengths), dtype=np.int64)

    @property
    def task_choice(self) -> TaskChoice:
        """The task and why it was chosen (the build summary's `task` line; the reason is the caller's)."""
        return TaskChoice(Task.PROMPTS.value, self.counts.task_reason)

    def to_dict(self) -> dict[str, Any]:
        lengths = self.lengths
        pct = {f"p{q}": int(np.percentile(lengths, q)) for q in (50, 90, 99)} if len(lengths) else {}
        over = int((lengths > self.max_prompt_length).sum())
        return {
            "source": self.source,
            "tokenizer": self.tokenizer,
            "template": self.template,
            **self.task_choice.to_dict(),
            "records": self.counts.records,
            "prompts": self.prompts,
            "rejected": {k.value: n for k, n in self.counts.rejected.items()},
            "prompt_tokens": {
                **pct,
                "max": int(lengths.max()) if len(lengths) else 0,
                "mean": round(float(lengths.mean()), 1) if len(lengths) else 0.0,
            },
            "max_prompt_length": self.max_prompt_length,
            "over_max_prompt_length": over,
            "reward_columns": {
                name: {"prompts": n, "share": round(n / self.prompts, 4) if self.prompts else 0.0}
                for name, n in self.coverage.items()
            },
            "opens": dict(self.opens),
        }


def _summaries(stage: Stage, ran: Ran) -> list[tuple[int, dict[str, bool], str]]:
    """The stats reducer: each measured prompt's tokens, which reward columns hold a value, what it opens."""
    return [
        (item.total, {name: value is not None for name, value in item.row.columns.items()}, item.opens)
        for _, item, _ in ran.outcomes
        if not isinstance(item, Reject)
    ]


def collect(
    source: Any, stage: Stage, run: RunOptions | None = None, *, progress: Callable[[int], None] | None = None
) -> PromptStats:
    """Measure every prompt of `source` as a build would (lengths before the limit: how many it rejects or cuts).

    Raises:
        ReaderError: the source cannot be read. RecordError: a malformed record with on_error="raise".
        FtdataError: no prompt could be measured.
    """
    opts = stage.options
    stats = PromptStats(
        str(source),
        str(getattr(stage.tokenizer, "name_or_path", "")),
        stage.renderer.name,
        opts.max_prompt_length or opts.max_length,
    )
    lengths: list[int] = []
    for items in loop.run(
        source, stage, run or RunOptions(), _summaries, report=stats.counts, lenient=True, progress=progress
    ):
        for tokens, held, opens in items:
            lengths.append(tokens)
            for name, has in held.items():
                stats.coverage[name] = stats.coverage.get(name, 0) + has
            if opens:
                stats.opens[opens] += 1
    if not lengths:
        raise FtdataError(
            f"{source}: no prompt could be measured ({stats.counts.n_rejected} rejected of {stats.counts.records})"
        )
    stats.lengths = np.asarray(lengths, dtype=np.int64)
    return stats
