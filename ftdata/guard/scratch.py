"""Scratch folders: `$TMPDIR/ftdata-<pid>-xxxxxxxx`, removed when the run that made them ends.

A run removes its scratch at exit, on SIGTERM/SIGHUP, and when a build fails
(`drop_scratch`). A run killed with SIGKILL cannot: its watchdog, when it has one (a build into
OUT, a cache entry, a local Ray cluster: `reaper.py`), sweeps its scratch the moment it is gone,
and the next run does too (`commit.clean_stale_scratch`), only folders ftdata made (its naming, a
real folder owned by this user, ftdata's mark file whose lock no live run holds): a process sweeps
when it makes its first scratch folder and then at most every `SWEEP_EVERY_S`. Ray ends its
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
import time
from pathlib import Path
from typing import Any

from ftdata.guard.atomic import TEMP_MARK, remove
from ftdata.guard.commit import SCRATCH_MARK, SCRATCH_PREFIX, SCRATCH_TEXT, clean_stale_scratch

_SCRATCH: list[Path] = []
_SCRATCH_PID = os.getpid()
_HANDLED = False
_LOCKS: dict[Path, int] = {}  # scratch folder -> the descriptor holding its lock
# A sweep opens the mark of every scratch folder in $TMPDIR and tries its lock. A process that builds thousands of
# times holds a folder per in-memory build (its rows), so sweeping before each one grew with the number of builds:
# a test worker with ~1,000 folders spent 20 ms a build on it. A dead run's scratch waits at most this long for the
# next build of a running process (a new process sweeps at once).
SWEEP_EVERY_S = 60.0
_SWEPT: float | None = None  # when this process last swept (time.monotonic), None before its first scratch folder


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
    """A fresh scratch folder, removed at exit or on SIGTERM/SIGHUP (stale ones are swept first: on this process's
    first, then at most every `SWEEP_EVERY_S`)."""
    global _SCRATCH_PID, _SWEPT
    if os.getpid() != _SCRATCH_PID:
        _SCRATCH.clear()
        _LOCKS.clear()
        _SCRATCH_PID, _SWEPT = os.getpid(), None
    _install_handlers()
    now = time.monotonic()
    if _SWEPT is None or now - _SWEPT >= SWEEP_EVERY_S:
        _SWEPT = now
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
