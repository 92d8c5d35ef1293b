"""Worker processes die with the process that started them, even when it is killed with SIGKILL.

A build killed with SIGKILL runs no `finally` and no `atexit`: the `processes` engine's spawned
workers (and the resource tracker they keep alive) and a local Ray cluster (raylet, GCS, its
workers, its RuntimeEnvAgent and DashboardAgent) would run on, orphaned. Two mechanisms:

    die_with_parent(pid)   in a worker: Linux's parent-death signal (prctl PR_SET_PDEATHSIG,
                           SIGKILL), or elsewhere a thread that polls the parent's pid
    Reaper()               around a local Ray cluster: a small watchdog process that learns the
                           processes the cluster starts (the descendants of this process that
                           appear once the cluster is up, and theirs) and kills them when this
                           process is gone. A normal exit stops the watchdog first.

`python -I ftdata/run/reaper.py PID EXCLUDED...` is the watchdog (standard library only).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_POLL = 0.5  # seconds between two looks at the parent


def die_with_parent(parent: int) -> None:
    """Make this process end when `parent` does (SIGKILL of the parent included)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent:  # the parent died before the signal was set
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_POLL)
        os._exit(1)

    threading.Thread(target=watch, name="ftdata-parent-watch", daemon=True).start()


# --- the watchdog of a local Ray cluster ------------------------------------------------------------

Key = tuple[int, str]  # (pid, start time): a pid the system has given to another process is not the same key


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of `pid`, or None when it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    if fields[0] == "Z":
        return None
    return int(fields[1]), fields[19]


def _processes() -> dict[int, tuple[int, str]]:
    """Every process: pid -> (parent pid, start time)."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            out[int(entry)] = stat
    return out


def descendants(root: int, table: dict[int, tuple[int, str]] | None = None) -> set[Key]:
    """The processes below `root` (children, theirs, ...), as (pid, start time)."""
    table = _processes() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        found.add((pid, table[pid][1]))
        todo.extend(children.get(pid, ()))
    return found


def _watch(parent: int, excluded: set[int]) -> None:
    """Learn the new descendants of `parent` while it lives; when it is gone, kill them and theirs."""
    me = os.getpid()
    born = _stat(parent)
    known: set[Key] = set()
    while (now := _stat(parent)) is not None and born is not None and now[1] == born[1]:
        table = _processes()
        known |= {(pid, start) for pid, start in descendants(parent, table) if pid not in excluded and pid != me}
        known |= {key for pid, _ in known for key in descendants(pid, table)}
        time.sleep(_POLL)
    for _ in range(3):  # what the dying ones start meanwhile is caught on the next round
        table = _processes()
        alive = {(pid, start) for pid, start in known if pid in table and table[pid][1] == start}
        alive |= {key for pid, _ in alive for key in descendants(pid, table)}
        for pid, _ in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        known = alive
        if not alive:
            return
        time.sleep(0.2)


class Reaper:
    """A watchdog process that kills what this process starts from now on if this process dies first.

    `with Reaper(): ray.init(...)` ... the cluster's processes are learnt as they appear. Only
    on Linux (it reads /proc); elsewhere it does nothing.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Reaper:
        if not Path("/proc/self/stat").exists():
            return self
        existing = [str(pid) for pid, _ in descendants(os.getpid())]
        self.proc = subprocess.Popen(
            # -I: the file alone, without importing ftdata (nor its folder on sys.path)
            [sys.executable, "-I", __file__, str(os.getpid()), *existing],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # not in this process's group: a signal to the group leaves it to do its job
        )  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:  # a normal end: what the cluster started is stopped by ray.shutdown()
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    _watch(int(sys.argv[1]), {int(p) for p in sys.argv[2:]})
