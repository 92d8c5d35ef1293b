"""`ftdata build DATA --engine ray -o OUT`: a corpus built by Ray Data, shard by shard, into sharded Parquet.

    DATA/                       Ray Data                                     OUT/ (a folder, or a URI: s3://...)
      part-0.jsonl  ─┐   one row per shard file ──map_batches──▶ rows   ──▶  data/*.parquet
      part-1.json    ├─▶ (the shard is read by ftdata's own        │          rejects/part-00000.jsonl ...
      part-2.parquet ┘    readers, in the worker)                  └──────▶  build.json (one merged report)

Each shard file runs the local pipeline in a worker: read (same readers, same `file:line`
locations), filter, the record engine (the run loop, `loop.run`), then packing with the same
best-fit decreasing plan (`finish`) over that shard's sequences. The shard's rows
go back as an Arrow block and Ray's Parquet writer writes them; its rejects and report are
written beside the output, and the driver merges the reports into one `build.json`.

A prompt set's object columns (verifiers' `info`: `{}` in one record, `{index, source}` in another) are typed by
each shard's records (`run.open_columns`): a shard that saw only `{}` holds `struct<>`, which Parquet cannot
store, and two shards' structs differ. Such a build holds every shard's rows (`materialize`) until the driver
has unified the shards' types, in shard order, as the local build unifies its batches (`OpenColumns.take`);
each shard's rows are cast to them before Ray's writer sees them, so every Parquet file has one schema.

OUT is a local folder (on a multi-node cluster, one that every node mounts at the same path)
or a URI on any filesystem pyarrow reaches (`s3://bucket/prefix`, `gs://`, `abfs://`, `hdfs://`,
`file://`): then every node writes straight to the store and the prefix must be new or empty
(`store.StoreOut`).

What differs from the other engines, by design:
- packing is per shard (a packed row never mixes two shards), so rows and fill differ; the
  sequences, tokens and trained tokens are the same;
- `test_size`, `shuffle` and `limit` would need every shard at once: they are refused, with
  the way out (split or shuffle at training time, or use engine=local/processes);
- the build cache is not used (a cluster build writes straight to OUT).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyarrow import fs


from ftdata.guard import space

from ftdata.io import store
from ftdata.errors import ConfigError, FtdataError
from ftdata.build.local import check_built, write_rows
from ftdata.run.stage import Stage, task_module
from ftdata.run.executors import LocalExecutor, Raised, pickled, ray_cluster, ray_failure, ray_spec
from ftdata.options import BuildOptions
from ftdata.io.readers import data_files
from ftdata.run.report import BuildReport, RejectsWriter
from ftdata.run.open_columns import OpenColumns, check_parquet, open_names
from ftdata.outcomes import NoteCode
from ftdata.guard.safeio import TEMP_MARK, OutputDir, atomic_path, drop_scratch, scratch_dir, temp_name
from ftdata.io.store import StoreOut, Where

__all__ = ["DATA", "REJECTS_DIR", "build_shards", "merge_reports", "shard_files"]

DATA = "data"  # OUT/data/*.parquet: the rows, written by Ray's Parquet writer
REJECTS_DIR = "rejects"  # OUT/rejects/part-00000.jsonl: each shard's rejects, in record order
_ERRORS = "errors"  # a failed shard's FtdataError, pickled by the worker
_REPORTS = "reports"  # each shard's BuildReport, as JSON
_SCHEMAS = "schemas"  # each shard's rows' Arrow schema (a prompt set's object columns are typed by its records)
_REFUSED = {
    "test_size": "split at training time (datasets' train_test_split), or use engine=local or processes",
    "shuffle": "shuffle at training time (SFTTrainer shuffles every epoch), or use engine=local or processes",
    "limit": "give fewer shard files, or use engine=local or processes",
}


@dataclass(frozen=True)
class _ShardJob:
    """What a worker needs for a shard: the options and the tokenizer (the stage is compiled once per worker)."""

    options: BuildOptions
    tokenizer: Any
    sidecar: str  # folder (local path or URI) the workers write rejects, reports and errors into


def shard_files(source: Any, options: BuildOptions) -> list[Any]:
    """The shards of `source`: the data files of a folder (in the
    order engine=local reads them), else `source` itself."""
    path = Path(source).expanduser() if isinstance(source, (str, Path)) else None
    if path is not None and path.is_dir() and options.data.reader is None:
        files = data_files(path)
        if files is not None:
            return files
    return [source]


def check_options(options: BuildOptions) -> None:
    """Refuse the options a shard-parallel build cannot honour.

    Raises:
        ConfigError: naming the option and the way out.
    """
    for name, fix in _REFUSED.items():
        value = getattr(options.data, name)
        if value not in (None, False):
            raise ConfigError(f"{name}={value!r} needs the whole corpus at once, which engine=ray does not do; {fix}")


def build_shards(source: Any, *, tokenizer: Any, options: BuildOptions, target: OutputDir | StoreOut) -> BuildReport:
    """Build `source` shard by shard on Ray Data into `target`; return the merged report.

    Writes OUT/data/*.parquet and OUT/rejects/part-NNNNN.jsonl (`build.json` is the caller's).
    A `FtdataError` in a shard (a malformed record with on_error=raise) is raised here as the
    same error, with its `file:line`: the first error of the first failing shard.
    Nothing is published into OUT unless every shard succeeded (a URI OUT, written in place,
    has what the build wrote deleted by `StoreOut` on failure). With `options.output.rejects_path`,
    the rejects shards are also concatenated there, in shard order.

    Raises:
        ConfigError: an option engine=ray refuses, Ray missing, the cluster unreachable.
        FtdataError: what a shard raised; no records, or every record rejected.
    """
    started = time.perf_counter()
    check_options(options)
    stage = Stage(tokenizer, options.data)  # a bad template or option fails here, before any cluster starts
    shards = shard_files(source, options)
    if isinstance(target, StoreOut):
        sidecar = target.url(f"{TEMP_MARK}{uuid.uuid4().hex[:8]}-shards")
    else:  # absolute: a worker resolves a relative path against its own working folder
        sidecar = str(temp_name(target.path.absolute() / "shards"))
    side = store.filesystem(sidecar)
    job = _ShardJob(options, tokenizer, sidecar)
    payload = pickled(job, "ray")
    report = BuildReport(
        source=str(source) if isinstance(source, (str, Path)) else type(source).__name__,
        task=stage.task.task.value,
        task_reason=options.task_reason,
        tokenizer=str(getattr(tokenizer, "name_or_path", "")),
        template=stage.renderer.name,
        markers=stage.renderer.markers.to_dict() if stage.renderer.markers else None,
    )
    try:
        for sub in (REJECTS_DIR, _REPORTS, _ERRORS, _SCHEMAS):
            side[0].create_dir(store.child(side, sub)[1])
        with ray_cluster(options.run.ray_address, options.run.num_workers) as (ray, _), _data_location(target) as data:
            columns = OpenColumns(open_names(stage.task.schema(options.data)))
            _run(ray, shards, payload, data, options, side=side, columns=columns)
            if (error := _first_error(side)) is not None:
                raise error
            merge_reports(report, [_read_report(side, i, shared=sidecar) for i in range(len(shards))])
            if columns.names:  # the JSON-text notes of the whole set, once, as a local build's rows file has them
                report.notes.pop(NoteCode.JSON_TEXT, None)
                report.note_texts.pop(NoteCode.JSON_TEXT, None)
                report.note(columns.notes())
            check_built(report, report.rows)
        rejects = store.child(side, REJECTS_DIR)
        if isinstance(target, StoreOut):
            target.adopt(REJECTS_DIR)
            store.copy(rejects, target.inside(REJECTS_DIR))
        else:
            with target.write(REJECTS_DIR) as folder:
                Path(rejects[1]).rename(folder)
            rejects = side[0], str(target.path.absolute() / REJECTS_DIR)  # the same local filesystem
        if options.output.rejects_path:
            _concatenate(rejects, Path(options.output.rejects_path))
    finally:
        store.delete(side)
    report.rejects_path = options.output.rejects_path
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _data_location(target: OutputDir | StoreOut) -> Any:
    """Where Ray's Parquet writer puts OUT/data: the store itself, or a temporary folder renamed on success."""
    if isinstance(target, StoreOut):
        return contextlib.nullcontext(target.url(DATA))
    return target.write(DATA)  # a Path: `_run` makes it absolute for the workers


def _run(
    ray: Any,
    shards: list[Any],
    payload: bytes,
    data: str | Path,
    options: BuildOptions,
    *,
    side: Where,
    columns: OpenColumns,
) -> None:
    """The Ray Data job: shard list -> map_batches(one shard per call) -> Parquet files in `data` (a folder or URI).
    With object columns (`columns.names`), every shard is built before any is written, and each shard's rows are
    cast to the types the shards unify to (`columns`, filled here)."""
    import sys

    # Ray Data's INFO lines would bury the build's summary; it reads this when a job starts
    quiet = "RAY_DATA_LOG_LEVEL" not in os.environ
    if quiet:
        os.environ["RAY_DATA_LOG_LEVEL"] = "ERROR"
    context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order, context.enable_progress_bars
    context.execution_options.preserve_order = True  # files in shard order
    context.enable_progress_bars = sys.stderr.isatty()
    key, ref = uuid.uuid4().hex, ray.put(payload)
    items = [{"shard": i, "path": str(p) if isinstance(p, (str, Path)) else p} for i, p in enumerate(shards)]
    try:
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _build_shard,
            batch_size=1,
            batch_format="pyarrow",
            fn_kwargs={"key": key, "payload": [ref]},
            num_cpus=1,
            concurrency=options.run.num_workers,
        )
        if columns.names:
            dataset = dataset.materialize()  # every shard's types are known before any shard is written
            _unify(side, columns)
            dataset = dataset.map_batches(
                _cast_rows, batch_size=None, batch_format="pyarrow", fn_kwargs={"columns": columns}
            )
        dataset.write_parquet(data if isinstance(data, str) else str(data.absolute()))
    except FtdataError:
        raise
    except Exception as exc:  # a worker died, or a bug: shard errors do not get here
        raise ray_failure(exc) from None
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        if quiet:
            del os.environ["RAY_DATA_LOG_LEVEL"]


def _build_shard(batch: pa.Table, *, key: str, payload: list[Any]) -> pa.Table:
    """In a Ray worker: the rows of the shard(s) in `batch` (columns shard, path).

    A shard's `FtdataError` is saved beside the output, not raised: Ray Data would wrap it
    and drop its type and location. A shard after one that failed is skipped; the ones
    before it still run, so the driver raises the error of the first failing shard.
    """
    job: _ShardJob = ray_spec(key, payload)
    side = store.filesystem(job.sidecar)
    errors = store.child(side, _ERRORS)
    tables = []
    for shard, path in zip(batch.column("shard").to_pylist(), batch.column("path").to_pylist()):
        if any(failed < shard for failed in _failed_shards(errors)):
            continue
        try:
            tables.append(_shard_rows(job, _stage(key, job), shard, path, side))
        except FtdataError as exc:
            store.write_bytes(store.child(errors, f"part-{shard:05d}.pickle"), pickle.dumps(Raised(exc)))
    return (
        pa.concat_tables(tables)
        if tables
        else task_module(job.options.data.task).schema(job.options.data).empty_table()
    )


def _unify(side: Where, columns: OpenColumns) -> None:
    """The shards' object columns typed as one: each shard's rows' schema, in shard order, unified into `columns`.

    Raises:
        FtdataError: the error of the first failing shard (its rows are not there to type).
        ConfigError: a column that is `{}` in every record (a struct with no field, which Parquet cannot store).
    """
    if (error := _first_error(side)) is not None:
        raise error
    schemas = store.child(side, _SCHEMAS)
    for name in store.file_names(schemas):
        columns.take(pa.ipc.read_schema(pa.py_buffer(store.read_bytes(store.child(schemas, name)))))
    check_parquet(pa.schema(list(columns.types.items())))


def _cast_rows(batch: pa.Table, *, columns: OpenColumns) -> pa.Table:
    """In a Ray worker: one shard's rows in the types every shard's unify to (`_unify`)."""
    return columns.cast(batch)


def _failed_shards(errors: Where) -> list[int]:
    """The shards that saved an error (`part-00003.pickle` -> 3), in order."""
    return sorted(int(name.removeprefix("part-").removesuffix(".pickle")) for name in store.file_names(errors))


def _first_error(side: Where) -> FtdataError | None:
    failed = _failed_shards(store.child(side, _ERRORS))
    if not failed:
        return None
    return pickle.loads(store.read_bytes(store.child(side, f"{_ERRORS}/part-{failed[0]:05d}.pickle"))).error()


def _shard_rows(job: _ShardJob, stage: Stage, shard: int, source: Any, side: Where) -> pa.Table:
    """One shard through the run loop in this worker (one thread: the worker is one CPU), then packed;
    rejects and report beside."""
    options = job.options.data
    report = BuildReport()
    name = f"part-{shard:05d}"
    # This shard's scratch, dropped when it is done: Ray ends a worker without its exit handlers, so
    # nothing may wait for the worker's end. A worker killed mid-shard leaves it to a sweep (the
    # reaper's of a local cluster, the next shard's or the next run's: its lock died with it).
    scratch = scratch_dir()
    try:
        with space.disk_space(space.scratch_place(mine=lambda: scratch)):  # a full worker disk: one line naming it
            rows = stage.task.open_rows(scratch / "rows.arrow", options)
            sink = RejectsWriter(report, scratch / "rejects.jsonl")
            write_rows(
                source, stage, job.options.run, report=report, rows=rows, sink=sink, on=LocalExecutor(1), empty_ok=True
            )
            schema = stage.task.schema(options)
            table = schema.empty_table()
            if rows.weighted:  # not dropped in silence: the Ray shards have no such column yet
                raise ConfigError(
                    "loss weights (loss_weight in the data) are not carried by engine=ray yet; build with "
                    "engine=local or processes"
                )
            if rows.rows:
                finished = stage.task.finish(rows.path, options, report, splits=None, pad_id=0)
                with pa.ipc.open_stream(finished.cache_files[0]["filename"]) as rows:  # into memory: the scratch goes
                    table = rows.read_all().select(schema.names)
            store.copy(
                (fs.LocalFileSystem(), str(scratch / "rejects.jsonl")), store.child(side, f"{REJECTS_DIR}/{name}.jsonl")
            )
            if len(table) and open_names(schema):  # typed by its rows: the driver unifies the shards' (`_unify`)
                store.write_bytes(store.child(side, f"{_SCHEMAS}/{name}.arrow"), table.schema.serialize().to_pybytes())
    finally:
        drop_scratch(scratch)
    store.write_bytes(store.child(side, f"{_REPORTS}/{name}.json"), json.dumps(report.to_dict(), default=str).encode())
    return table


_STAGES: dict[str, Stage] = {}  # the build's key -> its compiled stage, once per worker process


def _stage(key: str, job: _ShardJob) -> Stage:
    """The build's stage, compiled once per worker process. Keyed by the build's key, never by
    `id(job)`: `ray_spec` drops the last build's job, and the next one may be unpickled at its
    address (a worker then built a shard with the last build's template and options)."""
    if key not in _STAGES:
        _STAGES.clear()
        _STAGES[key] = Stage(job.tokenizer, job.options.data)
    return _STAGES[key]


def _read_report(side: Where, shard: int, *, shared: str) -> BuildReport:
    """Shard `shard`'s report, written by its worker into the sidecar `shared` (`side`: its filesystem and path).

    Raises:
        FtdataError: the report is not there: the worker ran on a node that does not see OUT.
    """
    try:
        data = store.read_bytes(store.child(side, f"{_REPORTS}/part-{shard:05d}.json"))
        return BuildReport.from_dict(json.loads(data))
    except FileNotFoundError:
        raise FtdataError(
            f"shard {shard}'s counts never reached {shared}/{_REPORTS}: its worker wrote them where this machine "
            "cannot see; on a multi-node cluster, -o OUT must be a folder every node mounts at the same path "
            "(NFS, a shared volume) or a URI every node reaches (s3://bucket/prefix)"
        ) from None


def merge_reports(into: BuildReport, parts: list[BuildReport]) -> BuildReport:
    """The shards' reports merged into `into`, in shard order (`BuildReport.merge` adds the
    counts; the output's numbers, rows and packing, add up here: each shard is its own output)."""
    for part in parts:
        into.merge(part)
        into.rows += part.rows
        for split, stats in (part.packing or {}).items():
            into.packing = into.packing or {}
            total = into.packing.get(split)
            into.packing[split] = stats if total is None else total + stats
    into.splits = {"train": into.rows}
    return into


def _concatenate(folder: Where, dest: Path) -> None:
    """The rejects shards of `folder`, in shard order, as one local file."""
    with atomic_path(dest) as tmp, tmp.open("wb") as out:
        for name in store.file_names(folder):
            out.write(store.read_bytes(store.child(folder, name)))
