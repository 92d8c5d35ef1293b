"""The build cache: one entry per content key (`fingerprint`), complete or absent.

    cache_dir/<key>/dataset/        the dataset (`datasets.save_to_disk`)
                   report.json      its BuildReport
                   rejects.jsonl    the full rejects file
                   complete.json    written last: the rejects file's line count

An entry is written into a temporary folder, watched by a watchdog that removes it if the build is
killed, and renamed into place; a reader takes it only when complete.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

from ftdata.build.export import REJECTS, file_lines
from ftdata.errors import FtdataWarning
from ftdata.guard import safeio
from ftdata.guard.reaper import Watchdog
from ftdata.guard.space import free_bytes, is_disk_full, size_text, tree_bytes
from ftdata.run.report import BuildReport


_COMPLETE = "complete.json"


def save_cached(dataset: Any, report: BuildReport, cache_dir: Path, fingerprint: str, *, rejects: Path) -> Any:
    """Save a build under `cache_dir/fingerprint` and return the dataset loaded from there.

    An entry is complete or absent: dataset, report, the full rejects file and `complete.json`
    (the rejects line count) are written into a temporary folder and renamed into place. When
    a concurrent build published the same entry first, its copy is used and ours dropped.
    A cache without room never fails the build: the entry is dropped, `dataset` returned as
    it is, and an `FtdataWarning` says so.
    """
    import datasets

    folder = cache_dir / fingerprint
    tmp = safeio.temp_name(folder)
    watchdog = Watchdog("remove", str(tmp.absolute())).__enter__()  # killed, the build leaves no half-written entry
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        dataset.save_to_disk(str(tmp / "dataset"))
        shutil.copyfile(rejects, tmp / REJECTS)
        (tmp / "report.json").write_text(json.dumps(report.to_dict(), indent=2, default=str), encoding="utf-8")
        (tmp / _COMPLETE).write_text(json.dumps({"rejects_lines": file_lines(tmp / REJECTS)}), encoding="utf-8")
        with safeio.file_lock(cache_dir / f".{fingerprint}.lock"):
            if _complete(folder):
                safeio.remove(tmp)  # another build published the same entry first
            else:
                safeio.replace(tmp, folder)
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        safeio.remove(tmp)
        need, free = tree_bytes(rejects) + dataset_bytes(dataset), free_bytes(cache_dir)
        warnings.warn(
            f"the build cache {cache_dir} is full (this build needs about {size_text(need)} there, {size_text(free)} is "
            "free): built without caching it; free space there, or build with cache_dir=None",
            FtdataWarning, stacklevel=2,
        )  # fmt: skip
        return dataset
    finally:
        safeio.remove(tmp)
        watchdog.stop()
    return datasets.load_from_disk(str(folder / "dataset"))


def dataset_bytes(dataset: Any) -> int:
    """Bytes of the Arrow files behind a Dataset (or every split of a DatasetDict): what writing it out takes, roughly."""
    files = dataset.cache_files
    parts = [f for split in files.values() for f in split] if isinstance(files, dict) else files
    return sum(tree_bytes(Path(f["filename"])) for f in parts)


def _complete(folder: Path) -> bool:
    """Whether a cache entry has every part, and its rejects file every line."""
    try:
        expected = json.loads((folder / _COMPLETE).read_text(encoding="utf-8"))["rejects_lines"]
        return (folder / "dataset").is_dir() and (folder / "report.json").is_file() and (
            file_lines(folder / REJECTS) == expected
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def load_cached(cache_dir: Path, fingerprint: str, *, rejects_path: str | Path | None = None) -> tuple[Any, BuildReport] | None:
    """A complete cached build, or None (an incomplete entry is ignored: the build reruns and replaces it).

    With `rejects_path`, the entry's full rejects file is copied there (atomically).
    """
    import datasets

    folder = cache_dir / fingerprint
    if not _complete(folder):
        return None
    try:
        report = BuildReport.from_dict(json.loads((folder / "report.json").read_text(encoding="utf-8")))
        dataset = datasets.load_from_disk(str(folder / "dataset"))
    except (OSError, ValueError, TypeError):
        return None
    report.rejects_path = None
    if rejects_path is not None:
        with safeio.atomic_path(Path(rejects_path)) as tmp:
            shutil.copyfile(folder / REJECTS, tmp)
        report.rejects_path = str(rejects_path)
    return dataset, report


__all__ = ["dataset_bytes", "load_cached", "save_cached"]
