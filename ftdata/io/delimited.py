"""Delimited text files: CSV with `,`, `;` or `|`, and tab-separated `.tsv`, streamed row by row.

The delimiter is the `delimiter` option when given; `.tsv` means a tab; otherwise it is
sniffed (`csv.Sniffer`) from the header line only, a bounded head of the file: the header
holds column names, so the records' own text (full of commas and semicolons) cannot fool it.

    instruction;output          -> ";"
    "instruction","output"      -> ","
    text                        -> "," (one column: nothing to sniff)
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftdata.io.bounds import ReadBounds, bounded_lines
from ftdata.io.compressed import REENCODE, data_suffix, open_bytes, open_text
from ftdata.errors import ConfigError, Location, ReaderError, RecordError

DELIMITERS = ",;\t|"
_HEAD_BYTES = 1 << 16  # the header line is read from at most this much of the file


def check_delimiter(value: Any) -> str | None:
    """`delimiter` as given (`"\\t"` and `"tab"` spell a tab), or None for "sniff".

    Raises:
        ConfigError: not one character.
    """
    if value is None:
        return None
    text = {"\\t": "\t", "tab": "\t"}.get(value, value) if isinstance(value, str) else value
    if not isinstance(text, str) or len(text) != 1 or text in "\r\n\"":
        raise ConfigError(f"delimiter must be one character such as ',', ';' or '\\t' (tab), got delimiter={value!r}")
    return text


def sniff_delimiter(path: Path) -> str:
    """The delimiter of `path`'s header line: `,`, `;`, tab or `|` (`,` when it has one column)."""
    if data_suffix(path) == ".tsv":
        return "\t"
    with open_bytes(path) as fh:
        head = fh.read(_HEAD_BYTES)
    header = head.decode("utf-8-sig", errors="replace").splitlines()[0] if head.strip() else ""
    try:
        return csv.Sniffer().sniff(header, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


def _row(row: dict[Any, Any], header: list[str], location: Location) -> Any:
    """The row, or a RecordError when its field count differs from the header's (data would shift)."""
    extra = row.pop(None, None)
    if extra is not None:
        return RecordError(
            f"has {len(header) + len(extra)} fields but the header has {len(header)} (extra: {extra!r:.60}); "
            "quote fields that contain the delimiter",
            location=location,
        )  # fmt: skip
    if None in row.values():
        given = sum(v is not None for v in row.values())
        return RecordError(f"has {given} fields but the header has {len(header)}; every row needs one per column", location=location)
    return row


def _bounded(fh: Any, path: Path, limit: int) -> Iterator[str]:
    """The lines of `fh`, or a ReaderError at one longer than `limit`: a record of CSV may span
    lines (a quoted field), so there is no telling where the next one starts to skip to it."""
    for n, line in enumerate(bounded_lines(fh, limit), start=1):
        if line is None:
            raise ReaderError(
                f"{path}:{n}: the line is longer than {limit:,} characters (max_line_bytes); split the record, "
                "or raise max_line_bytes (--max-line-bytes) if it is real"
            )
        yield line


def read_csv(path: Path, *, delimiter: str | None = None, bounds: ReadBounds = ReadBounds()) -> Iterator[tuple[Location, Any]]:
    """CSV or TSV with a header row, streamed; each row is a dict of strings, kept as written
    (a `\\r\\n` inside a quoted field stays `\\r\\n`).

    A row with more or fewer fields than the header comes back as a RecordError (rejected
    with on_error="skip"), never cut or padded silently. A line longer than
    `bounds.line_bytes`, or a field longer than `bounds.string_chars`, is a ReaderError
    located at its line, reached with no more than that in memory.
    """
    source = str(path)
    sep = check_delimiter(delimiter) or sniff_delimiter(path)
    # Python's default (128 KiB) rejects valid files with long answers; the bound is the longest string.
    csv.field_size_limit(bounds.string_chars)
    with open_text(path, max_bytes=bounds.decompressed_bytes) as fh:
        reader = csv.DictReader(_bounded(fh, path, bounds.line_bytes), delimiter=sep)
        try:
            for row in reader:
                location = Location(source, line=reader.line_num)
                yield location, _row(dict(row), list(reader.fieldnames or ()), location)
        except UnicodeDecodeError:
            raise ReaderError(f"{path}:{reader.line_num + 1}: not valid UTF-8; {REENCODE}") from None
        except csv.Error as exc:
            if "field limit" in str(exc):  # the only csv.Error that is a bound, not a syntax error
                raise ReaderError(
                    f"{path}:{reader.line_num}: a field is longer than {bounds.string_chars:,} characters "
                    "(max_string_chars); shorten it, or raise max_string_chars (--max-string-chars) if it is real"
                ) from None
            raise ReaderError(f"{path}:{reader.line_num}: invalid CSV: {exc}") from None
        if reader.line_num <= 1 and reader.fieldnames is None:
            raise ReaderError(f"{path}: file is empty; expected a header row and records")
