"""`ftdata preview` and `ftdata stats` of a prompt set (`task=prompts`): each prompt as inference tokenizes it,
its reward columns, and the set's prompt lengths and reward-column coverage.

    ── prompt 1 · gsm8k.jsonl:1 · prompt 91 tokens
    <|im_start|>user\\nJanet's ducks lay 16 eggs per day…<|im_end|>\\n<|im_start|>assistant\\n
    answer     "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\\n…#### 18"

The rows are the build's (the prompt task through the run loop): the same rejects, the same length limit;
`ftdata.run.prompt_stats` measures the set, this module prints it.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from ftdata.cli.preview import UNICODE, Printer, Window, with_fits
from ftdata.run.prompt_stats import PromptStats
from ftdata.run.prompts import MeasuredPrompt

__all__ = ["PROMPT_WINDOW", "show"]


def _show_one(printer: Printer, number: int, view: tuple[MeasuredPrompt, str]) -> None:
    item, fit = view
    row = item.row
    if printer.as_json:
        printer._json(
            {
                "location": item.location,
                "prompt": row.prompt,
                "text": item.rendered.text,
                "prompt_ids": row.prompt_ids,
                "tokens": item.total,
                "opens": item.opens,
                "columns": row.columns,
                "truncation": fit,
            }
        )
        return
    dot = " · " if printer.glyphs is UNICODE else " | "
    printer._line("")
    printer._line(f"{printer.glyphs.rule} prompt {number}{dot}{item.location}{dot}prompt {item.total} tokens")
    printer._line(item.rendered.text.replace("\n", "\\n\n").rstrip("\n"))
    for name, value in row.columns.items():
        text = json.dumps(value, ensure_ascii=False)
        printer._line(f"{name:<10} {text if len(text) <= 200 else text[:197] + '...'}")
    printer.notes(item.tokenized.notes, fit)


PROMPT_WINDOW = Window(
    with_fits,  # each prompt with what the build does with its length (or its problem)
    _show_one,
    rows="each prompt as inference tokenizes it (nothing trained), then its reward columns",
    trains=False,
)


def show(stats: PromptStats, console: Console, *, spell: Callable[[str], str] = str) -> None:
    """Print the report: the facts, the prompt length percentiles, reward-column coverage, the first rejects."""
    d = stats.to_dict()
    console.print(f"source        {stats.source}", soft_wrap=True)
    console.print(f"tokenizer     {stats.tokenizer}", soft_wrap=True)
    console.print(f"task          {stats.task_choice.line}", soft_wrap=True)
    console.print(f"template      {stats.template}", soft_wrap=True)
    console.print(f"records       {d['records']:,}; prompts {d['prompts']:,}; rejected {sum(d['rejected'].values()):,}")
    for opens, n in stats.opens.items():
        console.print(
            f"opens         the generation prompt opens {opens!r} in {n:,} prompts: completions continue it",
            soft_wrap=True,
        )
    table = Table("prompt tokens", "p50", "p90", "p99", "max", "mean", box=None, pad_edge=False)
    t = d["prompt_tokens"]
    table.add_row("", *(f"{t.get(k, 0):,}" for k in ("p50", "p90", "p99", "max")), f"{t['mean']:,}")
    console.print()
    console.print(table)
    over = d["over_max_prompt_length"]
    console.print(
        f"over max_prompt_length {stats.max_prompt_length:,}: {over:,} prompts (a build rejects them, or cuts them "
        "with cut_prompts)"
    )
    console.print()
    cover = Table("reward column", "prompts", "share", box=None, pad_edge=False)
    for name, c in d["reward_columns"].items():
        cover.add_row(name, f"{c['prompts']:,}", f"{c['share']:.1%}")
    console.print(cover if d["reward_columns"] else "reward columns: none (the rows hold only the prompt)")
    for reject in [r for r in stats.counts.sample_rejects if not r.kept][:5]:
        console.print(f"rejected      {reject.location}: {reject.code.value}: {spell(reject.reason)}", soft_wrap=True)
