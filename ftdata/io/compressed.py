"""Compressed inputs: gzip, bzip2, xz and zstd files read as the text they hold, streamed and bounded.

The codec comes from a file's first bytes, never its name: `data.jsonl` holding gzip bytes is
read, and so is `data.jsonl.gz` holding plain text. The suffix under the codec's picks the
reader (`data.tsv.zst` -> `.tsv`). The text is decompressed as it is read, so JSONL and CSV
never hold more than a buffer of it; a JSON document is read whole, as uncompressed.

    data.jsonl.gz --gzip--> counted: bytes (<= max_decompressed_bytes), lines --> reader

Every decompressed byte is counted against the `max_decompressed_bytes` option, so a "bomb" (a
few kilobytes that inflate to terabytes) stops with one line instead of filling memory or
disk, and newlines are counted too, so a truncated or corrupt stream is an error located at
the line where the decompressed text stops: `data.jsonl.gz:1834: the gzip stream ends early ...`.

A zip archive holds files, not one stream of records: it is refused with a hint to unzip it.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from pathlib import Path
from typing import IO, Any, BinaryIO

from ftdata.errors import ReaderError
from ftdata.guard.bounds import MAX_DECOMPRESSED_BYTES
from ftdata.guard.limits import LimitExceeded, half_memory
from ftdata.guard.opened import reopened

_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"PK\x03\x04": "zip",
}
_SUFFIXES = frozenset({".gz", ".gzip", ".zst", ".zstd", ".bz2", ".xz", ".zip"})
_CHECK = {"gzip": "gzip -t", "zstd": "zstd -t", "bzip2": "bzip2 -t", "xz": "xz -t"}
DECOMPRESS = {"gzip": "gunzip", "zstd": "unzstd", "bzip2": "bunzip2", "xz": "unxz", "zip": "unzip"}
_BUFFER = 1 << 16
REENCODE = "re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`"  # the hint for text that is not UTF-8


def codec_of(head: bytes) -> str | None:
    """The compression a file starting with `head` (its first 6 bytes) is in, or None."""
    return next((name for magic, name in _MAGIC.items() if head.startswith(magic)), None)


def open_raw(path: Path) -> io.BufferedReader:
    """`path`'s bytes as stored, from the start: the descriptor the build holds (`ftdata.guard.opened`), else the
    path opened. Every reader of a source file opens it here (or through `open_bytes`, which does): a file held
    for the build is then opened once, whatever reads it (pyarrow takes the reader as a file object)."""
    return reopened(path) or path.open("rb")


def data_suffix(path: Path) -> str:
    """The suffix that names the data format, under a compression suffix: `.tsv` for `d.tsv.zst`."""
    if path.suffix.lower() in _SUFFIXES:
        return Path(path.stem).suffix.lower()
    return path.suffix.lower()


def open_bytes(path: Path, *, whole: bool = False, max_bytes: int = MAX_DECOMPRESSED_BYTES) -> BinaryIO:
    """`path` opened for reading its (decompressed) bytes, at most `max_bytes` of them.

    `whole`: the caller reads everything into memory (a JSON document), so the decompressed
    size is also capped at half of this machine's memory.

    Raises:
        ReaderError: a zip archive; or, while reading, a truncated or corrupt stream.
        LimitExceeded: while reading, the text passes `max_bytes` (max_decompressed_bytes).
    """
    raw = open_raw(path)  # opened once: the compression is read off its first bytes (peeked, not consumed)
    try:
        kind = codec_of(raw.peek(6)[:6])
    except OSError:
        kind = None
    if kind is None:
        return raw
    if kind == "zip":
        raw.close()
        raise ReaderError(
            f"{path}: a zip archive holds files, not one stream of records; unzip it (`unzip {path.name}`) "
            "and pass the file or the folder it holds"
        )
    counted = _Counted(_decompressing(kind, raw), raw, path=path, kind=kind, whole=whole, cap=max_bytes)
    return io.BufferedReader(counted, buffer_size=_BUFFER)


def _decompressing(kind: str, raw: IO[bytes]) -> Any:
    """A file object of `raw`'s decompressed bytes that raises EOFError where `raw` ends early."""
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "zstd":
        return _zstd().ZstdFile(raw)
    return {"bzip2": bz2.BZ2File, "xz": lzma.LZMAFile}[kind](raw)


def _zstd() -> Any:
    """The zstd module: the standard library's from Python 3.14, its backport before."""
    try:
        from compression import zstd
    except ImportError:
        from backports import zstd
    return zstd


def open_text(path: Path, *, max_bytes: int = MAX_DECOMPRESSED_BYTES) -> IO[str]:
    """`path` opened as UTF-8 text (a BOM dropped, newlines kept as written), decompressed as `open_bytes`."""
    return io.TextIOWrapper(open_bytes(path, max_bytes=max_bytes), encoding="utf-8-sig", newline="")


class _Counted(io.RawIOBase):
    """A decompressing stream whose bytes and newlines are counted, and whose failures are located."""

    def __init__(self, stream: Any, raw: IO[bytes], *, path: Path, kind: str, whole: bool, cap: int):
        self._stream, self._raw, self._path, self._kind = stream, raw, path, kind
        self._bytes = self._lines = 0
        self._cap, self._what = cap, "max_decompressed_bytes"
        self._fix = "raise max_decompressed_bytes (--max-decompressed-bytes) if the data is real"
        if whole and (memory := half_memory()) < self._cap:
            self._cap, self._what = (
                memory,
                "half of this machine's memory, the most a JSON document read whole may take",
            )
            self._fix = "store the records as JSON Lines, which are read line by line"

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            # One read of the decompressor at most: a full `readinto` loops, and the bytes it had
            # copied when a truncated stream ends are lost with the exception (the error then named
            # a line up to a hundred before the one where the text stops).
            n = self._stream.readinto1(buffer)
        except EOFError:
            raise self._damaged(f"the {self._kind} stream ends early (the file is truncated)") from None
        except (OSError, zlib.error, lzma.LZMAError, _zstd().ZstdError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise self._damaged(f"corrupt {self._kind} data ({reason})") from None
        self._bytes += n
        self._lines += memoryview(buffer)[:n].tobytes().count(b"\n")
        if self._bytes > self._cap:
            raise LimitExceeded(
                f"{self._where()}: decompresses to more than {self._cap:,} bytes ({self._what}), which looks like a "
                f"decompression bomb; {self._fix}"
            )
        return n

    def readall(self) -> bytes:
        data = bytearray()
        while chunk := self.read(1 << 20):  # RawIOBase's own reads 8 KiB at a time
            data += chunk
        return bytes(data)

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
            self._raw.close()
        super().close()

    def _where(self) -> str:
        return f"{self._path}:{self._lines + 1}"

    def _damaged(self, what: str) -> ReaderError:
        return ReaderError(
            f"{self._where()}: {what} after {self._bytes:,} decompressed bytes; fetch it again "
            f"(`{_CHECK[self._kind]} {self._path.name}` checks a file)"
        )


__all__ = ["DECOMPRESS", "REENCODE", "codec_of", "data_suffix", "open_bytes", "open_raw", "open_text"]
