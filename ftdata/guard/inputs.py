"""What a build read, by content: the declaration its cache key, its cache check and build.json come from.

    Input       one thing a build read: its kind, its name, the sha256 of its bytes (a folder: of its
                files' names and digests), how many files
    Digests     sha256 of files, remembered by (path, size, mtime_ns, ctime_ns, inode) in this process
                and, given an index file, across runs (git's index): an edit that restores the old
                mtime still changes ctime, a file replaced by a rename has another inode
    Manifest    the media files a build read (path -> stat and sha256), found while it ran: a cache hit
                stats every one, re-hashes only one whose stat changed, and is a miss when a digest differs

Each piece that reads user bytes declares them (docs/design.md, "Outputs"): DATA (`data_input`),
a prompt template (`PromptTemplate.input`), a `--chat-template` file (`ChatTemplate.input`), the
tokenizer and processor folders (`folder_input`), a recipe, its sources and evaluation sets, a
config file, and the images records name (`Manifest`). A build's key is composed from that list,
never from the option strings that named the inputs.

A file changed within `RACY_NS` of when its digest was taken may change again within one tick of
the file system's clock with its stat unchanged (git's "racily clean" entries): its digest is
never remembered, and a manifest entry that recent is re-hashed on every check.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Generic, TypeVar

from ftdata.errors import FtdataError
from ftdata.guard.opened import reopened

__all__ = [
    "RACY_NS",
    "ReadFiles",
    "StatMemo",
    "WEIGHT_SUFFIXES",
    "Digests",
    "Input",
    "InputKind",
    "Manifest",
    "Stat",
    "add_read",
    "config_input",
    "data_input",
    "describe",
    "file_input",
    "folder_input",
    "stat_of",
    "text_digest",
    "text_input",
    "version_of",
]

T = TypeVar("T")
RACY_NS = 2_000_000_000  # 2 s: coarser than any file system clock ftdata meets (ext4 ~4 ms, HFS+ 1 s, FAT 2 s)

# Model weights beside tokenizer and processor files: never read by a build, never hashed.
WEIGHT_SUFFIXES = frozenset(
    {
        ".safetensors",
        ".bin",
        ".pt",
        ".pth",
        ".gguf",
        ".ckpt",
        ".h5",
        ".msgpack",
        ".onnx",
        ".npz",
        ".npy",
        ".pkl",
        ".ot",
        ".tflite",
        ".mlmodel",
        ".pdparams",
    }
)


class InputKind(str, Enum):
    """What an input is to the build (the order here is the order build.json and messages list them)."""

    DATA = "data"
    RECIPE = "recipe"
    CONFIG = "config"
    EVAL_SET = "eval set"
    TEMPLATE = "template"
    CHAT_TEMPLATE = "chat template"
    TOKENIZER = "tokenizer"
    PROCESSOR = "processor"
    MEDIA = "media"
    CLOCK = "clock"  # what a chat template reads of the clock (`ftdata.chat.clock`): the day it writes


@dataclass(frozen=True, slots=True)
class Input:
    """One input a build read: `name` as the user gave it, `path` where it was (absolute; "" for none),
    `digest` the sha256 of its bytes (a folder: of its files' names and digests), `files` behind it (0: an
    object in memory)."""

    kind: InputKind
    name: str
    digest: str
    files: int = 1
    path: str = ""

    def key(self) -> bytes:
        """What the build's key hashes of it: everything but the file count (the digest covers the files)."""
        return f"{self.kind.value}\0{self.name}\0{self.path}\0{self.digest}\n".encode()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value, "name": self.name, "sha256": self.digest}
        if self.path:
            out["path"] = self.path
        if self.files != 1:
            out["files"] = self.files
        return out

    def label(self) -> str:
        """`template t.jinja`, `tokenizer (7 files)`, `data`, `3 media files`: how a message names it."""
        if self.kind is InputKind.MEDIA:
            return f"{self.files:,} media file{'s' if self.files != 1 else ''}"
        if self.kind is InputKind.CLOCK:
            return f"clock ({self.name})"
        if self.files > 1 or (self.files == 1 and self.kind in (InputKind.TOKENIZER, InputKind.PROCESSOR)):
            return f"{self.kind.value} ({self.files:,} file{'s' if self.files != 1 else ''})"
        if self.kind in (InputKind.TEMPLATE, InputKind.CHAT_TEMPLATE, InputKind.EVAL_SET):
            return f"{self.kind.value} {Path(self.name).name}"
        return self.kind.value


def describe(inputs: Iterable[Input]) -> str:
    """`12 inputs unchanged: data, template t.jinja, tokenizer (7 files), 3 media files` (a folder counts its
    files, an object in memory counts one)."""
    items = list(inputs)
    n = sum(max(i.files, 1) for i in items)
    return f"{n:,} input{'s' if n != 1 else ''} unchanged: " + ", ".join(i.label() for i in items)


def text_digest(data: bytes | str) -> str:
    """sha256 (hex) of bytes, or of a string's UTF-8."""
    return hashlib.sha256(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data).hexdigest()


def text_input(kind: InputKind, name: str, data: bytes | str, *, path: str | Path = "") -> Input:
    """An input whose bytes the reader holds (a template it compiled): digested from those very bytes."""
    return Input(kind, name, text_digest(data), path=str(path))


def config_input(path: str | Path, digest: str) -> Input:
    """The config file a build's options came from, by the digest of the very bytes they were parsed from
    (`ftdata.io.config_files.read_config_file`): the file is not read again to key the build."""
    return Input(InputKind.CONFIG, str(path), digest, path=os.path.abspath(path))


Stat = tuple[int, int, int, int]
"""What identifies a file's version without reading it: (size, mtime_ns, ctime_ns, inode)."""


def stat_of(path: str | Path) -> Stat | None:
    """The `Stat` of a regular file (links followed), None when there is none at `path`."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return version_of(st)


def version_of(st: os.stat_result) -> Stat | None:
    """The `Stat` of what `os.stat` found, None when it is not a regular file. The change time moves with every
    write, also one that puts the old modification time back (`touch -r`, `cp -p`), and no call can set it."""
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _racy(version: Stat, taken_ns: int) -> bool:
    """Changed so shortly before `taken_ns` that another change may keep the same stat (see the module docstring)."""
    return max(version[1], version[2]) >= taken_ns - RACY_NS


class StatMemo(Generic[T]):
    """What a process made from files (a header, a parsed tokenizer), by the file's name and `Stat`, kept only when
    the file had not changed within `RACY_NS` of when it was read: a change within one tick of the file system's
    clock can keep a stat as it was, so a racily clean value is made again on its next use instead of served
    stale. Thread-safe; emptied when `limit` entries are held."""

    def __init__(self, limit: int):
        self._limit = limit
        self._values: dict[tuple[str, Stat], T] = {}
        self._lock = threading.Lock()

    def get(self, name: str, version: Stat | None) -> T | None:
        return None if version is None else self._values.get((name, version))

    def put(self, name: str, version: Stat | None, taken_ns: int, value: T) -> bool:
        """Keep `value`, made from the file `name` as `version` stat'ed it, read at or after `taken_ns`; whether it
        was kept (not when the file is missing or racily clean)."""
        if version is None or _racy(version, taken_ns):
            return False
        with self._lock:
            if len(self._values) >= self._limit:
                self._values.clear()
            self._values[(name, version)] = value
        return True


class ReadFiles:
    """The files a build's records named, each as stat'ed when read (None: no file there), noted from any thread and
    taken all at once (`drain`): what the build cache checks on a hit (`Manifest`)."""

    def __init__(self) -> None:
        self._read: dict[str, Stat | None] = {}
        self._lock = threading.Lock()  # engine=local renders batches on several threads

    def saw(self, path: str | Path, st: os.stat_result | None) -> Stat | None:
        """Note that `path` was read as `st` found it (None: no file); its `Stat`."""
        version = version_of(st) if st is not None else None
        with self._lock:
            self._read[os.path.abspath(path)] = version
        return version

    def drain(self) -> dict[str, Stat | None]:
        """Every file noted since the last drain."""
        with self._lock:
            read, self._read = self._read, {}
        return read


def _sha256(path: str | Path) -> str:
    with reopened(path) or open(path, "rb") as fh:  # the build's descriptor of it, when it holds one
        return hashlib.file_digest(fh, "sha256").hexdigest()


_MEMO: StatMemo[str] = StatMemo(1 << 20)  # this process's digests, by path and stat (never a racy one)


class Digests:
    """sha256 of files, each hashed once while its stat holds: remembered in this process, and in
    `index` (an SQLite file, e.g. the build cache's `digests.sqlite`) across runs when given.

    The index is an optimisation: when it cannot be read or written, files are hashed again.
    """

    def __init__(self, index: Path | None = None):
        self._index = index
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[str, int, int, int, int, str]] = []

    def file(self, path: str | Path, *, version: Stat | None = None) -> str:
        """The sha256 of the file at `path`.

        `version`: its stat as the caller read it; when the file's stat is no longer that, it changed
        since, and "" is returned (a digest of other bytes than the caller's would vouch for them).
        A file written to while it is hashed gives "" with `version`, else a random `changing ...`
        digest: it never vouches, and a key made of it is never hit.

        Raises:
            OSError: the file cannot be read (FileNotFoundError when it is gone).
        """
        name = os.path.abspath(path)
        now = stat_of(name)
        if now is None:
            raise FileNotFoundError(2, "no such file", str(path))
        if version is not None and now != version:
            return ""
        found = self._remembered(name, now)
        if found is not None:
            return found
        taken = time.time_ns()
        digest = _sha256(name)
        if stat_of(name) != now:  # written to while it was read: what was hashed is no version of it
            return "" if version is not None else f"changing {uuid.uuid4().hex}"  # never vouches, never a hit
        if _MEMO.put(name, now, taken, digest):
            self._pending.append((name, *now, digest))
        return digest

    def _remembered(self, name: str, version: Stat) -> str | None:
        found = _MEMO.get(name, version)
        if found is not None or self._index is None:
            return found
        db = self._open()
        if db is None:
            return None
        try:
            row = db.execute("SELECT size, mtime, ctime, inode, sha256 FROM digests WHERE path = ?", (name,)).fetchone()
        except sqlite3.Error:
            return None
        if row is None or tuple(row[:4]) != version:
            return None
        _MEMO.put(name, version, time.time_ns(), str(row[4]))  # settled when indexed, so settled now
        return str(row[4])

    def _open(self) -> sqlite3.Connection | None:
        if self._db is None and self._index is not None:
            try:
                self._index.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(str(self._index), timeout=30, check_same_thread=False)
                db.execute(
                    "CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, size INTEGER, mtime INTEGER, "
                    "ctime INTEGER, inode INTEGER, sha256 TEXT)"
                )
                self._db = db
            except (sqlite3.Error, OSError):
                self._index = None  # no index here (read-only, full): hash files again, as without one
        return self._db

    def save(self) -> None:
        """Write the digests taken since the last save to the index (one transaction); never raises."""
        pending, self._pending = self._pending, []
        if not pending or self._open() is None:
            return
        try:
            with self._db:  # type: ignore[union-attr]  # one transaction: one sync for every row
                self._db.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?)", pending)  # type: ignore[union-attr]  # the database is open while rows are pending
        except sqlite3.Error:
            pass  # a full or locked disk: the next run hashes these files again

    def close(self) -> None:
        self.save()
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Digests:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def file_input(kind: InputKind, path: str | Path, digests: Digests, *, name: str | None = None) -> Input:
    """A file the build reads, by its bytes.

    Raises:
        OSError: the file cannot be read.
    """
    return Input(kind, str(path) if name is None else name, digests.file(path), path=os.path.abspath(path))


def _folder_files(folder: Path, *, recursive: bool) -> Iterator[Path]:
    if recursive:
        yield from sorted(p for p in folder.rglob("*") if p.is_file())
        return
    yield from sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() not in WEIGHT_SUFFIXES)


def folder_input(
    kind: InputKind, folder: str | Path, digests: Digests, *, recursive: bool = False, name: str | None = None
) -> Input:
    """A folder the build reads, by the names and bytes of its files.

    `recursive`: every file below it (a dataset folder); else the files at its top that are not model
    weights (`WEIGHT_SUFFIXES`): what tokenizer and processor loaders read, and a little more.
    """
    root = Path(folder).expanduser()
    h = hashlib.sha256()
    n = 0
    for item in _folder_files(root, recursive=recursive):
        h.update(f"{item.relative_to(root).as_posix()}\0{digests.file(item)}\n".encode())
        n += 1
    return Input(kind, str(folder) if name is None else name, h.hexdigest(), files=n, path=os.path.abspath(root))


def data_input(source: Any, digests: Digests, *, kind: InputKind = InputKind.DATA) -> Input:
    """DATA (or an evaluation set, `kind`) by content: a file's bytes, every file of a folder, an object's content.

    A pipe or other stream cannot be read twice: a fresh random digest (never a cache hit). A hub id:
    the id (ftdata never downloads; what the local hub cache holds under it does not change).
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if path.is_file():
            return file_input(kind, path, digests, name=str(source))
        if path.is_dir():
            return folder_input(kind, path, digests, recursive=True, name=str(source))
        if path.exists():
            return Input(kind, str(source), f"stream {uuid.uuid4().hex}", path=os.path.abspath(path))
        return text_input(kind, str(source), f"hub id {source}")
    return Input(kind, type(source).__name__, _object_digest(source), files=0)


def _object_digest(source: Any) -> str:
    if hasattr(source, "_fingerprint"):  # a datasets.Dataset: its content fingerprint
        return text_digest(f"dataset {source._fingerprint}")
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(source, pandas.DataFrame):  # list(frame) would hash the column names only
        return text_digest(source.to_json(orient="split", default_handler=str))
    try:
        return text_digest(json.dumps(list(source), sort_keys=True, default=str))
    except TypeError:
        return text_digest(repr(source))


def add_read(read: dict[str, Stat | None], batch: Mapping[str, Stat | None]) -> None:
    """Add a batch's media files (path -> stat when read) to a build's.

    Raises:
        FtdataError: a file read in two versions by one build (changed while it ran): its rows hold both.
    """
    for path, version in batch.items():
        if read.setdefault(path, version) != version:
            raise FtdataError(f"{path} changed while the build read it (its records saw two versions); build again")


@dataclass(frozen=True, slots=True)
class Manifest:
    """The files a build's records named or looked for (media, the trajectories an ATIF trajectory points to): path ->
    (its stat when read, None if there was no file; its sha256).

    `taken_ns`: when the build began (entries changed after `taken_ns - RACY_NS` are re-hashed on every check).
    A missing file is an entry too: a record rejected for it would be kept once the file is there.
    """

    entries: dict[str, tuple[Stat | None, str]] = field(default_factory=dict)
    taken_ns: int = 0

    @classmethod
    def of(cls, read: Mapping[str, Stat | None], digests: Digests, *, taken_ns: int) -> Manifest:
        """The manifest of the files `read` (path -> stat as the build saw it): each hashed, or found in `digests`.

        A file whose stat changed since the build read it gets the digest "": no later check trusts it.
        """
        entries: dict[str, tuple[Stat | None, str]] = {}
        for path in sorted(read):
            version = read[path]
            try:
                entries[path] = (version, digests.file(path, version=version) if version is not None else "")
            except OSError:
                entries[path] = (version, "")  # gone since it was read
        return cls(entries, taken_ns)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def digest(self) -> str:
        """The content identity of the media: every path with its digest (or its absence)."""
        h = hashlib.sha256()
        for path, (version, digest) in self.entries.items():
            h.update(f"{path}\0{digest if version is not None else 'missing'}\n".encode())
        return h.hexdigest()

    def input(self) -> Input:
        return Input(InputKind.MEDIA, f"{len(self):,} files", self.digest, files=len(self))

    def changed(self, digests: Digests, *, first: bool = True) -> list[str]:
        """The entries whose file is not what the build read (`first`: stop at the first one).

        A stat equal to the recorded one vouches for the file unless the entry is racy; otherwise the
        file is hashed and compared.
        """
        out = []
        for path, (version, digest) in self.entries.items():
            now = stat_of(path)
            if now == version and (now is None or not _racy(now, self.taken_ns)):
                continue
            if now is None or version is None or not digest or _digest_or_none(digests, path) != digest:
                out.append(path)
                if first:
                    break
        return out

    def to_json(self) -> str:
        rows = [
            [path, list(version) if version is not None else None, digest]
            for path, (version, digest) in self.entries.items()
        ]
        return json.dumps({"taken_ns": self.taken_ns, "files": rows}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Raises: ValueError, KeyError or TypeError: not a manifest."""
        value = json.loads(text)
        entries = {str(p): (tuple(v) if v is not None else None, str(d)) for p, v, d in value["files"]}
        return cls(entries, int(value["taken_ns"]))


def _digest_or_none(digests: Digests, path: str) -> str | None:
    try:
        return digests.file(path)
    except OSError:
        return None
