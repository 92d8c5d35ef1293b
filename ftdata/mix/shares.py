"""The mixing planner: which records of each source a recipe uses, and how many times each.

Input, per source: the units of every record in build order (records -> all ones; tokens;
trained tokens), a weight and `epochs_max`. Output, per source: a count per record (0 =
dropped, 2 = used twice), the units that achieves and its share. Whole records only:

    source of 5 records, needs 1.4 passes       counts
    pass 1 (every record)          1 1 1 1 1      1 2 1 2 1
    seeded remainder (0.4 pass)    . 1 . 1 .

Nothing here reads or tokenizes data: the counts come first, so a target that cannot be met
is an error before any work, and every engine applies the same plan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ftdata.errors import ConfigError

_SLACK = 1e-9  # relative float slack when a share of a budget meets a source's cap exactly


@dataclass(frozen=True, slots=True)
class SourceSizes:
    """What the planner needs of one source: its records' units, its weight and its epochs_max."""

    name: str
    units: Sequence[int] | np.ndarray  # per record, in build order; >= 0
    weight: float  # > 0; shares are weights over their sum
    epochs_max: float = 1  # at most this many passes' worth of its units


@dataclass(frozen=True, slots=True, eq=False)
class SourcePlan:
    """One source's part of a plan."""

    name: str
    counts: np.ndarray  # per record: how many times it is used (0 = dropped)
    available: int  # units of one pass over the source
    target_units: float  # its share of the budget
    units: int  # units the counts achieve
    target_share: float
    share: float  # units / units of all sources

    @property
    def indices(self) -> np.ndarray:
        """The records used (ascending)."""
        return np.flatnonzero(self.counts)

    @property
    def records(self) -> int:
        """Records used, a repeat counted each time."""
        return int(self.counts.sum())

    @property
    def repeats(self) -> int:
        """Uses beyond the first of a record (0 when nothing is upsampled)."""
        return self.records - int(np.count_nonzero(self.counts))


@dataclass(frozen=True, slots=True)
class Plan:
    """Per source, the counts that meet its share of `budget` (units of the recipe's mix_by)."""

    sources: tuple[SourcePlan, ...]
    budget: int

    @property
    def units(self) -> int:
        """Units the whole mixture achieves."""
        return sum(s.units for s in self.sources)

    def units_in(self, units: Sequence[Sequence[int]]) -> tuple[int, ...]:
        """Per source, what the plan uses in another unit (the report shows all three), given
        every record's count in that unit: `plan.units_in(tokens)` for a records plan."""
        return tuple(
            int(np.dot(np.asarray(u, dtype=np.int64), s.counts)) for u, s in zip(units, self.sources, strict=True)
        )


def plan_mix(
    sources: Sequence[SourceSizes], *, total: int | None, seed: int, unit: str = "units", every: bool = False
) -> Plan:
    """Choose whole records of each source so that each meets its share of the budget.

    The budget is `total`, or when None, the largest budget under which no source needs
    more than `epochs_max` passes: min over sources of `epochs_max x units / share`, rounded
    down. The source that sets it is used exactly `epochs_max` times (once by default); the
    others are downsampled, or upsampled within their own `epochs_max`, to their shares.

    Each source's target is its share of the budget in whole units (largest remainders, so
    the targets add up to the budget). A source is used `floor(target / units)` full passes
    (every record), then records in a seeded order (numpy Generator seeded with
    `(seed, source index)`) until the remainder is met, where a final best-fit pick among the
    records not yet taken lands nearest the remainder. So a source's achieved units are off
    its whole-unit target by at most half its largest record (by at most one record where the
    nearer fit would pass epochs_max), and off its real-valued share of the budget by at most
    that plus one unit. A source never gets more than `epochs_max` passes' worth of units. With records
    as the unit every source gets exactly its whole-record target.

    Precision: when every source's target is at least 1000 times its largest record, every
    achieved share is within 0.5 % (relative) of its target share (tests/mix/test_shares.py
    checks it with Hypothesis). Each source is then off by at most two records, eps = 2 / 1000
    of its target, and a share w moves by at most 2 eps (1 - w) / (1 - eps) < 0.41 %.

    Args:
        sources: per source, its records' units, weight and epochs_max.
        total: the budget in units, or None (see above).
        seed: the recipe's seed; the same seed gives the same plan in every process.
        unit: the unit's name in messages ("records", "tokens", "trained_tokens").
        every: every record once, the sources laid end to end (`mix_by: all`): weights, `total` and
            `epochs_max` are not read, and each source's target share is the share it has.

    Raises:
        ConfigError: a source whose target exceeds `epochs_max` passes (or that has no units):
            the message names it, what it has, what it needs and the epochs_max that would do.
    """
    shares = np.array([s.weight for s in sources], dtype=np.float64)
    shares /= shares.sum()
    sizes = [np.asarray(s.units, dtype=np.int64) for s in sources]
    available = [int(u.sum()) for u in sizes]
    caps = [math.floor(s.epochs_max * a) for s, a in zip(sources, available)]
    for source, have in zip(sources, available):
        if have == 0:
            raise ConfigError(
                f"source {source.name!r} has no {unit}: it cannot take a share; drop it or check its records"
            )
    if every:
        budget = sum(available)
        shares = np.array(available, dtype=np.float64) / budget
        counts = [np.ones(len(u), dtype=np.int64) for u in sizes]
    else:
        budget = total if total is not None else math.floor(min(c / w for c, w in zip(caps, shares)) * (1 + _SLACK))
        _check_caps(sources, shares * budget, available, caps, budget=budget, unit=unit)
        counts = [
            _select(u, min(t, cap), cap, np.random.default_rng([seed, i]))
            for i, (u, t, cap) in enumerate(zip(sizes, _apportion(shares, budget), caps))
        ]
    achieved = [int(np.dot(u, c)) for u, c in zip(sizes, counts)]
    whole = sum(achieved)
    return Plan(
        sources=tuple(
            SourcePlan(
                name=s.name,
                counts=c,
                available=a,
                target_units=float(w * budget),
                units=got,
                target_share=float(w),
                share=got / whole if whole else 0.0,
            )
            for s, c, a, w, got in zip(sources, counts, available, shares, achieved)
        ),
        budget=budget,
    )


def _check_caps(
    sources: Sequence[SourceSizes], raws: np.ndarray, available: list[int], caps: list[int], *, budget: int, unit: str
) -> None:
    """Raises: ConfigError: a source whose share of `budget` needs more than its `epochs_max` passes."""
    for source, raw, have, cap in zip(sources, raws, available, caps):
        if raw > cap * (1 + _SLACK):
            raise ConfigError(
                f"source {source.name!r} has {have:,} {unit} but its share of total={budget:,} needs "
                f"{math.ceil(raw):,}: "
                f"more than epochs_max={source.epochs_max} passes; epochs_max={math.ceil(raw / have)} would do "
                "(or lower its weight or the total)"
            )


def _apportion(shares: np.ndarray, budget: int) -> list[int]:
    """Whole-unit targets proportional to `shares` that add up to `budget` (largest remainders)."""
    raw = shares * budget
    targets = np.floor(raw).astype(np.int64)
    left = budget - int(targets.sum())
    targets[np.argsort(-(raw - targets), kind="stable")[:left]] += 1
    return [int(t) for t in targets]


def _select(units: np.ndarray, target: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Counts per record: full passes, then records in seeded order up to the remainder, the
    last one the best fit among those left that keeps within `cap` units (off the target by at
    most half a record; by at most one record where the cap forbids the better fit)."""
    one_pass = int(units.sum())
    passes, rest = divmod(target, one_pass)
    counts = np.full(len(units), passes, dtype=np.int64)
    if rest == 0:
        return counts
    order = rng.permutation(len(units))
    reached = np.cumsum(units[order])
    k = int(np.searchsorted(reached, rest))  # the first k records stay below the remainder
    gap = rest - (int(reached[k - 1]) if k else 0)
    counts[order[:k]] += 1
    left = units[order[k:]]
    miss = np.where(left - gap <= cap - target, np.abs(left - gap), gap)  # past the cap: not a candidate
    best = int(np.argmin(miss))
    if miss[best] < gap:
        counts[order[k + best]] += 1
    return counts


__all__ = ["Plan", "SourcePlan", "SourceSizes", "plan_mix"]
