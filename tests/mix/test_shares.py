"""The mixing planner: whole records, exact shares, seeded, and a clear error when a source is too small."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ftdata.errors import ConfigError
from ftdata.mix.shares import SourceSizes, plan_mix


def _records(n: int) -> list[int]:
    return [1] * n


def test_everything_once_uses_the_binding_source_fully_and_the_others_by_share() -> None:
    # alpaca, glaive and lamini by records: glaive (300, may repeat 3x) is upsampled, lamini downsampled
    sources = [SourceSizes("alpaca", _records(999), 0.5), SourceSizes("glaive", _records(300), 0.3, epochs_max=3),
               SourceSizes("lamini", _records(1400), 0.2)]  # fmt: skip
    plan = plan_mix(sources, total=None, seed=42, unit="records")
    # budget = min(999 / 0.5, 900 / 0.3, 1400 / 0.2) = 1998; targets 999, 599.4 -> 599, 399.6 -> 400
    assert plan.budget == 1998
    assert [(s.records, s.repeats, s.units) for s in plan.sources] == [(999, 0, 999), (599, 299, 599), (400, 0, 400)]
    alpaca, glaive, lamini = plan.sources
    assert alpaca.counts.tolist() == [1] * 999
    assert sorted(set(glaive.counts.tolist())) == [1, 2] and len(glaive.indices) == 300  # a full pass, then 299 again
    assert sorted(set(lamini.counts.tolist())) == [0, 1] and len(lamini.indices) == 400
    assert [s.target_share for s in plan.sources] == pytest.approx([0.5, 0.3, 0.2])
    assert [s.share for s in plan.sources] == [999 / 1998, 599 / 1998, 400 / 1998]


def test_a_records_total_is_met_exactly() -> None:
    plan = plan_mix([SourceSizes("a", _records(50), 1), SourceSizes("b", _records(50), 1), SourceSizes("c", _records(50), 1)],
                    total=100, seed=0)  # fmt: skip
    assert [s.records for s in plan.sources] == [34, 33, 33]  # largest remainders: 33.3 each, the first gets the extra
    assert plan.units == 100


def test_token_shares_pick_whole_records_and_report_other_units() -> None:
    tokens = [[10, 20, 30, 40], [5, 5, 5, 5, 5, 5]]
    plan = plan_mix([SourceSizes("a", tokens[0], 3), SourceSizes("b", tokens[1], 1, epochs_max=2)], total=80, seed=7)
    a, b = plan.sources
    assert (a.units, b.units) == (60, 20)  # exactly 3:1 of 80
    assert plan.units_in([_records(4), _records(6)]) == (a.records, 4)
    assert all(np.dot(c.counts, t) == c.units for c, t in zip(plan.sources, tokens))


def test_the_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    rng = np.random.default_rng(1)
    sources = [SourceSizes(str(i), rng.integers(1, 100, 500).tolist(), w, epochs_max=2) for i, w in enumerate((1, 2))]
    one, two = (plan_mix(sources, total=30_000, seed=5) for _ in range(2))
    assert all(np.array_equal(a.counts, b.counts) for a, b in zip(one.sources, two.sources))
    other = plan_mix(sources, total=30_000, seed=6)
    assert not all(np.array_equal(a.counts, b.counts) for a, b in zip(one.sources, other.sources))


def test_a_target_past_epochs_max_names_the_source_what_it_has_and_needs() -> None:
    sources = [SourceSizes("chats", _records(1000), 0.5), SourceSizes("glaive", _records(300), 0.5)]
    with pytest.raises(ConfigError, match=(
        r"^source 'glaive' has 300 records but its share of total=1,000 needs 500: more than epochs_max=1 passes; "
        r"epochs_max=2 would do \(or lower its weight or the total\)$"
    )):  # fmt: skip
        plan_mix(sources, total=1000, seed=0, unit="records")
    with pytest.raises(ConfigError, match=r"^source 'empty' has no tokens: it cannot take a share"):
        plan_mix([SourceSizes("empty", [0, 0], 1), SourceSizes("b", [3], 1)], total=None, seed=0, unit="tokens")


sizes = st.lists(st.integers(1, 60), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(sizes, st.floats(0.01, 1)), min_size=1, max_size=5), st.integers(0, 2**32 - 1), st.data())
def test_each_source_lands_within_half_a_record_plus_one_unit(sources, seed, data) -> None:
    """Always (no precondition): |achieved - target| <= largest record / 2 + 1 (a whole record
    where the target is within a record of epochs_max passes), never past epochs_max passes,
    and the same plan again from the same seed."""
    shares = np.array([w for _, w in sources]) / sum(w for _, w in sources)
    total = data.draw(st.one_of(st.none(), st.integers(1, 20_000)))
    budget = total or 1
    sized = [SourceSizes(str(i), u, w, epochs_max=data.draw(st.sampled_from([1, 2, 3.5]))) for i, (u, w) in enumerate(sources)]
    if total is not None:  # enough passes for any total
        sized = [SourceSizes(s.name, s.units, s.weight, epochs_max=max(1, math.ceil(sh * budget / sum(s.units))))
                 for s, sh in zip(sized, shares)]  # fmt: skip
    plan = plan_mix(sized, total=total, seed=seed)
    again = plan_mix(sized, total=total, seed=seed)
    assert all(np.array_equal(p.counts, q.counts) for p, q in zip(plan.sources, again.sources))
    for s, p in zip(sized, plan.sources):
        assert p.counts.dtype == np.int64 and (p.counts >= 0).all()
        assert p.units == int(np.dot(p.counts, s.units))
        cap = math.floor(s.epochs_max * sum(s.units))
        assert abs(p.units - p.target_units) <= max(s.units) / (1 if p.target_units > cap - max(s.units) else 2) + 1
        assert p.units <= cap


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(1, 30_000), st.integers(1, 12), st.floats(0.05, 1), st.sampled_from([1, 2, 5])),
             min_size=1, max_size=5),
    st.integers(0, 2**32 - 1), st.one_of(st.none(), st.integers(10_000, 3_000_000)),
)  # fmt: skip
def test_shares_within_half_a_percent_when_records_are_small(sources, seed, total) -> None:
    """Precondition: every source's target is >= 1000 x its largest record (in the unit).
    Then every achieved share is within 0.5 % (relative) of its target share, up- and downsampled."""
    rng = np.random.default_rng(seed)
    sized = [SourceSizes(str(i), rng.integers(1, top, n, endpoint=True), w, epochs_max=e)
             for i, (n, top, w, e) in enumerate(sources)]  # fmt: skip
    shares = np.array([w for *_, w, _ in sources]) / sum(w for *_, w, _ in sources)
    budget = total if total is not None else min(math.floor(s.epochs_max * int(np.sum(s.units))) / w for s, w in zip(sized, shares))
    assume(all(w * budget >= 1000 * int(np.max(s.units)) for s, w in zip(sized, shares)))
    assume(all(w * budget <= s.epochs_max * int(np.sum(s.units)) for s, w in zip(sized, shares)))
    plan = plan_mix(sized, total=total, seed=seed)
    for p in plan.sources:
        assert abs(p.share - p.target_share) <= 0.005 * p.target_share


def test_every_takes_each_record_once_whatever_the_weights_total_and_epochs_max() -> None:
    sources = [SourceSizes("a", [3, 1, 2], weight=5.0, epochs_max=2), SourceSizes("b", [4], weight=0.1)]
    plan = plan_mix(sources, total=1, seed=0, unit="tokens", every=True)
    assert [s.counts.tolist() for s in plan.sources] == [[1, 1, 1], [1]]
    assert plan.budget == plan.units == 10
    assert [(s.target_share, s.share) for s in plan.sources] == [(0.6, 0.6), (0.4, 0.4)]
