"""Delimited text files: CSV with `,`, `;` or `|`, and tab-separated `.tsv`, streamed row by row.

The delimiter is the `delimiter` option when given; `.tsv` means a tab; otherwise it is
sniffed (`csv.Sniffer`) from the header line only, a bounded head of the file: the header
holds column names, so the records' own text (full of commas and semicolons) cannot fool it.

    instruction;output          -> ";"
    "instruction","output"      -> ","
    text                        -> "," (one column: nothing to sniff)

A record may span lines (a quoted field holds newlines), so the read bound `max_line_bytes`
counts a record's lines together. A longer record is read past a MiB at a time, following
csv's quoting to where it ends, and comes back as a located `over_limit` reject; the records
after it are read as csv would read them:

    "x...(64 MiB)...     line 3   -> data.csv:3: the record is longer than ... (lines 3-5)
    ...more text...      line 4
    ",z                  line 5
    a,b                  line 6   -> {"instruction": "a", "output": "b"}
"""

from __future__ import annotations

import csv
import functools
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

from ftdata.guard.bounds import ReadBounds, string_checked
from ftdata.io.compressed import REENCODE, data_suffix, open_bytes, open_text
from ftdata.errors import ConfigError, Location, ReaderError, RecordError
from ftdata.outcomes import RejectCode

DELIMITERS = ",;\t|"
_HEAD_BYTES = 1 << 16  # the header line is read from at most this much of the file
_SKIP = 1 << 20  # a too-long record is read past this many characters at a time


def check_delimiter(value: Any) -> str | None:
    """`delimiter` as given (`"\\t"` and `"tab"` spell a tab), or None for "sniff".

    Raises:
        ConfigError: not one character.
    """
    if value is None:
        return None
    text = {"\\t": "\t", "tab": "\t"}.get(value, value) if isinstance(value, str) else value
    if not isinstance(text, str) or len(text) != 1 or text in '\r\n"':
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
        )
    if None in row.values():
        given = sum(v is not None for v in row.values())
        return RecordError(
            f"has {given} fields but the header has {len(header)}; every row needs one per column", location=location
        )
    return row


class _Record(Enum):
    """Where a scan of CSV text stands (csv's own states, for its default quoting)."""

    FIELD = "at the start of a field"
    UNQUOTED = "in an unquoted field"
    QUOTED = "in a quoted field"
    QUOTE = "after a quote in a quoted field"


# A quoted field's text up to its closing quote, unrolled: a repeated group of one character
# (`(?:[^"]|"")*`) costs the regex engine tens of bytes of stack per character (8 GB for a quoted
# field of 64 MiB); a repeated character class costs nothing.
_BODY = '[^"]*+(?:""[^"]*+)*+'
_QUOTED_BODY = re.compile(_BODY)


@dataclass(frozen=True, slots=True)
class _Grammar:
    """One delimiter's CSV (csv's default quoting) as regular expressions.

    A field is quoted (`"a ""b"", c"`, and what follows its closing quote up to the delimiter, as
    csv keeps it) or not (a quote inside it is text). Atomic groups: a `""` is never a closing quote.
    A line ends its record unless it leaves a quoted field open: one match tells, from a record's
    start (`closes`) or from inside a quoted field (`closes_quoted`), where `_scan` takes a step a field.
    """

    fields: re.Pattern[str]  # whole fields from a field's start, each with its delimiter
    closes: re.Pattern[str]
    closes_quoted: re.Pattern[str]


@functools.lru_cache(maxsize=8)
def _grammar(delimiter: str) -> _Grammar:
    d, body = re.escape(delimiter), f'{_BODY}"'
    field = rf'(?>"{body}[^{d}]*+|[^"{d}][^{d}]*+|)'
    record = rf"(?>{field}{d})*+{field}"
    return _Grammar(
        re.compile(rf"(?>{field}{d})*+"), re.compile(record), re.compile(rf"{body}[^{d}]*+(?:{d}{record})?")
    )


def _scan(state: _Record, text: str, delimiter: str) -> _Record:
    """The state after `text`, a piece of a line, as csv's reader would leave it (quote `"`, doubled
    quotes, not strict): only quotes at the start of a field open a quoted one, where a newline is text.
    Whole fields are passed by one regular expression, so a line of millions of fields costs no more
    than reading it."""
    fields, i = _grammar(delimiter).fields, 0
    while i < len(text):
        if state is _Record.FIELD and (end := fields.match(text, i).end()) > i:  # type: ignore[union-attr]  # as above: the field pattern matches empty text too
            i = end  # whole fields, each with its delimiter
        elif state is _Record.FIELD:  # the last field of the text, not ended in it
            state, i = (_Record.QUOTED, i + 1) if text[i] == '"' else (_Record.UNQUOTED, i)
        elif state is _Record.QUOTED:
            i = _QUOTED_BODY.match(text, i).end()  # type: ignore[union-attr]  # the pattern matches anywhere
            state, i = (state, i) if i == len(text) else (_Record.QUOTE, i + 1)
        elif state is _Record.QUOTE:
            char, i = text[i], i + 1
            state = _Record.QUOTED if char == '"' else _Record.FIELD if char == delimiter else _Record.UNQUOTED
        elif (end := text.find(delimiter, i)) >= 0:  # unquoted: a quote is text, the delimiter ends it
            state, i = _Record.FIELD, end + 1
        else:
            return state
    return state


class _TooLong(Exception):
    """A record past the bound was skipped: lines `first` to `last`."""

    def __init__(self, first: int, last: int) -> None:
        super().__init__(first, last)
        self.first, self.last = first, last


class _Lines:
    """The lines of a CSV file for `csv.reader`, no record longer than `limit` characters.

    A record of CSV may span lines (a quoted field holding newlines), so a record's lines are read
    and counted together, following csv's quoting (`_scan`) to where it ends, before csv is given
    any of them. When they pass the bound, what was held is dropped, the rest of the record is read
    past a MiB at a time, and `_TooLong` is raised in csv's reader: what is held is one record of at
    most `limit`, and csv never builds a field of the long one (its field buffer takes 4 bytes a
    character).
    """

    def __init__(self, fh: Any, *, limit: int, delimiter: str) -> None:
        self.fh, self.limit, self.delimiter, self.grammar = fh, limit, delimiter, _grammar(delimiter)
        self.line, self.carry = 0, ""  # the last line read; a character read past it
        self.first, self.size = 1, 0  # the record csv is reading: its first line, its characters
        self.pending: deque[str] = deque()  # lines read, not yet given to csv

    def __iter__(self) -> _Lines:
        return self

    def record_done(self) -> None:
        self.first, self.size = self.line + 1, 0

    def _readline(self, size: int) -> str:
        """`fh.readline(size)`, but a `\\r\\n` cut in two by the
        size is read whole (the `\\n` is no line of its own)."""
        if self.carry:
            line, self.carry = self.carry, ""
            line += "" if line == "\r" else self.fh.readline(size - 1)
        else:
            line = self.fh.readline(size)
        if line.endswith("\r"):  # text read with newline="" ends a line at \r, \n or \r\n
            after = self.fh.read(1)
            line, self.carry = (line + after, "") if after == "\n" else (line, after)
        return line

    def __next__(self) -> str:
        if not self.pending:
            self._read_record()
        return self.pending.popleft()

    def _read_record(self) -> None:
        """The lines of the next record into `pending`, each read only as far as the bound leaves room.

        Raises:
            StopIteration: the file has ended.
            _TooLong: the record passes the bound (it was read past, to its end).
        """
        quoted = False  # whether a quoted field is open at the end of the line
        while line := self._readline(max(self.limit - self.size, 0) + 1):  # what still fits, and one more
            self.line += 1
            if not self.size and not line.strip("\r\n"):  # a blank line between records: csv skips it
                self.first = self.line + 1
                self.pending.append(line)
                return
            if (
                self.size + len(line.rstrip("\r\n")) > self.limit
            ):  # cut short by the read, or the file's last line; its newline is not counted
                self._skip(_Record.QUOTED if quoted else _Record.FIELD, line)
            self.size += len(line)
            self.pending.append(line)
            if '"' in line:  # without a quote, a line leaves a quoted field open and ends any other record
                quoted = not (self.grammar.closes_quoted if quoted else self.grammar.closes).fullmatch(line)
            if not quoted:
                return
        if not self.pending:  # else: the file ends inside a quoted field, which csv reads as it does
            raise StopIteration

    def _skip(self, state: _Record, line: str) -> NoReturn:
        """Drop what is held of a record past the bound and read on to its end (`state`: csv's before
        `line`, its last line read): to the end of the line, then of every line a quoted field goes on to."""
        self.pending.clear()
        state = _scan(state, line, self.delimiter)
        while True:
            while line[-1] not in "\r\n" and (line := self._readline(_SKIP)):
                state = _scan(state, line, self.delimiter)
            if state is not _Record.QUOTED or not (line := self._readline(_SKIP)):
                break
            self.line += 1
            state = _scan(state, line, self.delimiter)
        first = self.first
        self.record_done()
        raise _TooLong(first, self.line)


def _too_long(source: str, skipped: _TooLong, limit: int) -> RecordError:
    """The reject of a record past `max_line_bytes` (nothing of it was kept)."""
    lines = f" (lines {skipped.first}-{skipped.last})" if skipped.last > skipped.first else ""
    return RecordError(
        f"the record is longer than {limit:,} characters (max_line_bytes){lines}, so it was skipped unread; split "
        "the record, or raise max_line_bytes (--max-line-bytes) if it is real",
        location=Location(source, line=skipped.first),
        code=RejectCode.OVER_LIMIT,
    )


def read_csv(
    path: Path, *, delimiter: str | None = None, bounds: ReadBounds = ReadBounds()
) -> Iterator[tuple[Location, Any]]:
    """CSV or TSV with a header row, streamed; each row is a dict of strings, kept as written
    (a `\\r\\n` inside a quoted field stays `\\r\\n`).

    A row with more or fewer fields than the header, a record (its lines) longer than
    `bounds.line_bytes` characters, or a field longer than `bounds.string_chars`, comes back
    as a RecordError located at its line (rejected with on_error="skip"), never cut or padded
    silently; the rest of the file is read on, with no more than one record in memory.
    """
    source = str(path)
    sep = check_delimiter(delimiter) or sniff_delimiter(path)
    # Python's default (128 KiB) rejects valid files with long answers; no field is longer than its record.
    csv.field_size_limit(max(bounds.line_bytes, bounds.string_chars) + 2)
    with open_text(path, max_bytes=bounds.decompressed_bytes) as fh:
        lines = _Lines(fh, limit=bounds.line_bytes, delimiter=sep)
        try:
            header = next(csv.reader(lines, delimiter=sep), None)
            if header is None:
                raise ReaderError(f"{path}: file is empty; expected a header row and records")
            lines.record_done()
            while True:
                reader = csv.DictReader(lines, fieldnames=header, delimiter=sep)
                try:
                    for row in reader:
                        location = Location(source, line=lines.line)
                        checked = _row(dict(row), header, location)
                        if lines.size > bounds.string_chars and isinstance(checked, dict):
                            checked = string_checked(checked, location, bounds.string_chars)
                        lines.record_done()
                        yield location, checked
                    return
                except _TooLong as skipped:
                    yield Location(source, line=skipped.first), _too_long(source, skipped, bounds.line_bytes)
        except _TooLong:
            raise ReaderError(
                f"{path}:1: the header is longer than {bounds.line_bytes:,} characters (max_line_bytes); "
                "check the file, or raise max_line_bytes (--max-line-bytes) if it is real"
            ) from None
        except UnicodeDecodeError:
            raise ReaderError(f"{path}:{lines.line + 1}: not valid UTF-8; {REENCODE}") from None
        except csv.Error as exc:
            raise ReaderError(f"{path}:{lines.line}: invalid CSV: {exc}") from None
