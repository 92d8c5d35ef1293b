"""The progress counter (`io/counter.py`, issue 39): it reads user bytes within the build's read bounds,
as the readers do. A line past `max_line_bytes` counts as the one record (a reject) it will be and is
never held; a JSON array is counted without being loaded; what the reader would refuse has no count."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st
from support import peak_of

from ftdata.guard.bounds import ReadBounds
from ftdata.io.counter import count_records, json_array_length
from ftdata.io.readers import read_records

MB = 1 << 20
GOOD = json.dumps({"instruction": "Say hi.", "output": "Hi!"}).encode()


def long_file(path: Path, head: bytes, megabytes: int, tail: bytes) -> Path:
    """`head`, `megabytes` MiB of 'a' (written a MiB at a time), `tail`."""
    with path.open("wb") as fh:
        fh.write(head)
        for _ in range(megabytes):
            fh.write(b"a" * MB)
        fh.write(tail)
    return path


def test_a_jsonl_line_past_the_bound_counts_as_one_record_and_is_never_held(tmp_path: Path) -> None:
    """Before: the counter read whole lines, whatever --max-line-bytes said (596 MB peak for a 200 MB
    line in `ftdata build`); it counts what the reader yields, the long line as its reject."""
    path = long_file(tmp_path / "d.jsonl", GOOD + b'\n\n{"instruction": "', 48, b'", "output": "x"}\n' + GOOD + b"\n")
    bounds = ReadBounds(line_bytes=MB)
    count, peak = peak_of(lambda: count_records(str(path), limit=None, bounds=bounds))
    assert count == 3 == len(list(read_records(path, bounds=bounds)))  # the blank line is no record
    assert peak < 8 * MB  # a MiB of the line at a time, never its 48 MiB (as the reader: test_bounds.py)


def test_a_json_array_is_counted_without_being_loaded(tmp_path: Path) -> None:
    """Before: `json.loads` of the whole file (up to 256 MB, several times that in objects)."""
    path = long_file(tmp_path / "d.json", b'[{"instruction": "q", "output": "x, [y"}, {"instruction": "', 24, b'", "output": "z"}, 3]')
    count, peak = peak_of(lambda: count_records(str(path), limit=None, bounds=ReadBounds()))
    assert count == 3
    assert peak < 8 * MB  # a few pieces of a MiB, never the 24 MiB string


def test_only_what_is_cheap_and_readable_is_counted(tmp_path: Path) -> None:
    bounds = ReadBounds(decompressed_bytes=MB)
    (tmp_path / "rows.json").write_text('{"data": [{"a": 1}, {"a": 2}]}')  # records under a key: the reader needs `field`
    (tmp_path / "lines.json").write_text('{"a": 1}\n{"a": 2}\n')  # JSON Lines in a .json file
    (tmp_path / "d.csv").write_text("a,b\n1,2\n")
    pq.write_table(pa.table({"a": [1, 2, 3, 4]}), tmp_path / "d.parquet")
    with gzip.open(tmp_path / "bomb.jsonl", "wb") as fh:  # gzip bytes behind a plain name: read as the reader reads it
        fh.write(b"\n" * (2 * MB))
    counts = {name: count_records(str(tmp_path / name), limit=None, bounds=bounds) for name in
              ("rows.json", "lines.json", "d.csv", "d.parquet", "bomb.jsonl", "missing.jsonl")}  # fmt: skip
    assert counts == {"rows.json": None, "lines.json": None, "d.csv": None, "d.parquet": 4, "bomb.jsonl": None, "missing.jsonl": None}
    assert count_records(str(tmp_path / "d.parquet"), limit=3, bounds=bounds) == 3
    assert count_records(str(tmp_path / "d.csv"), limit=3, bounds=bounds) == 3  # a bar of --limit, at most


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(alphabet='ab,[]{}"\\\n é'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='a,"\\]}', max_size=3), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    array=st.lists(json_values, max_size=6), chunk=st.integers(1, 9), ascii_only=st.booleans(),
    indent=st.sampled_from([None, 1]), bom=st.booleans(),
)  # fmt: skip
def test_the_json_array_scan_counts_what_json_loads_reads_wherever_the_pieces_are_cut(array, chunk, ascii_only, indent, bom) -> None:
    """Strings holding brackets, commas, quotes and backslashes, cut anywhere between two pieces
    (an escape's backslash at the end of one): the count is json.loads's."""
    text = json.dumps(array, ensure_ascii=ascii_only, indent=indent).encode()
    text = (b"\xef\xbb\xbf \n" if bom else b"") + text
    assert json_array_length(io.BytesIO(text), chunk=chunk) == len(json.loads(text))


def test_what_is_no_array_has_no_length() -> None:
    lengths = [json_array_length(io.BytesIO(text), chunk=2) for text in (b'{"a": [1, 2]}', b"", b"  \n", b'"[1, 2]"', b"[1, 2", b"[ \n ]")]
    assert lengths == [None, None, None, None, None, 0]
