"""What `ftdata preview` and `ftdata stats` print for each task: the CLI's own table of views. The tasks (below,
in `ftdata.run`) measure; they name no view, so every arrow points down. A task without a line here is shown by
the plain views (`PLAIN`): each record's rendered text, tokens, notes and fit, and its stats' `to_dict` as lines.

    task         preview (a `Window`)              stats printed by          plots (--plot, --html)
    sft          cli.preview.SFT_WINDOW            cli.stats_report.show     cli.stats_report
    preference   cli.pair_preview.PAIR_WINDOW      cli.pair_report.show      -
    kto          cli.pair_preview.PAIR_WINDOW      cli.pair_report.show      -
    prompts      cli.prompt_views.PROMPT_WINDOW    cli.prompt_views.show     -
    (any other)  PLAIN_WINDOW                      plain_show                -

Every preview runs `cli.preview.show_window` with its task's `Window` (how it reduces and prints each record).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from ftdata.cli import pair_preview, pair_report, prompt_views, stats_report
from ftdata.cli.preview import SFT_WINDOW, UNICODE, Printer, Window, with_fits
from ftdata.run.seam import Item, SourceStats
from ftdata.types import Task

__all__ = ["PLAIN", "PLAIN_WINDOW", "VIEWS", "TaskViews", "plain_show", "views_of"]


@dataclass(frozen=True, slots=True)
class TaskViews:
    """One task's views: the preview of a window of records, the printed stats, and the drawn ones (SFT)."""

    preview: Window  # how `ftdata preview` shows its records (`preview.show_window`)
    show: Callable[..., None]  # (the task's stats object, console, *, spell)
    write_plot: Callable[[Any, Path], None] | None = None
    write_html: Callable[[Any, Path], None] | None = None


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


PLAIN_WINDOW = Window(
    with_fits,  # each item as its task measured it, with what its fit did
    _show_item,
    rows="each record as the {task} task renders it ({unit}; trained text not marked)",
    trains=False,
)
PLAIN = TaskViews(PLAIN_WINDOW, plain_show)
_PAIRS = TaskViews(pair_preview.PAIR_WINDOW, pair_report.show)
VIEWS: dict[Task, TaskViews] = {
    Task.SFT: TaskViews(SFT_WINDOW, stats_report.show, stats_report.write_plot, stats_report.write_html),
    Task.PREFERENCE: _PAIRS,
    Task.KTO: _PAIRS,
    Task.PROMPTS: TaskViews(prompt_views.PROMPT_WINDOW, prompt_views.show),
}


def views_of(task: Task) -> TaskViews:
    """The views of `task`: its line in `VIEWS`, else the plain ones."""
    return VIEWS.get(task, PLAIN)
