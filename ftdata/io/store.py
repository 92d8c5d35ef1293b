"""OUT as a URI: where engine=ray writes a build on a filesystem pyarrow reaches (s3://, gs://, abfs://, hdfs://, file://).

An object store has no rename and no lock, so the local folder's guarantees (`safeio.OutputDir`)
are kept another way:
- the prefix must be new or empty: ftdata never writes beside, over or into objects it did not write;
- every file goes straight to its final name and `build.json` goes last: a prefix holds a
  finished build exactly when its `build.json` exists;
- a build that fails deletes what it wrote (the names it created, nothing else), so the prefix
  is left as it was found: one it created (a new prefix, and the folders above it that it made
  on a filesystem that has folders) is removed again.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError
from ftdata.guard.space import Place

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(text: object) -> bool:
    """Whether `text` names a location by URI (`s3://bucket/prefix`, `file:///tmp/out`) rather than a local path."""
    return isinstance(text, str) and bool(_SCHEME.match(text))


def filesystem(location: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it) of a URI or of an absolute local path.

    Raises:
        ConfigError: a scheme pyarrow does not know, or a store it cannot open (credentials, region).
    """
    import pyarrow as pa
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(location)
    except (ValueError, OSError, pa.ArrowException) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"cannot open {location!r}: {reason}; give a URI pyarrow's filesystems reach (s3://bucket/prefix, "
            "gs://bucket/prefix, file:///absolute/path), with the store's credentials in the environment"
        ) from None


Where = tuple[Any, str]  # (pyarrow filesystem, path inside it)


def child(where: Where, name: str) -> Where:
    """`name` inside the folder `where`."""
    return where[0], f"{where[1]}/{name}"


def file_names(where: Where) -> list[str]:
    """The names of the files in the folder `where`, sorted (none when it is missing)."""
    from pyarrow import fs

    infos = where[0].get_file_info(fs.FileSelector(where[1], allow_not_found=True))
    return sorted(Path(info.path).name for info in infos if info.type == fs.FileType.File)


def write_bytes(where: Where, data: bytes) -> None:
    """Write a small file; on an object store it appears whole or not at all."""
    with where[0].open_output_stream(where[1]) as out:
        out.write(data)


def read_bytes(where: Where) -> bytes:
    with where[0].open_input_stream(where[1]) as src:
        return src.read()


def copy(source: Where, dest: Where) -> None:
    """Copy a file or a folder tree from one (filesystem, path) to another."""
    from pyarrow import fs

    if source[0].get_file_info(source[1]).type == fs.FileType.Directory:
        dest[0].create_dir(dest[1])  # a local destination needs its folder first
    fs.copy_files(source[1], dest[1], source_filesystem=source[0], destination_filesystem=dest[0])


def delete(target: Where) -> None:
    """Delete a file or a folder tree at (filesystem, path); nothing there is fine."""
    from pyarrow import fs

    filesystem_, path = target
    kind = filesystem_.get_file_info(path).type
    if kind == fs.FileType.Directory:
        filesystem_.delete_dir(path)
    elif kind == fs.FileType.File:
        filesystem_.delete_file(path)


class StoreOut:
    """A new or empty prefix that a build writes into, named by URI (`-o s3://bucket/run1`).

        with StoreOut("s3://bucket/run1") as target:
            with target.write("build.json") as tmp: ...   # a local file, uploaded on success
            target.url("data")                             # where a writer that reaches the store puts its files

    Raises (on entering):
        ConfigError: the URI cannot be opened, names a file, or holds anything already.
    """

    def __init__(self, uri: str):
        self.path = uri.rstrip("/")  # what the summary prints, like OutputDir.path
        self.fs, self.root = filesystem(self.path)
        self.written: list[str] = []
        self.made: list[str] = []  # the folders `__enter__` created, the prefix first, then those above it

    def __enter__(self) -> StoreOut:
        from pyarrow import fs

        kind = self.fs.get_file_info(self.root).type
        if kind == fs.FileType.File:
            raise ConfigError(f"output {self.path!r} is a file; give a new or empty prefix (-o OUT)")
        if kind == fs.FileType.Directory:
            there = sorted(Path(info.path).name for info in self.fs.get_file_info(fs.FileSelector(self.root)))
            if there:
                shown = ", ".join(there[:3]) + (", ..." if len(there) > 3 else "")
                raise ConfigError(
                    f"output {self.path!r} already holds {shown}; ftdata writes a URI OUT only into a new or "
                    "empty prefix (it can neither lock nor rename there): give a new one"
                )
        self.made = _missing(self.fs, self.root)
        self.fs.create_dir(self.root)
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        if kind is not None:
            self.discard()

    def url(self, name: str) -> str:
        """OUT/name as a URI, for a writer that reaches the store itself (Ray's Parquet writer, on every node)."""
        self.adopt(name)
        return f"{self.path}/{name}"

    def inside(self, name: str) -> Where:
        """OUT/name as (filesystem, path)."""
        return child((self.fs, self.root), name)

    @contextmanager
    def write(self, name: str) -> Iterator[Path]:
        """A local temporary path for output `name` (file or folder), uploaded to OUT/name when the block succeeds."""
        from pyarrow import fs

        with tempfile.TemporaryDirectory(prefix="ftdata-upload-") as scratch:
            tmp = Path(scratch) / name
            yield tmp
            self.adopt(name)
            copy((fs.LocalFileSystem(), str(tmp)), self.inside(name))

    def adopt(self, name: str) -> None:
        """Record `name` as written by this build (a failed build deletes it)."""
        if name not in self.written:
            self.written.append(name)

    def finish(self) -> None:
        """Nothing older to remove: the prefix was empty when the build began."""

    def discard(self) -> None:
        """Delete what this build wrote, and only that: a failed build leaves the prefix as it found it.

        A folder `__enter__` created goes too, while it is empty (something another writer put
        there since keeps it and the ones above it).
        """
        from pyarrow import fs

        for name in reversed(self.written):
            delete(self.inside(name))
        self.written.clear()
        for folder in self.made:
            try:
                if self.fs.get_file_info(fs.FileSelector(folder, allow_not_found=True)):
                    break
                self.fs.delete_dir(folder)
            except OSError:  # a store that refuses (a bucket): what the build wrote is gone all the same
                break
        self.made.clear()


def _missing(filesystem_: Any, path: str) -> list[str]:
    """`path` and the folders above it that do not exist (`create_dir` makes them all), deepest first."""
    from pyarrow import fs

    missing = []
    while path and path not in ("/", ".") and filesystem_.get_file_info(path).type == fs.FileType.NotFound:
        missing.append(path)
        path = path.rsplit("/", 1)[0] if "/" in path.rstrip("/") else ""
    return missing


def store_place(uri: str, *, expected: Callable[[], int | None] = lambda: None) -> Place:
    """A URI OUT (`-o file:///data/out`, `s3://bucket/run1`) as a `Place`, named by its URI; a
    `file://` one is measured as the local folder it is, another store's free space is unknown."""
    store, root = filesystem(uri)
    local = type(store).__name__ == "LocalFileSystem"
    return Place(
        Path(root),
        "the output",
        "free space there or give another output (what this build wrote there is deleted)",
        mine=(lambda: Path(root)) if local else (lambda: None),
        expected=expected,
        shown=uri,
        measured=local,
    )


__all__ = [
    "StoreOut",
    "Where",
    "child",
    "copy",
    "delete",
    "file_names",
    "filesystem",
    "is_uri",
    "read_bytes",
    "store_place",
    "write_bytes",
]
