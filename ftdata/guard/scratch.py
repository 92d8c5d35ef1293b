"""Scratch folders: `$TMPDIR/ftdata-<pid>-xxxxxxxx`, removed when the run that made them ends.

A run removes its scratch at exit, on SIGTERM/SIGHUP, and when a build fails
(`drop_scratch`). A run killed with SIGKILL cannot: the next run sweeps its scratch
(`clean_stale_scratch`), and only folders ftdata made (its naming, a real folder owned by
this user, ftdata's mark file whose lock no live run holds).
"""

from __future__ import annotations

import atexit
import fcntl
import os
import re
import signal
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any

from ftdata.guard.atomic import TEMP_MARK, remove

SCRATCH_PREFIX = "ftdata-"

_SCRATCH: list[Path] = []
_SCRATCH_PID = os.getpid()
_HANDLED = False
_LOCKS: dict[Path, int] = {}  # scratch folder -> the descriptor holding its lock
SCRATCH_MARK = ".ftdata-scratch"  # in every scratch folder: ftdata's mark and its lock
SCRATCH_TEXT = b"ftdata scratch folder: removed when the run that made it ends\n"
_SCRATCH_NAME = re.compile(rf"{SCRATCH_PREFIX}\d+-[a-z0-9_]{{8}}")  # tempfile.mkdtemp(prefix="ftdata-<pid>-")


def _cleanup_scratch() -> None:
    if os.getpid() != _SCRATCH_PID:  # a forked worker must not remove its parent's scratch
        return
    while _SCRATCH:
        remove(_SCRATCH.pop())


def _on_signal(signum: int, frame: Any) -> None:
    _cleanup_scratch()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    global _HANDLED
    if _HANDLED:
        return
    _HANDLED = True
    atexit.register(_cleanup_scratch)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:  # never replace a handler the application set
            signal.signal(sig, _on_signal)


def _stale(folder: Path) -> int | None:
    """A descriptor holding the lock of `folder` when it is a scratch folder of a run that is gone, else None.

    Only a folder ftdata made qualifies: its own naming (`ftdata-<pid>-xxxxxxxx`), a real folder
    (not a link) owned by this user, holding ftdata's mark file (a plain file with ftdata's
    text), whose lock no live run holds.
    """
    if not _SCRATCH_NAME.fullmatch(folder.name):
        return None
    try:
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return None
        fd = os.open(folder / SCRATCH_MARK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        mark = os.fstat(fd)
        if stat.S_ISREG(mark.st_mode) and mark.st_uid == os.getuid() and os.read(fd, 256) == SCRATCH_TEXT:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
    except OSError:  # BlockingIOError: its run is alive
        pass
    os.close(fd)
    return None


def clean_stale_scratch(root: Path | None = None) -> int:
    """Remove scratch folders of runs that died without cleaning up; return how many.

    A live run holds an `fcntl` lock on its folder's mark file; a free lock means its owner
    is gone. Folders ftdata did not make (`$TMPDIR/ftdata-myproject`) are never touched (`_stale`).
    """
    removed = 0
    for folder in Path(root or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        fd = _stale(folder)
        if fd is None:
            continue
        try:
            remove(folder)
            removed += 1
        finally:
            os.close(fd)
    return removed


def scratch_dir() -> Path:
    """A fresh scratch folder, removed at exit or on SIGTERM/SIGHUP (stale ones are swept first)."""
    global _SCRATCH_PID
    if os.getpid() != _SCRATCH_PID:
        _SCRATCH.clear()
        _LOCKS.clear()
        _SCRATCH_PID = os.getpid()
    _install_handlers()
    clean_stale_scratch()
    path = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
    # Marked and locked before the mark's name is visible, so a sweeping run never sees it free.
    pending = path / f"{TEMP_MARK}scratch"
    fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.write(fd, SCRATCH_TEXT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held for the life of the process
    pending.rename(path / SCRATCH_MARK)
    _LOCKS[path] = fd
    _SCRATCH.append(path)
    return path


def drop_scratch(path: Path) -> None:
    """Remove a scratch folder now (a failed build's), not at exit."""
    if path in _SCRATCH:
        _SCRATCH.remove(path)
    remove(path)
    fd = _LOCKS.pop(path, None)
    if fd is not None:
        os.close(fd)
