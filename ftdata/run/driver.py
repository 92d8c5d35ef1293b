"""The build driver: `ftdata.build(source, out, ...)` is the one way a dataset is built.

    source ──run loop (loop.run, reducer engine.chunk)──▶ rows ──output──▶ in memory │ OUT folder │ OUT shards
                                                          └──────────────▶ report, rejects, build.json, cache

Output, by what is asked for:

    out=None                    a `datasets.Dataset` (or DatasetDict) in memory: `prepare`,
                                `build_sft_dataset`, `ftdata train`'s data step
    out=FOLDER                  the dataset (arrow, parquet or jsonl), rejects.jsonl and build.json
                                in FOLDER, published together when the build succeeds
                                (`ftdata.run.publish`): `ftdata build -o`
    out=FOLDER or URI, engine=ray
                                sharded Parquet written by the Ray workers (`ftdata.run.ray_build`),
                                unless output_format asks for arrow or jsonl

`engine` means the same thing on every path: where the per-record work runs. A build to a
folder with engine=ray writes shards from the workers (a corpus never passes through this
process); in memory, or with output_format arrow/jsonl, its sequences come back here.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftdata.io import output, safeio, space

from ftdata.run import loop
from ftdata.run.engine import Ran, Stage, chunk
from ftdata.errors import ConfigError, FtdataError
from ftdata.run.executors import Executor
from ftdata.options import DATA_FIELDS, BuildOptions, DataOptions, RunOptions
from ftdata.report import REPORT_FORMAT, BuildReport, RejectsWriter
from ftdata.io.resources import load_tokenizer


__all__ = ["BuildResult", "build", "build_fingerprint", "build_sft_dataset", "checked", "prepare", "write_rows"]


@dataclass
class BuildResult:
    """What a build made: the dataset (None when Ray workers wrote it as shards), its report and,
    for a build to OUT, what was written there (`files` inside OUT, build.json's `manifest`)."""

    dataset: Any  # datasets.Dataset | datasets.DatasetDict | None
    report: BuildReport
    out: Path | str | None = None
    output_format: str | None = None
    files: list[str] = field(default_factory=list)
    manifest: dict[str, Any] | None = None
    options: BuildOptions | None = None  # as the build ran them (defaults filled in: OUT's rejects file)


def build_fingerprint(source: Any, tokenizer: Any, options: DataOptions) -> str:
    """Cache key of a build: the source identity, the tokenizer, the data options, the version."""
    from ftdata import __version__

    h = hashlib.sha256()
    h.update(safeio.source_id(source).encode())
    h.update(str(getattr(tokenizer, "name_or_path", "")).encode())
    h.update(hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).digest())
    h.update(str(getattr(tokenizer, "chat_template", "")).encode())
    h.update(json.dumps(options.fingerprint(), sort_keys=True, default=str).encode())
    h.update(__version__.encode())
    h.update(f"report {REPORT_FORMAT}".encode())
    return h.hexdigest()[:16]


def check_built(report: BuildReport, rows: int) -> None:
    """Raise when a build read no records or kept no rows (naming the first reject)."""
    if report.records == 0:
        raise FtdataError(f"{report.source}: no records to build from")
    if rows == 0:
        first = report.sample_rejects[0] if report.sample_rejects else None
        why = f"; first: {first.location}: {first.reason}" if first else ""
        raise FtdataError(f"every record was rejected ({report.n_rejected} of {report.records}){why}")


def _chunk(stage: Stage, ran: Ran) -> Any:
    """The build's reducer (module level: it travels to workers by name)."""
    return chunk(ran, vision=stage.vision)


def write_rows(
    source: Any, stage: Stage, options: RunOptions, *, report: BuildReport, rows: output.ArrowRows, sink: RejectsWriter,
    progress: Callable[[int], None] | None = None, on: Executor | None = None, empty_ok: bool = False,
) -> None:  # fmt: skip
    """Every kept sequence of `source` into `rows`, every reject into `sink`, the counts into `report`.

    The rejects file is published only when every batch succeeded; `rows` is closed either way.
    """
    try:
        for part in loop.run(source, stage, options, _chunk, report=report, progress=progress, on=on, empty_ok=empty_ok):
            rows.write(part.ids, part.labels, part.lengths, part.groups, part.weights, images=part.images)
            sink.write(part.rejects)
    except BaseException:
        sink.abort()
        raise
    finally:
        rows.close()
        sink.close()


def _new_report(source: Any, tokenizer: Any, stage: Stage, fingerprint: str = "") -> BuildReport:
    return BuildReport(
        source=str(source) if isinstance(source, (str, Path)) else type(source).__name__,
        tokenizer=str(getattr(tokenizer, "name_or_path", "")), template=stage.renderer.name,
        markers=stage.renderer.markers.to_dict() if stage.renderer.markers else None, fingerprint=fingerprint,
    )  # fmt: skip


def _in_memory(
    source: Any, tok: Any, opts: BuildOptions, progress: Callable[[int], None] | None, *, out: space.Place | None = None
) -> BuildResult:
    """The dataset in memory (memory-mapped Arrow), from the cache when `cache_dir` holds this build.

    A failed build removes its scratch now; a full disk is a `DiskFullError` naming scratch
    space, the rejects file's folder or `out` (the output folder, when the rejects go there).
    """
    from ftdata.mix import Recipe

    rejects = opts.output.rejects_path
    places = (out,) if out is not None else (_rejects_place(Path(rejects)),) if rejects else ()
    if isinstance(source, Recipe):
        with space.disk_space(_scratch_place(None, rough=None), *places):
            return _recipe_in_memory(source, tok, opts, progress)
    scratch: list[Path] = []
    try:
        with space.disk_space(_scratch_place(lambda: scratch[0] if scratch else None, rough=rough_need(source)), *places):
            return _build_in_memory(source, tok, opts, progress, scratch=scratch)
    except BaseException:
        for folder in scratch:
            safeio.drop_scratch(folder)
        raise


def _scratch_place(mine: Callable[[], Path | None] | None, *, rough: int | None) -> space.Place:
    return space.Place(
        Path(tempfile.gettempdir()), "scratch space, $TMPDIR", "free space there or set TMPDIR to a folder with room",
        mine=mine or (lambda: None), expected=lambda: rough,
    )  # fmt: skip


def rough_need(source: Any) -> int | None:
    """What a build of `source` writes (its rows file, its output), roughly, before anything is known:
    twice the input's bytes (9 bytes a token of ids, labels and mask; ~4 characters a token)."""
    if isinstance(source, (str, Path)) and Path(source).expanduser().exists():
        return 2 * space.tree_bytes(Path(source).expanduser())
    return None


def _rejects_place(path: Path, *, need: int | None = None) -> space.Place:
    return space.Place(
        path.parent, "the rejects file's folder", "free space there or give another rejects file", expected=lambda: need
    )


def _build_in_memory(
    source: Any, tok: Any, opts: BuildOptions, progress: Callable[[int], None] | None, *, scratch: list[Path]
) -> BuildResult:
    """`_in_memory` of a source (not a recipe); the scratch folder it makes is appended to `scratch`."""
    started = time.perf_counter()
    data, out = opts.data, opts.output
    stage = Stage(tok, data)
    if out.rejects_path:
        safeio.check_rejects_path(Path(out.rejects_path), safeio.input_paths(source))
    fingerprint = build_fingerprint(source, tok, data) if out.cache_dir else ""
    if fingerprint and (cached := output.load_cached(Path(out.cache_dir), fingerprint, rejects_path=out.rejects_path)) is not None:  # type: ignore[arg-type]
        dataset, report = cached
        report.cached = True
        return BuildResult(dataset, report)
    report = _new_report(source, tok, stage, fingerprint)
    scratch.append(safeio.scratch_dir())
    # A cache entry keeps the full rejects file, so a cached build writes one even without rejects_path.
    rejects_file = out.rejects_path or (scratch[0] / output.REJECTS if fingerprint else None)
    rows = output.ArrowRows(scratch[0] / "rows.arrow", images=stage.vision is not None)
    write_rows(source, stage, opts.run, report=report, rows=rows, sink=RejectsWriter(report, rejects_file), progress=progress)
    report.rejects_path = out.rejects_path
    check_built(report, rows.rows)
    dataset = output.finish(rows.path, data, report)
    report.seconds = round(time.perf_counter() - started, 3)
    if fingerprint:
        dataset = output.save_cached(dataset, report, Path(out.cache_dir), fingerprint, rejects=Path(rejects_file))  # type: ignore[arg-type]
    return BuildResult(dataset, report)


def _recipe_in_memory(recipe: Any, tok: Any, opts: BuildOptions, progress: Callable[[int], None] | None) -> BuildResult:
    """A recipe's mixture (`ftdata.mix.build`); its fingerprint covers the recipe and every source file."""
    from ftdata.mix.build import build_recipe

    if opts.output.rejects_path:
        inputs = safeio.input_paths(recipe.origin, *(f for s in recipe.sources for f in s.files()))
        safeio.check_rejects_path(Path(opts.output.rejects_path), inputs)
    dataset, report = build_recipe(recipe, tokenizer=tok, options=opts, progress=progress)
    report.fingerprint = recipe_fingerprint(recipe, tok, opts.data)
    return BuildResult(dataset, report)


def recipe_fingerprint(recipe: Any, tokenizer: Any, options: DataOptions) -> str:
    """What identifies a recipe build: the recipe file, every source file's content, the tokenizer, the options."""
    h = hashlib.sha256(build_fingerprint(recipe.origin, tokenizer, options).encode())
    for spec in recipe.sources:
        plain = {k: getattr(v, "value", v) for k, v in spec.options.items()}
        h.update(json.dumps([spec.name, spec.weight, spec.epochs_max, plain], sort_keys=True, default=str).encode())
        for path in spec.files():
            h.update(safeio.source_id(path).encode())
    return h.hexdigest()[:16]


def _as_recipe(source: Any, options: BuildOptions | None, flat: dict[str, Any]) -> tuple[Any, BuildOptions | None]:
    """(the recipe, its options with the given run and output options) when `source` is a recipe, else as given.

    Raises:
        ConfigError: a data option given beside a recipe (it belongs in the recipe).
    """
    from ftdata.mix import Recipe, is_recipe, load_recipe

    if not isinstance(source, Recipe):
        if not (isinstance(source, (str, Path)) and is_recipe(source)):
            return source, options
        source = load_recipe(source)
    from ftdata.mix.build import check_shares
    from ftdata.mix.recipe import check_nothing_beside

    given = options.to_mapping() if options is not None else flat
    check_nothing_beside(source, given)
    run_output = {k: v for k, v in given.items() if k not in DATA_FIELDS}
    check_shares(source)  # a share that cannot be met fails before any tokenizing
    return source, source.build_options().updated(**run_output)


def build(
    source: Any,
    out: str | Path | None = None,
    *,
    tokenizer: Any = None,
    options: BuildOptions | None = None,
    output_format: str | None = None,
    progress: Callable[[int], None] | None = None,
    tokenizer_name: str | None = None,
    protect: Sequence[Any] = (),
    config: Path | None = None,
    **flat: Any,
) -> BuildResult:
    """Build `source` into a dataset in memory (`out=None`) or into `out`; see the module docstring.

    Options come as flat keywords (`max_length=512`, `engine="processes"`) or, already
    validated, as `options` (not both). `tokenizer`: a loaded fast tokenizer, a local folder,
    or None for the bundled SmolLM2. `output_format`: arrow (default), parquet or jsonl for a
    folder. `progress`: called after each batch with the records read for it. `protect`:
    further paths OUT must not overwrite (a config file); `tokenizer_name` and `config` are
    recorded in build.json.

    Raises:
        ConfigError: a bad option or output; ReaderError, RecordError, TemplateError: see docs;
        FtdataError: no records, or every record rejected.
    """
    if options is not None and flat:
        raise ConfigError(f"pass options as keywords or as options=, not both (got {', '.join(flat)})")
    source, options = _as_recipe(source, options, flat)
    opts = options or BuildOptions.from_mapping(flat)
    if tokenizer is None and getattr(source, "tokenizer", None):
        tokenizer = source.tokenizer  # a recipe names its tokenizer
    if tokenizer is None and opts.data.processor is not None:  # a vision build: the processor's own tokenizer
        from ftdata.vision.processors import processor_tokenizer

        tokenizer = processor_tokenizer(opts.data.processor)
    tok = load_tokenizer(tokenizer)
    if out is None:
        if output_format is not None:
            raise ConfigError(f"output_format={output_format!r} needs an output: give out=FOLDER")
        result = _in_memory(source, tok, opts, progress)
        result.options = opts
        return result
    from ftdata.run.publish import to_out  # it builds through this module's _in_memory

    name = tokenizer_name or str(getattr(tok, "name_or_path", ""))
    return to_out(
        source, out, tok, opts, output_format=output_format, tokenizer_name=name, protect=protect, config=config,
        progress=progress,
    )  # fmt: skip


def prepare(
    source: Any,
    *,
    tokenizer: Any = None,
    progress: Callable[[int], None] | None = None,
    build_options: BuildOptions | None = None,
    **options: Any,
) -> BuildResult:
    """Build the dataset in memory and return it with its `BuildReport`: `build(source, ...)`.

    Same arguments as `build_sft_dataset`; use this when you want the counts. Options come
    as keywords or, already validated, as `build_options` (not both). `progress`, when given,
    is called after each chunk with the number of records read for it (filtered ones
    included), e.g. to advance a progress bar. `engine="processes"` runs the per-record work in
    `num_workers` spawned processes (see `ftdata.run.executors`); the output is the same.
    """
    if build_options is not None and options:
        raise ConfigError(f"pass options as keywords or as build_options, not both (got {', '.join(options)})")
    return build(source, tokenizer=tokenizer, progress=progress, options=build_options, **options)


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
        **options: any other option by its flat name (format, columns, mask, truncation,
            engine, rejects_path, ...; see `BuildOptions`).

    Returns:
        `datasets.Dataset` with input_ids, attention_mask, labels (-100 = no loss), plus
        position_ids and seq_lengths when packed; a `DatasetDict` (train/test) with test_size.

    Raises:
        ReaderError, RecordError, TemplateError, ConfigError: see docs; every message names
            the file, the record and the field.

    Example:
        >>> ds = build_sft_dataset("data.json", template="alpaca", max_length=512)  # doctest: +SKIP
    """
    result = build(
        source, tokenizer=tokenizer, template=template, max_length=max_length,
        packing=packing, test_size=test_size, seed=seed, **options,
    )  # fmt: skip
    checked(result.report, max_reject_ratio=options.get("max_reject_ratio"), stacklevel=3)
    return result.dataset


def checked(report: BuildReport, *, max_reject_ratio: float | None, stacklevel: int = 2) -> BuildReport:
    """Warn (one line) when records were rejected or cut; raise past `max_reject_ratio`.

    Raises:
        FtdataError: more than `max_reject_ratio` of the records read were rejected.
    """
    if report.rejected or report.cut:
        where = f"; see {report.rejects_path}" if report.rejects_path else "; pass rejects_path=... to list them"
        warnings.warn(f"ftdata: {report.summary()}{where}", stacklevel=stacklevel)
    report.check_reject_ratio(max_reject_ratio)
    return report
