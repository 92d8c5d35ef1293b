"""Show `DataStats`: terminal tables and bars (Rich), a PNG (matplotlib, Agg), a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ftdata.run.stats import DataStats, describe, histogram
from ftdata.cli.terminal import unicode_ok

BAR_WIDTH = 40
_LENGTH_ROWS = ("prompt", "response", "total")
_LENGTH_COLUMNS = ("p50", "p90", "p99", "max", "mean")


def _n(value: float) -> str:
    return f"{value:,.1f}" if isinstance(value, float) and not float(value).is_integer() else f"{int(value):,}"


def _rows(stats: DataStats) -> str:
    """The rows measured, where splits made more of them than examples; under history=tree the trees they are
    written as."""
    if stats.trees is not None:
        return (
            f", {stats.split_rows:,} rows written as {stats.rows:,} tree row{'s' if stats.rows != 1 else ''} "
            "(history=tree: each prefix the rows share written once)"
        )
    return (
        f", {stats.rows:,} rows (a record split where the template rewrites history)"
        if stats.rows != stats.examples
        else ""
    )


def _tokens(stats: DataStats) -> str:
    """The tokens line: what the rows hold, under history=tree what the trees forward."""
    trained = f"{stats.trained_tokens:,} trained ({stats.trained_share:.1%} of tokens carry loss)"
    if stats.trees is not None:
        return (
            f"tokens        {stats.tokens:,} forwarded (each tree's unique tokens; {int(stats.total.sum()):,} in the "
            f"{stats.split_rows:,} rows), {trained}"
        )
    return f"tokens        {stats.tokens:,} total, {trained}"


def summary_lines(stats: DataStats) -> list[str]:
    """The headline facts, one per line (shared by the terminal and HTML views)."""
    formats = ", ".join(f"{name} {n:,}" for name, n in stats.formats.most_common()) or "none"
    lines = [
        f"source        {stats.source}",
        f"tokenizer     {stats.tokenizer}",
        f"task          {stats.task_choice.line}",
        f"template      {stats.template} (mask={stats.mask})",
        f"records       {stats.records:,} read, {stats.examples:,} examples measured ({formats})" + _rows(stats),
    ]
    if stats.filtered:
        lines.append(f"filtered      {stats.filtered:,} records (filter is false)")
    if stats.problems:
        top = ", ".join(f"{n:,} {kind}" for kind, n in stats.problems.most_common(5))
        lines.append(f"problems      {sum(stats.problems.values()):,} records cannot be used: {top}")
    lines.append(_tokens(stats))
    if stats.media.any():
        per, tokens = describe(stats.media), describe(stats.media_tokens)
        kinds = ", ".join(f"{n:,} {kind}{'s' if n != 1 else ''}" for kind, n in sorted(stats.kinds.items()))
        lines.append(
            f"media         {kinds} in {int((stats.media > 0).sum()):,} examples; per example mean {per['mean']}, "
            f"max {per['max']}; media tokens per example p50 {tokens['p50']:,}, max {tokens['max']:,}, "
            f"{int(stats.media_tokens.sum()):,} in all ({stats.media_tokens.sum() / max(stats.total.sum(), 1):.1%} "
            "of tokens)"
        )
    if stats.audio_ms.any():
        ms, tokens = describe(stats.audio_ms), describe(stats.audio_tokens)
        lines.append(
            f"audio         {stats.audio_ms.sum() / 1000:,.2f} s in {int((stats.audio_ms > 0).sum()):,} examples; "
            "seconds per "
            f"example p50 {ms['p50'] / 1000:.2f}, max {ms['max'] / 1000:.2f}; audio tokens per example p50 "
            f"{tokens['p50']:,}, "
            f"max {tokens['max']:,}, {int(stats.audio_tokens.sum()):,} in all"
        )
    return lines


def lengths_table(stats: DataStats) -> Table:
    table = Table("tokens per example", *_LENGTH_COLUMNS, title=None, box=None, pad_edge=False)
    for name, row in stats.percentiles().items():
        table.add_row(name, *(_n(row[c]) for c in _LENGTH_COLUMNS))
    return table


def bars(values: np.ndarray, title: str, *, max_length: int | None = None, ascii: bool = False) -> Table:
    """A histogram as a table of `low-high | count | ████` (`####` with `ascii`)."""
    full, part = ("#", "|") if ascii else ("█", "▏")
    rows = histogram(values)
    table = Table(title, "examples", "", box=None, pad_edge=False, title_justify="left")
    peak = max((n for *_, n in rows), default=0) or 1
    for low, high, n in rows:
        length = n * BAR_WIDTH / peak
        bar = full * int(length) + (part if n and length < 1 else "")
        over = max_length is not None and high > max_length
        table.add_row(f"{low:,}-{high - 1:,}", f"{n:,}", Text(bar, style="red" if over else "green"))
    return table


def policies_table(stats: DataStats) -> Table:
    header = (f"truncation at {stats.max_length:,}", "fit", "cut", "dropped", "response tokens lost")
    table = Table(*header, box=None, pad_edge=False)
    for p in stats.policies:
        name = p.policy + (" (configured)" if p.policy == stats.truncation else "")
        table.add_row(name, f"{p.fit:,}", f"{p.cut:,}", f"{p.dropped:,}", f"{p.lost:,}")
    return table


def epoch_lines(stats: DataStats) -> list[str]:
    """Packing fill and training tokens per epoch under the configured truncation."""
    epoch = stats.epoch
    if epoch is None:
        return []
    lines = []
    if stats.truncation == "error":
        over = stats.policies[0].cut + stats.policies[0].dropped
        if over:
            note = "exceed max_length: truncation=error stops a build at the first"
            lines.append(f"note          {over:,} examples {note}")
    split = f", train split {epoch.train_fraction:.0%}" if epoch.train_fraction < 1 else ""
    lines.append(
        f"per epoch     {epoch.sequences:,} sequences, {epoch.tokens:,} tokens, {epoch.trained:,} trained "
        f"(truncation={stats.truncation}{split})"
    )
    if epoch.packing is not None:
        p = epoch.packing
        scope = " (all splits)" if epoch.train_fraction < 1 else ""
        lines.append(
            f"packing       fill {p.fill_ratio:.1%}: {p.sequences:,} sequences -> {p.rows:,} rows of "
            f"{stats.max_length:,}{scope}, {p.sequences_per_row:.2f} sequences/row; "
            f"{epoch.packed_trained:,} trained tokens per epoch packed"
        )
    if epoch.media_per_pack is not None:
        v = epoch.media_per_pack
        lines.append(
            f"media/pack    media tokens per packed row p50 {v['p50']:,}, p90 {v['p90']:,}, max {v['max']:,}, mean "
            f"{v['mean']:,}"
        )
    return lines


def show(stats: DataStats, console: Console, *, spell: Callable[[str], str] = str) -> None:
    """Print the whole report to `console` (`spell`: the CLI's spelling of option names in problems)."""
    for line in summary_lines(stats):
        console.print(line, soft_wrap=True)
    console.print()
    console.print(lengths_table(stats))
    console.print()
    ascii = not unicode_ok(console)
    prompt, response = (
        bars(values, f"{name} tokens", ascii=ascii)
        for values, name in ((stats.prompt, "prompt"), (stats.response, "response"))
    )
    console.print(Group(prompt, Text(""), response))
    console.print()
    console.print(policies_table(stats))
    console.print()
    for line in epoch_lines(stats):
        console.print(line, soft_wrap=True)
    for reject in stats.sample_problems[:5]:
        console.print(Text(f"problem       {reject.location}: {spell(reject.reason)}", style="red"), soft_wrap=True)
    console.file.flush()


def plot_png(stats: DataStats) -> bytes:
    """Histograms of prompt, response and total lengths as PNG bytes (max_length marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), constrained_layout=True)
    columns = (("prompt", stats.prompt), ("response", stats.response), ("total", stats.total))
    for ax, (name, values) in zip(axes, columns):
        rows = histogram(values, bins=30)
        if rows:
            edges = [low for low, _, _ in rows] + [rows[-1][1]]
            ax.hist(values, bins=edges, color="#3a923a" if name == "response" else "#4878a8")
        if name == "total":
            ax.axvline(stats.max_length, color="#c03030", linestyle="--", label=f"max_length {stats.max_length}")
            ax.legend(loc="upper right")
        ax.set_title(f"{name} tokens (p50 {stats.percentiles()[name]['p50']:,})")
        ax.set_xlabel("tokens")
        ax.set_ylabel("examples")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def write_plot(stats: DataStats, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(plot_png(stats))


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = (
    "body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "pre{background:#f6f6f6;padding:.8em;overflow-x:auto}table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:.25em .7em;text-align:right}th:first-child,td:first-child{text-align:left}"
    "img{max-width:100%}"
)


def html_report(stats: DataStats) -> str:
    """A self-contained HTML page: the same numbers as the terminal, plots inlined as base64 PNG."""
    percentiles = stats.percentiles()
    lengths = _html_table(
        ["tokens per example", *_LENGTH_COLUMNS],
        [[n, *(_n(percentiles[n][c]) for c in _LENGTH_COLUMNS)] for n in _LENGTH_ROWS],
    )
    policies = _html_table(
        [f"truncation at {stats.max_length:,}", "fit", "cut", "dropped", "response tokens lost"],
        [[p.policy, f"{p.fit:,}", f"{p.cut:,}", f"{p.dropped:,}", f"{p.lost:,}"] for p in stats.policies],
    )
    image = base64.b64encode(plot_png(stats)).decode("ascii")
    facts = html.escape("\n".join(summary_lines(stats) + epoch_lines(stats)))
    problems = "".join(f"<li>{html.escape(r.location)}: {html.escape(r.reason)}</li>" for r in stats.sample_problems)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>ftdata stats: {html.escape(Path(stats.source).name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>ftdata stats</h1><pre>{facts}</pre><h2>Lengths</h2>{lengths}"
        f"<img alt='token length histograms' src='data:image/png;base64,{image}'>"
        f"<h2>Truncation</h2>{policies}"
        + (f"<h2>Problems (first {len(stats.sample_problems)})</h2><ul>{problems}</ul>" if problems else "")
        + "</body></html>\n"
    )


def write_html(stats: DataStats, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_report(stats), encoding="utf-8")
