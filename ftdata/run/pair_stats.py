"""`ftdata stats` of preference data: pairs, lengths, length bias, shared completion starts, repeats, truncation.

Every record goes through the run loop as a build runs it (`PairStage`: the same rejects, the same
truncation); each pair is reduced in the worker to a few integers and two digests (`PairSummary`):

    lengths        prompt and each completion, in tokens (p50/p90/p99/max/mean)
    length bias    the share of pairs whose chosen completion is longer than the rejected one (DPO
                   learns length when that share is far from one half)
    shared start   the share of pairs whose completions begin with the same tokens, and the share of
                   the shorter completion those tokens make on average: they carry no preference
    repeats        pairs whose tokens repeat an earlier pair's, and pairs whose prompt repeats one
    ties           pairs the data scores alike are rejected (no_preference), with the other rejects
    truncation     what keep_response, keep_start, keep_end and drop do at max_length
    KTO            desirable and undesirable completions (TRL's weights assume a balance)
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from ftdata.errors import FtdataError
from ftdata.options import RunOptions
from ftdata.run import loop
from ftdata.run.stage import Ran, Stage
from ftdata.run.rows_pairs import PairRow
from ftdata.run.report import BuildReport, Reject, TaskChoice
from ftdata.run.seam import Item
from ftdata.run.stats import CUT, DROPPED, FIT, PolicyOutcome, describe
from ftdata.types import TruncationPolicy


class MeasuredPair(Item, Protocol):
    """What this measure reads of a pair (`ftdata.run.preference.MeasuredPair`; the pair module imports this measure,
    its `stats`, so it is named here by its shape): its row."""

    @property
    def row(self) -> PairRow: ...


__all__ = ["PairDataStats", "PairSummary", "collect_pairs", "pair_summaries"]

POLICIES = (
    TruncationPolicy.KEEP_RESPONSE,
    TruncationPolicy.KEEP_START,
    TruncationPolicy.KEEP_END,
    TruncationPolicy.DROP,
)


@dataclass(frozen=True, slots=True)
class PairSummary:
    """One pair (or KTO record) reduced to numbers: lengths, the completions' shared start, digests, and
    `outcomes[i]` = FIT|CUT|DROPPED under POLICIES[i]; `kept`: its row under the build's policy, if any."""

    format: str
    prompt: int
    completions: tuple[int, ...]
    trained: int  # the tokens its completions train (a trajectory's: its assistant turns; else every one)
    common: int
    label: bool | None
    digest: bytes
    prompt_digest: bytes
    outcomes: tuple[int, ...]
    kept: tuple[int, int] | None  # (tokens, trained tokens) of the row a build keeps


def _digest(*parts: list[int]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(np.asarray(part, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.digest()


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def summarize_pair(stage: Stage, item: MeasuredPair, kept: Any) -> PairSummary:
    """Reduce a measured pair to its lengths and its outcome under every policy (`kept`: the build's outcome)."""
    row: PairRow = item.row
    outcomes = []
    for policy in POLICIES:
        result = stage.truncate(item, policy=policy) if row.length > stage.options.max_length else None
        outcomes.append(FIT if result is None else CUT if result.rows else DROPPED)
    completions = row.completions
    rows = kept.rows if kept is not None else []
    return PairSummary(
        format=item.example.format,
        prompt=len(row.prompt),
        completions=tuple(map(len, completions)),
        trained=row.trained,
        common=_common(*completions) if len(completions) == 2 else 0,
        label=row.label,
        digest=_digest(row.prompt, *completions),
        prompt_digest=_digest(row.prompt),
        outcomes=tuple(outcomes),
        kept=(rows[0].tokens, rows[0].trained) if rows else None,
    )


def pair_summaries(stage: Stage, ran: Ran) -> list[PairSummary]:
    """The stats reducer of pairs: each measured pair of a batch reduced to a `PairSummary` (in the worker)."""
    return [
        summarize_pair(stage, item, kept)
        for _, item, kept in ran.outcomes
        if not isinstance(item, Reject) and kept is not None
    ]


@dataclass
class PairDataStats:
    """Everything `ftdata stats` reports of preference data."""

    source: str
    tokenizer: str
    template: str
    task: str
    max_length: int
    truncation: str
    counts: BuildReport = field(default_factory=BuildReport)
    formats: Counter[str] = field(default_factory=Counter)
    prompt: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    completions: np.ndarray = field(
        default_factory=lambda: np.zeros((0, 2), dtype=np.int64)
    )  # chosen, rejected (KTO: one)
    trained: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # per pair, its completions'
    common: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    repeated: int = 0  # pairs whose tokens repeat an earlier pair's
    repeated_prompts: int = 0  # pairs whose prompt repeats an earlier pair's
    policies: list[PolicyOutcome] = field(default_factory=list)
    kept: int = 0
    kept_tokens: int = 0
    kept_trained: int = 0

    @property
    def pairs(self) -> int:
        return len(self.prompt)

    @property
    def paired(self) -> bool:
        return self.completions.shape[1] == 2

    def planned(self) -> tuple[int, int, np.ndarray, np.ndarray]:
        """What a recipe's planner reads: records, rejected records, each pair's tokens (its prompt's and
        completions') and trained tokens (what its completions train: a trajectory's assistant turns, not the
        tool results between them)."""
        return self.counts.records, self.counts.n_rejected, self.prompt + self.completions.sum(axis=1), self.trained

    def lengths(self) -> dict[str, dict[str, float]]:
        """p50/p90/p99/max/mean of the prompt and of each completion, in tokens."""
        names = ("chosen", "rejected") if self.paired else ("completion",)
        return {
            "prompt": describe(self.prompt),
            **{name: describe(self.completions[:, i]) for i, name in enumerate(names)},
        }

    def bias(self) -> dict[str, float]:
        """Shares of pairs whose chosen completion is longer, as long, shorter than the rejected one."""
        n = max(self.pairs, 1)
        chosen, rejected = self.completions[:, 0], self.completions[:, 1]
        return {
            name: round(float(v.sum()) / n, 4)
            for name, v in (
                ("chosen_longer", chosen > rejected),
                ("same_length", chosen == rejected),
                ("chosen_shorter", chosen < rejected),
            )
        }

    def shared_start(self) -> dict[str, float]:
        """The share of pairs whose completions start with the same token(s), and the mean share of the
        shorter completion those tokens make."""
        n = max(self.pairs, 1)
        shorter = np.maximum(self.completions.min(axis=1), 1)
        return {
            "pairs": round(float((self.common > 0).sum()) / n, 4),
            "mean_share": round(float((self.common / shorter).mean()) if self.pairs else 0.0, 4),
        }

    @property
    def task_choice(self) -> TaskChoice:
        """The task and why it was chosen (the build summary's `task` line; the reason is the caller's)."""
        return TaskChoice(self.task, self.counts.task_reason)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (no per-pair arrays)."""
        out: dict[str, Any] = {
            "source": self.source,
            "tokenizer": self.tokenizer,
            "template": self.template,
            **self.task_choice.to_dict(),
            "max_length": self.max_length,
            "truncation": self.truncation,
            "records": self.counts.records,
            "pairs" if self.paired else "completions": self.pairs,
            "filtered": self.counts.filtered,
            "formats": dict(self.formats),
            "rejected": {code.value: n for code, n in self.counts.rejected.items()},
            "sample_rejects": [r.to_dict() for r in self.counts.sample_rejects if not r.kept],
            "lengths": self.lengths(),
            "repeated": self.repeated,
            "repeated_prompts": self.repeated_prompts,
            "truncation_policies": [asdict(p) for p in self.policies],
            "kept": {"rows": self.kept, "tokens": self.kept_tokens, "trained_tokens": self.kept_trained},
        }
        if self.paired:
            out["length_bias"] = self.bias()
            out["shared_start"] = self.shared_start()
        else:
            out["labels"] = {"desirable": int(self.labels.sum()), "undesirable": int((~self.labels).sum())}
        return out


class _Accumulator:
    """Adds up `PairSummary`s into a `PairDataStats`; repeats are found here, over the whole source."""

    def __init__(self, stats: PairDataStats):
        self.stats = stats
        self.rows: list[PairSummary] = []
        self.seen: set[bytes] = set()
        self.prompts: set[bytes] = set()
        self.policies = [PolicyOutcome(p.value) for p in POLICIES]

    def add(self, item: PairSummary) -> None:
        stats = self.stats
        stats.formats[item.format] += 1
        stats.repeated += item.digest in self.seen
        stats.repeated_prompts += item.prompt_digest in self.prompts
        self.seen.add(item.digest)
        self.prompts.add(item.prompt_digest)
        for outcome, state in zip(self.policies, item.outcomes):
            outcome.fit += state == FIT
            outcome.cut += state == CUT
            outcome.dropped += state == DROPPED
        if item.kept is not None:
            stats.kept += 1
            stats.kept_tokens += item.kept[0]
            stats.kept_trained += item.kept[1]
        self.rows.append(item)

    def finish(self) -> PairDataStats:
        stats, rows = self.stats, self.rows
        stats.prompt = np.fromiter((r.prompt for r in rows), dtype=np.int64, count=len(rows))
        stats.completions = np.asarray([r.completions for r in rows], dtype=np.int64).reshape(len(rows), -1)
        stats.trained = np.fromiter((r.trained for r in rows), dtype=np.int64, count=len(rows))
        stats.common = np.fromiter((r.common for r in rows), dtype=np.int64, count=len(rows))
        stats.labels = np.fromiter((bool(r.label) for r in rows), dtype=bool, count=len(rows))
        stats.policies = self.policies
        return stats


def collect_pairs(
    source: Any, stage: Stage, run: RunOptions | None = None, *, progress: Callable[[int], None] | None = None
) -> PairDataStats:
    """Measure every record of `source` (up to `limit`) as a preference build would, on `run`'s engine.

    Raises:
        ReaderError: the source cannot be read.
        RecordError: a malformed record with on_error="raise".
        FtdataError: no records, or no pair could be measured.
    """
    opts = stage.options
    stats = PairDataStats(
        source=str(source),
        tokenizer=str(getattr(stage.tokenizer, "name_or_path", "")),
        template=stage.renderer.name,
        task=opts.task.value if opts.task else "preference",
        max_length=opts.max_length,
        truncation=opts.truncation.value,
    )
    acc = _Accumulator(stats)
    for items in loop.run(
        source, stage, run or RunOptions(), pair_summaries, report=stats.counts, lenient=True, progress=progress
    ):
        for item in items:
            acc.add(item)
    if not acc.rows:
        first = next((r for r in stats.counts.sample_rejects if not r.kept), None)
        why = f"; first: {first.location}: {first.reason}" if isinstance(first, Reject) else ""
        raise FtdataError(
            f"no pair could be measured ({stats.counts.records} read, {stats.counts.filtered} filtered){why}"
        )
    return acc.finish()
