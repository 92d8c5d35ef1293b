"""`ftdata stats`: token lengths of a whole dataset, and what truncation and packing would do.

Every record goes through the record engine (`Stage.measure`: format, render, mask; the
same rejects as a build) without truncation; each example is reduced to a few integers in
the worker (`RecordStats`), so memory stays small. Truncation runs through the build's own
`Stage.truncate` (the record shortened and rendered again) for every policy, so the counts
are exactly what a build with that policy would report:

    policy          fit   cut  dropped  response tokens lost
    keep_response   990     9        1                    0

Packing fill uses `packing.plan_bins` on the sequences the configured policy keeps. Under history=tree those
are the trees a build writes (`ftdata.run.trees`): rows count trees and tokens count what they forward (each tree's
unique tokens), the numbers the build reports; the length percentiles stay those of the split rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, cast

import numpy as np

from ftdata.run import loop
from ftdata.run.stage import Ran, Stage
from ftdata.errors import FtdataError
from ftdata.options import RunOptions
from ftdata.tokens.packing import PackingStats, packing_stats, plan_bins
from ftdata.run.report import BuildReport, Reject, TaskChoice
from ftdata.run.seam import Item
from ftdata.tokens.masking import Tokenized
from ftdata.tokens.truncation import Truncated
from ftdata.run.trees import batch_trees
from ftdata.tokens.layouts import TREE, built_layout
from ftdata.types import IGNORE_INDEX, Task, TruncationPolicy, count_trained
from ftdata.media.summary import audio_counts, media_counts


class Measured(Item, Protocol):
    """What this measure reads of an SFT item (`ftdata.run.sft.Measured`; SFT's module imports this measure, its
    `stats`, so it is named here by its shape): its tokens and labels, trained and response tokens."""

    @property
    def tokenized(self) -> Tokenized: ...

    @property
    def trained(self) -> int: ...

    @property
    def response(self) -> int | None: ...


POLICIES = (
    TruncationPolicy.KEEP_RESPONSE,
    TruncationPolicy.KEEP_START,
    TruncationPolicy.KEEP_END,
    TruncationPolicy.SPLIT,
    TruncationPolicy.DROP,
)
PERCENTILES = (50, 90, 99)
FIT, CUT, DROPPED = 0, 1, 2


@dataclass(frozen=True, slots=True)
class RecordStats:
    """One example reduced to numbers. `outcomes[i]` = (FIT|CUT|DROPPED, response tokens lost) under POLICIES[i]."""

    format: str
    total: int
    response: int
    trained: int
    outcomes: tuple[tuple[int, int], ...]
    kept: tuple[int, ...]  # sequence lengths kept by the configured policy
    kept_trained: int
    kept_first_trained: int  # kept sequences whose first token is trained (packing masks it)
    media: int = 0  # media items in the example (a build with a processor)
    media_tokens: int = 0  # their placeholder tokens
    kinds: tuple[tuple[str, int], ...] = ()  # items by kind
    audio_ms: int = 0  # milliseconds of audio in the example (its clips' lengths)
    audio_tokens: int = 0  # the clips' placeholder tokens
    kept_media_tokens: tuple[int, ...] = ()  # placeholder tokens of each kept sequence (a build with a processor)


Rows = list[tuple[list[int], list[int]]]


@dataclass(frozen=True, slots=True)
class TreeStats:
    """Trees a build writes (history=tree: a record's own, or records' that share one) reduced to numbers: each
    tree's unique tokens, the trained ones, and the trees whose first token is trained."""

    lengths: tuple[int, ...]
    trained: int
    first_trained: int


def _outcome(stage: Stage, measured: Measured, policy: TruncationPolicy) -> tuple[int, int, Rows]:
    """(FIT|CUT|DROPPED, response tokens lost, kept rows) of one policy on one measured example."""
    row = measured.tokenized
    if measured.total <= stage.options.max_length:
        return FIT, 0, [(row.input_ids, row.labels)]
    result = cast(Truncated, stage.task.fit(stage, measured, policy))  # SFT's fit: this measure is SFT's `stats`
    lost = measured.trained - sum(count_trained(labels) for _, labels in result.rows)
    return (CUT if result.rows else DROPPED), lost, result.rows


def summarize(measured: Measured, kept: Truncated, *, stage: Stage) -> RecordStats:
    """Reduce a measured example to its lengths and its outcome under every truncation policy;
    `kept`: what the build keeps of it (the run loop's truncation, after the whole-record rule)."""
    trained = measured.trained
    response = measured.trained if measured.response is None else measured.response
    outcomes = tuple(_outcome(stage, measured, each)[:2] for each in POLICIES)
    rows = kept.rows
    kinds, media_tokens = media_counts(measured.rendered)
    audio_ms, audio_tokens = audio_counts(measured.rendered)
    return RecordStats(
        format=measured.example.format,
        total=measured.total,
        response=response,
        trained=trained,
        outcomes=outcomes,
        kept=tuple(len(ids) for ids, _ in rows),
        kept_trained=sum(count_trained(labels) for _, labels in rows),
        kept_first_trained=sum(1 for _, labels in rows if labels and labels[0] != IGNORE_INDEX),
        media=sum(kinds.values()),
        media_tokens=media_tokens,
        kinds=tuple(kinds.items()),
        audio_ms=audio_ms,
        audio_tokens=audio_tokens,
        kept_media_tokens=tuple(stage.media.tokens(ids) for ids, _ in rows) if stage.media else (),
    )


@dataclass
class PolicyOutcome:
    """What one truncation policy does to the dataset at max_length."""

    policy: str
    fit: int = 0
    cut: int = 0
    dropped: int = 0
    lost: int = 0


@dataclass(frozen=True, slots=True)
class Epoch:
    """Training tokens per epoch under the configured truncation (train split only)."""

    train_fraction: float
    sequences: int
    tokens: int
    trained: int
    packed_trained: int
    packing: PackingStats | None
    media_per_pack: dict[str, float] | None = None  # media placeholder tokens per packed row (a build with a processor)


@dataclass
class DataStats:
    """Everything `ftdata stats` reports."""

    source: str
    tokenizer: str
    template: str
    mask: str
    max_length: int
    truncation: str
    counts: BuildReport = field(default_factory=BuildReport)  # records read, filtered, problems (rejects by code)
    formats: Counter[str] = field(default_factory=Counter)
    total: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    response: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    trained: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    media: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # media items per example
    media_tokens: np.ndarray = field(
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )  # their placeholder tokens per example
    kinds: Counter[str] = field(default_factory=Counter)  # media items by kind
    audio_ms: np.ndarray = field(
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )  # milliseconds of audio per example
    audio_tokens: np.ndarray = field(
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )  # audio placeholder tokens per example
    policies: list[PolicyOutcome] = field(default_factory=list)
    epoch: Epoch | None = None
    # history=tree: each tree's unique tokens (what a build forwards) and the trained tokens of all; None otherwise
    trees: np.ndarray | None = None
    tree_trained: int = 0

    @property
    def examples(self) -> int:
        """The examples measured (a record's conversation, each of its instances or subagents), never the rows a
        split makes of one."""
        return self.counts.examples

    @property
    def rows(self) -> int:
        """The rows a build writes: an example each, the rows a record is split into (the lengths are per split
        row), or under history=tree the trees those rows are written as."""
        return len(self.trees) if self.trees is not None else self.split_rows

    @property
    def split_rows(self) -> int:
        """The rows measured (the lengths are theirs): an example each, or the rows a record is split into."""
        return len(self.total)

    @property
    def tokens(self) -> int:
        """The tokens of the rows measured, or under history=tree the tokens its trees forward (as a build counts)."""
        return int(self.trees.sum()) if self.trees is not None else int(self.total.sum())

    @property
    def trained_tokens(self) -> int:
        """The trained tokens of the rows measured, or under history=tree those of the trees (after truncation)."""
        return self.tree_trained if self.trees is not None else int(self.trained.sum())

    def planned(self) -> tuple[int, int, np.ndarray, np.ndarray]:
        """What a recipe's planner reads: records, rejected records, each example's tokens and trained tokens."""
        return self.records, sum(self.problems.values()), self.total, self.trained

    @property
    def records(self) -> int:
        return self.counts.records

    @property
    def filtered(self) -> int:
        return self.counts.filtered

    @property
    def problems(self) -> Counter[Any]:
        """Records that cannot be used, per `RejectCode` (a record counted once)."""
        return self.counts.rejected

    @property
    def sample_problems(self) -> list[Reject]:
        """The first rejects (a record truncation cut but kept is no problem)."""
        return [r for r in self.counts.sample_rejects if not r.kept]

    @property
    def prompt(self) -> np.ndarray:
        return self.total - self.response

    @property
    def trained_share(self) -> float:
        return self.trained_tokens / self.tokens if self.tokens else 0.0

    def percentiles(self) -> dict[str, dict[str, float]]:
        """p50/p90/p99/max/mean of prompt, response and total lengths (nearest rank)."""
        columns = (("prompt", self.prompt), ("response", self.response), ("total", self.total))
        return {name: describe(values) for name, values in columns}

    @property
    def task_choice(self) -> TaskChoice:
        """The task and why it was chosen (the build summary's `task` line; the reason is the caller's)."""
        return TaskChoice(Task.SFT.value, self.counts.task_reason)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (no per-record arrays)."""
        out = {
            "source": self.source,
            "tokenizer": self.tokenizer,
            **self.task_choice.to_dict(),
            "template": self.template,
            "mask": self.mask,
            "max_length": self.max_length,
            "truncation": self.truncation,
            "records": self.records,
            "examples": self.examples,
            "rows": self.rows,
            **(
                {"split_rows": self.split_rows, "split_tokens": int(self.total.sum())} if self.trees is not None else {}
            ),
            "filtered": self.filtered,
            "formats": dict(self.formats),
            "problems": dict(self.problems),
            "sample_problems": [r.to_dict() for r in self.sample_problems],
            "tokens": self.tokens,
            "trained_tokens": self.trained_tokens,
            "trained_share": round(self.trained_share, 4),
            "lengths": self.percentiles(),
            "truncation_policies": [asdict(p) for p in self.policies],
        }
        if self.epoch is not None:
            out["epoch"] = asdict(self.epoch)
        if self.media.any():
            out["media"] = {
                "total": int(self.media.sum()),
                "kinds": dict(self.kinds),
                "per_example": describe(self.media),
                "tokens_per_example": describe(self.media_tokens),
            }
        if self.audio_ms.any():
            out["audio"] = {
                "seconds": round(int(self.audio_ms.sum()) / 1000, 3),
                "tokens": int(self.audio_tokens.sum()),
                "ms_per_example": describe(self.audio_ms),
                "tokens_per_example": describe(self.audio_tokens),
            }
        return out


def describe(values: np.ndarray) -> dict[str, float]:
    """Percentiles (nearest rank: always a value that occurs), max and mean of `values`."""
    if len(values) == 0:
        return {**{f"p{q}": 0 for q in PERCENTILES}, "max": 0, "mean": 0.0}
    out: dict[str, float] = {f"p{q}": int(np.percentile(values, q, method="inverted_cdf")) for q in PERCENTILES}
    out["max"] = int(values.max())
    out["mean"] = round(float(values.mean()), 1)
    return out


def _nice(width: float) -> int:
    """The smallest of 1, 2, 5 x 10^k that is >= width."""
    magnitude = 10 ** max(0, int(np.floor(np.log10(max(width, 1)))))
    for step in (1, 2, 5, 10):
        if step * magnitude >= width:
            return int(step * magnitude)
    return int(10 * magnitude)


def histogram(values: np.ndarray, *, bins: int = 12) -> list[tuple[int, int, int]]:
    """`(low, high, count)` rows with round bin widths from min to max; low <= value < high.

    histogram(np.array([1, 3, 12]), bins=2) -> [(0, 10, 2), (10, 20, 1)]
    """
    if len(values) == 0:
        return []
    low, high = int(values.min()), int(values.max())
    width = _nice((high - low + 1) / bins)
    start = low // width * width
    edges = np.arange(start, high // width * width + 2 * width, width)
    counts, _ = np.histogram(values, bins=edges)
    return [(int(lo), int(lo + width), int(n)) for lo, n in zip(edges[:-1], counts)]


# --- collecting --------------------------------------------------------------------------------


def summaries(stage: Stage, ran: Ran) -> list[RecordStats | TreeStats]:
    """The stats reducer: each measured example of a batch reduced to `RecordStats` (in the worker); under
    history=tree also the batch's trees, as the build grows them (`TreeStats`)."""
    out: list[RecordStats | TreeStats] = [
        summarize(item, kept, stage=stage)
        for _, item, kept in ran.outcomes
        if not isinstance(item, Reject) and kept is not None
    ]
    if built_layout(stage.options) is TREE:
        out.extend(
            TreeStats((len(s.tree.ids),), s.tree.trained, int(s.tree.first_trained))
            for s in batch_trees(ran, max_length=stage.options.max_length, across=stage.options.shares_trees)
        )
    return out


class _Accumulator:
    """Adds up `RecordStats` and batch counts into a `DataStats`."""

    def __init__(self, stats: DataStats):
        self.stats = stats
        self.columns: dict[str, list[int]] = {
            "total": [],
            "response": [],
            "trained": [],
            "media": [],
            "media_tokens": [],
            "audio_ms": [],
            "audio_tokens": [],
        }
        self.kept: list[int] = []
        self.kept_media_tokens: list[int] = []
        self.kept_trained = 0
        self.kept_first_trained = 0
        self.policies = [PolicyOutcome(p.value) for p in POLICIES]
        self.trees: list[TreeStats] | None = None  # history=tree: each record's trees

    def add(self, item: RecordStats | TreeStats) -> None:
        if isinstance(item, TreeStats):
            self.trees = self.trees if self.trees is not None else []
            self.trees.append(item)
            return
        for name in self.columns:
            self.columns[name].append(getattr(item, name))
        for outcome, (state, lost) in zip(self.policies, item.outcomes):
            outcome.fit += state == FIT
            outcome.cut += state == CUT
            outcome.dropped += state == DROPPED
            outcome.lost += lost
        self.stats.kinds.update(dict(item.kinds))
        self.kept.extend(item.kept)
        self.kept_media_tokens.extend(item.kept_media_tokens)
        self.kept_trained += item.kept_trained
        self.kept_first_trained += item.kept_first_trained

    def finish(self, *, max_length: int, seed: int, test_size: float | int | None) -> DataStats:
        stats = self.stats
        for name, values in self.columns.items():
            setattr(stats, name, np.asarray(values, dtype=np.int64))
        stats.policies = self.policies
        kept, trained, first_trained = self.kept, self.kept_trained, self.kept_first_trained
        if self.trees is not None:  # what the build writes and packs: the trees
            kept = [n for t in self.trees for n in t.lengths]
            trained, first_trained = sum(t.trained for t in self.trees), sum(t.first_trained for t in self.trees)
            stats.trees, stats.tree_trained = np.asarray(kept, dtype=np.int64), trained
        stats.epoch = _epoch(
            kept,
            trained,
            first_trained,
            max_length=max_length,
            seed=seed,
            test_size=test_size,
            media_tokens=self.kept_media_tokens,
        )
        return stats


def _epoch(
    kept: list[int],
    trained: int,
    first_trained: int,
    *,
    max_length: int,
    seed: int,
    test_size: float | int | None,
    media_tokens: list[int] = (),  # type: ignore[assignment]  # an empty tuple as the immutable default of a list read only
) -> Epoch:
    """Per-epoch totals of the train split; packing fill over every kept sequence."""
    n = len(kept)
    if test_size is None:
        fraction = 1.0
    elif isinstance(test_size, float):
        fraction = 1.0 - test_size
    else:
        fraction = max(0.0, 1.0 - test_size / n) if n else 0.0
    packing = per_pack = None
    if n:
        bins = plan_bins(kept, max_length=max_length, seed=seed)
        packing = packing_stats(kept, bins, max_length=max_length)
        if any(media_tokens):  # media tokens per packed row: each bin's sequences' placeholder tokens
            per_pack = describe(np.array([sum(media_tokens[i] for i in members) for members in bins], dtype=np.int64))
    return Epoch(
        train_fraction=round(fraction, 4),
        sequences=round(n * fraction),
        tokens=round(sum(kept) * fraction),
        trained=round(trained * fraction),
        packed_trained=round((trained - first_trained) * fraction),
        packing=packing,
        media_per_pack=per_pack,
    )


def collect(
    source: Any, stage: Stage, run: RunOptions | None = None, *, progress: Callable[[int], None] | None = None
) -> DataStats:
    """Measure every record of `source` (up to `limit`) with `stage`'s options, on `run`'s engine.

    The run loop counts as a build counts (the same rejects, the whole-record rule); under
    truncation=error, where a build would stop, a too-long record counts as dropped.
    `progress` is called with the number of records done after each batch.

    Raises:
        ReaderError: the source cannot be read.
        RecordError: a malformed record with on_error="raise".
        FtdataError: no records, or none could be measured.
    """
    opts = stage.options
    stats = DataStats(
        source=str(source),
        tokenizer=str(getattr(stage.tokenizer, "name_or_path", "")),
        template=stage.renderer.name,
        mask=opts.mask.value,
        max_length=opts.max_length,
        truncation=opts.truncation.value,
    )
    acc = _Accumulator(stats)
    parts = loop.run(
        source,
        stage,
        run or RunOptions(),
        summaries,
        report=stats.counts,
        responses=True,
        lenient=True,
        progress=progress,
    )
    for items in parts:
        for item in items:
            acc.add(item)
    stats.formats = Counter(stats.counts.formats)  # by example, as a build counts them (not by the rows of a split)
    if not acc.columns["total"]:
        first = stats.sample_problems[0] if stats.sample_problems else None
        why = f"; first: {first.location}: {first.reason}" if first else ""
        raise FtdataError(f"no record could be measured ({stats.records} read, {stats.filtered} filtered){why}")
    return acc.finish(max_length=opts.max_length, seed=opts.seed, test_size=opts.test_size)


__all__ = [
    "DataStats",
    "Epoch",
    "PolicyOutcome",
    "RecordStats",
    "collect",
    "describe",
    "histogram",
    "summaries",
    "summarize",
]
