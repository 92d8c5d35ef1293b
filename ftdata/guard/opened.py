"""A build's source files opened once: every pass over one (the progress bar's count, the task's first record,
the cache digest, the rows) reads the one descriptor the build opened, each pass at its own offset.

    with opened_once(["data.jsonl"]):          # ftdata.build.api.build, the CLI's build and stats
        reopened(Path("data.jsonl"))           # a fresh reader of the held descriptor (its own position)
    reopened(Path("data.jsonl"))               # None outside: the caller opens the path, as it always did

Which files: `ftdata.build.api.source_files` names them, a folder as the data files its reader reads, a recipe
as its sources' and evaluation files. Every reader of a file reads through `reopened` (`ftdata.io.compressed.
open_raw`: JSON, JSONL, CSV, text, Parquet handed to pyarrow as a file object; the cache digest in
`ftdata.guard.inputs`). What `datasets` loads itself is not held, and is opened by it on each pass: a hub id
(`datasets.load_dataset`), a `save_to_disk` folder (`load_from_disk`). A recipe's YAML (or another tool's
declaration) is read once where it is parsed (`ftdata.io.declarations.yaml_file`), and those bytes are its digest.

A file replaced under its path (a rename) is no longer the held one: `reopened` then gives None and the caller
opens the path as before. A pass reads with `os.pread` at its own offset, so passes never move each other and a
thread may run each. Only regular files are held (a FIFO or a device is read once by its one reader anyway), at
most `MAX_HELD` at a time (a recipe of many shards opens the rest as it reads them), and only where `os.pread`
exists (POSIX).
"""

from __future__ import annotations

import io
import os
import stat
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["MAX_HELD", "opened_once", "reopened"]

MAX_HELD = 256  # descriptors held at once: far below the usual limit of 1024 per process
_HELD: dict[str, int] = {}  # absolute path -> the descriptor the scope opened
_LOCK = threading.Lock()
_BUFFER = 1 << 16


@contextmanager
def opened_once(paths: Iterable[Any]) -> Iterator[None]:
    """Inside, each of `paths` that is a regular file is open once, and `reopened` reads it; one held already (an
    outer scope's) stays that scope's. Anything else (a hub id, a folder, a `Dataset`) is passed over."""
    mine: list[tuple[str, int]] = []
    try:
        for path in paths:
            held = _hold(path)
            if held is not None:
                mine.append(held)
        yield
    finally:
        with _LOCK:
            for name, _ in mine:
                del _HELD[name]
        for _, fd in mine:
            os.close(fd)


def _hold(path: Any) -> tuple[str, int] | None:
    if not hasattr(os, "pread") or not isinstance(path, (str, os.PathLike)):
        return None
    name = os.path.abspath(os.path.expanduser(os.fspath(path)))
    with _LOCK:
        if name in _HELD or len(_HELD) >= MAX_HELD:
            return None
        try:  # a FIFO is never opened here: an open would wait for its writer, then take what it gives
            if not stat.S_ISREG(os.stat(name).st_mode):
                return None
            fd = os.open(name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
        except (OSError, ValueError):  # not there, not readable: the reader says so, at its record
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        _HELD[name] = fd
        return name, fd


def reopened(path: str | Path) -> io.BufferedReader | None:
    """A new buffered reader of `path` from its start, reading the descriptor a scope holds; None outside one, or
    when the path no longer names the held file (replaced by a rename: the caller opens what the path names now,
    as a digest of it must read what its stat describes)."""
    name = os.path.abspath(os.path.expanduser(os.fspath(path)))
    with _LOCK:
        fd = _HELD.get(name)
    if fd is None:
        return None
    try:
        now, held = os.stat(name), os.fstat(fd)
    except OSError:
        return None
    if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
        return None
    return io.BufferedReader(_Pass(fd, str(path)), buffer_size=_BUFFER)


class _Pass(io.RawIOBase):
    """One pass over a held descriptor: reads at its own offset (`os.pread`), never the descriptor's."""

    def __init__(self, fd: int, name: str):
        self._fd, self._at, self.name = fd, 0, name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if hasattr(os, "preadv"):  # straight into the buffer (Linux, BSD)
            n = os.preadv(self._fd, [view], self._at)
        else:
            data = os.pread(self._fd, len(view), self._at)
            n = len(data)
            view[:n] = data
        self._at += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: os.fstat(self._fd).st_size}[whence]
        self._at = max(0, base + offset)
        return self._at

    def tell(self) -> int:
        return self._at
