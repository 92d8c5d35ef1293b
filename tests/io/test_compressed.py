"""Compressed inputs: gzip, zstd, bzip2 and xz files read like the files they hold, streamed and bounded."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import re
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ftdata import prepare
from ftdata.cli.app import app
from ftdata.guard.bounds import ReadBounds
from ftdata.io.compressed import data_suffix
from ftdata.errors import ReaderError, RecordError
from ftdata.guard.limits import LimitExceeded
from ftdata.io.readers import read_records

try:
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd  # type: ignore[import-not-found,no-redef]

# the `zstd` command line writes a checksum; the library does not unless asked
_ZSTD_CHECKED = {zstd.CompressionParameter.checksum_flag: 1}
CODECS = {
    "gz": ("gzip", gzip.compress),
    "zst": ("zstd", lambda data: zstd.compress(data, options=_ZSTD_CHECKED)),
    "bz2": ("bzip2", bz2.compress),
    "xz": ("xz", lzma.compress),
}
FILES = {
    "d.jsonl": '{"instruction": "Say hi.", "output": "Hi!"}\n\n{"instruction": "Count to two.", "output": "One, two."}\n',
    "d.json": '[{"instruction": "Say hi.", "output": "Hi!"},\n {"instruction": "Count to two.", "output": "One, two."}]',
    "d.csv": 'instruction,output\n"Say hi.",Hi!\n"Count to two.","One, two."\n',
    "d.tsv": "instruction\toutput\nSay hi.\tHi!\nCount to two.\tOne, two.\n",
}
ROWS = [{"instruction": "Say hi.", "output": "Hi!"}, {"instruction": "Count to two.", "output": "One, two."}]
BOMB = "which looks like a decompression bomb; raise max_decompressed_bytes (--max-decompressed-bytes) if the data is real"


def write(path: Path, text: str | bytes, ext: str | None = None) -> Path:
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(CODECS[ext][1](data) if ext else data)
    return path


def located(path: Path, bounds: ReadBounds = ReadBounds()) -> list[tuple[str, int | None, int | None, object]]:
    return [(loc.source, loc.line, loc.index, row) for loc, row in read_records(path, bounds=bounds)]


def lines(n: int) -> list[dict[str, str]]:
    return [{"instruction": f"Question {i}?", "output": f"Answer {i}: " + "la " * (i % 80)} for i in range(n)]


def jsonl_text(rows: list[dict[str, str]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


# --- reading ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", CODECS)
@pytest.mark.parametrize("name", FILES)
def test_a_compressed_file_reads_the_rows_and_locations_of_the_plain_one(tmp_path, name, ext):
    plain = write(tmp_path / name, FILES[name])
    packed = write(tmp_path / f"{name}.{ext}", FILES[name], ext)
    expected = [(str(packed), line, index, row) for _, line, index, row in located(plain)]
    assert [row for *_, row in expected] == ROWS
    assert located(packed) == expected


def test_the_codec_is_read_from_the_first_bytes_not_the_name(tmp_path):
    data = FILES["d.jsonl"]
    for path in (write(tmp_path / "gzip-named-plain.jsonl", data, "gz"), write(tmp_path / "no-suffix", data, "zst")):
        assert [(line, row) for _, line, _, row in located(path)] == [(1, ROWS[0]), (3, ROWS[1])]
    assert [row for *_, row in located(write(tmp_path / "plain-named.jsonl.gz", data))] == ROWS
    assert [row for *_, row in located(write(tmp_path / "plain-named.csv.xz", FILES["d.csv"]))] == ROWS


def test_the_format_is_the_suffix_under_the_codecs():
    assert [data_suffix(Path(n)) for n in ("d.tsv.zst", "d.JSONL.GZ", "d.json.bz2", "d.csv.xz", "d.jsonl", "d.gz")] == [
        ".tsv", ".jsonl", ".json", ".csv", ".jsonl", ""
    ]  # fmt: skip


def test_concatenated_gzip_members_and_zstd_frames_are_one_file(tmp_path):
    for ext in ("gz", "zst"):
        path = tmp_path / f"cat.jsonl.{ext}"
        path.write_bytes(CODECS[ext][1](b'{"a": 1}\n') + CODECS[ext][1](b'{"a": 2}\n'))
        assert [(line, row) for _, line, _, row in located(path)] == [(1, {"a": 1}), (2, {"a": 2})]


def test_a_folder_of_compressed_files_reads_its_train_split(tmp_path):
    write(tmp_path / "train.jsonl.gz", FILES["d.jsonl"], "gz")
    write(tmp_path / "test.jsonl.zst", '{"instruction": "held out", "output": "x"}\n', "zst")
    assert [(Path(s).name, line, row) for s, line, _, row in located(tmp_path)] == [
        ("train.jsonl.gz", 1, ROWS[0]), ("train.jsonl.gz", 3, ROWS[1])
    ]  # fmt: skip


@pytest.mark.parametrize(("name", "ext"), [("d.jsonl", "gz"), ("d.jsonl", "zst"), ("d.csv", "bz2"), ("d.csv", "gz")])
def test_jsonl_and_csv_are_streamed_not_read_whole(tmp_path, name, ext):
    rows = lines(30_000)
    text = jsonl_text(rows) if name == "d.jsonl" else "instruction,output\n" + "".join(f"{r['instruction']},{r['output']}\n" for r in rows)
    path = write(tmp_path / f"{name}.{ext}", text, ext)
    assert len(text) > 4_000_000
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_records(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == len(rows)
    assert peak < 1_500_000  # a few buffers, never the 4 MB of text (xz is left out: its dictionary is 8 MiB)


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)  # any text a UTF-8 file can hold


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.dictionaries(st.sampled_from(["instruction", "output", "system"]), TEXT, min_size=1), min_size=1, max_size=8),
    ext=st.sampled_from(sorted(CODECS)),
)  # fmt: skip
def test_jsonl_round_trips_through_every_codec(tmp_path, rows, ext):
    path = write(tmp_path / f"h.jsonl.{ext}", jsonl_text(rows), ext)
    assert [(loc.line, row) for loc, row in read_records(path)] == list(enumerate(rows, start=1))


# --- errors -------------------------------------------------------------------------------------


def test_errors_name_the_compressed_file_and_the_line_of_its_text(tmp_path):
    bad_json = write(tmp_path / "bad.jsonl.gz", '{"a": 1}\n\n{"a": 2,}\n', "gz")
    with pytest.raises(ReaderError, match=rf"^{re.escape(str(bad_json))}:3:9: invalid JSON: Expecting property name"):
        located(bad_json)
    bad_doc = write(tmp_path / "bad.json.bz2", '[{"a": 1},\n {"a": 2}\n {"a": 3}]', "bz2")
    with pytest.raises(ReaderError, match=rf"^{re.escape(str(bad_doc))}:3:2: invalid JSON: Expecting ','"):
        located(bad_doc)
    latin1 = write(tmp_path / "latin1.jsonl.zst", '{"a": 1}\n'.encode() + '{"a": "café"}\n'.encode("latin-1"), "zst")
    with pytest.raises(ReaderError, match=rf"^{re.escape(str(latin1))}:2: not valid UTF-8 \(byte 0xe9 at column 11\)"):
        located(latin1)
    ragged = write(tmp_path / "ragged.csv.xz", "instruction,output\na,b\nc,d,e\n", "xz")
    (_, _, _, good), (_, _, _, error) = located(ragged)
    assert good == {"instruction": "a", "output": "b"}
    assert isinstance(error, RecordError)
    assert str(error).startswith(f"{ragged}:3: has 3 fields but the header has 2")


def _decodable(ext: str, data: bytes) -> bytes:
    """All the text a truncated stream holds, decompressed in one call (what `gzip -dc` writes before its error)."""
    decompressor = {"gz": lambda: zlib.decompressobj(wbits=31), "zst": zstd.ZstdDecompressor,
                    "bz2": bz2.BZ2Decompressor, "xz": lzma.LZMADecompressor}[ext]()  # fmt: skip
    return decompressor.decompress(data)


@pytest.mark.parametrize("ext", CODECS)
def test_a_truncated_file_fails_at_the_line_where_its_text_stops(tmp_path, ext):
    kind = CODECS[ext][0]
    rows = lines(6_000)
    whole = CODECS[ext][1](jsonl_text(rows).encode())
    path = tmp_path / f"cut.jsonl.{ext}"
    path.write_bytes(whole[: len(whole) // 2])
    text = _decodable(ext, path.read_bytes())
    got = []
    with pytest.raises(ReaderError) as raised:
        for _, row in read_records(path):
            got.append(row)
    stops = text.count(b"\n") + 1
    assert got == rows[: stops - 1]  # every whole line of the text, none lost in a buffer
    assert re.fullmatch(
        rf"{re.escape(str(path))}:{stops}: the {kind} stream ends early \(the file is truncated\) after "
        rf"{len(text):,} decompressed bytes; fetch it again \(`{kind} -t cut.jsonl.{ext}` checks a file\)",
        str(raised.value),
    )


@pytest.mark.parametrize(
    ("ext", "reason"),
    [("gz", r"CRC check failed 0x[0-9a-f]+ != 0x[0-9a-f]+"), ("zst", "Unable to decompress Zstandard data: Restored data doesn't match checksum"),
     ("bz2", "Invalid data stream"), ("xz", "Corrupt input data")],
)  # fmt: skip
def test_a_corrupt_file_is_one_located_line(tmp_path, ext, reason):
    # gzip checks its CRC after the text: all three lines decompress, the text stops at line 4
    kind = CODECS[ext][0]
    good = CODECS[ext][1](FILES["d.jsonl"].encode())
    path = tmp_path / f"bad.jsonl.{ext}"
    at = -4 if ext == "zst" else -6  # the checksum: gzip's CRC-32 before its size, zstd's last 4 bytes
    path.write_bytes(good[:at] + bytes(b ^ 0xFF for b in good[at : at + 2]) + good[at + 2 :])
    with pytest.raises(ReaderError) as raised:
        located(path)
    assert re.fullmatch(
        rf"{re.escape(str(path))}:{4 if ext == 'gz' else 1}: corrupt {kind} data \({reason}\) after {101 if ext == 'gz' else 0} "
        rf"decompressed bytes; "
        rf"fetch it again \(`{kind} -t bad.jsonl.{ext}` checks a file\)",
        str(raised.value),
    )


def _bomb_peak(path: Path, bounds: ReadBounds = ReadBounds()) -> tuple[str, int]:
    tracemalloc.start()
    try:
        with pytest.raises(LimitExceeded) as raised:
            located(path, bounds)
        return str(raised.value), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(("name", "ext", "megabytes"), [("b.jsonl", "gz", 50), ("b.json", "gz", 50), ("b.csv", "gz", 50),
                                                        ("b.jsonl", "zst", 50), ("b.jsonl", "bz2", 8), ("b.jsonl", "xz", 8)])  # fmt: skip
def test_a_decompression_bomb_stops_at_the_limit(tmp_path, name, ext, megabytes):
    path = write(tmp_path / f"{name}.{ext}", b"\0" * (megabytes << 20), ext)
    assert path.stat().st_size < 60_000
    message, peak = _bomb_peak(path, ReadBounds(decompressed_bytes=1_000_000))
    assert message == f"{path}:1: decompresses to more than 1,000,000 bytes (max_decompressed_bytes), {BOMB}"
    assert peak < 16_000_000  # buffers (and an xz dictionary), never the bomb's megabytes
    try:  # under the limit it is read through: NULs, not records
        located(path, ReadBounds(decompressed_bytes=megabytes << 21))
    except ReaderError:
        pass


def test_a_json_document_read_whole_is_also_capped_by_memory(tmp_path, monkeypatch):
    path = write(tmp_path / "b.json.gz", b"[" + b" " * 3_000_000 + b"]", "gz")
    monkeypatch.setattr("ftdata.io.compressed.half_memory", lambda: 1_000_000)
    message, _ = _bomb_peak(path)
    assert message == (
        f"{path}:1: decompresses to more than 1,000,000 bytes (half of this machine's memory, the most a JSON document "
        "read whole may take), which looks like a decompression bomb; store the records as JSON Lines, which are read "
        "line by line"
    )
    assert [row for *_, row in located(write(tmp_path / "b.jsonl.gz", b" " * 3_000_000 + b'\n{"a": 1}\n', "gz"))] == [
        {"a": 1}
    ]  # fmt: skip


def test_a_compressed_parquet_file_says_parquet_compresses_itself(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"instruction": ["a"], "output": ["b"]}), tmp_path / "d.parquet")
    path = write(tmp_path / "d.parquet.gz", (tmp_path / "d.parquet").read_bytes(), "gz")
    with pytest.raises(ReaderError, match=re.escape(f"{path}: a gzip-compressed Parquet file; Parquet compresses its own "
                                                     "columns, so ftdata reads it as written: `gunzip d.parquet.gz`")):  # fmt: skip
        located(path)


# --- builds and the CLI -------------------------------------------------------------------------


def test_a_build_of_a_compressed_file_equals_the_plain_build_and_is_cached(tmp_path, char_tok):
    plain = write(tmp_path / "d.jsonl", FILES["d.jsonl"])
    packed = write(tmp_path / "d.jsonl.zst", FILES["d.jsonl"], "zst")
    cache = str(tmp_path / "cache")
    expected = prepare(plain, tokenizer=char_tok).dataset
    first = prepare(packed, tokenizer=char_tok, cache_dir=cache)
    assert first.dataset.remove_columns("record").to_list() == expected.remove_columns("record").to_list()
    assert list(first.dataset["record"]) == [f"{packed}:{line}" for line in (1, 3)] and not first.report.cached
    assert prepare(packed, tokenizer=char_tok, cache_dir=cache).report.cached
    write(packed, FILES["d.jsonl"] + '{"instruction": "One more.", "output": "Done."}\n', "zst")
    changed = prepare(packed, tokenizer=char_tok, cache_dir=cache)
    assert not changed.report.cached and len(changed.dataset) == 3


def test_cli_stats_of_a_compressed_file_equals_the_plain_one(tmp_path):
    def stats(path: Path) -> dict[str, object]:
        result = CliRunner().invoke(app, ["stats", str(path), "--json"])
        assert result.exit_code == 0, result.output
        return {k: v for k, v in json.loads(result.stdout).items() if k != "source"}

    expected = stats(write(tmp_path / "d.jsonl", FILES["d.jsonl"]))
    assert expected["records"] == 2
    for ext in CODECS:
        assert stats(write(tmp_path / f"d.jsonl.{ext}", FILES["d.jsonl"], ext)) == expected


def test_cli_bomb_is_one_line_with_the_limit_exit_code(tmp_path):
    path = write(tmp_path / "bomb.jsonl.gz", b"\0" * (50 << 20), "gz")
    result = CliRunner().invoke(app, ["build", str(path), "-o", str(path.parent / "out"), "--max-decompressed-bytes", "1000000"])
    assert result.exit_code == 5
    assert result.stderr == f"error: {path}:1: decompresses to more than 1,000,000 bytes (max_decompressed_bytes), {BOMB}\n"
    bad = write(tmp_path / "cut.jsonl.gz", gzip.compress(FILES["d.jsonl"].encode())[:-10])
    result = CliRunner().invoke(app, ["stats", str(bad)])
    assert result.exit_code == 3
    # the text stops in line 3 (two whole lines decompress, then 8 bytes of checksum and 2 of data are missing)
    assert result.stderr.startswith(f"error: {bad}:3: the gzip stream ends early (the file is truncated) after 100 decompressed")
