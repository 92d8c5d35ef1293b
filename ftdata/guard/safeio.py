"""Safe file handling: atomic publishing, owned output folders, locks, scratch space (input digests: `inputs.py`).

The rules every writer in ftdata follows:

- A file or folder is written under a temporary name in its destination's folder (same
  filesystem) and renamed into place when complete: a reader sees the old version or the
  new one, never half of one; a killed build leaves only temporary names behind.
- The files of one build into an output folder are published together (`OutputDir.finish`):
  staged in a hidden folder inside OUT, committed by one rename, then moved into place; a
  build killed before the commit leaves OUT as it was, one killed after it leaves the new build
  whole: its watchdog (`reaper.Watchdog`, `commit.recover`) removes or publishes the stage the
  moment the build is gone; failing that, the next ftdata that opens OUT does.
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

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError
from ftdata.guard import commit
from ftdata.guard.atomic import (
    TEMP_MARK,
    AtomicFile,
    atomic_path,
    create,
    file_lock,
    open_lock,
    remove,
    replace,
    temp_name,
    write_text,
)
from ftdata.guard.commit import ASIDE as _ASIDE
from ftdata.guard.commit import LOCK_FILE, OWNER_FILE, PUBLISH
from ftdata.guard.scratch import (
    SCRATCH_MARK,
    SCRATCH_PREFIX,
    SCRATCH_TEXT,
    clean_stale_scratch,
    drop_scratch,
    scratch_dir,
)
from ftdata.guard.reaper import Watchdog

__all__ = [
    "FAILED_REJECTS",
    "LOCK_FILE",
    "OWNER_FILE",
    "SCRATCH_MARK",
    "SCRATCH_PREFIX",
    "SCRATCH_TEXT",
    "TEMP_MARK",
    "AtomicFile",
    "OutputDir",
    "Staging",
    "atomic_path",
    "check_output",
    "check_rejects_path",
    "clean_stale_scratch",
    "create",
    "drop_scratch",
    "file_lock",
    "finish_publishing",
    "input_paths",
    "open_lock",
    "remove",
    "replace",
    "scratch_dir",
    "settle",
    "temp_name",
    "write_text",
]

FAILED_REJECTS = ".ftdata-failed-rejects.jsonl"  # a failed build's rejects, beside the build OUT holds


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


def _plain_name(name: str) -> str:
    """`name` when it is one plain entry of a folder (no `/`, not `.` or `..`).

    Raises:
        ConfigError: anything else (a tampered owner file listing `../x`).
    """
    if not commit.plain(name):
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
    return sorted(p for p in folder.glob(f"{TEMP_MARK}*") if commit.committed(p))


def _publish(folder: Path, stage: Path) -> None:
    """Move a committed stage's files into `folder` (`commit.publish`: idempotent, finished by a rerun after a kill).

    Raises:
        ConfigError: the stage's commit record was changed (names a path that is not a plain file name).
    """
    try:
        commit.publish(folder, stage)
    except ValueError as exc:
        raise ConfigError(f"{folder}: {exc}; remove {stage} and build again") from None


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

    A build publishing right now holds the lock for the milliseconds it takes: this waits for it.

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
    OUT (`.ftdata-tmp-...-stage`); leaving the block without `finish()` (an error) leaves OUT
    as it was. A kill (SIGKILL runs no cleanup) is a watchdog's to clean up: while the lock is
    held, a `reaper.Watchdog` waits for this process to be gone and then, with the lock, removes
    the uncommitted stage and this process's temporary names in OUT, or publishes a committed
    stage (`commit.recover`); a normal exit stops it.

    Raises (on entering):
        ConfigError: OUT is a file, equals/contains/lies inside an input, or holds anything
            that ftdata did not write; its lock file is a link.
    """

    def __init__(self, path: Path, *, inputs: Iterable[Path] = ()):
        self.path = path.expanduser()
        self.inputs = list(inputs)
        self.staging: Staging | None = None
        self._lock: Any = None
        self._watchdog = Watchdog("stage")

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

    def _refuse_foreign(self, foreign: list[str] | None = None) -> None:
        foreign = self._foreign() if foreign is None else foreign
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
        lock = self.path / LOCK_FILE
        if self.path.is_dir() and not os.path.lexists(lock):
            # A folder ftdata never locked is refused before even the lock file is written into
            # it. A build creates the lock before anything else, so a listing taken while no
            # lock exists (checked after it) holds nothing of a live build's.
            foreign = self._foreign()
            if not os.path.lexists(lock):
                self._refuse_foreign(foreign)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = file_lock(self.path / LOCK_FILE, waiting=f"waiting for another build writing {self.path} ...")
        self._lock.__enter__()
        # before anything is written: every temporary name of this process in OUT (`temp_name`) is the watchdog's
        self._watchdog = Watchdog("stage", str(self.path.absolute()), f"{TEMP_MARK}{os.getpid()}-").__enter__()
        try:  # what OUT holds is judged only now, with the lock: a live build's files are settled
            settle(self.path)
            self._refuse_foreign()
            if not (self.path / OWNER_FILE).exists():
                self._mark(sorted(self._owned()))
            stage = temp_name(self.path / "stage")
            stage.mkdir()
            self.staging = Staging(stage)
        except BaseException:
            self._watchdog.stop()
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.staging is not None and not (self.staging.path / PUBLISH).exists():
                remove(self.staging.path)  # not committed: OUT stays as it was (a committed one is finished by settle)
        finally:
            # stopped once OUT is in order: a kill before this line is still the watchdog's to clean up
            self._watchdog.stop()
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

    def finish(self, *, adding: bool = False) -> None:
        """Publish every staged file together; remove what an earlier build wrote and this one did not
        (`adding`: keep it, and own the new files beside it: a page written into a finished build).

        Everything that takes space (the new owner file, the folder for the earlier versions,
        the commit record) is written before the commit, so a full disk fails before it.
        """
        assert self.staging is not None, "OutputDir.finish outside `with`"
        stage, written = self.staging.path, self.staging.written
        owned = sorted(set(written) | self._owned()) if adding else sorted(written)
        with create(stage / OWNER_FILE) as fh:
            fh.write(json.dumps({"written_by": "ftdata", "files": owned}, indent=1) + "\n")
        (stage / _ASIDE).mkdir()
        gone = [] if adding else sorted(self._owned() - set(written) | {FAILED_REJECTS})
        plan = {"files": written, "remove": gone}
        write_text(stage / PUBLISH, json.dumps(plan) + "\n")  # the commit: from here on the build is published
        _publish(self.path, stage)
        self.staging = None
