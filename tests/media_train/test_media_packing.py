"""The media column through packing (no model): literal rows, the span checks, and the
collator's typed errors when an item's features, its span and its `tokens` disagree."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftdata.errors import ConfigError, RecordError
from ftdata.media.column import MEDIA_TYPE, checked_media, pack_media


def image(start: int, tokens: int, ref: str = "/x.png") -> dict:
    return {"kind": "image", "ref": ref, "start": start, "tokens": tokens, "width": 10, "height": 20, "seconds": None}


def test_items_follow_their_sequences_with_start_moved():
    #  A = a0 [3 pads] a4        B = b0 b1 [2 pads] b4        C = c0 c1 (no image)
    images = pa.array([[image(1, 3, "/a.png")], [image(2, 2, "/b.png")], []], type=MEDIA_TYPE)
    # one bin [A, B], one bin [C]
    out = pack_media(images, np.array([0, 1, 2]), np.array([5, 5, 2]), np.array([0, 2, 3])).to_pylist()
    assert out == [[image(1, 3, "/a.png"), image(7, 2, "/b.png")], []]
    # the same sequences in the other order: B first, so A's image moves by B's length
    out = pack_media(images, np.array([1, 0]), np.array([5, 5]), np.array([0, 2])).to_pylist()
    assert out == [[image(2, 2, "/b.png"), image(6, 3, "/a.png")]]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 30), st.integers(0, 3)), min_size=1, max_size=12), st.integers(0, 2**16))
def test_every_item_lands_on_its_own_tokens(spec, seed):
    # invariant: after packing, the packed row's tokens at each image's new start are that image's tokens
    rng = np.random.default_rng(seed)
    rows, images = [], []
    for n, k in spec:
        ids, spans = list(rng.integers(0, 50, n)), []
        for j in range(k):
            start = len(ids)
            tokens = int(rng.integers(1, 4))
            ids += [1000 + len(rows) * 10 + j] * tokens
            spans.append(image(start, tokens))
        rows.append(ids)
        images.append(spans)
    order = rng.permutation(len(rows))
    cuts = np.sort(rng.choice(np.arange(1, len(rows)), size=min(2, len(rows) - 1), replace=False)) if len(rows) > 1 else []
    starts = np.array([0, *cuts, len(rows)])
    seq_len = np.array([len(rows[i]) for i in order])
    column = pa.array(images, type=MEDIA_TYPE)
    packed = pack_media(column, order, seq_len, starts).to_pylist()
    for j in range(len(starts) - 1):
        members = order[starts[j] : starts[j + 1]]
        row = [t for i in members for t in rows[i]]
        expected = [rows[i][s["start"]] for i in members for s in images[i]]
        assert [row[s["start"]] for s in packed[j]] == expected
        assert all(len(set(row[s["start"] : s["start"] + s["tokens"]])) == 1 for s in packed[j])


def test_checked_media_casts_and_refuses_bad_spans():
    wide = pa.array([[{**image(1, 2), "tokens": 2}]], type=pa.list_(pa.struct([
        ("kind", pa.string()), ("ref", pa.string()), ("start", pa.int64()), ("tokens", pa.int64()), ("width", pa.int64()),
        ("height", pa.int64()), ("seconds", pa.float32()),
    ])))  # fmt: skip
    assert checked_media(wide, np.array([4])).type == MEDIA_TYPE
    with pytest.raises(RecordError, match=r"row 0: media.*image 0 \(/x.png\) spans tokens 3..5 of a 4-token row"):
        checked_media(pa.array([[image(3, 2)]], type=MEDIA_TYPE), np.array([4]))
    with pytest.raises(RecordError, match=r"row 1: media.*image 1 .* spans tokens 2..4"):
        checked_media(pa.array([[], [image(1, 3), image(2, 2)]], type=MEDIA_TYPE), np.array([3, 9]))
    with pytest.raises(ConfigError, match="has 1 rows for 2 token rows"):
        checked_media(pa.array([[]], type=MEDIA_TYPE), np.array([3, 4]))
    with pytest.raises(ConfigError, match=r"must be a list of \{kind, ref, start, tokens, width, height, seconds\}"):
        checked_media(pa.array([[1, 2]]), np.array([3]))


def test_media_column_reads_a_rows_file(tmp_path):
    import pyarrow as pa

    from ftdata.run.rows import ArrowRows
    from ftdata.media.column import media_column

    plain = ArrowRows(tmp_path / "text.arrow")
    plain.write(np.array([1, 2, 3], dtype=np.int32), np.array([-100, 2, 3], dtype=np.int32), np.array([3]), np.array([0]))
    plain.close()
    assert media_column(tmp_path / "text.arrow") is None  # a text build: nothing to carry

    schema = ArrowRows.SCHEMA.append(pa.field("media", MEDIA_TYPE))
    rows = [[image(1, 2, "/a.png")], [], [image(0, 1, "/b.png"), image(2, 1, "/c.png")]]
    with pa.ipc.new_stream(str(tmp_path / "media.arrow"), schema) as sink:
        for chunk in (rows[:2], rows[2:]):  # two record batches, as a build writes chunks
            n = len(chunk)
            sink.write_batch(pa.record_batch([
                pa.array([[7, 8, 9]] * n, type=pa.list_(pa.int32())), pa.array([[1, 1, 1]] * n, type=pa.list_(pa.int8())),
                pa.array([[7, 8, 9]] * n, type=pa.list_(pa.int32())), pa.array(["d.jsonl:1"] * n, type=pa.string()),
                pa.array([0] * n, type=pa.int64()), pa.array(chunk, type=MEDIA_TYPE),
            ], schema=schema))  # fmt: skip
    assert media_column(tmp_path / "media.arrow").to_pylist() == rows
