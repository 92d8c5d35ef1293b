"""The pipeline: the only place where the stages are wired together.

    read -> [engine: format -> render -> tokenize+mask -> truncate] -> Arrow -> [split] -> [pack | pad]

Records are read in batches; each batch runs through the record engine (`engine.Stage`, in
this process or a worker: `_run_stage(spec, batch) -> Chunk`) and lands in an Arrow
file, so a large JSONL never sits in Python objects. Every record that is not kept as is
(rejected, cut, filtered) is counted in the report and written to the rejects file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from ftdata import safeio
from ftdata.engine import Chunk, Record, Stage
from ftdata.errors import ConfigError, FtdataError
from ftdata.executors import executor
from ftdata.formats import compile_filter
from ftdata.options import BuildOptions
from ftdata.outcomes import RejectCode, RejectStage
from ftdata.readers import read_records
from ftdata.report import REPORT_FORMAT, BuildReport, Reject, RejectsWriter
from ftdata.resources import load_tokenizer

__all__ = ["Batch", "BuildResult", "Stage", "StageSpec", "build_fingerprint", "build_sft_dataset", "prepare", "read_batches"]


@dataclass(frozen=True)
class StageSpec:
    """What a worker process needs to rebuild the `Stage`: the options and the tokenizer. Picklable.

    A fast tokenizer pickles as its JSON, config and chat template; a prompt template is
    loaded again from its name or path. The filter stays behind (it runs where records are
    read), so a lambda filter never has to cross. The compiled stage is built once per process.
    """

    options: BuildOptions
    tokenizer: Any
    stage: Stage | None = field(default=None, compare=False, repr=False)

    @classmethod
    def create(cls, stage: Stage) -> StageSpec:
        return cls(dataclasses.replace(stage.options, filter=None), stage.tokenizer, stage)

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self.options, "tokenizer": self.tokenizer}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in {**state, "stage": None}.items():
            object.__setattr__(self, name, value)

    def compiled(self) -> Stage:
        if self.stage is None:
            object.__setattr__(self, "stage", Stage(self.tokenizer, self.options))
        return self.stage  # type: ignore[return-value]


@dataclass
class Batch:
    """The records of one chunk, and the filter's rejects of the records read with them."""

    records: list[Record] = field(default_factory=list)
    filtered: list[Reject] = field(default_factory=list)
    read: int = 0

    def __len__(self) -> int:
        return self.read


def read_batches(source: Any, options: BuildOptions) -> Iterator[Batch]:
    """The records of `source` (up to `limit`) in batches of `batch_size` kept records.

    The filter runs here, where records are read, never in a worker.
    """
    keep = compile_filter(options.filter)
    batch = Batch()
    for location, row in islice(read_records(source, reader=options.reader, delimiter=options.delimiter, field=options.field), options.limit):
        batch.read += 1
        if keep is not None and not keep(row, location):
            batch.filtered.append(Reject(str(location), RejectStage.FILTER, RejectCode.FILTERED, f"filtered: {options.filter} is false"))
            continue
        batch.records.append((location, row))
        if len(batch.records) == options.batch_size:
            yield batch
            batch = Batch()
    if batch.read:
        yield batch


def _run_stage(spec: StageSpec, batch: Batch) -> Chunk:
    """One batch through the stage (in this process or a worker); the filter's rejects go first."""
    chunk = spec.compiled()(batch.records)
    chunk.rejects[:0] = batch.filtered
    filtered = BuildReport(records=batch.read - len(batch.records))
    for reject in batch.filtered:
        filtered.add(reject)
    chunk.report = filtered.merge(chunk.report)
    return chunk


@dataclass
class BuildResult:
    """The dataset and the report of what happened to every record."""

    dataset: Any  # datasets.Dataset | datasets.DatasetDict
    report: BuildReport


def build_fingerprint(source: Any, tokenizer: Any, options: BuildOptions) -> str:
    """Cache key of a build: the source identity, the tokenizer, every output-changing option, the version."""
    from ftdata import __version__

    h = hashlib.sha256()
    h.update(safeio.source_id(source).encode())
    h.update(str(getattr(tokenizer, "name_or_path", "")).encode())
    h.update(hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).digest())
    h.update(str(getattr(tokenizer, "chat_template", "")).encode())
    h.update(json.dumps(options.fingerprint_fields(), sort_keys=True, default=str).encode())
    h.update(__version__.encode())
    h.update(f"report {REPORT_FORMAT}".encode())
    return h.hexdigest()[:16]


def prepare(
    source: Any,
    *,
    tokenizer: Any = None,
    progress: Callable[[int], None] | None = None,
    build_options: BuildOptions | None = None,
    **options: Any,
) -> BuildResult:
    """Build the dataset and return it with its `BuildReport`.

    Same arguments as `build_sft_dataset`; use this when you want the counts. Options come
    as keywords or, already validated, as `build_options` (not both). `progress`, when given,
    is called after each chunk with the number of records read for it (filtered ones
    included), e.g. to advance a progress bar. `engine="processes"` runs the per-record work in
    `num_workers` spawned processes (see `ftdata.executors`); the output is the same.
    """
    from ftdata import output

    if build_options is not None and options:
        raise ConfigError(f"pass options as keywords or as build_options, not both (got {', '.join(options)})")
    opts = build_options or BuildOptions.from_mapping(options)
    started = time.perf_counter()
    tok = load_tokenizer(tokenizer)
    stage = Stage(tok, opts)
    if opts.rejects_path:
        safeio.check_rejects_path(Path(opts.rejects_path), safeio.input_paths(source))
    fingerprint = build_fingerprint(source, tok, opts) if opts.cache_dir else ""
    if fingerprint and (cached := output.load_cached(Path(opts.cache_dir), fingerprint, rejects_path=opts.rejects_path)) is not None:  # type: ignore[arg-type]
        dataset, report = cached
        report.cached = True
        return BuildResult(dataset, report)

    report = BuildReport(
        source=str(source) if isinstance(source, (str, Path)) else type(source).__name__,
        tokenizer=str(getattr(tok, "name_or_path", "")), template=stage.renderer.name,
        markers=stage.renderer.markers.to_dict() if stage.renderer.markers else None, fingerprint=fingerprint,
    )  # fmt: skip
    scratch = safeio.scratch_dir()
    # A cache entry keeps the full rejects file, so a cached build writes one even without rejects_path.
    rejects_file = opts.rejects_path or (scratch / output.REJECTS if fingerprint else None)
    sink = RejectsWriter(report, rejects_file)
    report.rejects_path = opts.rejects_path
    batches = read_batches(source, opts)
    writer = output.ArrowRows(scratch / "rows.arrow")
    try:
        for chunk in executor(opts.engine, opts.num_workers, ray_address=opts.ray_address).map(_run_stage, StageSpec.create(stage), batches):
            _collect(chunk, writer, sink)
            if progress is not None and chunk.records:
                progress(chunk.records)
    except BaseException:
        sink.abort()
        raise
    finally:
        writer.close()
        sink.close()
    check_built(report, writer.rows)
    dataset = output.finish(writer.path, opts, report)
    report.seconds = round(time.perf_counter() - started, 3)
    if fingerprint:
        dataset = output.save_cached(dataset, report, Path(opts.cache_dir), fingerprint, rejects=Path(rejects_file))  # type: ignore[arg-type]
    return BuildResult(dataset, report)


def check_built(report: BuildReport, rows: int) -> None:
    """Raise when a build read no records or kept no rows (naming the first reject)."""
    if report.records == 0:
        raise FtdataError(f"{report.source}: no records to build from")
    if rows == 0:
        first = report.sample_rejects[0] if report.sample_rejects else None
        why = f"; first: {first.location}: {first.reason}" if first else ""
        raise FtdataError(f"every record was rejected ({report.n_rejected} of {report.records}){why}")


def _collect(chunk: Chunk, writer: Any, sink: RejectsWriter) -> None:
    writer.write(chunk.ids, chunk.labels, chunk.lengths, chunk.groups)
    sink.write(chunk.rejects)
    sink.report.merge(chunk.report)


def build_sft_dataset(
    source: Any,
    *,
    tokenizer: Any = None,
    template: str | None = None,
    max_length: int = 2048,
    packing: bool = False,
    test_size: float | int | None = None,
    seed: int = 42,
    **options: Any,
) -> Any:
    """Read, render, mask, truncate (and pack) `source` into a dataset SFTTrainer accepts as is.

    Args:
        source: a path (.json, .jsonl, .csv, .parquet, dataset folder), a hub id in the
            local cache, a `datasets.Dataset`, or a list of records.
        tokenizer: a fast tokenizer, a local folder, or None for the bundled SmolLM2.
        template: None (the tokenizer's chat template, else alpaca), a built-in prompt
            template name (alpaca, instruction-response, question-answer) or a .jinja path.
        max_length: longest sequence in tokens; see `truncation` for what happens beyond.
        packing: pack sequences into rows of max_length with restarting position_ids.
        test_size: fraction or count for a held-out `test` split (returns a DatasetDict).
        seed: seed for shuffling, splitting and packing.
        **options: any other `BuildOptions` field (format, columns, mask, truncation, ...).

    Returns:
        `datasets.Dataset` with input_ids, attention_mask, labels (-100 = no loss), plus
        position_ids and seq_lengths when packed; a `DatasetDict` (train/test) with test_size.

    Raises:
        ReaderError, RecordError, TemplateError, ConfigError: see docs; every message names
            the file, the record and the field.

    Example:
        >>> ds = build_sft_dataset("data.json", template="alpaca", max_length=512)  # doctest: +SKIP
    """
    result = prepare(
        source, tokenizer=tokenizer, template=template, max_length=max_length,
        packing=packing, test_size=test_size, seed=seed, **options,
    )  # fmt: skip
    report = result.report
    if report.rejected or report.cut:
        where = f"; see {report.rejects_path}" if report.rejects_path else "; pass rejects_path=... to list them"
        warnings.warn(f"ftdata: {report.summary()}{where}", stacklevel=2)
    report.check_reject_ratio(options.get("max_reject_ratio"))
    return result.dataset
