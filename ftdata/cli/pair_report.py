"""Show `PairDataStats` (`ftdata stats` of preference data) in the terminal."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from ftdata.cli.stats_report import _n
from ftdata.run.pair_stats import PairDataStats

_COLUMNS = ("p50", "p90", "p99", "max", "mean")


def summary_lines(stats: PairDataStats) -> list[str]:
    """The headline facts, one per line."""
    unit = "pairs" if stats.paired else "completions"
    formats = ", ".join(f"{name} {n:,}" for name, n in stats.formats.most_common()) or "none"
    lines = [
        f"source        {stats.source}",
        f"tokenizer     {stats.tokenizer}",
        f"task          {stats.task_choice.line}",
        f"template      {stats.template}",
        f"records       {stats.counts.records:,} read, {stats.pairs:,} {unit} measured ({formats})",
    ]
    if stats.counts.filtered:
        lines.append(f"filtered      {stats.counts.filtered:,} records (filter is false)")
    rejected = stats.counts.rejected
    if rejected:
        top = ", ".join(f"{n:,} {code.value}" for code, n in rejected.most_common())
        lines.append(f"rejected      {sum(rejected.values()):,}: {top}")
    if stats.paired:
        bias, start = stats.bias(), stats.shared_start()
        lines.append(
            f"length bias   chosen longer in {bias['chosen_longer']:.1%} of pairs, as long in "
            f"{bias['same_length']:.1%}, "
            f"shorter in {bias['chosen_shorter']:.1%}"
        )
        lines.append(
            f"shared start  {start['pairs']:.1%} of pairs begin both completions with the same tokens "
            f"({start['mean_share']:.1%} of the shorter completion on average)"
        )
    else:
        good = int(stats.labels.sum())
        lines.append(f"labels        {good:,} desirable, {stats.pairs - good:,} undesirable")
    lines.append(
        f"repeats       {stats.repeated:,} {unit} repeat an earlier one token for token; {stats.repeated_prompts:,} "
        "repeat a prompt"
    )
    lines.append(
        f"kept          {stats.kept:,} rows, {stats.kept_tokens:,} tokens, {stats.kept_trained:,} completion tokens "
        f"trained (truncation={stats.truncation}, max_length {stats.max_length:,})"
    )
    return lines


def lengths_table(stats: PairDataStats) -> Table:
    table = Table("tokens", *_COLUMNS, box=None, pad_edge=False)
    for name, row in stats.lengths().items():
        table.add_row(name, *(_n(row[c]) for c in _COLUMNS))
    return table


def policies_table(stats: PairDataStats) -> Table:
    table = Table(f"truncation at {stats.max_length:,}", "fit", "cut", "dropped", box=None, pad_edge=False)
    for p in stats.policies:
        name = p.policy + (" (configured)" if p.policy == stats.truncation else "")
        table.add_row(name, f"{p.fit:,}", f"{p.cut:,}", f"{p.dropped:,}")
    return table


def show(stats: PairDataStats, console: Console, *, spell: Callable[[str], str] = str) -> None:
    """Print the report: the facts, the length percentiles, what each truncation policy does, the first rejects."""
    for line in summary_lines(stats):
        console.print(line, soft_wrap=True)
    console.print()
    console.print(lengths_table(stats))
    console.print()
    console.print(policies_table(stats))
    shown = [r for r in stats.counts.sample_rejects if not r.kept][:5]
    for reject in shown:
        console.print(f"rejected      {reject.location}: {reject.code.value}: {spell(reject.reason)}", soft_wrap=True)
