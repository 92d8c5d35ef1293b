"""`ftdata build` outputs: the output folder, dataset files, rejects, `build.json`, the summary.

    OUT/
      dataset/              --output-format arrow: `datasets.load_from_disk("OUT/dataset")`
      train.parquet ...     --output-format parquet: one file per split
      train.jsonl ...       --output-format jsonl: token rows + decoded text and trained text
      rejects.jsonl         every rejected or cut record, with its reason
      build.json            inputs (each by name and sha256), options, fingerprint, counts, library versions
      .ftdata-output.json   the names ftdata wrote here: the only ones it will ever replace

Every file is written under a temporary name and renamed into place (`safeio.OutputDir`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.table import Table

from ftdata.errors import ConfigError
from ftdata.build.packed_rows import packing_record
from ftdata.guard.inputs import Input
from ftdata.media.audio import DECODER, RESAMPLER
from ftdata.options import BuildOptions, plain
from ftdata.outcomes import NoteCode
from ftdata.run.stage import task_module
from ftdata.types import Task
from ftdata.run.report import BuildReport
from ftdata.run.open_columns import check_parquet
from ftdata.guard.safeio import OutputDir
from ftdata.guard.space import tree_bytes
from ftdata.io.store import StoreOut

OUTPUT_FORMATS = ("arrow", "parquet", "jsonl")
MANIFEST = "build.json"
REJECTS = "rejects.jsonl"  # OUT/rejects.jsonl: every record rejected or cut, with its reason
_SPLITS = ("train", "test")
_VERSIONED = ("ftdata", "transformers", "tokenizers", "datasets")
_AUDIO_VERSIONED = (
    "soundfile",
    "av",
    "soxr",
)  # what reads and resamples clips: in build.json of a build with a processor
NOTES_SHOWN = 5  # the most common notes in the summary; build.json counts them all


def check_output_format(value: str) -> str:
    if value not in OUTPUT_FORMATS:
        raise ConfigError(f"output_format must be one of {', '.join(OUTPUT_FORMATS)}, got output_format={value!r}")
    return value


def _splits(dataset: Any) -> dict[str, Any]:
    import datasets

    return dict(dataset) if isinstance(dataset, datasets.DatasetDict) else {"train": dataset}


def write_dataset(dataset: Any, target: OutputDir, *, fmt: str, tokenizer: Any, task: Any) -> list[Path]:
    """Write the dataset in `fmt` into the output folder (each file renamed into place when complete); JSONL
    rows as `task` writes them (`TaskModule.jsonl`: every column and the decoded text)."""
    if fmt == "arrow":
        with target.write("dataset") as tmp:
            dataset.save_to_disk(str(tmp))
        return [target.path / "dataset"]
    paths = []
    for name, split in _splits(dataset).items():
        if fmt == "parquet":
            check_parquet(split.data.schema)
        with target.write(f"{name}.{fmt}") as tmp:
            if fmt == "parquet":
                split.to_parquet(str(tmp))
            else:
                with tmp.open("w", encoding="utf-8") as fh:
                    for row in task.jsonl(split, tokenizer):
                        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        paths.append(target.path / f"{name}.{fmt}")
    return paths


SHARD_ROWS = 100_000  # rows per Parquet shard the driver writes


def write_shards(dataset: Any, target: OutputDir | StoreOut, *, rows: int = SHARD_ROWS) -> list[str]:
    """The train rows as OUT/data/part-NNNNN.parquet, the layout of an engine=ray build (read by
    `ftdata.load`, `ftdata train` and `datasets.load_dataset("parquet", ...)` alike)."""
    import pyarrow.parquet as pq

    table = dataset.with_format("arrow")[:]
    check_parquet(table.schema)
    with target.write("data") as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        for i, start in enumerate(range(0, max(len(table), 1), rows)):
            pq.write_table(table.slice(start, rows), str(tmp / f"part-{i:05d}.parquet"))
    return ["data"]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def manifest(
    *,
    inputs: list[Input],
    tokenizer_name: str,
    options: BuildOptions,
    report: BuildReport,
    output_format: str,
    files: list[str],
    rejects: str = REJECTS,
    on_disk: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `build.json` record of a build: every input it read by name and sha256 (the media files its
    records named as one entry: their count and the digest of their manifest), the options, the
    fingerprint made of both; `files`: the outputs' names inside OUT; `on_disk`: their sizes and the
    rejects file's line count (`disk_facts`), which `ftdata.load` checks."""
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": [item.to_dict() for item in inputs],
        "tokenizer": tokenizer_name,
        "template": report.template,
        "options": plain(options),
        "fingerprint": report.fingerprint,
        "cached": report.cached,
        "output": {"format": output_format, "files": files, "rejects": rejects, **(on_disk or {})},
        "counts": report.to_dict(),
        "versions": {name: _version(name) for name in _VERSIONED},
        **({"audio": _audio_readers()} if options.data.processor is not None else {}),
        **packing_record(packing=options.data.packing, tokenizer_name=tokenizer_name),
    }


def _audio_readers() -> dict[str, Any]:
    """Which library decodes each clip format, which resamples, and their versions (a build with a processor)."""
    return {
        "decoders": DECODER,
        "resampler": f"{RESAMPLER} (HQ)",
        "versions": {n: _version(n) for n in _AUDIO_VERSIONED},
    }


def write_manifest(target: OutputDir | StoreOut, record: dict[str, Any]) -> None:
    """OUT/build.json; written last, so OUT holds a finished build exactly when it has one."""
    with target.write(MANIFEST) as tmp:
        tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def disk_facts(folder: Path, names: list[str]) -> dict[str, Any]:
    """What build.json records of the files in `folder` (the staged build): bytes per name, and
    the lines of the rejects file or folder (`names[-1]`)."""
    return {
        "bytes": {name.rstrip("/"): tree_bytes(folder / name.rstrip("/")) for name in names},
        "rejects_lines": count_lines(folder / names[-1].rstrip("/")),
    }


def file_lines(path: Path) -> int:
    """Lines of one file (newlines counted, a block at a time)."""
    with path.open("rb") as fh:
        return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))


def count_lines(path: Path) -> int:
    """Lines of a file, or of every `.jsonl` file in a folder (a rejects folder of shards)."""
    if not path.exists():
        return 0
    return sum(map(file_lines, sorted(path.glob("*.jsonl")))) if path.is_dir() else file_lines(path)


def _counter_cell(counter: Mapping[Any, int]) -> str:
    return "\n".join(f"{n:,} {kind}" for kind, n in sorted(counter.items(), key=lambda kv: -kv[1])) or "0"


def summary_table(report: BuildReport, *, spell: Callable[[str], str] = str, tree: bool = False) -> Table:
    """What the build did, one row per fact; the notes records got, each once with its count
    (`spell`: the CLI's spelling of option names in them; `tree`: a history=tree build, whose split records are
    written as prefix trees)."""
    table = Table(show_header=False, box=None, pad_edge=False)
    share = report.trained_tokens / report.tokens if report.tokens else 0.0
    table.add_column(style="bold")
    table.add_column()
    rows = [
        *([("task", report.task_choice.line)] if report.task_reason else []),
        ("records in", f"{report.records:,}"),
        ("examples", f"{report.examples:,}"),
        (f"{task_module(Task(report.task)).unit} out", f"{report.sequences:,}"),
        ("rows", f"{report.rows:,}" + (" (packed)" if report.packing else "")),
        ("rejected", _counter_cell(dict(report.rejected))),
        ("reject ratio", f"{report.reject_ratio:.1%}"),
        ("cut (kept)", _counter_cell(dict(report.cut))),
        ("filtered out", f"{report.filtered:,}"),
        *(
            [("not drawn", f"{report.not_drawn:,} (left out by the recipe's shares; in the rejects file)")]
            if report.not_drawn
            else []
        ),
        ("tokens", f"{report.tokens:,}"),
        ("trained tokens", f"{report.trained_tokens:,}" + (f" ({share:.1%})" if report.tokens else "")),
    ]
    if report.split_records:  # history=inference: records whose turns are trained in rows of their own
        added = sum(report.added_rows.values())
        overhead = (
            report.added_tokens / (report.tokens - report.added_tokens) if report.tokens > report.added_tokens else 0.0
        )
        why = ", ".join(f"{n:,} {reason}" for reason, n in report.added_rows.most_common())
        into = f"{report.split_records:,} into {report.split_records + added:,} rows"
        rows.insert(
            4,
            (
                "split records",
                f"{into} ({why}), written as prefix trees (history=tree, across records that start alike: rows "
                "and tokens count the trees and their unique tokens)"
                if tree
                else f"{into}: +{added:,} rows ({why}), +{report.added_tokens:,} tokens ({overhead:.1%}); "
                "history=inference",
            ),
        )
    if report.reasoning_moved:
        rows.insert(
            4,
            (
                "reasoning moved",
                f"{report.reasoning_moved:,} trained turns: a leading <think>…</think> in the content "
                "became the turn's reasoning, written by the chat template",
            ),
        )
    if report.drift_turns:
        drift = (
            f"{report.drift_differ:,} of {report.drift_turns:,} trained turns with recorded completion token ids "
            f"differ from the re-tokenized turn ({report.drift_tokens:,} tokens differ)"
        )
        drift += f"; {report.drift_kept:,} trained on their recorded ids" if report.drift_kept else ""
        drift += f"; {report.drift_stop:,} lack only the stop token" if report.drift_stop else ""
        rows.insert(4, ("token drift", drift))
    for split, stats in (report.packing or {}).items():
        rows.append((f"fill ({split})", f"{stats.fill_ratio:.1%} ({stats.sequences_per_row:.2f} sequences/row)"))
    rows.append(("splits", ", ".join(f"{name} {n:,}" for name, n in report.splits.items())))
    for source in report.mix or []:
        rows.append((f"source {source['source']}", mix_line(source)))
    for code, n in report.notes.most_common(NOTES_SHOWN):
        if code in (NoteCode.REASONING_MOVED, NoteCode.TOKEN_DRIFT, NoteCode.STOP_MISSING):  # own rows above, by turn
            continue
        text = "; ".join(spell(t) for t in report.note_texts.get(code, [code.value]))
        rows.append(("note", f"{text} ({n:,} {'example' if n == 1 else 'examples'})"))
    for label, value in rows:
        table.add_row(label, value)
    return table


def mix_line(source: dict[str, Any]) -> str:
    """One source of a recipe build: what it gave, its shares in every unit next to the target."""
    unit = source["mix_by"]
    shares = ", ".join(
        f"{source[u]['share']:.2%} of {u.replace('_', ' ')}" for u in ("records", "tokens", "trained_tokens")
    )
    removed = [f"{source[k]:,} {k}" for k in ("deduplicated", "decontaminated", "not_drawn") if source[k]]
    removed += [f"{n:,} {code}" for code, n in source["rejected"].items()]
    tail = f"; {', '.join(removed).replace('not_drawn', 'not drawn')}" if removed else ""
    return (
        f"{source['used']:,} draws of {source['available']:,} records ({source['repeats']:,} repeats): {shares} "
        f"(target {source['target_share']:.2%} of {unit.replace('_', ' ')}){tail}"
    )
