"""Safe file handling: atomic publishing, owned output folders, locks, scratch space, input hashes.

The rules every writer in ftdata follows:

- A file or folder is written under a temporary name in its destination's folder (same
  filesystem) and renamed into place when complete: a reader sees the old version or the
  new one, never half of one; a killed build leaves only temporary names behind.
- ftdata deletes or replaces only what it wrote. An output folder carries a manifest
  (`.ftdata-output.json`) listing the names ftdata put there; a folder holding anything else
  is refused, and so is an output that equals or contains an input.
- Concurrent builds on one output folder take turns (an `fcntl` lock).
- Scratch folders are removed on exit and on SIGTERM/SIGHUP; those of killed runs (whose
  lock is free) are removed by the next run.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ftdata.errors import ConfigError

TEMP_MARK = ".ftdata-tmp-"
OWNER_FILE = ".ftdata-output.json"
LOCK_FILE = ".ftdata.lock"
SCRATCH_PREFIX = "ftdata-"


def temp_name(dest: Path) -> Path:
    """A unique temporary sibling of `dest` (same folder, so a rename is atomic)."""
    return dest.with_name(f"{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}-{dest.name}")


def remove(path: Path) -> None:
    """Remove a file or a folder tree; nothing when it is gone already."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


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
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


class AtomicFile:
    """A text file written under a temporary name: `commit()` renames it to `dest`, `abort()` drops it."""

    def __init__(self, dest: Path):
        self.dest = dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_name(dest)
        self.fh: IO[str] = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed in commit/abort

    def commit(self) -> None:
        if not self.fh.closed:
            self.fh.close()
            os.replace(self.tmp, self.dest)

    def abort(self) -> None:
        if not self.fh.closed:
            self.fh.close()
            remove(self.tmp)


@contextmanager
def file_lock(path: Path, *, waiting: str | None = None) -> Iterator[None]:
    """Hold an exclusive `fcntl` lock on `path` (created if missing); wait for another holder.

    `waiting`, when given, is printed to stderr if the lock is busy.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                print(waiting, file=sys.stderr)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- inputs versus outputs ---------------------------------------------------------------------


def input_paths(*specs: Any) -> list[Path]:
    """The local files and folders among `specs` (data, tokenizer, config, template), resolved."""
    out = []
    for spec in specs:
        if isinstance(spec, (str, os.PathLike)) and str(spec):
            path = Path(spec).expanduser()
            if path.exists():
                out.append(path.resolve())
    return out


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_output(path: Path, inputs: Iterable[Path], *, what: str) -> None:
    """Refuse an output that equals an input, contains one, or lies inside an input folder.

    Raises:
        ConfigError: naming both paths.
    """
    target = path.expanduser().resolve()
    for source in inputs:
        if _within(source, target) or (source.is_dir() and _within(target, source)):
            relation = "is" if source == target else "contains" if _within(source, target) else "is inside"
            raise ConfigError(
                f"{what} {str(path)!r} {relation} the input {str(source)!r}; writing there would destroy or "
                "mix with your data: choose another path"
            )


def check_rejects_path(path: Path, inputs: Iterable[Path]) -> None:
    """A rejects file may replace only an earlier rejects file (or an empty file), never an input.

    Raises:
        ConfigError: the path is an input, or an existing file that is not an ftdata rejects file.
    """
    check_output(path, inputs, what="rejects path")
    if not path.exists():
        return
    if path.is_dir():
        raise ConfigError(f"rejects path {str(path)!r} is a folder; give a file path")
    with path.open("rb") as fh:
        first = fh.readline(1 << 16)
    if not first.strip():
        return
    try:
        record = json.loads(first)
    except ValueError:
        record = None
    if not (isinstance(record, dict) and {"location", "stage", "reason"} <= record.keys()):
        raise ConfigError(
            f"rejects path {str(path)!r} exists and is not an ftdata rejects file; ftdata will not overwrite it: "
            "choose another path"
        )


# --- owned output folders ----------------------------------------------------------------------


class OutputDir:
    """An output folder that ftdata owns: locked while in use, written by atomic renames.

        with OutputDir(out, inputs=[data]) as target:
            with target.write("train.parquet") as tmp: ...   # renamed into place on success
            target.finish()                                  # drop stale outputs, record what is there

    Raises (on entering):
        ConfigError: OUT is a file, equals/contains/lies inside an input, or holds anything
            that ftdata did not write.
    """

    def __init__(self, path: Path, *, inputs: Iterable[Path] = ()):
        self.path = path.expanduser()
        self.inputs = list(inputs)
        self.written: list[str] = []
        self._lock: Any = None

    def _owned(self) -> set[str]:
        try:
            record = json.loads((self.path / OWNER_FILE).read_text(encoding="utf-8"))
            return set(record.get("files", []))
        except (OSError, ValueError, AttributeError):
            return set()

    def _foreign(self) -> list[str]:
        owned = self._owned() | {OWNER_FILE, LOCK_FILE}
        marked = (self.path / OWNER_FILE).exists()
        names = sorted(p.name for p in self.path.iterdir())
        return [n for n in names if n not in owned and not (marked and n.startswith(TEMP_MARK)) and n != LOCK_FILE]

    def _refuse_foreign(self) -> None:
        foreign = self._foreign()
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise ConfigError(
                f"output folder {str(self.path)!r} holds files that ftdata did not write ({shown}); "
                "ftdata never deletes or replaces those: choose a new or empty folder"
            )

    def __enter__(self) -> OutputDir:
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"output {str(self.path)!r} is a file; give a folder (-o OUT)")
        check_output(self.path, self.inputs, what="output folder")
        if self.path.is_dir():
            self._refuse_foreign()  # before creating anything in it
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = file_lock(self.path / LOCK_FILE, waiting=f"waiting for another build writing {self.path} ...")
        self._lock.__enter__()
        try:
            self._refuse_foreign()  # again: the build that held the lock may have changed it
            for leftover in self.path.glob(f"{TEMP_MARK}*"):  # from a killed build
                remove(leftover)
            if not (self.path / OWNER_FILE).exists():
                self._mark(sorted(self._owned()))
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._lock.__exit__(*exc)

    def _mark(self, files: list[str]) -> None:
        write_text(self.path / OWNER_FILE, json.dumps({"written_by": "ftdata", "files": files}, indent=1) + "\n")

    @contextmanager
    def write(self, name: str) -> Iterator[Path]:
        """A temporary path for output `name`; renamed to OUT/name when the block succeeds."""
        self._mark(sorted(self._owned() | {name}))  # owned before it exists: a kill leaves no orphan
        with atomic_path(self.path / name) as tmp:
            yield tmp
        self.written.append(name)

    def adopt(self, name: str) -> None:
        """Record `name` (written into OUT by someone else in ftdata, e.g. the rejects file) as owned."""
        self._mark(sorted(self._owned() | {name}))
        self.written.append(name)

    def finish(self) -> None:
        """Remove what an earlier build wrote and this one did not; record what OUT now holds."""
        for name in self._owned() - set(self.written):
            remove(self.path / name)
        self._mark(sorted(set(self.written)))


# --- scratch ------------------------------------------------------------------------------------

_SCRATCH: list[Path] = []
_SCRATCH_PID = os.getpid()
_HANDLED = False
_LOCKS: list[IO[str]] = []


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


def clean_stale_scratch(root: Path | None = None) -> int:
    """Remove scratch folders of runs that died without cleaning up; return how many.

    A live run holds an `fcntl` lock on its folder's `.lock`; a free lock means its owner is gone.
    """
    removed = 0
    for folder in Path(root or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        lock = folder / ".lock"
        if not lock.is_file():
            continue
        try:
            with open(lock, "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                remove(folder)
                removed += 1
        except (BlockingIOError, OSError):
            continue
    return removed


def scratch_dir() -> Path:
    """A fresh scratch folder, removed at exit or on SIGTERM/SIGHUP (stale ones are swept first)."""
    global _SCRATCH_PID
    if os.getpid() != _SCRATCH_PID:
        _SCRATCH.clear()
        _SCRATCH_PID = os.getpid()
    _install_handlers()
    clean_stale_scratch()
    path = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
    # Lock before the name is visible, so a sweeping run never sees it free.
    pending = path / f"{TEMP_MARK}lock"
    fh = open(pending, "a")  # noqa: SIM115 - held for the life of the process
    fcntl.flock(fh, fcntl.LOCK_EX)
    pending.rename(path / ".lock")
    _LOCKS.append(fh)
    _SCRATCH.append(path)
    return path


# --- input identity -----------------------------------------------------------------------------

_HASHES: dict[tuple[Any, ...], str] = {}


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes (remembered in this process while its inode, size and times hold)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def source_id(source: Any) -> str:
    """What identifies a build's input for its cache key: the content, never size + mtime.

    A file: its sha256. A folder: the names and sha256 of every file in it. A pipe or other
    stream cannot be read twice: a fresh random id (never a cache hit). A hub id: the id.
    """
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if path.is_file():
            return f"file:{file_hash(path)}"
        if path.is_dir():
            digest = hashlib.sha256()
            for item in sorted(p for p in path.rglob("*") if p.is_file()):
                digest.update(f"{item.relative_to(path)}\0{file_hash(item)}\n".encode())
            return f"folder:{digest.hexdigest()}"
        if path.exists():
            return f"stream:{uuid.uuid4().hex}"
        return str(source)
    if hasattr(source, "_fingerprint"):
        return str(source._fingerprint)
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(source, pandas.DataFrame):  # list(frame) would hash the column names only
        return hashlib.sha256(source.to_json(orient="split", default_handler=str).encode()).hexdigest()
    try:
        return hashlib.sha256(json.dumps(list(source), sort_keys=True, default=str).encode()).hexdigest()
    except TypeError:
        return repr(source)
