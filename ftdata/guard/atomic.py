"""Atomic writes and locks: the primitives every file ftdata writes goes through.

- A file or folder is written under a temporary name in its destination's folder (same
  filesystem) and renamed into place when complete (`atomic_path`, `AtomicFile`).
- A new file is created with `O_CREAT | O_EXCL | O_NOFOLLOW` (`create`): never an existing
  file, never through a symbolic link planted at its name; a lock file is opened with
  `O_NOFOLLOW` and must be a plain file (`open_lock`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ftdata.errors import ConfigError
from ftdata.guard.commit import remove  # one definition: the killed build's watchdog loads commit.py alone

TEMP_MARK = ".ftdata-tmp-"
# A new file, never an existing one, never reached through a symbolic link.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def temp_name(dest: Path) -> Path:
    """A unique temporary sibling of `dest` (same folder, so a rename is atomic)."""
    return dest.with_name(f"{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}-{dest.name}")


def create(path: Path) -> IO[str]:
    """A new text file at `path`, opened for writing (`O_EXCL | O_NOFOLLOW`: a planted file or link is an error)."""
    return os.fdopen(os.open(path, _NEW_FILE, 0o666), "w", encoding="utf-8")


def replace(tmp: Path, dest: Path) -> None:
    """Move `tmp` onto `dest` atomically; a folder `dest` is swapped (set aside, then removed)."""
    if dest.is_dir() and not dest.is_symlink():
        old = temp_name(dest)
        dest.rename(old)
        tmp.rename(dest)
        remove(old)
    else:
        os.replace(tmp, dest)


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path to write `dest` at; it replaces `dest` only if the block succeeds."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(dest)
    try:
        yield tmp
        replace(tmp, dest)
    finally:
        remove(tmp)


def write_text(dest: Path, text: str) -> None:
    """Write `text` to `dest` atomically."""
    with atomic_path(dest) as tmp, create(tmp) as fh:
        fh.write(text)


class AtomicFile:
    """A text file written under a temporary name: `commit()` renames it to `dest`, `abort()` drops it."""

    def __init__(self, dest: Path):
        self.dest = dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_name(dest)
        self.fh: IO[str] = create(self.tmp)

    def commit(self) -> None:
        if not self.fh.closed:
            self.fh.close()
            os.replace(self.tmp, self.dest)

    def abort(self) -> None:
        if not self.fh.closed:
            self.fh.close()
            remove(self.tmp)


def open_lock(path: Path) -> int:
    """A descriptor of the lock file `path`, created if missing; never through a link, never on a FIFO or device.

    Raises:
        ConfigError: `path` is a symbolic link or not a plain file.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(
                f"{path} is a symbolic link; ftdata never follows a link for a file it creates or locks: remove it"
            ) from None
        if exc.errno != errno.EISDIR:
            raise
        fd = -1
    if fd < 0 or not stat.S_ISREG(os.fstat(fd).st_mode):
        if fd >= 0:
            os.close(fd)
        raise ConfigError(f"{path} is not a plain file; ftdata keeps its lock there: remove it")
    return fd


@contextmanager
def file_lock(path: Path, *, waiting: str | None = None, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive `fcntl` lock on `path` (created if missing); wait for another holder.

    `waiting`, when given, is printed to stderr if the lock is busy. `timeout`: the seconds to wait at most (None: as
    long as the holder lives; the lock goes with its process).

    Raises:
        ConfigError: `path` is a symbolic link or not a plain file (`open_lock`).
        TimeoutError: another holder kept it for `timeout` seconds.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                print(waiting, file=sys.stderr)
            _wait_for(fd, timeout)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def _wait_for(fd: int, timeout: float | None) -> None:
    """Take the lock on `fd` once its holder lets go, or raise TimeoutError after `timeout` seconds."""
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(min(0.05, timeout))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{timeout} s") from None
