"""What a build leaves running or half-written dies or is finished with it, even when it is killed with SIGKILL.

A build killed with SIGKILL runs no `finally` and no `atexit`: the `processes` engine's spawned
workers (and the resource tracker they keep alive) and a local Ray cluster (raylet, GCS, its
workers, its RuntimeEnvAgent and DashboardAgent) would run on, orphaned, and its hidden stage
would stay inside OUT. Two mechanisms:

    die_with_parent(pid)   in a worker: Linux's parent-death signal (prctl PR_SET_PDEATHSIG,
                           SIGKILL), or elsewhere a thread that polls the parent's pid
    Watchdog(job, ...)     a small process in its own session (a kill of the build's process
                           group leaves it be) that does `job` the moment this process is gone:
                           its stdin is a pipe whose write end only this process holds (end of
                           file: gone), and on Linux it also waits on a pidfd of this process.
                           A normal exit stops it first. Its jobs:
        Reaper()           "reap": around a local Ray cluster, learn the processes the cluster
                           starts (the descendants of this process that appear once it is up,
                           and theirs) and kill them
        Watchdog("stage")  "stage OUT PREFIX": around a build into OUT (`safeio.OutputDir`),
                           publish its committed stage or remove its uncommitted one and its
                           temporary files (`ftdata/guard/commit.py`, loaded by path)
        Watchdog("remove") "remove PATH": around a temporary folder outside OUT (a cache entry
                           being written, `cache.save_cached`), remove it
                           After its job, each sweeps the scratch folders in $TMPDIR of runs that
                           are gone (`commit.clean_stale_scratch`): the build's own, and for the
                           Reaper those of the cluster's workers it has just killed.

`python -I -S ftdata/guard/reaper.py JOB PID ARGS...` is the watchdog (standard library only: it
never imports the ftdata package, which costs 0.7 s and 80 MB).
"""

from __future__ import annotations

import os
import select
import sys
import time

# The watchdog starts beside every build: it imports only what its job needs (pathlib, typing and
# signal would triple the 10 ms of CPU its start takes), the rest is imported where it is used.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable
    from typing import Any

_PR_SET_PDEATHSIG = 1
_POLL = 0.5  # seconds between two looks at the parent


def die_with_parent(parent: int) -> None:
    """Make this process end when `parent` does (SIGKILL of the parent included)."""
    import signal

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

    import threading

    threading.Thread(target=watch, name="ftdata-parent-watch", daemon=True).start()


# --- the watchdog of a local Ray cluster ------------------------------------------------------------

Key = tuple[int, str]  # (pid, start time): a pid the system has given to another process is not the same key


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of `pid`, or None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
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


def _gone(parent: int) -> Callable[[float | None], bool]:
    """In a watchdog: `wait(timeout)`, true once `parent` is gone (at once, not a poll later).

    Its stdin is a pipe only `parent` holds the write end of: end of file when `parent` is gone.
    A child `parent` forked with that end could delay it; a pidfd of `parent` (Linux) cannot.
    """
    watched = [sys.stdin.fileno()]
    try:
        if os.getppid() == parent:  # else gone already: the pid may be another process's now
            watched.append(os.pidfd_open(parent))
    except (AttributeError, OSError):  # no pidfd here, or `parent` gone
        pass

    def wait(timeout: float | None) -> bool:
        ready = select.select(watched, [], [], timeout)[0]
        return bool(ready) and (ready != watched[:1] or not os.read(watched[0], 1 << 12))

    return wait


def _reap(parent: int, excluded: set[int]) -> None:
    """Learn the new descendants of `parent` while it lives; when it is gone, kill them and theirs."""
    import signal

    me, gone = os.getpid(), _gone(parent)
    known: set[Key] = set()
    while not gone(_POLL):
        table = _processes()
        known |= {(pid, start) for pid, start in descendants(parent, table) if pid not in excluded and pid != me}
        known |= {key for pid, _ in known for key in descendants(pid, table)}
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
            break
        time.sleep(0.2)
    _commit().clean_stale_scratch()  # the build's scratch and its workers': their locks went with them


def _after(parent: int, job: str, args: list[str]) -> None:
    """Wait for `parent` to be gone, then do `job` with ftdata/guard/commit.py, and sweep the scratch it left.

    "stage OUT PREFIX": finish or remove the build's stage in OUT (`commit.recover`);
    "remove PATH": remove a file or folder the build was writing (a cache entry; `commit.remove`).
    """
    from pathlib import Path

    _gone(parent)(None)
    commit = _commit()
    if job == "stage":
        commit.recover(Path(args[0]), args[1])
    else:
        commit.remove(Path(args[0]))
    commit.clean_stale_scratch()


def _commit() -> Any:
    """ftdata/guard/commit.py, loaded by its path (without the package, which costs 0.7 s and 80 MB)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().with_name("commit.py")
    spec = importlib.util.spec_from_file_location("ftdata_commit", path)
    assert spec is not None and spec.loader is not None
    commit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(commit)
    return commit


class Watchdog:
    """A watchdog process that does `job` (with `args`) if this process is gone before `stop()`.

        with Watchdog("stage", str(out), prefix): ...   # the build; a normal end stops it

    Starting it costs this process about a millisecond (the watchdog's own start runs beside
    it); one that cannot start (no `sys.executable`) is no watchdog: the next ftdata run
    settles what a kill left.
    """

    def __init__(self, job: str, *args: str) -> None:
        self.job, self.args = job, args
        self.proc: subprocess.Popen[bytes] | None = None
        self._pipe = -1  # the write end: only this process holds it (`os.pipe` is not inheritable)

    def __enter__(self) -> Watchdog:
        import subprocess

        read, self._pipe = os.pipe()
        try:
            self.proc = subprocess.Popen(
                # -I -S: the file alone, without the ftdata package, its folder or site-packages
                [sys.executable, "-I", "-S", os.path.abspath(__file__), self.job, str(os.getpid()), *self.args],
                stdin=read,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # not in this process's group: a signal to the group leaves it to do its job
            )
        except OSError:
            self.stop()
        finally:
            os.close(read)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """End the watchdog without its job: this process ended the work itself."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        if self._pipe >= 0:
            os.close(self._pipe)
            self._pipe = -1


class Reaper(Watchdog):
    """A watchdog that kills what this process starts from now on if this process dies first.

    `with Reaper(): ray.init(...)` ... the cluster's processes are learnt as they appear (a
    normal end: ray.shutdown() stops them). Only on Linux (it reads /proc); elsewhere it does nothing.
    """

    def __init__(self) -> None:
        super().__init__("reap")

    def __enter__(self) -> Reaper:
        if os.path.exists("/proc/self/stat"):
            self.args = tuple(str(pid) for pid, _ in descendants(os.getpid()))
            super().__enter__()
        return self


if __name__ == "__main__":
    _job, _parent, *_args = sys.argv[1:]
    if _job == "reap":
        _reap(int(_parent), {int(p) for p in _args})
    else:
        _after(int(_parent), _job, _args)
