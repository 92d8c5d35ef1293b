"""The rows file packing reads (`rows.RowsFile`) holds 12 bytes a row, and still reads back every row's ids, labels,
record and loss weights exactly: batches with and without weights in any order, a split's record indices on demand."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ftdata.run.rows import ArrowRows, RowsFile
from ftdata.tokens.packing import plan_arrays


def _write(path: Path, batches: list[tuple[list[list[int]], list[list[float]] | None]]) -> None:
    rows = ArrowRows(path)
    for ids, weights in batches:
        lengths = np.array([len(r) for r in ids])
        flat = np.array([t for r in ids for t in r], dtype=np.int32)
        w = None if weights is None else np.array([x for r in weights for x in r], dtype=np.float32)
        rows.write(flat, -flat, lengths, np.arange(len(ids)), w, sources=[f"d.jsonl:{i}" for i in range(len(ids))])
    rows.close()


def test_twelve_bytes_a_row_and_every_column_read_back(tmp_path: Path) -> None:
    path = tmp_path / "rows.arrow"
    _write(path, [([[1, 2, 3], [4]], None), ([[5, 6], [7, 8, 9, 10]], None), ([[11]], None)])
    source = RowsFile(path)
    assert source.lengths.tolist() == [3, 1, 2, 4, 1]
    assert source.lengths.nbytes + source._starts.nbytes == 12 * 5
    assert source._groups is None and not source.weighted
    rows = np.array([3, 0, 4, 2])
    assert source.gather("input_ids", rows).tolist() == [7, 8, 9, 10, 1, 2, 3, 11, 5, 6]
    assert source.gather("labels", rows).tolist() == [-7, -8, -9, -10, -1, -2, -3, -11, -5, -6]
    assert source.gather_weights(rows).tolist() == [1.0] * 10
    assert source.groups.tolist() == [0, 1, 2, 3, 4]  # read when a split asks: records run on across batches


def test_weights_after_a_batch_without_and_before_one_without(tmp_path: Path) -> None:
    path = tmp_path / "rows.arrow"
    _write(path, [([[1, 2]], None), ([[3], [4, 5]], [[0.5], [2.0, 1.0]]), ([[6]], None)])
    source = RowsFile(path)
    assert source.weighted
    assert source.gather_weights(np.array([0, 1, 2, 3])).tolist() == [1.0, 1.0, 0.5, 2.0, 1.0, 1.0]


def test_the_plan_keeps_each_bin_in_source_order_with_every_sequence_once() -> None:
    """`plan_arrays` orders members by a stable sort of int32 bin ranks: indices ascend inside each bin."""
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 300, size=5000)
    starts, members = plan_arrays(lengths, max_length=1024, seed=7)
    bins = [members[a:b].tolist() for a, b in zip(starts[:-1], starts[1:])]
    assert all(b == sorted(b) for b in bins)
    assert sorted(members.tolist()) == list(range(5000))
    assert all(int(lengths[b].sum()) <= 1024 for b in bins)
