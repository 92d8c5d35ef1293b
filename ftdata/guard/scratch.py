"""Scratch folders: `$TMPDIR/ftdata-<pid>-xxxxxxxx`, removed when the run that made them ends.

A run removes its scratch at exit, on SIGTERM/SIGHUP, and when a build fails
(`drop_scratch`). A run killed with SIGKILL cannot: its watchdog, when it has one (a build into
OUT, a cache entry, a local Ray cluster: `reaper.py`), sweeps its scratch the moment it is gone,
and the next run does too (`commit.clean_stale_scratch`), only folders ftdata made (its naming, a
real folder owned by this user, ftdata's mark file whose lock no live run holds). Ray ends its
workers without their exit handlers, so a worker's scratch is one shard's, dropped when the shard
is done (`build/shards.py`).
"""

from __future__ import annotations

import atexit
import fcntl
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

from ftdata.guard.atomic import TEMP_MARK, remove
from ftdata.guard.commit import SCRATCH_MARK, SCRATCH_PREFIX, SCRATCH_TEXT, clean_stale_scratch

_SCRATCH: list[Path] = []
_SCRATCH_PID = os.getpid()
_HANDLED = False
_LOCKS: dict[Path, int] = {}  # scratch folder -> the descriptor holding its lock


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
