"""Output: token rows -> Arrow -> `datasets.Dataset`, with split, packing, padding and cache.

Everything here is columnar (numpy + pyarrow): no per-token Python loops.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ftdata.errors import ConfigError, FtdataError
from ftdata.options import DataOptions
from ftdata.media.column import MEDIA_FIELD, MEDIA_TYPE, checked_media, media_column, pack_media, shift_media
from ftdata.tokens.layouts import PACKED, POSITIONS, TREE, WEIGHTS, layout_of
from ftdata.tokens.packing import PackingStats, pad_sequences, padded_lengths, plan_arrays, plan_stats
from ftdata.run.report import BuildReport
from ftdata.types import IGNORE_INDEX


def list_column(offsets: np.ndarray, values: np.ndarray) -> pa.ListArray:
    """One Arrow list column: row i holds values[offsets[i]:offsets[i + 1]]."""
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))


RECORD = (
    "record_index"  # scratch column: the running index of the record a sequence came from (dropped from every output)
)
# The record a row came from, as its location (`data.jsonl:12`): in every unpacked SFT output, so the rows of a
# record split by history=inference (or cut by truncation=split) can be grouped and found in the source.
SOURCE = "record"
# Per-token loss weights (`ftdata.chat.supervision`, `ftdata.tokens.layouts.WEIGHTS`): in the output only when a build
# has any; in the rows file a row without weights holds an empty list (1 for every token).
# The layout columns (`position_ids`, `seq_lengths`, `tree_lengths`) and their schemas are the layouts'
# (`ftdata.tokens.layouts`).


class ArrowRows:
    """Streams (input_ids, labels) rows into an Arrow IPC file that `Dataset.from_file` maps.

    Each row also carries the running index of the record it came from (`RECORD`), so the
    held-out split can keep a record's pieces (`truncation=split`, `instances`) together.
    """

    SCHEMA = pa.schema(
        [
            ("input_ids", pa.list_(pa.int32())),
            ("attention_mask", pa.list_(pa.int8())),
            ("labels", pa.list_(pa.int32())),
            (SOURCE, pa.string()),
            (RECORD, pa.int64()),
        ]
    )

    WRITTEN = SCHEMA.append(pa.field(WEIGHTS, pa.list_(pa.float32())))

    def __init__(self, path: Path, *, media: bool = False, tree: bool = False):
        self.path = path
        self.rows = 0
        self.records = 0  # records written before the current batch
        self.weighted = False  # a row with loss weights was written (and the marker file beside)
        self.schema = self.WRITTEN.append(pa.field(MEDIA_FIELD, MEDIA_TYPE)) if media else self.WRITTEN
        self.schema = TREE.schema(self.schema) if tree else self.schema
        self.tree = tree
        self._writer = pa.ipc.new_stream(str(path), self.schema)

    def write(
        self,
        ids: np.ndarray,
        labels: np.ndarray,
        lengths: np.ndarray,
        groups: np.ndarray,
        weights: np.ndarray | None = None,
        *,
        media: list[Any] | None = None,
        sources: list[str] | None = None,
        positions: np.ndarray | None = None,
    ) -> None:
        """One batch's sequences; `groups` is each one's record index within the batch, `sources` its record's
        location; `weights` per token, if any; `media` each one's `media` column (a build with a processor)."""
        base, self.records = self.records, self.records + (int(groups.max()) + 1 if len(groups) else 0)
        if not len(lengths):
            return
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        if weights is None:  # an empty list per row: 4 bytes of offsets a row
            weights, w_offsets = np.zeros(0, dtype=np.float32), np.zeros(len(offsets), dtype=np.int64)
        else:
            w_offsets = offsets
        batch = pa.record_batch(
            [
                list_column(offsets, ids),
                list_column(offsets, np.ones(len(ids), dtype=np.int8)),
                list_column(offsets, labels),
                pa.array(sources if sources is not None else [""] * len(lengths), type=pa.string()),
                pa.array(groups + base),
                list_column(w_offsets, weights),
                *([pa.array(media, type=MEDIA_TYPE)] if MEDIA_FIELD in self.schema.names else []),
                *(_tree_columns(offsets, lengths, positions) if self.tree else []),
            ],
            schema=self.schema,
        )
        self._writer.write_batch(batch)
        self.rows += len(lengths)
        if len(weights) and not self.weighted:
            self.weighted = True
            _weighted(self.path).touch()

    def add(self, part: Any) -> None:
        """A build's part of one batch (`ftdata.run.sft.SftPart`)."""
        self.write(
            part.ids,
            part.labels,
            part.lengths,
            part.groups,
            part.weights,
            media=part.media,
            sources=part.sources,
            positions=part.positions,
        )

    def close(self) -> None:
        self._writer.close()


TOKENS_SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.int32())),
        ("attention_mask", pa.list_(pa.int8())),
        ("labels", pa.list_(pa.int32())),
    ]
)
PACKED_SCHEMA = PACKED.schema(TOKENS_SCHEMA)


def _tree_columns(offsets: np.ndarray, lengths: np.ndarray, positions: np.ndarray | None) -> list[pa.Array]:
    """A tree rows file's own columns: each token's depth, each row's one tree length."""
    if positions is None or len(positions) != offsets[-1]:
        raise FtdataError("tree rows need a depth per token (position_ids); this is a bug in ftdata")
    one = np.arange(len(lengths) + 1, dtype=np.int64)
    return [list_column(offsets, positions.astype(np.int32)), list_column(one, lengths.astype(np.int32))]


class RowsFile:
    """The rows file (an Arrow IPC stream) for packing and splitting, its tokens read on demand.

    Packing reads rows scattered over the whole file, in plan order. Read through a memory
    mapping, every touched page stays in this process's RSS, and the kernel maps a whole large
    folio (up to 2 MiB) per touch: peak RSS grew with the file (5 GiB at 2M records) though the
    pages are clean. So the file is never mapped: one sequential pass keeps the small per-row
    facts, and `gather` reads a batch's tokens with `preadv` straight into its output array. The
    tokens go through the page cache, never into this process's RSS.

    What stays in memory is 12 bytes a row: each row's length (int32) and the byte position of its
    first token (int64); a row's labels sit at a fixed distance from its ids within its record batch
    (one number a batch). Each row's record index (8 bytes) is read only when a split asks for it
    (`groups`), and the loss-weight positions (16 bytes) only in a build that has any.
    """

    COLUMNS: tuple[str, ...] = ("input_ids", "labels")

    def __init__(self, path: Path):
        self.path = path
        with pa.OSFile(str(path)) as fh:
            self.tree = layout_of(pa.ipc.read_schema(fh).names) is TREE
        self.COLUMNS = (*self.COLUMNS, POSITIONS) if self.tree else self.COLUMNS
        lengths: list[np.ndarray] = []
        starts: list[np.ndarray] = []
        shifts: dict[str, list[int]] = {name: [] for name in self.COLUMNS}  # per batch: column start - ids start
        firsts: list[int] = []  # per batch: its first row
        w_starts: list[np.ndarray] = []
        w_lengths: list[np.ndarray] = []
        rows = 0
        with pa.memory_map(str(path)) as fh:  # batches read in place: their bodies are the page cache's
            schema = pa.ipc.read_schema(fh)
            while (message := _next_message(fh)) is not None:
                body = fh.tell() - message.body.size  # file position of the batch's buffers
                batch = pa.ipc.read_record_batch(message, schema)
                shift = body - message.body.address
                ids = _byte_starts(batch.column("input_ids"), shift)
                starts.append(ids)
                for name in self.COLUMNS:
                    shifts[name].append(int(_byte_starts(batch.column(name), shift)[0] - ids[0]) if len(ids) else 0)
                firsts.append(rows)
                rows += batch.num_rows
                lengths.append(np.diff(batch.column("input_ids").offsets.to_numpy()).astype(np.int32))
                if WEIGHTS in schema.names and np.diff((column := batch.column(WEIGHTS)).offsets.to_numpy()).any():
                    w_starts.append(_byte_starts(column, body - message.body.address))
                    w_lengths.append(np.diff(column.offsets.to_numpy()).astype(np.int64))
                elif w_starts:  # a batch without weights after one with: its rows weigh 1
                    w_starts.append(np.zeros(batch.num_rows, dtype=np.int64))
                    w_lengths.append(np.zeros(batch.num_rows, dtype=np.int64))
        self.lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int32)
        del lengths
        self._starts = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
        del starts
        self._firsts = np.asarray(firsts, dtype=np.int64)
        self._shifts = {name: np.asarray(values, dtype=np.int64) for name, values in shifts.items()}
        # Rows with loss weights (the others weigh 1 everywhere): their byte positions and lengths.
        self.weighted = bool(w_starts)
        if self.weighted:
            # the batches before the first with weights: none
            lead = np.zeros(len(self.lengths) - sum(len(w) for w in w_starts), dtype=np.int64)
            self._w_starts = np.concatenate([lead, *w_starts])
            self._w_lengths = np.concatenate([lead, *w_lengths])
        self._groups: np.ndarray | None = None
        self._dtypes = {name: np.dtype(schema.field(name).type.value_type.to_pandas_dtype()) for name in self.COLUMNS}
        self._record = RECORD in schema.names

    @property
    def groups(self) -> np.ndarray:
        """The record of every row (no such column: each row is its own record), read from the file when first asked."""
        if self._groups is None:
            if not self._record:
                self._groups = np.arange(len(self.lengths))
            else:
                with pa.OSFile(str(self.path)) as fh, pa.ipc.open_stream(fh) as reader:
                    # a copy per batch: a view would keep the whole batch in memory
                    parts = [batch.column(RECORD).to_numpy().copy() for batch in reader]
                self._groups = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return self._groups

    def gather(self, name: str, rows: np.ndarray) -> np.ndarray:
        """The tokens of column `name` of `rows`, one row after another, as one flat array."""
        dtype = self._dtypes[name]
        nbytes = self.lengths[rows].astype(np.int64) * dtype.itemsize
        out = np.empty(int(nbytes.sum()) // dtype.itemsize, dtype=dtype)
        view = out.data.cast("B")
        dest = 0
        batch = np.searchsorted(self._firsts, rows, side="right") - 1
        positions = self._starts[rows] + self._shifts[name][batch]
        with self.path.open("rb", buffering=0) as fh:
            fd = fh.fileno()
            for position, n in zip(positions.tolist(), nbytes.tolist()):
                if os.preadv(fd, [view[dest : dest + n]], position) != n:
                    raise FtdataError(f"{self.path}: the rows file changed while ftdata was packing it; build again")
                dest += n
        return out

    def gather_weights(self, rows: np.ndarray) -> np.ndarray:
        """The loss weights of `rows` as one flat float32 array, 1 for the tokens of a row without weights."""
        lengths = self.lengths[rows].astype(np.int64)
        out = np.ones(int(lengths.sum()), dtype=np.float32)
        if not self.weighted:
            return out
        view = out.data.cast("B")
        dest = np.concatenate([[0], np.cumsum(lengths)[:-1]]) * 4
        with self.path.open("rb", buffering=0) as fh:
            for row, at in zip(rows.tolist(), dest.tolist()):
                n = int(self._w_lengths[row]) * 4
                if n and os.preadv(fh.fileno(), [view[at : at + n]], int(self._w_starts[row])) != n:
                    raise FtdataError(f"{self.path}: the rows file changed while ftdata was packing it; build again")
        return out


def _next_message(fh: Any) -> Any:
    try:
        return pa.ipc.read_message(fh)
    except EOFError:  # the end-of-stream marker
        return None


def _byte_starts(column: pa.Array, shift: int) -> np.ndarray:
    """File position of the first token of every row of a `list<int>`
    column whose buffers sit at address + `shift` in the file."""
    values = column.values
    itemsize = values.type.bit_width // 8
    first = values.buffers()[1].address + shift + values.offset * itemsize
    return first + column.offsets.to_numpy()[:-1].astype(np.int64) * itemsize


def _ranges(n: np.ndarray) -> np.ndarray:
    """[0..n0), [0..n1), ... concatenated, as int32: `_ranges([2, 3])` -> [0, 1, 0, 1, 2].

    One array and one running sum over it: ones, with each range's first step going back to 0.
    """
    n = n[n > 0]
    out = np.ones(int(n.sum()), dtype=np.int32)
    if out.size:
        out[0] = 0
        out[np.cumsum(n[:-1])] = 1 - n[:-1]
        np.cumsum(out, out=out)
    return out


def _pack_bins(
    source: RowsFile,
    starts: np.ndarray,
    members: np.ndarray,
    *,
    pad_to_multiple_of: int | None = None,
    pad_id: int = 0,
    media: pa.ListArray | None = None,
) -> tuple[pa.RecordBatch, int]:
    """One record batch of packed rows: bin j holds rows
    `members[starts[j]:starts[j + 1]]`; and its trained-token count."""
    seq_len = source.lengths[members]
    ids = source.gather("input_ids", members)
    labels = source.gather("labels", members)
    seq_start = np.concatenate([[0], np.cumsum(seq_len)[:-1]])
    labels[seq_start] = IGNORE_INDEX
    weights = source.gather_weights(members) if source.weighted else None
    if weights is not None:  # padded like the ids (pad weight 0)
        weights = pad_sequences(weights, weights, seq_len, multiple=pad_to_multiple_of, pad_id=0)[0]
    depths = source.gather(POSITIONS, members) if source.tree else None  # a tree's own positions: its depths
    if depths is not None:  # a pad is a root of its own (masked out by attention_mask)
        depths = pad_sequences(depths, depths, seq_len, multiple=pad_to_multiple_of, pad_id=0)[0]
    ids, labels, mask, seq_len = pad_sequences(ids, labels, seq_len, multiple=pad_to_multiple_of, pad_id=pad_id)
    position_ids = _ranges(seq_len) if depths is None else depths.astype(np.int32)
    row_offsets = np.concatenate([[0], np.cumsum(seq_len)])[starts]
    columns_out = [
        list_column(row_offsets, ids),
        list_column(row_offsets, mask),
        list_column(row_offsets, labels),
        list_column(row_offsets, position_ids),
        list_column(starts, seq_len.astype(np.int32)),
    ]
    if weights is not None:
        columns_out.append(list_column(row_offsets, weights))
    if media is not None:  # the media items follow their sequences, `start` moved to the packed row
        columns_out.append(pack_media(media, members, seq_len, starts))
    schema = _packed_schema(weights is not None, media=media is not None)
    schema = TREE.schema(schema) if source.tree else schema
    return pa.record_batch(columns_out, schema=schema), int((labels != IGNORE_INDEX).sum())


def _packed_schema(weighted: bool, *, media: bool = False) -> pa.Schema:
    schema = PACKED_SCHEMA.append(pa.field(WEIGHTS, pa.list_(pa.float32()))) if weighted else PACKED_SCHEMA
    return schema.append(pa.field(MEDIA_FIELD, MEDIA_TYPE)) if media else schema


def write_packed(
    source: RowsFile,
    path: Path,
    *,
    max_length: int,
    seed: int,
    rows: np.ndarray | None = None,
    batch_rows: int = 2048,
    pad_to_multiple_of: int | None = None,
    pad_id: int = 0,
    media: pa.ListArray | None = None,
) -> PackingStats:
    """Pack the rows of `source` (or its `rows`, a split's indices) into rows of at most `max_length` tokens.

    Same result as the reference packer (`pack_rows` in tests/packing_reference.py) applied to
    each bin of `packing.plan_bins`, built
    column-wise a batch of bins at a time from the plan's arrays (memory stays bounded by
    `batch_rows` bins plus ~56 bytes per sequence): the first label of every sequence becomes
    -100 and position_ids restart; with `pad_to_multiple_of`, bins are planned and rows built
    on the padded lengths (`packing.pad_sequences`). Returns the packing stats (fill counts
    real tokens, not pads). `media` (the `media` column of `source`'s rows, `column.MEDIA_TYPE`)
    adds the packed rows' items in pack order.
    """
    if media is not None:
        media = checked_media(media, source.lengths)
    lengths = source.lengths
    if rows is not None:
        rows = rows.astype(np.int64, copy=False)  # a datasets indices mapping is uint64 (a mixture's is int64 already)
        lengths = lengths[rows]
    starts, members = plan_arrays(
        padded_lengths(lengths, multiple=pad_to_multiple_of), max_length=max_length, seed=seed
    )
    trained = 0
    schema = _packed_schema(source.weighted, media=media is not None)
    with pa.ipc.new_stream(str(path), TREE.schema(schema) if source.tree else schema) as sink:
        for first in range(0, len(starts) - 1, batch_rows):
            last = min(first + batch_rows, len(starts) - 1)
            bounds = starts[first : last + 1]
            picked = members[bounds[0] : bounds[-1]]  # into `lengths`: the file's rows are `rows[picked]`
            batch, n = _pack_bins(
                source,
                bounds - bounds[0],
                picked if rows is None else rows[picked],  # a batch's, not a whole-length copy up front
                pad_to_multiple_of=pad_to_multiple_of,
                pad_id=pad_id,
                media=media,
            )
            sink.write_batch(batch)
            trained += n
    return plan_stats(lengths, starts, members, max_length=max_length, trained_tokens=trained)


def check_padding(rows: int, max_length: int) -> None:
    """Refuse padding that would not fit in memory (int32 ids and labels, int8 mask: rows x max_length).

    Raises:
        ConfigError: with the size it would take and the way out.
    """
    from ftdata.guard.limits import env_name, limits

    need, budget = rows * max_length * 9, limits().pad_bytes
    if need > budget:
        raise ConfigError(
            f"padding={rows} rows to max_length={max_length} needs {need / 2**30:.1f} GiB (limit "
            f"{budget / 2**30:.1f} GiB, {env_name('pad_bytes')}); lower max_length, or leave padding=none and "
            "pad per batch in the collator"
        )


def pad_table(table: pa.Table, *, max_length: int, pad_id: int, side: str) -> pa.Table:
    """Pad every row to `max_length`: pad_id / attention 0 / label -100, left or right."""
    n = table.num_rows
    check_padding(n, max_length)
    lengths = pc.list_value_length(table["input_ids"]).to_numpy().astype(np.int64)
    out = {}
    padded = (("input_ids", pad_id), ("attention_mask", 0), ("labels", IGNORE_INDEX), (WEIGHTS, 0.0))
    for name, fill in (p for p in padded if p[0] in table.column_names):
        flat = pc.list_flatten(table[name]).to_numpy()
        grid = np.full((n, max_length), fill, dtype=flat.dtype)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        for r in range(n):
            row = flat[starts[r] : starts[r] + lengths[r]]
            if side == "right":
                grid[r, : len(row)] = row
            else:
                grid[r, max_length - len(row) :] = row
        out[name] = list_column(np.arange(n + 1) * max_length, grid.reshape(-1))
    if MEDIA_FIELD in table.column_names:  # media unchanged on the right; moved by the pads on the left
        media = table[MEDIA_FIELD].combine_chunks()
        out[MEDIA_FIELD] = media if side == "right" else shift_media(media, max_length - lengths)
    for name in (SOURCE, RECORD):  # per row, not per token: unchanged
        if name in table.column_names:
            out[name] = table[name].combine_chunks()
    return pa.table(out)


def check_split(n: int, test_size: float | int) -> int:
    """How many of `n` records go to test; both splits must get at least one (test = ceil, as `train_test_split`).

    Raises:
        ConfigError: naming the count and what each split would get.
    """
    n_test = test_size if isinstance(test_size, int) else math.ceil(test_size * n)
    if n_test >= n or n_test < 1:
        raise ConfigError(
            f"test_size={test_size} of {n} records leaves {max(n - n_test, 0)} for training and {n_test} for test; "
            "each split needs at least one: lower test_size or add data"
        )
    return n_test


def split_by_record(groups: np.ndarray, test_size: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) positions into `groups` (the record of each row, in order): pieces of a cut record never leak.

    Records, not sequences, are drawn for test (seeded); each split keeps the rows' order
    (shuffled when `shuffle` was asked for).
    """
    records = np.unique(groups)
    n_test = check_split(len(records), test_size)
    test = np.isin(groups, np.random.default_rng(seed).choice(records, size=n_test, replace=False))
    return np.flatnonzero(~test), np.flatnonzero(test)


def finish(
    path: Path,
    options: DataOptions,
    report: BuildReport,
    *,
    pad_id: int = 0,
    splits: dict[str, np.ndarray] | None = None,
) -> Any:
    """Arrow file -> Dataset or DatasetDict, shuffled, split, packed or padded per options.

    `splits`: the rows of each split as indices into the file (a row may repeat), chosen by
    the caller (a recipe's mixture); then the options' shuffle and test_size are not applied.
    """
    import datasets

    # What packing and splitting read of the rows, without mapping the tokens into this process.
    source = RowsFile(path) if options.packing or options.test_size is not None else None
    dataset = (
        None if options.packing else datasets.Dataset.from_file(str(_filled_weights(path)))
    )  # packed rows come from `source`
    picks = dict(splits) if splits is not None else _splits(source, dataset, options)
    media = media_column(path) if options.packing else None  # a build's media items follow their sequences
    out: dict[str, Any] = {}
    for name, rows in picks.items():
        target = path.with_name(f"{name}.arrow")
        if source is not None and options.packing:
            report.packing = report.packing or {}
            report.packing[name] = write_packed(
                source,
                target,
                max_length=options.max_length,
                seed=options.seed,
                rows=rows,
                pad_to_multiple_of=options.pad_to_multiple_of,
                pad_id=pad_id,
                media=media,
            )
            split = datasets.Dataset.from_file(str(target))
        else:
            assert dataset is not None  # rows that are not packed: read from the file above
            split = dataset if rows is None else dataset.select(rows)
            if options.padding == "max_length":
                padded = pad_table(
                    split.with_format("arrow")[:],
                    max_length=options.max_length,
                    pad_id=pad_id,
                    side=options.padding_side,
                )
                with pa.ipc.new_stream(str(target), padded.schema) as sink:
                    sink.write_table(padded)
                split = datasets.Dataset.from_file(str(target))
        scratch = [
            c for c in (RECORD, WEIGHTS) if c in split.column_names and (c == RECORD or not _weighted(path).exists())
        ]
        out[name] = split.remove_columns(scratch) if scratch else split
    report.rows = sum(len(s) for s in out.values())
    report.splits = {name: len(s) for name, s in out.items()}
    return datasets.DatasetDict(out) if len(out) > 1 or options.test_size is not None else out["train"]


def _weighted(path: Path) -> Path:
    """The marker `ArrowRows` leaves beside a rows file that holds loss weights."""
    return path.with_name(f"{path.name}.weighted")


def _filled_weights(path: Path) -> Path:
    """The rows file with every row's loss weights written out (1 where a row has none), or `path`
    itself when no row has any: only a weighted build pays for this pass."""
    if not _weighted(path).exists():
        return path
    target = path.with_name(f"{path.stem}-weighted.arrow")
    with pa.ipc.open_stream(str(path)) as reader, pa.ipc.new_stream(str(target), reader.schema) as sink:
        at = reader.schema.get_field_index(WEIGHTS)
        for batch in reader:
            offsets = batch.column("input_ids").offsets.to_numpy().astype(np.int64)
            column = batch.column(WEIGHTS)
            w_offsets, values = column.offsets.to_numpy(), column.values.to_numpy(zero_copy_only=False)
            out = np.ones(int(offsets[-1] - offsets[0]), dtype=np.float32)
            for r in np.flatnonzero(np.diff(w_offsets)):  # rows with weights: copied; the others stay 1
                out[offsets[r] - offsets[0] : offsets[r + 1] - offsets[0]] = values[
                    w_offsets[r] - w_offsets[0] : w_offsets[r + 1] - w_offsets[0]
                ]
            sink.write_batch(batch.set_column(at, WEIGHTS, list_column(offsets - offsets[0], out)))
    return target


def _splits(source: RowsFile | None, dataset: Any, options: DataOptions) -> dict[str, np.ndarray | None]:
    """Each split's rows as indices into the rows file (None: every row in file order): shuffled, split by record."""
    n = len(source.lengths) if source is not None else len(dataset)
    return record_splits(n, lambda: source.groups, options)  # type: ignore[union-attr]  # read only with test_size


def record_splits(n: int, records: Callable[[], np.ndarray], options: DataOptions) -> dict[str, np.ndarray | None]:
    """The splits of `n` rows as indices into them (None: every row in order): shuffled with `options.seed`
    when asked, and with test_size split by record (`records()`: each row's record), so no record straddles."""
    # Row order as indices into the rows file (None: file order), the permutation of `Dataset.shuffle(seed)`.
    order = np.random.default_rng(options.seed).permutation(n) if options.shuffle else None
    if options.test_size is None:
        return {"train": order}
    groups = records() if order is None else records()[order]
    train, test = split_by_record(groups, options.test_size, options.seed)  # positions in `order`
    return {"train": train if order is None else order[train], "test": test if order is None else order[test]}


def finish_rows(
    path: Path, options: DataOptions, report: BuildReport, *, splits: dict[str, np.ndarray] | None = None
) -> Any:
    """A rows file of whole rows (pairs, KTO rows, prompts: nothing to pack or pad) as a Dataset (or DatasetDict
    with test_size): shuffled and split by record as `options` say, or into `splits` (indices into the file, a
    row may repeat: a recipe's mixture); the record column dropped."""
    import datasets

    dataset = datasets.Dataset.from_file(str(path))
    picks = (
        dict(splits)
        if splits is not None
        else record_splits(len(dataset), lambda: np.asarray(dataset.data.column(RECORD)), options)
    )
    out = {
        name: (dataset if rows is None else dataset.select(rows)).remove_columns([RECORD])
        for name, rows in picks.items()
    }
    report.rows = sum(len(split) for split in out.values())
    report.splits = {name: len(split) for name, split in out.items()}
    return datasets.DatasetDict(out) if len(out) > 1 or options.test_size is not None else out["train"]
