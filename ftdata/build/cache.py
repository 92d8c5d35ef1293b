"""The build cache: one entry per key (`ftdata.build.fingerprint`), complete or absent.

    cache_dir/<key>/dataset/        the dataset (`datasets.save_to_disk`)
                   report.json      its BuildReport
                   rejects.jsonl    the full rejects file
                   media.json       the files its records named or looked for (media, trajectories): checked
                   complete.json    written last: the rejects file's line count
    cache_dir/.digests.sqlite       the digests of input files by path and stat (`ftdata.guard.inputs.Digests`)

An entry is written into a temporary folder, watched by a watchdog that removes it if the build is
killed, and renamed into place; a reader takes it only when complete, and only while every media
file of its manifest is what the build read (else the build runs again and replaces it).
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftdata.build.export import REJECTS, file_lines
from ftdata.errors import FtdataWarning
from ftdata.guard import safeio
from ftdata.guard.inputs import Digests, Manifest
from ftdata.guard.reaper import Watchdog
from ftdata.guard.space import free_bytes, is_disk_full, size_text, tree_bytes
from ftdata.run.report import BuildReport


_COMPLETE = "complete.json"
_MEDIA = "media.json"
DIGESTS = ".digests.sqlite"  # hidden like the locks: the entries are the folders


def digests(cache_dir: str | Path | None) -> Digests:
    """The digests of input files, remembered in `cache_dir` across runs (in this process only without one)."""
    return Digests(Path(cache_dir).expanduser() / DIGESTS if cache_dir else None)


@dataclass(frozen=True)
class Cached:
    """A cache hit: the dataset and report, the media manifest it was checked against, the entry's folder."""

    dataset: Any
    report: BuildReport
    media: Manifest | None
    folder: Path


def save_cached(
    dataset: Any, report: BuildReport, cache_dir: Path, key: str, *, rejects: Path, media: Manifest | None = None
) -> Any:
    """Save a build under `cache_dir/key` and return the dataset loaded from there.

    An entry is complete or absent: dataset, report, the full rejects file, the media manifest and
    `complete.json` (the rejects line count) are written into a temporary folder and renamed into
    place. When a concurrent build published the same entry first, its copy is used and ours
    dropped; an entry of other media (a file changed since it was cached) is replaced.
    A cache without room never fails the build: the entry is dropped, `dataset` returned as
    it is, and an `FtdataWarning` says so.
    """
    import datasets

    folder = cache_dir / key
    tmp = safeio.temp_name(folder)
    watchdog = Watchdog("remove", str(tmp.absolute())).__enter__()  # killed, the build leaves no half-written entry
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        dataset.save_to_disk(str(tmp / "dataset"))
        shutil.copyfile(rejects, tmp / REJECTS)
        (tmp / "report.json").write_text(json.dumps(report.to_dict(), indent=2, default=str), encoding="utf-8")
        if media:
            (tmp / _MEDIA).write_text(media.to_json(), encoding="utf-8")
        (tmp / _COMPLETE).write_text(json.dumps({"rejects_lines": file_lines(tmp / REJECTS)}), encoding="utf-8")
        with safeio.file_lock(cache_dir / f".{key}.lock"):
            if _complete(folder) and _media_digest(folder) == (media.digest if media else None):
                safeio.remove(tmp)  # another build published the same entry first
            else:
                safeio.replace(tmp, folder)
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        safeio.remove(tmp)
        need, free = tree_bytes(rejects) + dataset_bytes(dataset), free_bytes(cache_dir)
        warnings.warn(
            f"the build cache {cache_dir} is full (this build needs about {size_text(need)} there, "
            f"{size_text(free)} is "
            "free): built without caching it; free space there, or build with cache_dir=None",
            FtdataWarning,
            stacklevel=2,
        )
        return dataset
    finally:
        safeio.remove(tmp)
        watchdog.stop()
    return datasets.load_from_disk(str(folder / "dataset"))


def dataset_bytes(dataset: Any) -> int:
    """Bytes of the Arrow files behind a Dataset (or every split
    of a DatasetDict): what writing it out takes, roughly."""
    files = dataset.cache_files
    parts = [f for split in files.values() for f in split] if isinstance(files, dict) else files
    return sum(tree_bytes(Path(f["filename"])) for f in parts)


def _complete(folder: Path) -> bool:
    """Whether a cache entry has every part, and its rejects file every line."""
    try:
        expected = json.loads((folder / _COMPLETE).read_text(encoding="utf-8"))["rejects_lines"]
        return (
            (folder / "dataset").is_dir()
            and (folder / "report.json").is_file()
            and (file_lines(folder / REJECTS) == expected)
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _media(folder: Path) -> Manifest | None:
    """The entry's media manifest, None when its build named no media file.

    Raises:
        ValueError: a manifest that does not parse (KeyError, TypeError too).
    """
    path = folder / _MEDIA
    return Manifest.from_json(path.read_text(encoding="utf-8")) if path.is_file() else None


def _media_digest(folder: Path) -> str | None:
    try:
        media = _media(folder)
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable"
    return media.digest if media else None


def load_cached(cache_dir: Path, key: str, files: Digests, *, rejects_path: str | Path | None = None) -> Cached | None:
    """A complete cached build whose media files are unchanged, or None (the build reruns and replaces the entry).

    Every file of the entry's media manifest is stat'ed, and hashed only when its stat changed (`files`
    remembers digests). With `rejects_path`, the entry's full rejects file is copied there (atomically).
    """
    import datasets

    folder = cache_dir / key
    if not _complete(folder):
        return None
    try:
        media = _media(folder)
        if media is not None and media.changed(files):
            return None
        report = BuildReport.from_dict(json.loads((folder / "report.json").read_text(encoding="utf-8")))
        dataset = datasets.load_from_disk(str(folder / "dataset"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    report.rejects_path = None
    if rejects_path is not None:
        with safeio.atomic_path(Path(rejects_path)) as tmp:
            shutil.copyfile(folder / REJECTS, tmp)
        report.rejects_path = str(rejects_path)
    return Cached(dataset, report, media, folder)


__all__ = ["DIGESTS", "Cached", "dataset_bytes", "digests", "load_cached", "save_cached"]
