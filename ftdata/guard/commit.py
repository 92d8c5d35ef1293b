"""What a watchdog does once its build is gone: the standard library alone, no other ftdata module.

`safeio.OutputDir` stages a build in a hidden folder inside OUT (`.ftdata-tmp-<pid>-...-stage`)
and commits it by writing `PUBLISH` there; `publish` then moves its files into place. When the
build is killed (SIGKILL runs no cleanup), its watchdog (`ftdata/guard/reaper.py`) loads this file
by its path and runs `recover`: importing the ftdata package would take it 0.7 s and 80 MB, this
file takes nothing. So OUT is back to the earlier build, or holds the new one whole, a moment
after the kill, without waiting for the next ftdata run.

Then every watchdog sweeps the scratch folders (`$TMPDIR/ftdata-<pid>-xxxxxxxx`, `scratch.py`) of
runs that are gone (`clean_stale_scratch`): the build's own, and, around a Ray cluster, those of
the workers it has just killed. Each run's next start sweeps them too.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path

OWNER_FILE = ".ftdata-output.json"
LOCK_FILE = ".ftdata.lock"
PUBLISH = ".ftdata-publish.json"  # in a stage: the build is complete; move these names into OUT
ASIDE = ".ftdata-old"  # in a stage: where OUT's earlier versions wait to be removed
LAST = "build.json"  # published last: OUT holds a finished build exactly when it has one
QUIET = 0.3  # seconds a killed build's names must stay gone (a Ray worker may still write for a moment)
PATIENCE = 5.0  # seconds the watchdog keeps removing them at most
SCRATCH_PREFIX = "ftdata-"
SCRATCH_MARK = ".ftdata-scratch"  # in every scratch folder: ftdata's mark and its lock
SCRATCH_TEXT = b"ftdata scratch folder: removed when the run that made it ends\n"
_SCRATCH_NAME = re.compile(rf"{SCRATCH_PREFIX}\d+-[a-z0-9_]{{8}}")  # tempfile.mkdtemp(prefix="ftdata-<pid>-")


def plain(name: str) -> bool:
    """Whether `name` is one plain entry of a folder (no `/`, not `.` or `..`)."""
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def remove(path: Path) -> None:
    """Remove a file or a folder tree; nothing when it is gone already. A link is removed, never followed."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def committed(stage: Path) -> bool:
    """Whether `stage` is a real folder holding the commit record: its build is to be published, not removed."""
    return not stage.is_symlink() and (stage / PUBLISH).is_file()


def publish(folder: Path, stage: Path) -> None:
    """Move a committed stage's files into `folder`; idempotent, so a kill at any point is finished by a rerun.

    The earlier build.json goes first and the new one last: while the files change, OUT has
    no build.json, so no reader takes the new files for the old build or the reverse. Every
    step is a rename or a removal: publishing needs no space (the commit allocated it all).

    Raises:
        ValueError: the commit record names something that is not a plain file name (it was changed).
    """
    plan = json.loads((stage / PUBLISH).read_text(encoding="utf-8"))
    files, gone = list(plan["files"]), list(plan["remove"])
    for name in (*files, *gone):
        if not plain(name):
            raise ValueError(f"{name!r} is not a file name ftdata writes; {stage / PUBLISH} was changed")
    aside = stage / ASIDE
    aside.mkdir(exist_ok=True)
    if (stage / LAST).exists() and os.path.lexists(folder / LAST):
        os.replace(folder / LAST, aside / LAST)
    for name in sorted(files, key=lambda n: n == LAST):
        new, dest = stage / name, folder / name
        if not os.path.lexists(new):
            continue  # published before a kill
        if os.path.lexists(dest) and (new.is_dir() or (dest.is_dir() and not dest.is_symlink())):
            os.replace(dest, aside / name)  # a folder cannot be renamed over another one
        os.replace(new, dest)
    for name in gone:
        remove(folder / name)
    if (stage / OWNER_FILE).exists():
        os.replace(stage / OWNER_FILE, folder / OWNER_FILE)
    remove(stage)


def recover(folder: Path, prefix: str) -> None:
    """What the watchdog of a killed build does in OUT (`folder`), with OUT's lock held.

    The build's names in OUT start with `prefix` (`.ftdata-tmp-<pid>-`): its committed stage
    is published; its uncommitted stage and temporary files are removed, and removed again
    while something of the dying build (a Ray worker the reaper is killing) still writes
    there, until they stay gone for `QUIET` seconds. Nothing else is touched, no link is
    followed, and a lock file that is a link or not a plain file means doing nothing.
    """
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return  # OUT, or its lock, is gone
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        fcntl.flock(fd, fcntl.LOCK_EX)  # the next build may have it first: it settles OUT the same way
        started = quiet = time.monotonic()
        while time.monotonic() - quiet < QUIET and time.monotonic() - started < PATIENCE:
            mine = [folder / name for name in os.listdir(folder) if name.startswith(prefix)]
            for path in mine:
                if committed(path):
                    publish(folder, path)
                else:
                    remove(path)
            if mine:
                quiet = time.monotonic()
            time.sleep(0.05)
    finally:
        os.close(fd)


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
