"""Disk space: a write that runs out of it (`ENOSPC`, `EDQUOT`) becomes one `DiskFullError` line.

The error is caught where a step of a build writes (scratch rows, the output folder, the
cache) and names the folder that filled, what the build needed there and what was free:

    with disk_space(Place(scratch, "scratch space, $TMPDIR", "set TMPDIR to a folder with room", mine=lambda: scratch)):
        write_rows(...)

Which folder filled is the one the failing call names (`OSError.filename`), else the one of
the places with the least space left (pyarrow's and datasets' errors name no file).
"""

from __future__ import annotations

import errno
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ftdata.errors import DiskFullError

_FULL = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "errno 28", "errno 122")


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether `exc` (or an error it was raised from) is a write that found no space."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, OSError) and (exc.errno in _FULL or any(text in str(exc) for text in _FULL_TEXT)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def size_text(n: int) -> str:
    """`1536` -> `1.5 KiB`: sizes in error lines."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def tree_bytes(path: Path | None) -> int:
    """Bytes of the plain files at or under `path` (links are not followed; 0 when it is gone)."""
    if path is None:
        return 0
    try:
        info = os.lstat(path)
    except OSError:
        return 0
    if stat.S_ISREG(info.st_mode):
        return info.st_size
    if not stat.S_ISDIR(info.st_mode):
        return 0
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


def free_bytes(folder: Path) -> int:
    """Space an unprivileged write can still take on `folder`'s filesystem (its nearest existing ancestor's)."""
    for candidate in (folder, *folder.parents):
        try:
            info = os.statvfs(candidate)
        except OSError:
            continue
        return info.f_bavail * info.f_frsize
    return 0


@dataclass(frozen=True)
class Place:
    """A folder a step writes into, said in the words of the error.

    `what`: what the folder is to the user; `fix`: what to do; `mine`: what ftdata wrote there
    in this step (measured when the disk fills); `expected`: the bytes the step needs there,
    when it can be estimated.
    """

    folder: Path
    what: str
    fix: str
    mine: Callable[[], Path | None] = lambda: None
    expected: Callable[[], int | None] = lambda: None
    shown: str | None = None  # how the error names the place when not by `folder` (a URI)
    measured: bool = True  # False: a store whose free space cannot be measured from here (s3://)

    def error(self) -> DiskFullError:
        """The one-line error for this place, measured now."""
        shown = self.shown or str(self.folder)
        if not self.measured:
            return DiskFullError(f"no space left in {shown} ({self.what}); {self.fix}", folder=shown)
        free, written = free_bytes(self.folder), tree_bytes(self.mine())
        expected = self.expected()
        # It filled up: the step needed what it wrote, what was left, and the write that failed.
        need, about = (
            (expected, True) if expected is not None and expected > written + free else (written + free, False)
        )
        needs = f"about {size_text(need)}" if about else f"more than {size_text(need)}"
        return DiskFullError(
            f"no space left in {shown} ({self.what}): the build needs {needs} there, {size_text(free)} is free; "
            f"{self.fix}",
            folder=self.shown or self.folder,
            needed=need,
            free=free,
        )


def scratch_place(
    *, mine: Callable[[], Path | None] = lambda: None, expected: Callable[[], int | None] = lambda: None
) -> Place:
    """`$TMPDIR` (the scratch folders' parent) as a `Place`."""
    return Place(
        Path(tempfile.gettempdir()),
        "scratch space, $TMPDIR",
        "free space there or set TMPDIR to a folder with room",
        mine=mine,
        expected=expected,
    )


def _named(exc: BaseException | None) -> list[Path]:
    """The paths the chain of `exc` names (`OSError.filename`, `filename2`)."""
    names: list[Path] = []
    while exc is not None and len(names) < 20:
        for name in (getattr(exc, "filename", None), getattr(exc, "filename2", None)):
            if isinstance(name, (str, os.PathLike)):
                names.append(Path(os.fsdecode(name)))
        exc = exc.__cause__ or exc.__context__
    return names


def filled(places: tuple[Place, ...], exc: BaseException) -> Place:
    """The place whose disk filled: the one the error names, else the one with the least space left."""
    for name in _named(exc):
        for place in places:
            if place.folder == name or place.folder in name.parents:
                return place
    # An object store never says ENOSPC itself: a local place filled, when there is one.
    return min(places, key=lambda place: free_bytes(place.folder) if place.measured else math.inf)


@contextmanager
def disk_space(*places: Place) -> Iterator[None]:
    """Turn a write that finds no space into a `DiskFullError` naming one of `places`.

    Raises:
        DiskFullError: the folder, the bytes needed there (estimated or a lower bound), the bytes free.
    """
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if not places or not is_disk_full(exc):
            raise
        raise filled(places, exc).error() from None
