"""Bounds on what one record may cost (issue 32): the longest line, string and conversation, the
decompressed bytes of a file, a template's output and a tokenizer file. Each bound passed is a
located reject (`--on-error skip`) or a one-line error, reached in bounded memory and time."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import peak_of
from typer.testing import CliRunner

import ftdata
from ftdata import prepare
from ftdata.cli.app import app
from ftdata.errors import ConfigError, ReaderError, RecordError
from ftdata.guard.bounds import ReadBounds
from ftdata.io.readers import read_records
from ftdata.outcomes import RejectCode
from ftdata.io.resources import bundled_tokenizer_dir

try:
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd  # type: ignore[import-not-found,no-redef]

GOOD = {"instruction": "Say hi.", "output": "Hi!"}
OPENERS = {"gz": lambda p: gzip.open(p, "wb", compresslevel=1), "zst": lambda p: zstd.open(p, "wb"),
           "xz": lambda p: lzma.open(p, "wb", preset=0), "bz2": lambda p: bz2.open(p, "wb")}  # fmt: skip
MB = 1 << 20


def run(*args: object) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line(result: object, code: int) -> str:
    assert result.exit_code == code, result.output  # type: ignore[attr-defined]
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr  # type: ignore[attr-defined]
    return lines[0]


def long_line_file(path: Path, ext: str | None, megabytes: int) -> Path:
    """A good record, one line of `megabytes` MiB of 'a' (written a MiB at a time), a good record."""
    opener = OPENERS[ext] if ext else (lambda p: open(p, "wb"))
    good = json.dumps(GOOD).encode() + b"\n"
    with opener(path) as fh:
        fh.write(good + b'{"instruction": "')
        for _ in range(megabytes):
            fh.write(b"a" * MB)
        fh.write(b'", "output": "x"}\n' + good)
    return path


# --- lines --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ext", "megabytes"), [(None, 48), ("gz", 48), ("zst", 48), ("xz", 24), ("bz2", 8)])
def test_a_line_past_max_line_bytes_is_a_located_reject_read_in_bounded_memory(tmp_path, ext, megabytes):
    path = long_line_file(tmp_path / ("long.jsonl" + (f".{ext}" if ext else "")), ext, megabytes)
    rows, peak = peak_of(lambda: list(read_records(path, bounds=ReadBounds(line_bytes=MB))))
    assert peak < 8 * MB  # a MiB of the line at a time, never its megabytes
    (one, first), (two, error), (three, last) = rows
    assert (one.line, first, three.line, last) == (1, GOOD, 3, GOOD)
    assert isinstance(error, RecordError) and two.line == 2
    assert str(error) == (
        f"{path}:2: the line is longer than 1,048,576 bytes (max_line_bytes), so it was skipped unread; split the "
        "record, or raise max_line_bytes (--max-line-bytes) if it is real"
    )


def test_a_line_at_the_bound_is_read_and_its_newline_is_not_counted(tmp_path):
    line = json.dumps({"instruction": "x" * 100, "output": "y"})
    path = tmp_path / "d.jsonl"
    path.write_text(f"{line}\r\n{line}\n{line}")
    rows = [row for _, row in read_records(path, bounds=ReadBounds(line_bytes=len(line) + 1))]
    assert rows == [json.loads(line)] * 3
    rows = [row for _, row in read_records(path, bounds=ReadBounds(line_bytes=len(line) - 1))]
    assert all(isinstance(r, RecordError) for r in rows) and len(rows) == 3


def _long_csv(path: Path) -> Path:
    path.write_text("instruction,output\nhi,there\n" + "a" * (MB + 10) + ",x\nbye,now\n")
    return path


@pytest.mark.parametrize(("name", "line", "message"), [
    ("long.jsonl.gz", 2, "the line is longer than 1,048,576 bytes (max_line_bytes), so it was skipped unread; split the record"),
    ("long.csv", 3, "the record is longer than 1,048,576 characters (max_line_bytes), so it was skipped unread; split the record"),
])  # fmt: skip
def test_cli_a_long_line_is_rejected_with_skip_and_stops_the_build_without(tmp_path, name, line, message):
    path = _long_csv(tmp_path / name) if name.endswith(".csv") else long_line_file(tmp_path / name, "gz", 3)
    out, rejects = tmp_path / "out", tmp_path / "rejects.jsonl"
    result = run("build", path, "-o", out, "--max-line-bytes", MB, "--on-error", "skip", "--rejects-path", rejects,
                 "--template", "alpaca", "--no-cache")  # fmt: skip
    assert result.exit_code == 0, result.output
    (reject,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert (reject["location"], reject["stage"], reject["code"]) == (f"{path}:{line}", "read", "over_limit")
    assert len(ftdata.load(out).dataset) == 2  # the records before and after it
    error = one_line(run("build", path, "-o", tmp_path / "out2", "--max-line-bytes", MB, "--template", "alpaca", "--no-cache"), 4)
    assert error == f"error: {path}:{line}: {message}, or raise max_line_bytes (--max-line-bytes) if it is real"


def test_a_csv_line_past_the_bound_is_a_located_reject_and_the_file_is_read_on(tmp_path):
    path = tmp_path / "d.csv.gz"
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(b"instruction,output\nhi,there\n")
        for _ in range(8):
            fh.write(b"a,b" * (MB // 3))
        fh.write(b',x\n"last ""one""",y\n')
    rows, peak = peak_of(lambda: list(read_records(path, bounds=ReadBounds(line_bytes=MB))))
    assert peak < 8 * MB  # a MiB of the line at a time, never its 8 MiB
    (one, first), (two, error), (three, last) = rows
    assert (one.line, first, three.line, last) == (2, {"instruction": "hi", "output": "there"}, 4, {"instruction": 'last "one"', "output": "y"})
    assert isinstance(error, RecordError) and error.code == RejectCode.OVER_LIMIT and two.line == 3
    assert str(error) == (
        f"{path}:3: the record is longer than 1,048,576 characters (max_line_bytes), so it was skipped unread; split the "
        "record, or raise max_line_bytes (--max-line-bytes) if it is real"
    )


def test_a_csv_record_spanning_lines_past_the_bound_is_skipped_to_its_end(tmp_path):
    """A quoted field may hold newlines, quotes and delimiters: the skip follows csv's quoting to
    the record's real end (line 8 here), so the next record is read as csv would read it."""
    path = tmp_path / "d.csv"
    long = "x" * 50 + ",\n" + '"",' * 20 + "\n"
    path.write_text(f'instruction,output\nhi,there\n"{long * 2}y\n",z\n"a\nb",c\n')
    rows = list(read_records(path, bounds=ReadBounds(line_bytes=100)))
    assert [(loc.line, row if isinstance(row, dict) else str(row).split(": ", 1)[1]) for loc, row in rows] == [
        (2, {"instruction": "hi", "output": "there"}),
        (3, "the record is longer than 100 characters (max_line_bytes) (lines 3-8), so it was skipped unread; split "
            "the record, or raise max_line_bytes (--max-line-bytes) if it is real"),
        (10, {"instruction": "a\nb", "output": "c"}),
    ]  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.text(alphabet='ab,"\n\r', max_size=80), limit=st.integers(3, 12))
def test_a_csv_record_skipped_past_the_bound_ends_where_csv_ends_it(tmp_path, body, limit):
    """Whatever the quoting, the bounded reader finds each record's end where csv itself does: the
    records it keeps are csv's, at csv's lines, and each skipped one stands for one of csv's."""
    path = tmp_path / "d.csv"
    path.write_text("p,q\n" + body, newline="")
    whole = [_seen(loc, row) for loc, row in read_records(path, bounds=ReadBounds(line_bytes=1000))]
    bounded = [_seen(loc, row) for loc, row in read_records(path, bounds=ReadBounds(line_bytes=limit))]
    assert len(bounded) == len(whole)
    for kept in bounded:
        if kept[1] != "over_limit":
            whole.remove(kept)  # ValueError: a record csv never read


def _seen(location: object, row: object) -> tuple[object, object]:
    if isinstance(row, RecordError):
        return (None, "over_limit") if row.code == RejectCode.OVER_LIMIT else (location.line, str(row))  # type: ignore[attr-defined]
    return location.line, row  # type: ignore[attr-defined]


def _state_by_char(text: str) -> str:
    """csv's reader state after `text` (default dialect), one character at a time: the slow reference."""
    state = "FIELD"
    for char in text:
        if state == "QUOTED":
            state = "QUOTE" if char == '"' else "QUOTED"
        elif char == ",":
            state = "FIELD"
        else:
            state = "QUOTED" if char == '"' and state in ("FIELD", "QUOTE") else "UNQUOTED"
    return state


@given(text=st.text(alphabet='ab,"', max_size=60), cuts=st.lists(st.integers(0, 60), max_size=3))
def test_the_csv_skip_scan_agrees_with_csv_state_by_state_wherever_the_text_is_cut(text, cuts):
    from ftdata.io.delimited import _Record, _scan

    state, start = _Record.FIELD, 0
    for cut in [*sorted(c for c in cuts if c <= len(text)), len(text)]:
        state, start = _scan(state, text[start:cut], ","), cut
    assert state.name == _state_by_char(text)


@pytest.mark.parametrize(("unit", "most"), [(b"x" * MB, 8 * MB), ((b"x" * 99 + b"\n") * (MB // 100), 3 * MB)], ids=["one-line", "lines"])
def test_a_long_quoted_csv_field_is_a_located_reject_in_memory_of_the_bound_not_of_the_field(tmp_path, unit, most):
    """A quoted field of 8 MiB against a bound of 1 MiB (issue 39: one of 100 MB grew past 4 GB and
    ended in a MemoryError traceback). Before: the scan of the line's fields took the regex engine
    ~120 bytes of stack a character (147 MiB here), and a field of many lines was handed to csv as it
    was read, whose field buffer takes 4 bytes a character (5.8 MiB here). Now: the bound, a MiB at a time."""
    path = tmp_path / "d.csv"
    with path.open("wb") as fh:
        fh.write(b'instruction,output\nhi,there\n"')
        for _ in range(8):
            fh.write(unit)
        fh.write(b'",x\nbye,now\n')
    rows, peak = peak_of(lambda: list(read_records(path, bounds=ReadBounds(line_bytes=MB))))
    assert peak < most
    (one, first), (two, error), (three, last) = rows
    lines = path.read_bytes().count(b"\n")  # the last record is on the last line
    assert (one.line, first, three.line, last) == (2, {"instruction": "hi", "output": "there"}, lines, {"instruction": "bye", "output": "now"})
    assert isinstance(error, RecordError) and error.code == RejectCode.OVER_LIMIT and two.line == 3
    assert str(error).startswith(f"{path}:3: the record is longer than 1,048,576 characters (max_line_bytes)")


@given(text=st.text(alphabet='ab,"\n', max_size=40), quoted=st.booleans())
def test_one_match_says_whether_a_line_leaves_a_quoted_field_open_as_the_scan_does(text, quoted):
    from ftdata.io.delimited import _grammar, _Record, _scan

    grammar = _grammar(",")
    opened = not (grammar.closes_quoted if quoted else grammar.closes).fullmatch(text)
    assert opened == (_scan(_Record.QUOTED if quoted else _Record.FIELD, text, ",") is _Record.QUOTED)


def test_a_csv_header_past_the_bound_is_a_located_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("instruction" * 20 + ",output\nhi,there\n")
    with pytest.raises(ReaderError, match=re.escape(f"{path}:1: the header is longer than 100 characters (max_line_bytes)")):
        list(read_records(path, bounds=ReadBounds(line_bytes=100)))


# --- pipes -------------------------------------------------------------------------------------


def _fifo(path: Path, lines: int, line: bytes) -> tuple[Path, threading.Thread]:
    """A FIFO at `path` fed `lines` copies of `line` by a thread (which stops when the reader goes)."""
    os.mkfifo(path)

    def feed() -> None:
        try:
            with open(path, "wb") as fh:
                for _ in range(lines):
                    fh.write(line)
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    return path, writer


def test_a_pipe_past_max_decompressed_bytes_stops_at_the_bound_and_its_copy_is_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    line = json.dumps(GOOD).encode() + b"\n"  # 44 bytes
    fifo, writer = _fifo(tmp_path / "63", 1_000_000, line)
    with pytest.raises(ReaderError) as raised:
        list(read_records(str(fifo), bounds=ReadBounds(decompressed_bytes=1000 * len(line) + 5)))
    writer.join(10)
    assert str(raised.value) == (
        f"{fifo}:1001: the pipe gives more than 44,005 bytes (max_decompressed_bytes, the most ftdata copies from a "
        "pipe); raise max_decompressed_bytes (--max-decompressed-bytes) if the data is real, or give a file"
    )
    assert not list(tmp_path.glob("ftdata-*"))  # the copy's scratch is gone
    fifo2, writer = _fifo(tmp_path / "64", 1000, line)  # at the bound: read whole, the copy gone once read
    assert len(list(read_records(str(fifo2), bounds=ReadBounds(decompressed_bytes=1000 * len(line))))) == 1000
    assert not list(tmp_path.glob("ftdata-*"))


def test_cli_an_endless_process_substitution_stops_at_the_bound(tmp_path):
    script = (f'"{sys.executable}" -m ftdata build <(yes \'{json.dumps(GOOD)}\') -o "{tmp_path}/out" '
              "--template alpaca --no-cache --max-decompressed-bytes 1000000")  # fmt: skip
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "TMPDIR": str(tmp_path)})  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert re.fullmatch(r"error: /dev/fd/\d+:22728: the pipe gives more than 1,000,000 bytes \(max_decompressed_bytes, "
                        r"the most ftdata copies from a pipe\); raise .* or give a file\n", done.stderr), done.stderr  # fmt: skip
    assert not list(tmp_path.glob("ftdata-*")) and sorted(p.name for p in (tmp_path / "out").iterdir()) == [".ftdata-output.json", ".ftdata.lock"]


def test_cli_dash_reads_standard_input_as_a_bounded_pipe(tmp_path):
    """`cat d.jsonl | ftdata build - -o OUT`: `-` is standard input, read as a pipe under max_decompressed_bytes."""
    line = json.dumps(GOOD) + "\n"
    built = subprocess.run([sys.executable, "-m", "ftdata", "build", "-", "-o", str(tmp_path / "out"), "--template", "alpaca",
                            "--no-cache", "--output-format", "jsonl"], input=line * 3, capture_output=True, text=True,
                           timeout=300, cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmp_path)})  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert len((tmp_path / "out" / "train.jsonl").read_text().splitlines()) == 3
    over = subprocess.run([sys.executable, "-m", "ftdata", "preview", "-", "--template", "alpaca", "--max-decompressed-bytes",
                           str(2 * len(line))], input=line * 3, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "TMPDIR": str(tmp_path)})  # fmt: skip
    assert over.returncode == 3 and over.stderr.startswith("error: /dev/stdin:3: the pipe gives more than "), over.stderr
    assert not list(tmp_path.glob("ftdata-*"))


# --- strings ------------------------------------------------------------------------------------


def _long_string_files(folder: Path) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [GOOD, {"instruction": "Repeat.", "output": "b" * 300_000}, GOOD]
    files = {"jsonl": folder / "d.jsonl", "json": folder / "d.json", "parquet": folder / "d.parquet"}
    files["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    files["json"].write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), files["parquet"])
    return files


@pytest.mark.parametrize("kind", ["jsonl", "json", "parquet"])
def test_a_string_past_max_string_chars_is_a_located_reject(tmp_path, kind):
    path = _long_string_files(tmp_path)[kind]
    rows = list(read_records(path, bounds=ReadBounds(string_chars=100_000)))
    assert [row for _, row in rows][::2] == [GOOD, GOOD]
    location, error = rows[1]
    assert isinstance(error, RecordError) and error.field == "output"
    assert str(error) == (
        f"{location}: field 'output': holds a string of 300,000 characters, more than 100,000 (max_string_chars); "
        "shorten it, or raise max_string_chars (--max-string-chars) if it is real"
    )
    assert str(location) == (f"{path}:2" if kind == "jsonl" else f"{path}[1]")


def test_a_csv_field_past_max_string_chars_is_a_located_reject(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('instruction,output\nhi,there\n"a\n' + "b\n" * 60_000 + '",x\nbye,now\n')
    rows = list(read_records(path, bounds=ReadBounds(string_chars=100_000)))
    assert [(loc.line, row) for loc, row in rows[::2]] == [(2, {"instruction": "hi", "output": "there"}), (60_005, {"instruction": "bye", "output": "now"})]
    location, error = rows[1]
    assert isinstance(error, RecordError) and error.field == "instruction" and error.code == RejectCode.OVER_LIMIT
    assert str(error) == (
        f"{path}:60004: field 'instruction': holds a string of 120,002 characters, more than 100,000 (max_string_chars); "
        "shorten it, or raise max_string_chars (--max-string-chars) if it is real"
    )


def test_prepare_with_skip_rejects_the_long_string_and_keeps_the_rest(tmp_path):
    path = _long_string_files(tmp_path)["jsonl"]
    result = prepare(str(path), template="alpaca", max_string_chars=100_000, on_error="skip", max_length=64)
    assert len(result.dataset) == 2
    assert dict(result.report.rejected) == {"over_limit": 1}


@pytest.mark.parametrize(("name", "value"), [("max_line_bytes", 0), ("max_string_chars", -1), ("max_decompressed_bytes", "big"),
                                             ("max_messages", 1)])  # fmt: skip
def test_bounds_must_be_positive_integers(name, value):
    with pytest.raises(ConfigError, match=f"^{name} must be"):
        prepare([GOOD], template="alpaca", **{name: value})


# --- configs and media headers ---------------------------------------------------------------------


def test_a_config_past_its_size_limit_is_refused_before_it_is_read_whole(tmp_path):
    """Before: the whole file was read (and encoded again) before its size was checked."""
    from ftdata.io.config_files import read_yaml

    config = tmp_path / "big.yaml"
    config.write_bytes(b"template: alpaca\n" + b"# padding\n" * (2 * MB))  # 20 MiB
    raised, peak = peak_of(lambda: pytest.raises(ConfigError, read_yaml, config))
    assert str(raised.value) == f"{config}: config is larger than 1,048,576 bytes; raise FTDATA_YAML_MAX_BYTES if it must be"
    assert peak < 4 * MB  # the limit and a byte, never the 20 MiB
    error = one_line(run("build", "--config", config, "-o", tmp_path / "out"), 2)
    assert error == f"error: {raised.value}"


def _png_with_chunk_before_pixels(path: Path, size: int) -> Path:
    """A valid 4x4 PNG with a private chunk of `size` bytes between its header and its pixels."""
    import io
    import struct
    import zlib

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(out, format="PNG")
    png = out.getvalue()
    at = 8 + 25  # the signature, then IHDR (length, type, 13 bytes, CRC)
    body = b"x" * size
    chunk = struct.pack(">I", size) + b"prVt" + body + struct.pack(">I", zlib.crc32(b"prVt" + body))
    path.write_bytes(png[:at] + chunk + png[at:])
    return path


def test_an_image_header_is_read_only_up_to_its_bound(tmp_path, monkeypatch):
    """PIL reads every chunk before a PNG's pixels whole: 4 MiB here, gigabytes in a hostile file.
    Before: read whatever its size. Now a header past MAX_HEADER_BYTES (1 MiB here) is the image's
    reject, read no further than the bound."""
    from ftdata.errors import UnusableRecord
    from ftdata.media import images

    monkeypatch.setattr(images, "MAX_HEADER_BYTES", MB)
    small, large = _png_with_chunk_before_pixels(tmp_path / "small.png", 1000), _png_with_chunk_before_pixels(tmp_path / "large.png", 4 * MB)
    headers = images.Headers(store=None, max_pixels=None)
    info = headers.info(str(small), base=None, field="image")
    assert (info.width, info.height) == (4, 4)
    raised, peak = peak_of(lambda: pytest.raises(UnusableRecord, headers.info, str(large), base=None, field="image"))
    assert raised.value.code == RejectCode.MEDIA_UNREADABLE
    assert peak < 3 * MB  # the bound, never the 4 MiB chunk
    assert str(raised.value).endswith(f"{large} has more than 1,048,576 bytes of header before its pixels; strip its metadata or re-save it")


# --- conversations --------------------------------------------------------------------------------


def _conversation(n: int) -> dict[str, object]:
    return {"messages": [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(n)]}


def test_a_conversation_past_max_messages_is_rejected_with_its_own_code(tmp_path):
    rows = [_conversation(4), _conversation(6)]
    result = prepare(rows, max_messages=4, rejects_path=str(tmp_path / "r.jsonl"))
    assert len(result.dataset) == 1
    (reject,) = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert (reject["location"], reject["code"]) == ("<records>[1]", "too_many_messages")
    assert reject["reason"] == "has 6 messages, more than max_messages=4; split the conversation, or raise max_messages (--max-messages) if it is real"


def test_a_conversation_of_100k_messages_is_rejected_at_once_by_default():
    started = time.monotonic()
    result = prepare([_conversation(2), _conversation(100_000)])
    assert time.monotonic() - started < 120  # it never finished before (slack for a loaded machine)
    assert len(result.dataset) == 1 and dict(result.report.rejected) == {"too_many_messages": 1}


# --- templates: every growing operation is bounded -------------------------------------------------

DOUBLE = "{% set ns = namespace(x=START) %}{% for i in range(24) %}{% set ns.x = STEP %}{% endfor %}{{ ns.x|length }}"
GROWERS = {
    "tilde": ("'ab'", "ns.x ~ ns.x", "a ~ concatenation would build 1,048,576 characters"),
    "plus": ("'ab'", "ns.x + ns.x", "str + str would build 1,048,576 characters"),
    "list_plus": ("[1, 2]", "ns.x + ns.x", "list + list would build 1,048,576"),
    "join_filter": ("'ab'", "[ns.x, ns.x]|join", "the join filter would build 1,048,576 characters"),
    "join_method": ("'ab'", "''.join([ns.x, ns.x])", "str.join would build 1,048,576 characters"),
    "replace_filter": ("'ab'", "ns.x|replace('a', 'aa')", "the replace filter would build 1,048,577 characters"),
    "replace_method": ("'ab'", "ns.x.replace('b', 'bb')", "str.replace would build 1,048,577 characters"),
    "format_filter": ("'ab'", "'%s%s'|format(ns.x, ns.x)", "the format filter would build 1,048,580 characters"),
    "format_method": ("'ab'", "'{}{}'.format(ns.x, ns.x)", "calling format would build 1,048,576 characters"),
    "indent": ("'a\\nb'", "ns.x|indent(ns.x|length)", "the indent filter would build"),
}
SET_BLOCK = "{% set ns = namespace(x='ab') %}{% for i in range(24) %}{% set y %}{{ ns.x }}{{ ns.x }}{% endset %}{% set ns.x = y %}{% endfor %}{{ ns.x|length }}"


@pytest.fixture
def small_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTDATA_RENDER_MAX_CHARS", "1000000")
    monkeypatch.setenv("FTDATA_RENDER_TIMEOUT", "5")


@pytest.mark.parametrize("grower", sorted(GROWERS))
def test_a_prompt_template_that_doubles_a_value_stops_at_the_size_limit(tmp_path, small_renders, grower):
    start, step, message = GROWERS[grower]
    template = tmp_path / "t.jinja"
    template.write_text(DOUBLE.replace("START", start).replace("STEP", step) + "{{ instruction }}")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(GOOD) + "\n")
    line = one_line(run("build", data, "-o", tmp_path / "out", "--template", template, "--no-cache"), 5)
    assert f"template {str(template)!r} on record {data}:1" in line or f"template 't' on record {data}:1" in line, line
    assert message in line and "(limit 1,000,000); raise FTDATA_RENDER_MAX_CHARS if it needs more" in line


def test_a_set_block_that_doubles_its_output_stops_at_the_size_limit(tmp_path, small_renders):
    from ftdata.chat import sandbox
    from ftdata.guard import limits

    with pytest.raises(limits.LimitExceeded, match="output passed 1,000,000 characters"):
        sandbox.sandbox().from_string(SET_BLOCK).render()


CHATML = (
    "{%- for m in messages %}{%- if 'BOOM' in m['content'] %}{{ GROW }}{%- endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)


def _chat_tokenizer(tmp_path: Path, grow: str) -> Path:
    folder = tmp_path / "tok"
    shutil.copytree(bundled_tokenizer_dir(), folder)
    (folder / "chat_template.jinja").write_text(CHATML.replace("{{ GROW }}", grow))
    return folder


def _chat_data(tmp_path: Path) -> Path:
    data = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": c}, {"role": "assistant", "content": "hello"}]} for c in ("hi", "BOOM", "bye")]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


@pytest.mark.parametrize("grow", [DOUBLE.replace("START", "'ab'").replace("STEP", "ns.x ~ ns.x"), SET_BLOCK])
def test_a_chat_template_that_doubles_a_string_fails_in_one_line_naming_the_record(tmp_path, small_renders, grow):
    folder, data = _chat_tokenizer(tmp_path, grow), _chat_data(tmp_path)
    started = time.monotonic()
    line = one_line(run("build", data, "-o", tmp_path / "out", "--no-cache", "--tokenizer", folder), 5)
    assert line.startswith(f"error: the chat template on record {data}:2: ")
    assert re.search(r"(would build 1,048,576 characters|output passed 1,000,000 characters)", line)
    assert time.monotonic() - started < 90  # a guard against a hang, with slack for a loaded machine


def test_a_record_over_the_render_size_limit_is_a_reject_under_skip(tmp_path, small_renders):
    folder, data = _chat_tokenizer(tmp_path, "{% for i in range(300) %}{{ 'y' * 5000 }}{% endfor %}"), _chat_data(tmp_path)
    rejects = tmp_path / "rejects.jsonl"
    result = run("build", data, "-o", tmp_path / "out", "--no-cache", "--tokenizer", folder, "--on-error", "skip",
                 "--rejects-path", rejects)  # fmt: skip
    assert result.exit_code == 0, result.output
    (reject,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert (reject["location"], reject["stage"], reject["code"]) == (f"{data}:2", "render", "over_limit")
    assert reject["reason"] == (
        f"the chat template on record {data}:2: the template output passed 1,000,000 characters; raise "
        "FTDATA_RENDER_MAX_CHARS if it needs more"
    )
    assert json.loads((tmp_path / "out" / "build.json").read_text())["counts"]["examples"] == 2


FILTERS = {  # a filter that passes a limit on the second record only, and the reason it gives
    "size": ("instruction * 100000", "filter 'instruction * 100000': str * 100000 would build 1,400,000 characters (limit "
             "1,000,000); raise FTDATA_RENDER_MAX_CHARS if it needs more"),
    "time": ("instruction|length < 10 or (range(99999)|map('string')|join|length * range(99999)|map('string')|join|length) > 0",
             "took longer than 0.05 s; make it cheaper, or raise FTDATA_FILTER_TIMEOUT if it needs more"),
}  # fmt: skip


@pytest.mark.parametrize("limit", sorted(FILTERS))
def test_a_filter_past_a_limit_on_one_record_is_its_reject_under_skip(tmp_path, small_renders, monkeypatch, limit):
    monkeypatch.setenv("FTDATA_FILTER_TIMEOUT", "0.05")
    expression, reason = FILTERS[limit]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [GOOD, {"instruction": "Say it loudly.", "output": "IT!"}, GOOD]))
    rejects = tmp_path / "rejects.jsonl"
    result = run("build", data, "-o", tmp_path / "out", "--no-cache", "--template", "alpaca", "--filter", expression,
                 "--on-error", "skip", "--rejects-path", rejects)  # fmt: skip
    assert result.exit_code == 0, result.output
    (reject,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert (reject["location"], reject["stage"], reject["code"]) == (f"{data}:2", "filter", "over_limit")
    assert reject["reason"].startswith(f"filter {expression!r}") and reject["reason"].endswith(reason)
    assert len(ftdata.load(tmp_path / "out").dataset) == 2
    line = one_line(run("build", data, "-o", tmp_path / "out2", "--no-cache", "--template", "alpaca", "--filter", expression), 5)
    assert line.startswith(f"error: {data}:2: filter {expression!r}") and line.endswith(reason)


# --- tokenizer files ------------------------------------------------------------------------------


def _preview_with(tmp_path: Path, name: str, content: bytes) -> str:
    """The one error line of `ftdata preview` with the bundled tokenizer's file `name` replaced by `content`."""
    folder = tmp_path / "tok"
    shutil.copytree(bundled_tokenizer_dir(), folder)
    (folder / name).write_bytes(content)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(GOOD) + "\n")
    return one_line(run("preview", data, "--tokenizer", folder), 2)


def test_a_tokenizer_file_over_the_size_limit_is_refused_before_parsing(tmp_path, monkeypatch):
    monkeypatch.setenv("FTDATA_TOKENIZER_MAX_BYTES", str(MB))
    folder = tmp_path / "tok"
    line = _preview_with(tmp_path, "tokenizer.json", b"[" * (3 * MB))  # would take seconds and memory to parse
    assert line == (
        f"error: tokenizer file {str(folder / 'tokenizer.json')!r} is 3,145,728 bytes, more than 1,048,576 "
        "(FTDATA_TOKENIZER_MAX_BYTES); the largest real tokenizers are tens of MB: check the file, or raise "
        "FTDATA_TOKENIZER_MAX_BYTES"
    )


def test_a_generation_config_nested_200k_deep_is_ignored_like_an_unreadable_one(tmp_path):
    from ftdata.chat.stops import model_stop_tokens
    from ftdata.io.resources import load_tokenizer

    folder = tmp_path / "tok"
    shutil.copytree(bundled_tokenizer_dir(), folder)
    (folder / "generation_config.json").write_text("[" * 200_000 + "]" * 200_000)
    assert model_stop_tokens(load_tokenizer(str(folder))) == ()


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json"])
def test_a_tokenizer_file_nested_200k_deep_is_one_line(tmp_path, name):
    folder = tmp_path / "tok"
    line = _preview_with(tmp_path, name, b"[" * 200_000 + b"]" * 200_000)
    assert line == (
        f"error: cannot load tokenizer {str(folder)!r}: one of its JSON files is nested too deeply to parse (thousands "
        "of levels), which no real tokenizer is; check tokenizer.json and tokenizer_config.json"
    )
