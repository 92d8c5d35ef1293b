"""Packing: several token rows into one row of at most `max_length` tokens.

A packed row is the sequences laid end to end, with positions that restart at each one and
the first label of each one masked, so that no sequence sees or learns from its neighbour::

    sequence A = a0 a1 a2  (a1 a2 trained)       sequence B = b0 b1  (b1 trained)

    input_ids      a0    a1    a2    b0    b1
    labels       -100    a1    a2  -100    b1
    position_ids    0     1     2     0     1
    attention_mask  1     1     1     1     1
    seq_lengths   [3, 2]

With `pad_to_multiple_of` (context parallelism splits every sequence into 2 x cp chunks, so
ring attention needs each length to divide evenly), each sequence is padded at its end up to
the next multiple; pad tokens have label -100 and attention_mask 0, and their positions
continue the sequence's own, so `seq_lengths` and `position_ids` still describe the row
exactly (what TRL's collator rebuilds from `seq_lengths` is what is stored)::

    pad_to_multiple_of 4:  A = a0 a1 a2 + 1 pad,  B = b0 b1 + 2 pads

    input_ids      a0    a1    a2   pad    b0    b1   pad   pad
    labels       -100    a1    a2  -100  -100    b1  -100  -100
    position_ids    0     1     2     3     0     1     2     3
    attention_mask  1     1     1     0     1     1     0     0
    seq_lengths   [4, 4]

The pads trail their sequence, so under causal attention no real token sees them: every real
token's logits are those of its sequence alone (tests/tokens/test_isolation.py).

`plan_bins` decides which sequences share a row (best-fit decreasing), `pad_sequences` pads a
flat batch of sequences, `packing_stats` says how full the rows are; `output.write_packed`
builds the packed rows column-wise (checked against the one-row-at-a-time reference packer in
`tests/packing_reference.py`). Nothing here imports torch: rows are
plain int lists.

Why `position_ids` are enough for isolation (transformers 5.23, see docs/packing.md): when a
model gets `position_ids` and no `attention_mask` and no KV cache, its mask builder
(`masking_utils.find_packed_sequence_indices`) starts a new sequence wherever the position
does not grow by 1, and sdpa/eager attention become block-diagonal causal. TRL's
`DataCollatorForLanguageModeling(padding_free=True)` feeds exactly that from `seq_lengths`.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

from ftdata.errors import ConfigError
from ftdata.types import IGNORE_INDEX

__all__ = [
    "PackingStats",
    "flat",
    "packing_stats",
    "pad_sequences",
    "padded_lengths",
    "plan_arrays",
    "plan_bins",
    "plan_stats",
]


def flat(lists: Sequence[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """`lists` as (every value in one int32 array, each list's length): `np.fromiter` over a chain, its size given,
    writes each value once (numpy 2: 35% less time than a list made first and converted)."""
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    return np.fromiter(chain.from_iterable(lists), dtype=np.int32, count=int(lengths.sum())), lengths


def _check_max_length(max_length: int) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length <= 0:
        raise ConfigError(f"max_length must be an integer > 0, got max_length={max_length!r}")


def padded_lengths(lengths: Sequence[int] | np.ndarray, *, multiple: int | None) -> np.ndarray:
    """Each length rounded up to a multiple of `multiple` (as is for None):
    `padded_lengths([3, 2, 4, 5], multiple=4)` -> [4, 4, 4, 8]."""
    sizes = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if multiple is None or multiple == 1:
        return sizes
    return -(-sizes // multiple) * multiple


def pad_sequences(
    ids: np.ndarray, labels: np.ndarray, seq_len: np.ndarray, *, multiple: int | None, pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pad each of the sequences laid end to end in `ids`/`labels` (lengths `seq_len`) at its
    end up to a multiple of `multiple`: pad_id, label -100, attention 0.

    Returns `(ids, labels, attention_mask, padded_seq_len)`, columnar (no loop per sequence)::

        ids [7 8 9 4 5], seq_len [3 2], multiple 4, pad_id 0
        -> ids [7 8 9 0 4 5 0 0], attention_mask [1 1 1 0 1 1 0 0], seq_len [4 4]
    """
    padded = padded_lengths(seq_len, multiple=multiple)
    if np.array_equal(padded, seq_len):
        return ids, labels, np.ones(len(ids), dtype=np.int8), seq_len
    # Each real token moves right by the padding of the sequences before its own.
    shift = np.cumsum(padded - seq_len) - (padded - seq_len)
    dest = np.arange(len(ids)) + np.repeat(shift, seq_len)
    total = int(padded.sum())
    out_ids = np.full(total, pad_id, dtype=ids.dtype)
    out_labels = np.full(total, IGNORE_INDEX, dtype=labels.dtype)
    mask = np.zeros(total, dtype=np.int8)
    out_ids[dest], out_labels[dest], mask[dest] = ids, labels, 1
    return out_ids, out_labels, mask, padded


def plan_bins(lengths: Sequence[int], *, max_length: int, seed: int = 42) -> list[list[int]]:
    """`plan_arrays` as one list of sequence indices per bin (see there)."""
    starts, members = plan_arrays(lengths, max_length=max_length, seed=seed)
    flat = members.tolist()
    return [flat[a:b] for a, b in zip(starts[:-1].tolist(), starts[1:].tolist())]


def plan_arrays(
    lengths: Sequence[int] | np.ndarray, *, max_length: int, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """Group sequence indices into bins whose total length is <= `max_length` (best-fit decreasing).

    Returns `(starts, members)`: bin `j` holds the sequence indices
    `members[starts[j]:starts[j + 1]]`. Two integer arrays, so a plan for millions of
    sequences costs ~16 bytes per sequence, not a Python list per bin.

    Sequences are placed longest first; each goes into the open bin with the *least* room
    that still fits it, or opens a new bin. Open bins are kept in buckets keyed by their
    remaining room, with the distinct rooms in a sorted list, so each placement is one
    `bisect`: O(n log n) overall, ~0.4 s for 200k sequences.

    Deterministic for a given `seed`: ties between equal lengths are broken by a seeded
    shuffle (so equal-length sequences from one source file do not always land together),
    and the order of the returned bins is shuffled with the same seed. Inside a bin the
    indices are ascending (source order).

        lengths [5, 3, 4, 2, 6], max_length 8, seed 42  ->  [[0, 1], [2], [3, 4]]
        (6 opens a bin, 5 and 4 open two more, 3 fills the 5's bin, 2 fills the 6's)
        as arrays: starts [0, 2, 3, 5], members [0, 1, 2, 3, 4]

    Raises:
        ConfigError: `max_length` <= 0, a length < 1, or a length > `max_length` (truncate
            or split it first: `truncation="split"`).
    """
    _check_max_length(max_length)
    sizes = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if sizes.size == 0:
        return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    bad = np.flatnonzero((sizes < 1) | (sizes > max_length))
    if bad.size:
        i = int(bad[0])
        raise ConfigError(
            f"every sequence length must be between 1 and max_length={max_length}; "
            f"sequence {i} has {int(sizes[i])} tokens ({bad.size} out of range). "
            "Truncate or split long rows before packing, and drop empty ones."
        )
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(sizes.size)
    # A stable sort of a seeded shuffle: longest first, equal lengths in seeded order.
    order = shuffled[np.argsort(-sizes[shuffled], kind="stable")]
    del shuffled  # each array freed once used: a build's peak memory is this plan's (~30 bytes a sequence)
    bin_of = _best_fit(order, sizes, max_length)
    del order
    # Bins in a seeded order (position j holds bin perm[j]), indices ascending inside each: a stable sort
    # by position of the bin (int32: 4 bytes a sequence).
    perm = rng.permutation(int(bin_of.max()) + 1)
    rank = np.argsort(perm).astype(np.int32)[bin_of]
    del bin_of
    members = np.argsort(rank, kind="stable")
    ends = np.flatnonzero(np.diff(rank[members])) + 1
    return np.concatenate([[0], ends, [sizes.size]]), members


def _best_fit(order: np.ndarray, sizes: np.ndarray, max_length: int, chunk: int = 65_536) -> np.ndarray:
    """The bin of each sequence when `order` (indices, longest first) is placed by best fit.

    Bins are numbered in opening order. The loop is Python over plain ints, fed a chunk at a
    time, and bins are kept as one int32 per sequence (not a list per bin), so memory beyond
    the lengths stays a few bytes per sequence.
    """
    bin_of = np.empty(sizes.size, dtype=np.int32)
    n_bins = 0
    rooms: list[int] = []  # sorted distinct remaining capacities that some open bin has
    open_bins: dict[int, list[int]] = {}  # remaining capacity -> ids of the bins with it
    for start in range(0, order.size, chunk):
        part = order[start : start + chunk]
        placed = []
        for size in sizes[part].tolist():
            k = bisect_left(rooms, size)
            if k == len(rooms):
                b = n_bins
                n_bins += 1
                room = max_length - size
            else:
                room = rooms[k]
                same_room = open_bins[room]
                b = same_room.pop()
                if not same_room:
                    del open_bins[room]
                    del rooms[k]
                room -= size
            placed.append(b)
            if room:  # a full bin is closed for good
                waiting = open_bins.get(room)
                if waiting is None:
                    open_bins[room] = [b]
                    insort(rooms, room)
                else:
                    waiting.append(b)
        bin_of[part] = placed
    return bin_of


@dataclass(frozen=True, slots=True)
class PackingStats:
    """How well a packing plan fills its rows."""

    rows: int
    """Packed rows (bins)."""
    sequences: int
    """Sequences placed in the rows."""
    tokens: int
    """Real tokens in the rows."""
    slots: int
    """Token slots: `rows * max_length`."""
    fill_ratio: float
    """`tokens / slots` (0.0 when there are no rows)."""
    sequences_per_row: float
    """Mean sequences per row."""
    max_sequences_per_row: int
    """Most sequences in one row."""
    trained_tokens: int | None
    """Tokens that carry loss, when the caller counted them."""

    @classmethod
    def of(
        cls,
        *,
        rows: int,
        sequences: int,
        tokens: int,
        slots: int,
        max_sequences_per_row: int,
        trained_tokens: int | None,
    ) -> PackingStats:
        """The stats of these counts, with the ratios worked out from them."""
        return cls(
            rows=rows,
            sequences=sequences,
            tokens=tokens,
            slots=slots,
            fill_ratio=tokens / slots if slots else 0.0,
            sequences_per_row=sequences / rows if rows else 0.0,
            max_sequences_per_row=max_sequences_per_row,
            trained_tokens=trained_tokens,
        )

    def __add__(self, other: PackingStats) -> PackingStats:
        """The stats of both sets of rows taken together (shards packed apart, each its own rows)."""
        return PackingStats.of(
            rows=self.rows + other.rows,
            sequences=self.sequences + other.sequences,
            tokens=self.tokens + other.tokens,
            slots=self.slots + other.slots,
            max_sequences_per_row=max(self.max_sequences_per_row, other.max_sequences_per_row),
            trained_tokens=None
            if self.trained_tokens is None or other.trained_tokens is None
            else self.trained_tokens + other.trained_tokens,
        )

    def __str__(self) -> str:
        trained = f", {self.trained_tokens:,} trained" if self.trained_tokens is not None else ""
        return (
            f"{self.sequences:,} sequences -> {self.rows:,} rows ({self.tokens:,} tokens{trained}); "
            f"fill {self.fill_ratio:.2%}, {self.sequences_per_row:.2f} sequences/row (max {self.max_sequences_per_row})"
        )


def packing_stats(
    lengths: Sequence[int],
    bins: Sequence[Sequence[int]],
    *,
    max_length: int,
    trained_tokens: int | None = None,
) -> PackingStats:
    """Fill and shape of a packing plan from `plan_bins(lengths, max_length=max_length)`.

        lengths [5, 3, 4, 2, 6], bins [[2], [0, 1], [3, 4]], max_length 8
        -> rows 3, tokens 20, slots 24, fill_ratio 0.833, sequences_per_row 1.67, max 2

    `trained_tokens` is passed through (count it on the packed labels, after the first
    label of each sequence was masked).

    Raises:
        ConfigError: `max_length` <= 0 or a bin holds more than `max_length` tokens.
    """
    counts = np.fromiter((len(members) for members in bins), dtype=np.int64, count=len(bins))
    members = np.fromiter((i for b in bins for i in b), dtype=np.int64, count=int(counts.sum()))
    starts = np.concatenate([[0], np.cumsum(counts)])
    return plan_stats(lengths, starts, members, max_length=max_length, trained_tokens=trained_tokens)


def plan_stats(
    lengths: Sequence[int] | np.ndarray,
    starts: np.ndarray,
    members: np.ndarray,
    *,
    max_length: int,
    trained_tokens: int | None = None,
) -> PackingStats:
    """`packing_stats` of a plan in the array form of `plan_arrays` (no Python object per bin).

    Raises:
        ConfigError: `max_length` <= 0 or a bin holds more than `max_length` tokens.
    """
    _check_max_length(max_length)
    rows = len(starts) - 1
    counts = np.diff(starts)
    sizes = np.asarray(lengths, dtype=np.int64).reshape(-1)[members]
    cumulative = np.concatenate([[0], np.cumsum(sizes)])
    per_bin = cumulative[starts[1:]] - cumulative[starts[:-1]]
    over = np.flatnonzero(per_bin > max_length)
    if over.size:
        b = int(over[0])
        raise ConfigError(f"bin {b} holds {int(per_bin[b])} tokens, more than max_length={max_length}")
    return PackingStats.of(
        rows=rows,
        sequences=int(counts.sum()),
        tokens=int(per_bin.sum()),
        slots=rows * max_length,
        max_sequences_per_row=int(counts.max()) if rows else 0,
        trained_tokens=trained_tokens,
    )
