"""The pipeline: the only place where the stages are wired together.

    read -> format -> render -> tokenize+mask -> truncate -> Arrow -> [split] -> [pack | pad]

Records stream through in chunks (optionally in worker processes) and land in an Arrow
file, so a large JSONL never sits in Python objects. Every record that is not kept as is
(rejected, cut, filtered) is counted in the report and written to the rejects file.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from ftdata.errors import ConfigError, FtdataError, Location, RecordError, UnusableRecord
from ftdata.formats import Columns, compile_filter, to_examples
from ftdata.masking import Masker, Tokenized
from ftdata.options import BuildOptions
from ftdata.readers import read_records
from ftdata.render import Renderer
from ftdata.report import BuildReport, Reject, RejectsWriter
from ftdata.resources import load_tokenizer
from ftdata.truncation import truncate
from ftdata.types import Example

__all__ = ["BuildResult", "Stage", "build_fingerprint", "build_sft_dataset", "prepare"]


@dataclass
class Chunk:
    """Output of one chunk of records: flat token arrays plus what happened to each record."""

    ids: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    rejects: list[Reject] = field(default_factory=list)
    examples: int = 0
    methods: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)
    records: int = 0  # records that went into the chunk (for progress)


class Stage:
    """Format, render, mask and truncate records: everything between reading and Arrow.

    Also the engine of `ftdata preview`: `examples()` and `tokenize()` work on a few records.
    """

    def __init__(self, tokenizer: Any, options: BuildOptions):
        self.tokenizer = tokenizer
        self.options = options
        self.columns = Columns(options.columns)
        self.renderer = Renderer.from_options(tokenizer, options)
        self.masker = Masker(tokenizer)

    def examples(self, location: Location, row: Any) -> tuple[Example, ...]:
        return to_examples(row, location, format=self.options.format, columns=self.columns, roles=self.options.roles)

    def __call__(self, records: list[tuple[Location, Any]]) -> Chunk:
        rejects: list[Reject] = []
        pending: list[tuple[Example, Any]] = []
        formats: dict[str, int] = {}
        for location, row in records:
            try:
                for example in self.examples(location, row):
                    formats[example.format] = formats.get(example.format, 0) + 1
                    pending.append((example, self.renderer(example)))
            except RecordError as exc:
                rejects.append(Reject.from_error(exc, location, "format", on_error=self.options.on_error))
        ids: list[int] = []
        labels: list[int] = []
        lengths: list[int] = []
        methods: dict[str, int] = {}
        notes: dict[str, int] = {}
        masked = self.masker([r for _, r in pending]) if pending else []
        for (example, rendered), row in zip(pending, masked):
            where = str(example.source)
            if isinstance(row, UnusableRecord):
                rejects.append(Reject(where, "verify", row.reason))
                continue
            try:
                result = truncate(row, max_length=self.options.max_length, policy=self.options.truncation)
            except RecordError as exc:
                raise RecordError(exc.reason, location=example.source, field=exc.field) from None
            if result.reason:
                rejects.append(Reject(where, "truncate", result.reason, kept=bool(result.rows), tokens=len(row.input_ids)))
            methods[rendered.method] = methods.get(rendered.method, 0) + 1
            for note in row.notes:
                notes[note] = notes.get(note, 0) + 1
            for seq_ids, seq_labels in result.rows:
                ids.extend(seq_ids)
                labels.extend(seq_labels)
                lengths.append(len(seq_ids))
        return Chunk(
            np.asarray(ids, dtype=np.int32), np.asarray(labels, dtype=np.int32), np.asarray(lengths, dtype=np.int64),
            rejects, len(pending), methods, notes, formats, len(records),
        )  # fmt: skip

    def tokenize(self, example: Example) -> Tokenized | UnusableRecord:
        """Render and mask one example (no truncation): for previews."""
        return self.masker([self.renderer(example)])[0]


# Worker processes get the stage once (fork copies it), then only records travel.
_WORKER_STAGE: Stage | None = None


def _init_worker(stage: Stage) -> None:
    global _WORKER_STAGE
    _WORKER_STAGE = stage
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _run_worker(records: list[tuple[Location, Any]]) -> Chunk:
    assert _WORKER_STAGE is not None
    return _WORKER_STAGE(records)


@dataclass
class BuildResult:
    """The dataset and the report of what happened to every record."""

    dataset: Any  # datasets.Dataset | datasets.DatasetDict
    report: BuildReport


def _source_id(source: Any) -> str:
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if path.exists():
            stat = path.stat()
            return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        return str(source)
    if hasattr(source, "_fingerprint"):
        return str(source._fingerprint)
    try:
        return hashlib.sha256(json.dumps(list(source), sort_keys=True, default=str).encode()).hexdigest()
    except TypeError:
        return repr(source)


def build_fingerprint(source: Any, tokenizer: Any, options: BuildOptions) -> str:
    """Cache key of a build: the source identity, the tokenizer, every output-changing option, the version."""
    from ftdata import __version__

    h = hashlib.sha256()
    h.update(_source_id(source).encode())
    h.update(str(getattr(tokenizer, "name_or_path", "")).encode())
    h.update(hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).digest())
    h.update(str(getattr(tokenizer, "chat_template", "")).encode())
    h.update(json.dumps(options.fingerprint_fields(), sort_keys=True, default=str).encode())
    h.update(__version__.encode())
    return h.hexdigest()[:16]


def _scratch_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="ftdata-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _chunks(records: Iterator[tuple[Location, Any]], size: int) -> Iterator[list[tuple[Location, Any]]]:
    while batch := list(islice(records, size)):
        yield batch


def _filtered(records: Iterator[tuple[Location, Any]], options: BuildOptions, sink: RejectsWriter) -> Iterator[tuple[Location, Any]]:
    keep = compile_filter(options.filter)
    for location, row in records:
        sink.report.records += 1
        if keep is not None and not keep(row):
            sink(Reject(str(location), "filter", f"filtered: {options.filter} is false"))
            continue
        yield location, row


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
    is called after each chunk with the number of records it held (records a `filter`
    dropped are reported once, at the end), e.g. to advance a progress bar.
    """
    from ftdata import output

    if build_options is not None and options:
        raise ConfigError(f"pass options as keywords or as build_options, not both (got {', '.join(options)})")
    opts = build_options or BuildOptions.from_mapping(options)
    started = time.perf_counter()
    tok = load_tokenizer(tokenizer)
    stage = Stage(tok, opts)
    fingerprint = build_fingerprint(source, tok, opts) if opts.cache_dir else ""
    if fingerprint and (cached := output.load_cached(Path(opts.cache_dir), fingerprint)) is not None:  # type: ignore[arg-type]
        dataset, report = cached
        report.cached = True
        return BuildResult(dataset, report)

    report = BuildReport(
        source=str(source) if isinstance(source, (str, Path)) else type(source).__name__,
        tokenizer=str(getattr(tok, "name_or_path", "")), template=stage.renderer.name,
        markers=stage.renderer.markers.to_dict() if stage.renderer.markers else None, fingerprint=fingerprint,
    )  # fmt: skip
    sink = RejectsWriter(report, opts.rejects_path)
    records = _filtered(islice(read_records(source, reader=opts.reader), opts.limit), opts, sink)
    scratch = _scratch_dir()
    writer = output.ArrowRows(scratch / "rows.arrow")
    reported = 0

    def advance(n: int) -> None:
        nonlocal reported
        if progress is not None and n > 0:
            progress(n)
            reported += n

    try:
        chunks = _chunks(records, opts.batch_size)
        if opts.num_proc > 1:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(opts.num_proc, initializer=_init_worker, initargs=(stage,)) as pool:
                for chunk in pool.imap(_run_worker, chunks):
                    _collect(chunk, writer, sink)
                    advance(chunk.records)
        else:
            for chunk in map(stage, chunks):
                _collect(chunk, writer, sink)
                advance(chunk.records)
        advance(report.records - reported)  # records the filter dropped
    finally:
        writer.close()
        sink.close()
    if report.records == 0:
        raise FtdataError(f"{report.source}: no records to build from")
    if writer.rows == 0:
        first = report.sample_rejects[0] if report.sample_rejects else None
        why = f"; first: {first.location}: {first.reason}" if first else ""
        raise FtdataError(f"every record was rejected ({report.n_rejected} of {report.records}){why}")
    dataset = output.finish(writer.path, opts, report)
    report.seconds = round(time.perf_counter() - started, 3)
    if fingerprint:
        dataset = output.save_cached(dataset, report, Path(opts.cache_dir), fingerprint)  # type: ignore[arg-type]
    return BuildResult(dataset, report)


def _collect(chunk: Chunk, writer: Any, sink: RejectsWriter) -> None:
    report = sink.report
    writer.write(chunk.ids, chunk.labels, chunk.lengths)
    for reject in chunk.rejects:
        sink(reject)
    report.examples += chunk.examples
    report.sequences += len(chunk.lengths)
    report.tokens += int(chunk.lengths.sum())
    report.trained_tokens += int((chunk.labels != -100).sum())
    report.methods.update(chunk.methods)
    report.notes.update(chunk.notes)
    report.formats.update(chunk.formats)


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
    return result.dataset
