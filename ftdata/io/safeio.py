"""Safe file handling: atomic publishing, owned output folders, locks, scratch space, input hashes.

The rules every writer in ftdata follows:

- A file or folder is written under a temporary name in its destination's folder (same
  filesystem) and renamed into place when complete: a reader sees the old version or the
  new one, never half of one; a killed build leaves only temporary names behind.
- The files of one build into an output folder are published together (`OutputDir.finish`):
  staged in a hidden folder inside OUT, committed by one rename, then moved into place; a
  build killed before the commit leaves OUT as it was, one killed after it is completed by
  the next ftdata that opens OUT.
- Nothing ftdata creates, locks or deletes is reached through a symbolic link (`O_NOFOLLOW`,
  `O_EXCL`, `lstat`); the stale-scratch sweep removes only folders ftdata marked as its own.
- A write that runs out of space (`ENOSPC`) is a `DiskFullError` naming the folder (`disk_space`).
- ftdata deletes or replaces only what it wrote. An output folder carries a manifest
  (`.ftdata-output.json`) listing the names ftdata put there; a folder holding anything else
  is refused, and so is an output that equals or contains an input.
- Concurrent builds on one output folder take turns (an `fcntl` lock); what OUT holds is
  judged only while the lock is held.
- Scratch folders are removed on exit and on SIGTERM/SIGHUP; those of killed runs (whose
  lock is free) are removed by the next run.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import stat
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
FAILED_REJECTS = ".ftdata-failed-rejects.jsonl"  # a failed build's rejects, beside the build OUT holds
SCRATCH_PREFIX = "ftdata-"
# A new file, never an existing one, never reached through a symbolic link.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def temp_name(dest: Path) -> Path:
    """A unique temporary sibling of `dest` (same folder, so a rename is atomic)."""
    return dest.with_name(f"{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}-{dest.name}")


def create(path: Path) -> IO[str]:
    """A new text file at `path`, opened for writing (`O_EXCL | O_NOFOLLOW`: a planted file or link is an error)."""
    return os.fdopen(os.open(path, _NEW_FILE, 0o666), "w", encoding="utf-8")


def remove(path: Path) -> None:
    """Remove a file or a folder tree; nothing when it is gone already. A link is removed, never followed."""
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
def file_lock(path: Path, *, waiting: str | None = None) -> Iterator[None]:
    """Hold an exclusive `fcntl` lock on `path` (created if missing); wait for another holder.

    `waiting`, when given, is printed to stderr if the lock is busy.

    Raises:
        ConfigError: `path` is a symbolic link or not a plain file (`open_lock`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                print(waiting, file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


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

PUBLISH = ".ftdata-publish.json"  # in a stage: the build is complete; move these names into OUT
_ASIDE = ".ftdata-old"  # in a stage: where OUT's earlier versions wait to be removed
LAST = "build.json"  # published last: OUT holds a finished build exactly when it has one


def _plain_name(name: str) -> str:
    """`name` when it is one plain entry of a folder (no `/`, not `.` or `..`).

    Raises:
        ConfigError: anything else (a tampered owner file listing `../x`).
    """
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ConfigError(f"{name!r} is not a file name ftdata writes; the output folder's {OWNER_FILE} was changed")
    return name


class Staging:
    """The hidden folder inside OUT where a build's files wait until they are published together.

    `write(name)` is `OutputDir.write`; a writer that needs the folder itself (Ray's shards)
    gets this object as its target: `path` is where what it wrote lies until `finish()`.
    """

    def __init__(self, path: Path):
        self.path = path
        self.written: list[str] = []

    @contextmanager
    def write(self, name: str) -> Iterator[Path]:
        """A temporary path for output `name`; staged as `name` when the block succeeds."""
        with atomic_path(self.path / _plain_name(name)) as tmp:
            yield tmp
        self.add(name)

    def add(self, name: str) -> Path:
        """Stage `name` (written at the returned path by the caller); the path."""
        if name not in self.written:
            self.written.append(_plain_name(name))
        return self.path / name


def _committed(folder: Path) -> list[Path]:
    """Stages in `folder` whose build committed (they hold `PUBLISH`) but was not published in full."""
    return sorted(p for p in folder.glob(f"{TEMP_MARK}*") if not p.is_symlink() and (p / PUBLISH).is_file())


def _publish(folder: Path, stage: Path) -> None:
    """Move a committed stage's files into `folder`; idempotent, so a kill at any point is finished by a rerun.

    The earlier build.json goes first and the new one last: while the files change, OUT has
    no build.json, so no reader takes the new files for the old build or the reverse. Every
    step is a rename or a removal: publishing needs no space (`finish` allocated it all).
    """
    plan = json.loads((stage / PUBLISH).read_text(encoding="utf-8"))
    files, gone = [_plain_name(n) for n in plan["files"]], [_plain_name(n) for n in plan["remove"]]
    aside = stage / _ASIDE
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


def settle(folder: Path, *, leftovers: bool = True) -> None:
    """With OUT's lock held: finish publishing what a killed build committed; drop other `TEMP_MARK` leftovers."""
    committed = _committed(folder)
    for stage in committed:
        _publish(folder, stage)
    if leftovers:
        for leftover in folder.glob(f"{TEMP_MARK}*"):  # a killed build's uncommitted stage or temp file
            remove(leftover)


def finish_publishing(folder: Path) -> None:
    """Publish what a build killed while publishing had committed (a reader's repair; needs OUT's lock).

    Raises:
        ConfigError: such a build is there but OUT cannot be locked (no write access).
    """
    if not _committed(folder):
        return
    try:
        with file_lock(folder / LOCK_FILE):
            settle(folder, leftovers=False)
    except PermissionError:
        raise ConfigError(
            f"{folder}: a build was stopped while it published its files; run `ftdata build` again, or ask who owns "
            "the folder to open it once"
        ) from None


class OutputDir:
    """An output folder that ftdata owns: locked while in use, its files published together.

        with OutputDir(out, inputs=[data]) as target:
            with target.write("dataset") as tmp: ...        # staged when the block succeeds
            target.finish()                                 # publish every staged file, drop stale outputs

    Until `finish()` nothing visible in OUT changes: files are staged in a hidden folder inside
    OUT (`.ftdata-tmp-...-stage`); leaving the block without `finish()` (an error, a kill)
    leaves OUT as it was.

    Raises (on entering):
        ConfigError: OUT is a file, equals/contains/lies inside an input, or holds anything
            that ftdata did not write; its lock file is a link.
    """

    def __init__(self, path: Path, *, inputs: Iterable[Path] = ()):
        self.path = path.expanduser()
        self.inputs = list(inputs)
        self.staging: Staging | None = None
        self._lock: Any = None

    @property
    def written(self) -> list[str]:
        return self.staging.written if self.staging is not None else []

    def _owned(self) -> set[str]:
        try:
            record = json.loads((self.path / OWNER_FILE).read_text(encoding="utf-8"))
            return {_plain_name(name) for name in record.get("files", [])}
        except (OSError, ValueError, AttributeError, TypeError):
            return set()

    def _foreign(self) -> list[str]:
        owned = self._owned() | {OWNER_FILE, LOCK_FILE, FAILED_REJECTS}
        marked = (self.path / OWNER_FILE).exists()
        names = sorted(p.name for p in self.path.iterdir())
        return [n for n in names if n not in owned and not (marked and n.startswith(TEMP_MARK))]

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
        if self.path.is_dir() and not os.path.lexists(self.path / LOCK_FILE):
            # A folder ftdata never locked is no build's, now or later (a build creates the lock
            # before anything else): refuse it before writing even the lock file into it.
            self._refuse_foreign()
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = file_lock(self.path / LOCK_FILE, waiting=f"waiting for another build writing {self.path} ...")
        self._lock.__enter__()
        try:  # what OUT holds is judged only now, with the lock: a live build's files are settled
            settle(self.path)
            self._refuse_foreign()
            if not (self.path / OWNER_FILE).exists():
                self._mark(sorted(self._owned()))
            stage = temp_name(self.path / "stage")
            stage.mkdir()
            self.staging = Staging(stage)
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.staging is not None and not (self.staging.path / PUBLISH).exists():
                remove(self.staging.path)  # not committed: OUT stays as it was (a committed one is finished by settle)
        finally:
            self._lock.__exit__(*exc)

    def _mark(self, files: list[str]) -> None:
        write_text(self.path / OWNER_FILE, json.dumps({"written_by": "ftdata", "files": files}, indent=1) + "\n")

    def write(self, name: str) -> Any:
        """A temporary path for output `name`; staged when the block succeeds, published by `finish()`."""
        assert self.staging is not None, "OutputDir.write outside `with`"
        return self.staging.write(name)

    def staged(self, name: str) -> Path:
        """Where to write output `name` directly (published by `finish()` with the rest)."""
        assert self.staging is not None, "OutputDir.staged outside `with`"
        return self.staging.add(name)

    def keep_failed(self, rejects: Path) -> Path:
        """Move a failed build's rejects file into OUT now, as `FAILED_REJECTS`; OUT's build is not touched."""
        os.replace(rejects, self.path / FAILED_REJECTS)
        return self.path / FAILED_REJECTS

    def finish(self) -> None:
        """Publish every staged file together; remove what an earlier build wrote and this one did not.

        Everything that takes space (the new owner file, the folder for the earlier versions,
        the commit record) is written before the commit, so a full disk fails before it.
        """
        assert self.staging is not None, "OutputDir.finish outside `with`"
        stage, written = self.staging.path, self.staging.written
        with create(stage / OWNER_FILE) as fh:
            fh.write(json.dumps({"written_by": "ftdata", "files": sorted(written)}, indent=1) + "\n")
        (stage / _ASIDE).mkdir()
        plan = {"files": written, "remove": sorted(self._owned() - set(written) | {FAILED_REJECTS})}
        write_text(stage / PUBLISH, json.dumps(plan) + "\n")  # the commit: from here on the build is published
        _publish(self.path, stage)
        self.staging = None


# --- scratch ------------------------------------------------------------------------------------

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
