"""Read bounds: the longest line, the longest string and the decompressed size a reader takes.

A file from the internet can hold one 6 GiB line (a 28 MB `.jsonl.gz` does), or one valid
record whose string is 3 GiB. Read as it comes, either grows memory by gigabytes before any
check can run. So a reader never holds more of a line than `line_bytes`: it reads lines with a
bounded `readline`, and a longer line is skipped to its end a buffer at a time and comes back
as a located `RecordError` (rejected with `on_error="skip"`, the build stopped otherwise):

    data.jsonl.gz:7: the line is longer than 67,108,864 bytes (max_line_bytes) ...

The bounds are options (`max_line_bytes`, `max_string_chars`, `max_decompressed_bytes` of
`DataOptions`, `--max-line-bytes` ... on the command line), so a build that needs more says so.
Every read of user bytes goes through them, the progress counter's included (`io/counter.py`);
an image's header is parsed through `BoundedHead`, which stops at `MAX_HEADER_BYTES`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ftdata.errors import ConfigError, Location, ReaderError, RecordError
from ftdata.guard.space import disk_space, scratch_place
from ftdata.outcomes import RejectCode

# A record is one line of JSONL: a 128k-token conversation is ~0.5 MB; 64 MiB leaves room for
# records 100x that, and is what one line may cost in memory (twice, while it is decoded).
MAX_LINE_BYTES = 64 << 20
# One render may hold 10,000,000 characters (FTDATA_RENDER_MAX_CHARS): a longer string can never render.
MAX_STRING_CHARS = 10_000_000
# Bytes one compressed file may inflate to: far past any real dataset file, far short of a bomb's terabytes.
MAX_DECOMPRESSED_BYTES = 32 << 30
# Messages of one conversation: a 128k-token context filled by 1,024 messages averages 128 tokens
# each, and real chat data (ShareGPT, OpenAI logs) stays under a few hundred turns; locating the
# turns of a record costs renders per assistant turn, so its work must be bounded by its length.
MAX_MESSAGES = 1024
# What parsing one media file's header may read: real headers are kilobytes (EXIF, ICC profiles and
# text chunks reach a few MB), and PIL reads a WebP whole to parse it; a PNG may hold gigabytes of
# chunks before its pixels, which PIL would read whole.
MAX_HEADER_BYTES = 64 << 20
_SKIP = 1 << 20  # a too-long line is skipped this many bytes at a time
_ENDS = ("\n", "\r", b"\n")  # what ends a line: text read with newline="" also ends one at a lone \r


@dataclass(frozen=True, slots=True)
class ReadBounds:
    """What one reader may take: bytes per line, characters per string, decompressed bytes per file."""

    line_bytes: int = MAX_LINE_BYTES
    string_chars: int = MAX_STRING_CHARS
    decompressed_bytes: int = MAX_DECOMPRESSED_BYTES

    def __post_init__(self) -> None:
        for name, option in (
            ("line_bytes", "max_line_bytes"),
            ("string_chars", "max_string_chars"),
            ("decompressed_bytes", "max_decompressed_bytes"),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{option} must be a positive integer, got {option}={value!r}")

    @classmethod
    def of(cls, options: Any) -> ReadBounds:
        """The bounds of `DataOptions`."""
        return cls(options.max_line_bytes, options.max_string_chars, options.max_decompressed_bytes)


def bounded_lines(fh: IO[Any], limit: int) -> Iterator[Any]:
    """The lines of `fh` (bytes or text), each at most `limit` long; a longer line is read past
    `_SKIP` at a time and yields None in its place, so memory never holds more than `limit`."""
    while line := fh.readline(limit + 1):
        end = line[-1:]
        if len(line) <= limit or end in _ENDS:  # the newline is not counted
            yield line
            continue
        while end not in _ENDS and (rest := fh.readline(_SKIP)):
            end = rest[-1:]
        yield None


class HeaderTooLong(Exception):
    """A header read past its bound (`BoundedHead`)."""


class BoundedHead(io.RawIOBase):
    """A seekable binary file whose reads raise `HeaderTooLong` once `limit` bytes have been read
    in all, until `lift()`: the header of an image is parsed through it, its pixels are not.

        head = BoundedHead(fh, MAX_HEADER_BYTES)
        with Image.open(head) as im:   # at most MAX_HEADER_BYTES read
            head.lift()                # the pixel check reads on
    """

    def __init__(self, fh: IO[bytes], limit: int) -> None:
        super().__init__()
        self._fh, self.taken = fh, 0
        self.limit: int | None = limit

    def lift(self) -> None:
        self.limit = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def read(self, size: int | None = -1) -> bytes:
        # read, not only readinto: PIL reads a header a few bytes at a time, and this is one call each
        if self.limit is None:
            return self._fh.read(-1 if size is None else size)
        room = self.limit - self.taken + 1  # one byte past the bound is enough to know
        data = self._fh.read(room if size is None or size < 0 else min(size, room))
        self.taken += len(data)
        if self.taken > self.limit:
            raise HeaderTooLong(self.limit)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def copy_pipe(pipe: Path, copy: Path, *, limit: int) -> None:
    """Copy what `pipe` (stdin, a FIFO, a `<(process substitution)`) gives into `copy`, at most `limit` bytes.

    A pipe can be read once and may never end (`<(yes ...)`), so it is copied to scratch up to the
    bound, a MiB at a time.

    Raises:
        ReaderError: the pipe gave more than `limit` bytes (located at the line where it passed).
        DiskFullError: scratch filled up while copying (naming `$TMPDIR`).
    """
    copied = lines = 0
    with disk_space(scratch_place(mine=lambda: copy)), pipe.open("rb") as src, copy.open("wb") as dst:
        while chunk := src.read(_SKIP):
            if copied + len(chunk) > limit:
                line = lines + chunk.count(b"\n", 0, limit - copied) + 1
                raise ReaderError(
                    f"{pipe}:{line}: the pipe gives more than {limit:,} bytes (max_decompressed_bytes, the most "
                    "ftdata copies from a pipe); raise max_decompressed_bytes (--max-decompressed-bytes) if the "
                    "data is real, or give a file"
                )
            copied, lines = copied + len(chunk), lines + chunk.count(b"\n")
            dst.write(chunk)


def line_too_long(location: Location, limit: int) -> RecordError:
    """The reject of a line past `max_line_bytes` (nothing of it was kept)."""
    return RecordError(
        f"the line is longer than {limit:,} bytes (max_line_bytes), so it was skipped unread; split the record, or "
        "raise max_line_bytes (--max-line-bytes) if it is real",
        location=location,
        code=RejectCode.OVER_LIMIT,
    )


def bad_string(value: Any, bad: Callable[[str], bool], path: str = "") -> tuple[str, str] | None:
    """(field path, the string) of the first string in `value` (a parsed record: dicts, lists, scalars) for
    which `bad` is true, or None. A field's path (`messages[1].content`) is spelled only for a container
    walked into or a string found, not for every string."""
    if isinstance(value, str):
        return (path or "(record)", value) if bad(value) else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if isinstance(item, str) and not bad(item):
            continue
        if isinstance(item, (str, dict, list)) and (found := bad_string(item, bad, _field_path(path, key, value))):
            return found
    return None


def _field_path(path: str, key: Any, container: Any) -> str:
    """The field path of `container[key]`, `container` being at `path`: `messages[1].content`."""
    if isinstance(container, list):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def string_checked(row: Any, location: Location, limit: int) -> Any:
    """`row`, or a RecordError naming its field when one of its strings is longer than `limit` characters."""
    found = bad_string(row, lambda text: len(text) > limit)
    if found is None:
        return row
    field, text = found
    return RecordError(
        f"holds a string of {len(text):,} characters, more than {limit:,} (max_string_chars); shorten it, or raise "
        "max_string_chars (--max-string-chars) if it is real",
        location=location,
        field=field,
        code=RejectCode.OVER_LIMIT,
    )


__all__ = [
    "MAX_DECOMPRESSED_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_LINE_BYTES",
    "MAX_MESSAGES",
    "MAX_STRING_CHARS",
    "BoundedHead",
    "HeaderTooLong",
    "ReadBounds",
    "bad_string",
    "bounded_lines",
    "copy_pipe",
    "line_too_long",
    "string_checked",
]
