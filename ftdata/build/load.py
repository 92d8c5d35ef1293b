"""Read back what `ftdata build -o OUT` wrote: the dataset and its `BuildReport`.

    >>> result = ftdata.load("out")          # doctest: +SKIP
    >>> result.dataset["train"][0].keys()   # doctest: +SKIP
    dict_keys(['input_ids', 'attention_mask', 'labels'])
    >>> result.report.summary()             # doctest: +SKIP
    '400 records -> 395 sequences, 5 rejected (5 response too long)'

For the default Arrow output, `datasets.load_from_disk("OUT/dataset")` gives the same
dataset without the report.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError, OutputMismatch
from ftdata.build.export import MANIFEST, count_lines
from ftdata.guard.safeio import finish_publishing
from ftdata.guard.space import tree_bytes
from ftdata.build.local import BuildResult
from ftdata.run.report import BuildReport

# Columns a `--output-format jsonl` build adds for people (decoded text), not for training.
_READABLE_COLUMNS = ("text", "trained")


def is_build_output(path: str | Path) -> bool:
    """True for a folder `ftdata build` wrote (it holds build.json)."""
    return Path(path, MANIFEST).is_file()


def load(out: str | Path) -> BuildResult:
    """The dataset (`Dataset`, or `DatasetDict` with train/test) and the `BuildReport` of a build folder.

    Works for every `--output-format`: arrow (`OUT/dataset`), parquet and jsonl (one file per
    split; the jsonl files' decoded `text`/`trained` columns are dropped), and engine=ray's
    folder of Parquet shards (`OUT/data/*.parquet`).

    OUT's files are checked against build.json first (names, sizes, the rejects file's lines
    and the counts that say how many it holds), the dataset's rows after reading. A build
    that was stopped while it published its files is finished first (`safeio.finish_publishing`).

    Raises:
        ConfigError: `out` is not a folder `ftdata build` wrote.
        OutputMismatch: a file build.json lists is missing or is not the one it describes.
    """
    folder = Path(out).expanduser()
    try:
        manifest = _manifest(folder)
        files = _checked_files(folder, manifest)
    except ConfigError:  # read while a build published its files: once more, after it (a tampered OUT fails again)
        manifest = _manifest(folder)
        files = _checked_files(folder, manifest)
    report = BuildReport.from_dict(manifest["counts"])
    dataset = _read(manifest["output"]["format"], files)
    splits = dict(dataset) if isinstance(dataset, dict) else {"train": dataset}
    rows = {name: len(split) for name, split in splits.items()}
    if report.splits and rows != report.splits:
        raise OutputMismatch(
            f"{folder}: the dataset holds {_rows(rows)}, build.json counts {_rows(report.splits)}; {_AGAIN}"
        )
    return BuildResult(dataset, report, out=folder, output_format=manifest["output"]["format"], manifest=manifest)


_AGAIN = "the folder was changed after ftdata built it: build again"


def _rows(splits: dict[str, int]) -> str:
    return ", ".join(f"{name} {n:,} rows" for name, n in sorted(splits.items()))


def _checked_files(folder: Path, manifest: dict[str, Any]) -> list[Path]:
    """The dataset files build.json lists, each checked to be the one it describes.

    build.json of an older ftdata records no sizes: then only the names are checked.

    Raises:
        OutputMismatch: naming the file, what build.json says and what is there.
    """
    output = manifest["output"]
    files = [folder / name for name in output["files"]]
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        raise OutputMismatch(f"{folder}: build.json lists {', '.join(missing)}, which is missing; build again")
    for name, size in (output.get("bytes") or {}).items():
        there = tree_bytes(folder / name) if (folder / name).exists() else None
        if there != size:
            held = "is missing" if there is None else f"holds {there:,} bytes"
            raise OutputMismatch(f"{folder}: {name} {held}, build.json records {size:,} bytes; {_AGAIN}")
    lines = output.get("rejects_lines")
    if lines is not None:
        rejects = folder / str(output.get("rejects", "")).rstrip("/")
        there = count_lines(rejects)
        counts = BuildReport.from_dict(manifest["counts"])
        listed = counts.n_rejected + sum(counts.cut.values()) + counts.filtered + counts.not_drawn
        if there != lines or listed != lines:
            says = (
                f"records {lines:,} lines" if there != lines else f"counts {listed:,} rejected, cut or filtered records"
            )
            raise OutputMismatch(f"{folder}: {rejects.name} holds {there:,} lines, build.json {says}; {_AGAIN}")
    return files


def parquet_files(out: str | Path) -> dict[str, list[Path]]:
    """The Parquet files of each split of a build folder, for reading them as a stream:
    `{"train": [OUT/train.parquet], "test": [OUT/test.parquet]}` for `--output-format parquet`,
    `{"train": [OUT/data/part-0.parquet, ...]}` for an engine=ray build (its shards, sorted).

    Raises:
        ConfigError: `out` is not a build folder, its files are missing, or it is not Parquet.
    """
    folder = Path(out).expanduser()
    manifest = _manifest(folder)
    _checked_files(folder, manifest)
    fmt = manifest["output"]["format"]
    if fmt != "parquet":
        raise ConfigError(
            f"{folder} was built with --output-format {fmt}; streaming reads Parquet: build with --output-format "
            "parquet "
            "(or engine=ray)"
        )
    splits: dict[str, list[Path]] = {}
    for name in manifest["output"]["files"]:
        path = folder / name
        if not path.exists():
            raise ConfigError(f"{folder}: build.json lists {path}, which is missing; build again")
        if path.is_dir():
            splits["train"] = sorted(path.glob("*.parquet"))
        else:
            splits[path.stem] = [path]
    return splits


def load_hint(out: Path | str, *, fmt: str) -> str:
    """The line `ftdata build` prints after its summary: how to load and train on what it wrote."""
    if isinstance(out, str):  # a URI: the Parquet shards are read where they lie, by datasets (fsspec)
        files = json.dumps(f"{out}/data/*.parquet")
        return f'load it with datasets.load_dataset("parquet", data_files={files}); to train, copy it to a local folder'
    also = f", or datasets.load_from_disk({json.dumps(str(out / 'dataset'))})" if fmt == "arrow" else ""
    return f"load it with ftdata.load({json.dumps(str(out))}){also}; train on it with `ftdata train {out}`"


def _manifest(folder: Path) -> dict[str, Any]:
    """build.json of `folder`, after finishing what a build stopped while publishing had committed."""
    if folder.is_dir():
        finish_publishing(folder)
    path = folder / MANIFEST
    if not path.is_file():
        what = "does not exist" if not folder.exists() else f"has no {MANIFEST}"
        raise ConfigError(f"{folder} {what}: give a folder written by `ftdata build -o OUT`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); build again") from None
    output = manifest.get("output") if isinstance(manifest, dict) else None
    if not isinstance(output, dict) or not {"format", "files"} <= output.keys() or "counts" not in manifest:
        raise ConfigError(f"{path} is not a build record (no output format, files or counts); build again")
    return manifest


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """datasets' progress bars off while a build is read (a load prints nothing), then as they were."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _read(fmt: str, files: list[Path]) -> Any:
    with _no_progress_bars():
        return _read_files(fmt, files)


def _read_files(fmt: str, files: list[Path]) -> Any:
    import datasets

    if fmt == "arrow":
        return datasets.load_from_disk(str(files[0]))
    splits = {}
    for path in files:
        if path.is_dir():  # engine=ray: a folder of Parquet shards, the train split
            split, name = datasets.Dataset.from_parquet(sorted(str(p) for p in path.glob("*.parquet"))), "train"
        else:
            split, name = (
                datasets.Dataset.from_parquet(str(path)) if fmt == "parquet" else datasets.Dataset.from_json(str(path)),
                path.stem,
            )
        splits[name] = split.remove_columns([c for c in _READABLE_COLUMNS if c in split.column_names])
    if list(splits) == ["train"]:  # a build without a test split wrote one Dataset
        return splits["train"]
    return datasets.DatasetDict(splits)
