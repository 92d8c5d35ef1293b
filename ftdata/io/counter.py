"""The progress counter: how many records a read will yield, when that is cheap to know.

`ftdata build` and `stats` count a file's records first, for the progress bar's total, and a
recipe counts its sources to check its shares before tokenizing. The count reads user bytes
like the readers do, within the same read bounds (`ReadBounds`: the build's `max_line_bytes`,
`max_decompressed_bytes`), so it never holds more than a reader would:

    data.jsonl      lines, through the JSONL reader's bounded line reader (`readers.jsonl_lines`):
                    a line past max_line_bytes counts as the one record (a reject) it will be,
                    skipped unread; an agent session file (`sessions.harness` of its first line) is one
    data.json       the top-level elements of the array, scanned a MiB at a time (never loaded)
    data.parquet    the row count in its footer

Anything else (CSV, folders, compressed JSON, a hub id) has no cheap count: None, and the bar
counts up without a total. So does a file the reader will refuse (a decompression bomb, broken
JSON): the reader says so, at its record.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ftdata.errors import FtdataError
from ftdata.guard.bounds import ReadBounds
from ftdata.io import sessions
from ftdata.io.compressed import open_bytes, open_raw
from ftdata.io.readers import jsonl_lines

_CHUNK = 1 << 20  # a JSON array is scanned this many bytes at a time
_SPACE = b" \t\r\n"
# A JSON string (unrolled: no stack per character), and its text up to the closing quote (a lone
# backslash at the end of a piece is left: the next piece starts with the character it escapes).
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
_STRING_BODY = re.compile(rb'[^"\\]*+(?:\\.[^"\\]*+)*+', re.DOTALL)
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b"[]{},")  # deleted: what is left are brackets and commas
_DEPTH = np.zeros(256, dtype=np.int64)  # how a byte of structure changes the depth
_DEPTH[list(b"[{")] = 1
_DEPTH[list(b"]}")] = -1
_COMMA, _BACKSLASH = ord(","), ord("\\")


def count_records(data: str, *, limit: int | None, bounds: ReadBounds) -> int | None:
    """How many records reading `data` within `bounds` yields (at
    most `limit`), or None when that is not cheap to know."""
    path = Path(data).expanduser()
    total = None
    if path.is_file():
        try:
            total = _count(path, bounds)
        except FtdataError:  # a bomb, a corrupt stream: the reader reports it, where it meets it
            total = None
    if limit is not None:
        total = min(total, limit) if total is not None else limit
    return total


def _count(path: Path, bounds: ReadBounds) -> int | None:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return sum(1 for _, line in jsonl_lines(path, bounds) if line is None or line.strip())
    if suffix in (".jsonl", ".ndjson"):
        lines = (line for _, line in jsonl_lines(path, bounds) if line is None or line.strip())
        first = next(lines, None)
        if first is None:
            return 0
        return 1 if _is_session(first) else 1 + sum(1 for _ in lines)
    if suffix == ".json":
        with open_bytes(path, max_bytes=bounds.decompressed_bytes) as fh:
            return json_array_length(fh)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            with open_raw(path) as fh:  # the build's descriptor, when it holds one
                return pq.ParquetFile(fh).metadata.num_rows
        except Exception:  # noqa: BLE001 - a broken file: the reader reports it, with its location
            return None
    return None


def _is_session(line: bytes | None) -> bool:
    """Whether a JSONL file's first line is an agent session event: the file is one record (`ftdata.io.sessions`)."""
    try:
        return line is not None and sessions.harness(json.loads(line)) is not None
    except ValueError:  # not JSON: the reader reports it, at its line
        return False


def json_array_length(fh: BinaryIO, *, chunk: int = _CHUNK) -> int | None:
    """The number of elements of the JSON array `fh` holds, read `chunk` bytes at a time; None when
    it holds no array (an object, JSON Lines) or the array never ends.

    Strings are passed whole by one regular expression (what they hold is never structure), the
    brackets and commas left are counted with numpy: the elements are the commas at depth 1, plus one.

        [{"a": "x, [y"}, {"a": 2}]   ->   [{,}]   ->   depth 1 commas: 1   ->   2
    """
    pieces: Iterator[bytes] = iter(functools.partial(fh.read, chunk), b"")
    head = _skip_space(pieces, fh.read(max(chunk, 3)).removeprefix(b"\xef\xbb\xbf"))  # a UTF-8 BOM is no text
    if head[:1] != b"[":
        return None
    head = _skip_space(pieces, head[1:])
    if head[:1] == b"]":
        return 0
    depth, commas, inside, escaped = 1, 0, False, False
    for piece in itertools.chain([head], pieces):
        at = 0
        if inside:  # in a string since the last piece: to its closing quote
            at = _STRING_BODY.match(piece, int(escaped)).end()  # type: ignore[union-attr]  # matches anywhere
            if at == len(piece) or piece[at] == _BACKSLASH:  # the string goes on (after the character a lone \ escapes)
                escaped = at < len(piece)
                continue
            inside, escaped, at = False, False, at + 1
        outside = _STRING.sub(b"", piece[at:])
        if (opened := outside.find(b'"')) >= 0:  # a string the piece ends in
            rest = outside[opened + 1 :]
            inside, escaped, outside = True, _STRING_BODY.match(rest).end() < len(rest), outside[:opened]  # type: ignore[union-attr]  # the pattern matches any text (possibly empty)
        structure = np.frombuffer(outside.translate(None, _NOT_STRUCTURE), dtype=np.uint8)
        level = depth + np.cumsum(_DEPTH[structure])
        closed = np.flatnonzero(level == 0)
        end = int(closed[0]) if len(closed) else len(structure)
        commas += int(np.count_nonzero((structure[:end] == _COMMA) & (level[:end] == 1)))
        if len(closed):
            return commas + 1
        depth = int(level[-1]) if len(level) else depth
    return None


def _skip_space(pieces: Iterator[bytes], head: bytes) -> bytes:
    """`head` without its leading whitespace, read on while it is all whitespace (b"" at the end)."""
    head = head.lstrip(_SPACE)
    while not head and (head := next(pieces, b"")):
        head = head.lstrip(_SPACE)
    return head


__all__ = ["count_records", "json_array_length"]
