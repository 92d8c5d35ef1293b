"""What `ftdata preview` and `ftdata stats` print for each task: the CLI's own table of views. The tasks (below,
in `ftdata.run`) measure; they name no view, so every arrow points down. A task without a line here is shown by
the plain views (`PLAIN`): each record's rendered text, tokens, notes and fit, and its stats' `to_dict` as lines.

    task         preview                 stats printed by          plots (--plot, --html)
    sft          cli.preview.run         cli.stats_report.show     cli.stats_report
    preference   cli.pair_preview.run    cli.pair_report.show      -
    kto          cli.pair_preview.run    cli.pair_report.show      -
    prompts      cli.prompt_views        cli.prompt_views.show     -
    (any other)  plain_preview           plain_show                -
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from ftdata.cli import pair_preview, pair_report, preview, prompt_views, stats_report
from ftdata.cli.preview import UNICODE, Printer, show_window, with_fits
from ftdata.run.report import TaskChoice
from ftdata.run.seam import Item, SourceStats
from ftdata.run.stage import Stage
from ftdata.types import Task

__all__ = ["PLAIN", "VIEWS", "TaskViews", "plain_preview", "plain_show", "views_of"]


@dataclass(frozen=True, slots=True)
class TaskViews:
    """One task's views: the preview of a window of records, the printed stats, and the drawn ones (SFT)."""

    preview: Callable[..., int]  # (source, stage, *, offset, n, printer, tokenizer, task) -> records shown
    show: Callable[..., None]  # (the task's stats object, console, *, spell)
    write_plot: Callable[[Any, Path], None] | None = None
    write_html: Callable[[Any, Path], None] | None = None


def plain_preview(
    source: Any, stage: Stage, *, offset: int, n: int, printer: Printer, tokenizer: str, task: TaskChoice | None = None
) -> int:
    """Records `offset` .. `offset + n` of any task as its build measures them: each item's location, tokens and
    rendered text, its notes and what its fit did (or its problem); return how many records.

    Raises:
        FtdataError: no records in that window.
        RecordError: a malformed record with on_error=raise (what a build would do).
    """
    return show_window(
        source,
        stage,
        with_fits,
        partial(_show_item, printer),
        offset=offset,
        n=n,
        printer=printer,
        tokenizer=tokenizer,
        task=task,
        rows=f"each record as the {stage.task.task.value} task renders it ({stage.task.unit}; trained text not marked)",
        trains=False,
    )


def _show_item(printer: Printer, number: int, view: tuple[Item, str]) -> None:
    item, fit = view
    if printer.as_json:
        printer._json({"location": item.location, "text": item.rendered.text, "tokens": item.total, "fit": fit})
        return
    dot = " · " if printer.glyphs is UNICODE else " | "
    printer._line("")
    printer._line(f"{printer.glyphs.rule} record {number}{dot}{item.location}{dot}{item.total} tokens")
    printer._line(item.rendered.text.replace("\n", "\\n\n").rstrip("\n"))
    printer.notes(item.tokenized.notes, fit)


def plain_show(stats: SourceStats, console: Console, *, spell: Callable[[str], str] = str) -> None:
    """Every figure of `stats.to_dict()`, one line each, nested keys joined by dots (`rejected.truncate  3`)."""
    for key, value in _flat(stats.to_dict()):
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        console.print(f"{key:<28} {spell(text)}", soft_wrap=True, highlight=False)


def _flat(d: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in d.items():
        if isinstance(value, dict) and value:
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


PLAIN = TaskViews(plain_preview, plain_show)
_PAIRS = TaskViews(pair_preview.run, pair_report.show)
VIEWS: dict[Task, TaskViews] = {
    Task.SFT: TaskViews(preview.run, stats_report.show, stats_report.write_plot, stats_report.write_html),
    Task.PREFERENCE: _PAIRS,
    Task.KTO: _PAIRS,
    Task.PROMPTS: TaskViews(prompt_views.preview, prompt_views.show),
}


def views_of(task: Task) -> TaskViews:
    """The views of `task`: its line in `VIEWS`, else the plain ones."""
    return VIEWS.get(task, PLAIN)
