"""What `ftdata preview` and `ftdata stats` print for each task: the CLI's own table of views. The tasks (below,
in `ftdata.run`) measure; they name no view, so every arrow points down.

    task         preview                 stats printed by          plots (--plot, --html)
    sft          cli.preview.run         cli.stats_report.show     cli.stats_report
    preference   cli.pair_preview.run    cli.pair_report.show      -
    kto          cli.pair_preview.run    cli.pair_report.show      -
    prompts      cli.prompt_views        cli.prompt_views.show     -
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftdata.cli import pair_preview, pair_report, preview, prompt_views, stats_report
from ftdata.types import Task

__all__ = ["VIEWS", "TaskViews"]


@dataclass(frozen=True, slots=True)
class TaskViews:
    """One task's views: the preview of a window of records, the printed stats, and the drawn ones (SFT)."""

    preview: Callable[..., int]  # (source, stage, *, offset, n, printer, tokenizer) -> records shown
    show: Callable[..., None]  # (the task's stats object, console, *, spell)
    write_plot: Callable[[Any, Path], None] | None = None
    write_html: Callable[[Any, Path], None] | None = None


_PAIRS = TaskViews(pair_preview.run, pair_report.show)
VIEWS: dict[Task, TaskViews] = {
    Task.SFT: TaskViews(preview.run, stats_report.show, stats_report.write_plot, stats_report.write_html),
    Task.PREFERENCE: _PAIRS,
    Task.KTO: _PAIRS,
    Task.PROMPTS: TaskViews(prompt_views.preview, prompt_views.show),
}
