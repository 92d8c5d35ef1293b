"""Packing: literal plans and rows, then Hypothesis invariants."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftdata.errors import ConfigError, RecordError
from ftdata.options import BuildOptions
from ftdata.tokens.packing import PackingStats, packing_stats, pad_sequences, padded_lengths, plan_bins
from ftdata.types import IGNORE_INDEX
from packing_reference import pack_rows

# ---------------------------------------------------------------- plan_bins, literal


def test_plan_bins_best_fit_decreasing_literal():
    # Longest first: 6 opens a bin (room 2), 5 and 4 open bins (room 3, 4), 3 takes the
    # tightest room (3, with 5), 2 takes room 2 (with 6). The bin order is the seeded shuffle.
    assert plan_bins([5, 3, 4, 2, 6], max_length=8) == [[0, 1], [2], [3, 4]]


def test_plan_bins_prefers_tightest_room():
    # After 7 and 6 (rooms 3 and 4), the 3 goes next to the 7, leaving room 4 for the 4.
    bins = plan_bins([7, 6, 3, 4], max_length=10)
    assert sorted(bins) == [[0, 2], [1, 3]]


def test_plan_bins_exact_fit_and_single_bin():
    assert plan_bins([4, 4], max_length=8) == [[0, 1]]
    assert plan_bins([8], max_length=8) == [[0]]
    assert plan_bins([], max_length=8) == []


def test_plan_bins_seed_changes_tie_breaks_and_order():
    lengths = [3] * 12 + [5] * 12
    plans = {tuple(map(tuple, plan_bins(lengths, max_length=8, seed=s))) for s in range(6)}
    assert len(plans) > 1
    for plan in plans:
        assert sorted(len(b) for b in plan) == [2] * 12  # always one 3 + one 5


@pytest.mark.parametrize(
    ("lengths", "max_length", "match"),
    [
        ([3, 9, 2], 8, r"between 1 and max_length=8; sequence 1 has 9 tokens \(1 out of range\)"),
        ([3, 0], 8, r"sequence 1 has 0 tokens"),
        ([3], 0, r"max_length must be an integer > 0, got max_length=0"),
        ([3], -3, r"got max_length=-3"),
    ],
)
def test_plan_bins_rejects_bad_input(lengths, max_length, match):
    with pytest.raises(ConfigError, match=match):
        plan_bins(lengths, max_length=max_length)


def test_plan_bins_fills_realistic_rows():
    # Speed is measured in benchmarks/packing_fill.py, not asserted here.
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(300), 0.5, 200_000), 100, 800).astype(int)
    bins = plan_bins(lengths, max_length=2048)
    stats = packing_stats(lengths, bins, max_length=2048)
    assert stats.fill_ratio >= 0.99
    assert stats.sequences == 200_000


# ---------------------------------------------------------------- pack_rows, literal


def test_pack_rows_literal():
    rows = [
        {"input_ids": [7, 8, 9], "attention_mask": [1, 1, 1], "labels": [IGNORE_INDEX, 8, 9]},
        {"input_ids": [4, 5], "labels": [4, 5]},
        {"input_ids": [6], "labels": [6]},
    ]
    assert pack_rows(rows) == {
        "input_ids": [7, 8, 9, 4, 5, 6],
        "attention_mask": [1, 1, 1, 1, 1, 1],
        "labels": [-100, 8, 9, -100, 5, -100],
        "position_ids": [0, 1, 2, 0, 1, 0],
        "seq_lengths": [3, 2, 1],
    }


def test_pack_rows_does_not_mutate_input():
    row = {"input_ids": [4, 5], "labels": [4, 5]}
    pack_rows([row])
    assert row == {"input_ids": [4, 5], "labels": [4, 5]}


@pytest.mark.parametrize(
    ("rows", "error", "match"),
    [
        ([], ConfigError, "needs at least one row"),
        ([{"input_ids": [1, 2], "labels": [1]}], RecordError, "row 0 has 2 input_ids but 1 labels"),
        ([{"input_ids": [1], "labels": [1]}, {"input_ids": [], "labels": []}], RecordError, "row 1 is empty"),
        ([{"input_ids": [1, 0], "labels": [1, -100], "attention_mask": [1, 0]}], RecordError, "padding"),
    ],
)
def test_pack_rows_rejects_bad_rows(rows, error, match):
    with pytest.raises(error, match=match):
        pack_rows(rows)


# ---------------------------------------------------------------- pad_to_multiple_of, literal


def test_pack_rows_pads_each_sequence_to_a_multiple():
    rows = [
        {"input_ids": [7, 8, 9], "labels": [-100, 8, 9]},
        {"input_ids": [4, 5], "labels": [4, 5]},
        {"input_ids": [1, 2, 3, 6], "labels": [-100, -100, 3, 6]},
    ]
    packed = pack_rows(rows, pad_to_multiple_of=4, pad_id=0)
    assert packed == {
        "input_ids":      [7, 8, 9, 0, 4, 5, 0, 0, 1, 2, 3, 6],
        "attention_mask": [1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 1],
        "labels":         [-100, 8, 9, -100, -100, 5, -100, -100, -100, -100, 3, 6],
        "position_ids":   [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3],
        "seq_lengths":    [4, 4, 4],
    }  # fmt: skip
    assert pack_rows(rows, pad_to_multiple_of=1) == pack_rows(rows)


def test_pad_sequences_is_pack_rows_columnwise():
    ids, labels = np.array([7, 8, 9, 4, 5], dtype=np.int32), np.array([-100, 8, 9, -100, 5], dtype=np.int32)
    out_ids, out_labels, mask, lengths = pad_sequences(ids, labels, np.array([3, 2]), multiple=4, pad_id=0)
    assert out_ids.tolist() == [7, 8, 9, 0, 4, 5, 0, 0]
    assert out_labels.tolist() == [-100, 8, 9, -100, -100, 5, -100, -100]
    assert mask.tolist() == [1, 1, 1, 0, 1, 1, 0, 0] and lengths.tolist() == [4, 4]
    assert padded_lengths([3, 2, 4, 5], multiple=4).tolist() == [4, 4, 4, 8]
    assert padded_lengths([3, 2], multiple=None).tolist() == [3, 2]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"packing": True, "max_length": 10, "pad_to_multiple_of": 4},
         r"pad_to_multiple_of=4 must divide max_length=10 .* use a max_length such as 8"),
        ({"packing": True, "pad_to_multiple_of": 0}, r"pad_to_multiple_of must be an integer >= 1, got pad_to_multiple_of=0"),
        ({"packing": True, "pad_to_multiple_of": True}, r"pad_to_multiple_of must be an integer >= 1, got pad_to_multiple_of=True"),
        ({"pad_to_multiple_of": 4}, r"pad_to_multiple_of=4 pads packed sequences: add packing=True \(--packing\)"),
    ],
)  # fmt: skip
def test_pad_to_multiple_of_is_checked(options, match):
    with pytest.raises(ConfigError, match=match):
        BuildOptions(**options)


def test_build_pads_packed_sequences_to_the_multiple(smol):
    from ftdata import build_sft_dataset

    records = [{"instruction": f"Say {word} {'again ' * n}", "input": "", "output": word * (n + 1)}
               for n, word in enumerate(["yes", "no", "maybe", "sure", "never", "often", "rarely"])]  # fmt: skip
    plain = build_sft_dataset(records, tokenizer=smol, template="alpaca", max_length=128, packing=True)
    padded = build_sft_dataset(records, tokenizer=smol, template="alpaca", max_length=128, packing=True, pad_to_multiple_of=8)
    trained = [sum(lab != IGNORE_INDEX for lab in row["labels"]) for row in plain]
    assert sum(trained) == sum(sum(lab != IGNORE_INDEX for lab in row["labels"]) for row in padded)
    real = sorted(n for row in plain for n in row["seq_lengths"])
    assert sorted(sum(row["attention_mask"][a : a + n]) for row in padded
                  for a, n in zip(np.cumsum([0, *row["seq_lengths"][:-1]]), row["seq_lengths"])) == real  # fmt: skip
    for row in padded:
        assert all(n % 8 == 0 for n in row["seq_lengths"]) and len(row["input_ids"]) <= 128
        assert row["position_ids"] == [p for n in row["seq_lengths"] for p in range(n)]
        pads = [i for i, m in enumerate(row["attention_mask"]) if m == 0]
        assert all(row["labels"][i] == IGNORE_INDEX for i in pads)
    assert any(0 in row["attention_mask"] for row in padded)  # some sequence did need padding


# ---------------------------------------------------------------- packing_stats, literal


def test_packing_stats_literal():
    stats = packing_stats([5, 3, 4, 2, 6], [[2], [0, 1], [3, 4]], max_length=8, trained_tokens=11)
    assert stats == PackingStats(
        rows=3,
        sequences=5,
        tokens=20,
        slots=24,
        fill_ratio=20 / 24,
        sequences_per_row=5 / 3,
        max_sequences_per_row=2,
        trained_tokens=11,
    )
    assert str(stats) == (
        "5 sequences -> 3 rows (20 tokens, 11 trained); fill 83.33%, 1.67 sequences/row (max 2)"
    )


def test_packing_stats_add_as_one_plan():
    """Shards packed apart: their stats added are the stats of all their rows taken together."""
    a = packing_stats([5, 3, 4], [[2], [0, 1]], max_length=8, trained_tokens=7)
    b = packing_stats([2, 6, 1], [[0, 1], [2]], max_length=8, trained_tokens=4)
    both = packing_stats([5, 3, 4, 2, 6, 1], [[2], [0, 1], [3, 4], [5]], max_length=8, trained_tokens=11)
    assert a + b == both
    assert (a + b).fill_ratio == 21 / 32 and (a + b).max_sequences_per_row == 2
    assert (a + packing_stats([1], [[0]], max_length=8)).trained_tokens is None  # not counted on one side


def test_packing_stats_empty_and_overfull():
    assert packing_stats([], [], max_length=8).fill_ratio == 0.0
    with pytest.raises(ConfigError, match="bin 0 holds 9 tokens, more than max_length=8"):
        packing_stats([5, 4], [[0, 1]], max_length=8)


# ---------------------------------------------------------------- Hypothesis invariants

MAX_LENGTH = st.integers(min_value=1, max_value=64)


@st.composite
def lengths_and_max(draw):
    max_length = draw(MAX_LENGTH)
    lengths = draw(st.lists(st.integers(min_value=1, max_value=max_length), max_size=120))
    return lengths, max_length


@st.composite
def token_rows(draw, *, max_rows=8, max_len=12):
    """Rows shaped like ftdata's: random ids, each label either the id or IGNORE_INDEX."""
    rows = []
    for _ in range(draw(st.integers(min_value=1, max_value=max_rows))):
        ids = draw(st.lists(st.integers(min_value=0, max_value=999), min_size=1, max_size=max_len))
        trained = draw(st.lists(st.booleans(), min_size=len(ids), max_size=len(ids)))
        labels = [t if keep else IGNORE_INDEX for t, keep in zip(ids, trained)]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return rows


@given(lengths_and_max(), st.integers(min_value=0, max_value=2**32 - 1))
def test_plan_bins_places_every_sequence_once_within_max_length(case, seed):
    lengths, max_length = case
    bins = plan_bins(lengths, max_length=max_length, seed=seed)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(b and sum(lengths[i] for i in b) <= max_length for b in bins)
    assert all(b == sorted(b) for b in bins)


@given(lengths_and_max(), st.integers(min_value=0, max_value=2**32 - 1))
def test_plan_bins_is_deterministic_for_a_seed(case, seed):
    lengths, max_length = case
    assert plan_bins(lengths, max_length=max_length, seed=seed) == plan_bins(
        lengths, max_length=max_length, seed=seed
    )


@given(lengths_and_max())
def test_plan_bins_no_two_bins_could_merge(case):
    # Best fit never leaves two bins that would fit in one (a cheap optimality witness):
    # the second bin's items were each placed while the first had room for them.
    lengths, max_length = case
    totals = sorted(sum(lengths[i] for i in b) for b in plan_bins(lengths, max_length=max_length))
    assert len(totals) < 2 or totals[0] + totals[1] > max_length


MULTIPLES = pytest.mark.parametrize("multiple", [None, 4])  # pad_to_multiple_of: off, and on
PAD = -7  # a pad id no generated row uses, so every pad is visible


def _unpadded(packed, key):
    """The tokens of `key` where attention_mask is 1: the packed row without its pads."""
    return [t for t, m in zip(packed[key], packed["attention_mask"]) if m]


@MULTIPLES
@given(rows=token_rows())
def test_pack_rows_keeps_sequences_contiguous_and_positions_restarting(rows, multiple):
    packed = pack_rows(rows, pad_to_multiple_of=multiple, pad_id=PAD)
    lengths = [len(r["input_ids"]) for r in rows]
    padded = [n + -n % (multiple or 1) for n in lengths]
    assert packed["seq_lengths"] == padded
    assert all(n % (multiple or 1) == 0 for n in packed["seq_lengths"])
    assert packed["input_ids"] == [t for r, p in zip(rows, padded) for t in [*r["input_ids"], *[PAD] * (p - len(r["input_ids"]))]]
    assert packed["position_ids"] == [p for n in padded for p in range(n)]
    assert packed["attention_mask"] == [m for n, p in zip(lengths, padded) for m in [1] * n + [0] * (p - n)]
    assert len(packed["labels"]) == sum(padded)
    starts = np.cumsum([0, *padded[:-1]]).tolist()
    assert [i for i, p in enumerate(packed["position_ids"]) if p == 0] == starts
    assert all(lab == IGNORE_INDEX for lab, m in zip(packed["labels"], packed["attention_mask"]) if not m)


@MULTIPLES
@given(rows=token_rows())
def test_pack_rows_preserves_every_trained_token_but_each_first(rows, multiple):
    # The documented rule: each sequence's first label becomes IGNORE_INDEX (it would be
    # predicted from the neighbour's last token); every other (sequence, position, label)
    # that was trained is still trained, and nothing is trained that was not (pads never are).
    packed = pack_rows(rows, pad_to_multiple_of=multiple, pad_id=PAD)
    expected = Counter()
    got = Counter()
    offset = 0
    for s, (row, size) in enumerate(zip(rows, packed["seq_lengths"], strict=True)):
        n = len(row["input_ids"])
        assert packed["labels"][offset] == IGNORE_INDEX
        for j in range(1, n):
            if row["labels"][j] != IGNORE_INDEX:
                expected[(s, j, row["labels"][j])] += 1
        for j in range(1, size):
            if packed["labels"][offset + j] != IGNORE_INDEX:
                got[(s, j, packed["labels"][offset + j])] += 1
        offset += size
    assert got == expected


@MULTIPLES
@settings(max_examples=50)
@given(rows=token_rows(max_rows=30), max_length=st.integers(min_value=3, max_value=10), seed=st.integers(0, 1000))
def test_plan_then_pack_never_exceeds_max_length_or_loses_tokens(rows, max_length, seed, multiple):
    max_length *= 4  # 12..40, and a multiple of 4 as pad_to_multiple_of=4 requires
    lengths = padded_lengths([len(r["input_ids"]) for r in rows], multiple=multiple)
    bins = plan_bins(lengths, max_length=max_length, seed=seed)
    packed = [pack_rows([rows[i] for i in b], pad_to_multiple_of=multiple, pad_id=PAD) for b in bins]
    assert all(len(p["input_ids"]) <= max_length for p in packed)
    assert all(len(p["input_ids"]) % (multiple or 1) == 0 for p in packed)
    assert Counter(t for p in packed for t in _unpadded(p, "input_ids")) == Counter(t for r in rows for t in r["input_ids"])
    assert sum(len(p["input_ids"]) for p in packed) == sum(lengths)
    trained_after = sum(lab != IGNORE_INDEX for p in packed for lab in p["labels"])
    trained_before = sum(lab != IGNORE_INDEX for r in rows for lab in r["labels"][1:])
    assert trained_after == trained_before




# ---------------------------------------------------------------- write_packed against pack_rows (oracle)


@MULTIPLES
@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=40),
    chunk=st.integers(1, 7),
    subset=st.booleans(),
    batch_rows=st.integers(1, 5),
    seed=st.integers(0, 3),
)
def test_write_packed_equals_pack_rows_of_each_planned_bin(
    tmp_path_factory, lengths, chunk, subset, batch_rows, seed, multiple
):
    """The column-wise writer (a multi-chunk rows file read with preadv, a split's uint64 indices,
    several batches) gives exactly `pack_rows` of each bin of `plan_bins`, and the same stats."""
    import pyarrow as pa

    from ftdata.run.rows import PACKED_SCHEMA, RowsFile, write_packed

    rows = [
        {"input_ids": [100 * r + t for t in range(n)], "labels": [IGNORE_INDEX if t % 3 == 0 else 100 * r + t for t in range(n)]}
        for r, n in enumerate(lengths)
    ]
    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))])
    batches = [pa.RecordBatch.from_pylist(rows[i : i + chunk], schema=schema) for i in range(0, len(rows), chunk)]
    folder = tmp_path_factory.mktemp("packed")
    with pa.ipc.new_stream(str(folder / "rows.arrow"), schema) as sink:
        for batch in batches:
            sink.write_batch(batch)
    picked = np.random.default_rng(seed).permutation(len(rows))[: max(1, len(rows) // 2)] if subset else None
    view = [rows[i] for i in picked] if subset else rows
    out = folder / "train.arrow"
    stats = write_packed(RowsFile(folder / "rows.arrow"), out, max_length=16, seed=seed, batch_rows=batch_rows,
                         rows=None if picked is None else picked.astype(np.uint64), pad_to_multiple_of=multiple,
                         pad_id=PAD)  # fmt: skip
    written = pa.ipc.open_stream(str(out)).read_all()
    assert written.schema == PACKED_SCHEMA
    bins = plan_bins(padded_lengths([len(r["input_ids"]) for r in view], multiple=multiple), max_length=16, seed=seed)
    expected = [pack_rows([view[i] for i in b], pad_to_multiple_of=multiple, pad_id=PAD) for b in bins]
    assert written.to_pylist() == expected
    trained = sum(sum(label != IGNORE_INDEX for label in e["labels"]) for e in expected)
    assert stats == packing_stats([len(r["input_ids"]) for r in view], bins, max_length=16, trained_tokens=trained)
