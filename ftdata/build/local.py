"""A build in this process: its rows written to scratch, its rejects to their file, its dataset memory-mapped.

    source ──run loop (loop.run, reducer stage.reduce)──▶ rows file ──rows.finish──▶ Dataset (+ cache entry)

`in_memory` is the dataset a build returns without OUT (`prepare`, `build_sft_dataset`, training's
data step) and what `publish` writes into OUT; `write_rows` is the loop every build of rows shares
(the Ray shards' too).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftdata.build import cache
from ftdata.build.export import REJECTS
from ftdata.build.fingerprint import build_fingerprint, build_key
from ftdata.errors import FtdataError
from ftdata.guard import safeio, space
from ftdata.guard.inputs import Digests, Input, Manifest, Stat, add_read, data_input
from ftdata.options import BuildOptions, OutputOptions, RunOptions
from ftdata.run import loop
from ftdata.run.stage import Ran, Stage
from ftdata.run.executors import Executor
from ftdata.run.report import BuildReport, RejectsWriter


@dataclass
class BuildResult:
    """What a build made: the dataset (None when Ray workers wrote it as shards), its report, what it
    read (`inputs`, when keyed: a cached build or one to OUT), the cache entry it came from on a hit and,
    for a build to OUT, what was written there (`files` inside OUT, build.json's `manifest`)."""

    dataset: Any  # datasets.Dataset | datasets.DatasetDict | None
    report: BuildReport
    out: Path | str | None = None
    output_format: str | None = None
    files: list[str] = field(default_factory=list)
    manifest: dict[str, Any] | None = None
    options: BuildOptions | None = None  # as the build ran them (defaults filled in: OUT's rejects file)
    inputs: list[Input] = field(default_factory=list)
    cached_from: Path | None = None


def check_built(report: BuildReport, rows: int) -> None:
    """Raise when a build read no records or kept no rows (naming the first reject)."""
    if report.records == 0:
        raise FtdataError(f"{report.source}: no records to build from")
    if rows == 0:
        first = report.sample_rejects[0] if report.sample_rejects else None
        why = f"; first: {first.location}: {first.reason}" if first else ""
        raise FtdataError(f"every record was rejected ({report.n_rejected} of {report.records}){why}")


def _part(stage: Stage, ran: Ran) -> Any:
    """The build's reducer (module level: it travels to workers by name)."""
    return stage.reduce(ran)


def write_rows(
    source: Any,
    stage: Stage,
    options: RunOptions,
    *,
    report: BuildReport,
    rows: Any,
    sink: RejectsWriter,
    progress: Callable[[int], None] | None = None,
    on: Executor | None = None,
    empty_ok: bool = False,
    media: dict[str, Stat | None] | None = None,
) -> None:
    """Every kept sequence of `source` into `rows`, every reject into `sink`, the counts into `report`,
    and into `media` (when given) every file the records named or looked for (media, referenced trajectories).

    The rejects file is published only when every batch succeeded; `rows` is closed either way.
    """
    try:
        for part in loop.run(source, stage, options, _part, report=report, progress=progress, on=on, empty_ok=empty_ok):
            rows.add(part)
            sink.write(part.rejects)
            if media is not None:
                add_read(media, part.read)
    except BaseException:
        sink.abort()
        raise
    finally:
        rows.close()
        sink.close()


def _new_report(source: Any, tokenizer: Any, stage: Stage) -> BuildReport:
    return BuildReport(
        source=str(source) if isinstance(source, (str, Path)) else type(source).__name__,
        task=stage.task.task.value,
        tokenizer=str(getattr(tokenizer, "name_or_path", "")),
        template=stage.renderer.name,
        markers=stage.renderer.markers.to_dict() if stage.renderer.markers else None,
    )


def in_memory(
    source: Any,
    tok: Any,
    opts: BuildOptions,
    progress: Callable[[int], None] | None,
    *,
    out: space.Place | None = None,
    declared: Sequence[Input] = (),
    keyed: bool = False,
) -> BuildResult:
    """The dataset in memory (memory-mapped Arrow), from the cache when `cache_dir` holds this build.

    `declared`: inputs the caller read (a config file), part of the key; `keyed`: declare the inputs
    and fingerprint the build even without a cache (for build.json). A failed build removes its
    scratch now; a full disk is a `DiskFullError` naming scratch space, the rejects file's folder
    or `out` (the output folder, when the rejects go there).
    """
    from ftdata.mix import Recipe

    rejects = opts.output.rejects_path
    places = (out,) if out is not None else (rejects_place(Path(rejects)),) if rejects else ()
    keyed = keyed or bool(opts.output.cache_dir)
    scratch: list[Path] = []
    try:
        if isinstance(source, Recipe):
            with space.disk_space(_scratch_place(None, rough=None), *places):
                return _recipe_in_memory(source, tok, opts, progress, declared=declared, keyed=keyed, scratch=scratch)
        with space.disk_space(
            _scratch_place(lambda: scratch[0] if scratch else None, rough=rough_need(source)), *places
        ):
            return _build_in_memory(source, tok, opts, progress, declared=declared, keyed=keyed, scratch=scratch)
    except BaseException:
        for folder in scratch:
            safeio.drop_scratch(folder)
        raise


def _scratch_place(mine: Callable[[], Path | None] | None, *, rough: int | None) -> space.Place:
    return space.Place(
        Path(tempfile.gettempdir()),
        "scratch space, $TMPDIR",
        "free space there or set TMPDIR to a folder with room",
        mine=mine or (lambda: None),
        expected=lambda: rough,
    )


def rough_need(source: Any) -> int | None:
    """What a build of `source` writes (its rows file, its output), roughly, before anything is known:
    twice the input's bytes (9 bytes a token of ids, labels and mask; ~4 characters a token)."""
    if isinstance(source, (str, Path)) and Path(source).expanduser().exists():
        return 2 * space.tree_bytes(Path(source).expanduser())
    return None


def rejects_place(path: Path, *, need: int | None = None) -> space.Place:
    return space.Place(
        path.parent, "the rejects file's folder", "free space there or give another rejects file", expected=lambda: need
    )


@dataclass(frozen=True)
class _Key:
    """What a keyed build declared before reading a record, and the key made of it."""

    inputs: tuple[Input, ...]
    key: str


def _key(inputs: Sequence[Input], opts: BuildOptions) -> _Key:
    unique = tuple(dict.fromkeys(inputs))  # a recipe's sources share a tokenizer: declared once
    return _Key(unique, build_key(unique, opts.data, batch_size=opts.run.batch_size))


def _hit(key: _Key, out: OutputOptions, files: Digests) -> BuildResult | None:
    """The cached build of `key`, when the cache holds it and its media files are unchanged."""
    if not out.cache_dir:
        return None
    found = cache.load_cached(Path(out.cache_dir), key.key, files, rejects_path=out.rejects_path)
    if found is None:
        return None
    found.report.cached = True
    media = [found.media.input()] if found.media else []
    return BuildResult(found.dataset, found.report, inputs=[*key.inputs, *media], cached_from=found.folder)


def _rejects_file(out: OutputOptions, scratch: list[Path]) -> Path | None:
    """Where the rejects go: the user's file; else, for a cache entry (it keeps the full file), the build's scratch."""
    if out.rejects_path:
        return Path(out.rejects_path)
    if not out.cache_dir:
        return None
    if not scratch:
        scratch.append(safeio.scratch_dir())
    return scratch[-1] / REJECTS


def _finish_keyed(
    dataset: Any,
    report: BuildReport,
    key: _Key | None,
    out: OutputOptions,
    *,
    rejects: Path | None,
    media: Manifest | None,
) -> BuildResult:
    """The build's fingerprint into its report, and the build into the cache (when there is one)."""
    if key is None:
        return BuildResult(dataset, report)
    report.fingerprint = build_fingerprint(key.key, media)
    if out.cache_dir:
        dataset = cache.save_cached(dataset, report, Path(out.cache_dir), key.key, rejects=rejects, media=media)  # type: ignore[arg-type]  # the dataset is built by now (not None)
    return BuildResult(dataset, report, inputs=[*key.inputs, *([media.input()] if media else [])])


def declare(
    source: Any, tok: Any, opts: BuildOptions, *, declared: Sequence[Input], report: BuildReport
) -> list[Input]:
    """The inputs of a build that ran elsewhere (engine=ray shards: the workers read the records), its fingerprint
    into `report`. The media its records named are not known here: none is declared."""
    with cache.digests(opts.output.cache_dir) as files:
        key = _key([data_input(source, files), *Stage(tok, opts.data).inputs(files), *declared], opts)
    report.fingerprint = key.key
    return list(key.inputs)


def _build_in_memory(
    source: Any,
    tok: Any,
    opts: BuildOptions,
    progress: Callable[[int], None] | None,
    *,
    declared: Sequence[Input],
    keyed: bool,
    scratch: list[Path],
) -> BuildResult:
    """`in_memory` of a source (not a recipe); the scratch folders it makes are appended to `scratch`."""
    started, taken = time.perf_counter(), time.time_ns()
    data, out = opts.data, opts.output
    stage = Stage(tok, data)
    if out.rejects_path:
        safeio.check_rejects_path(Path(out.rejects_path), safeio.input_paths(source))
    with cache.digests(out.cache_dir) as files:
        key = _key([data_input(source, files), *stage.inputs(files), *declared], opts) if keyed else None
        if key is not None and (hit := _hit(key, out, files)) is not None:
            return hit
        report = _new_report(source, tok, stage)
        report.task_reason = opts.task_reason
        scratch.append(safeio.scratch_dir())
        rows = stage.task.open_rows(scratch[-1] / "rows.arrow", data)
        rejects_file = _rejects_file(out, scratch)
        media: dict[str, Stat | None] | None = {} if key is not None else None  # media, files records point to
        sink = RejectsWriter(report, rejects_file)
        write_rows(source, stage, opts.run, report=report, rows=rows, sink=sink, progress=progress, media=media)
        report.rejects_path = out.rejects_path
        check_built(report, rows.rows)
        dataset = stage.task.finish(rows.path, data, report, splits=None, pad_id=0)
        report.seconds = round(time.perf_counter() - started, 3)
        manifest = Manifest.of(media, files, taken_ns=taken) if media is not None else None
        return _finish_keyed(dataset, report, key, out, rejects=rejects_file, media=manifest)


def _recipe_in_memory(
    recipe: Any,
    tok: Any,
    opts: BuildOptions,
    progress: Callable[[int], None] | None,
    *,
    declared: Sequence[Input],
    keyed: bool,
    scratch: list[Path],
) -> BuildResult:
    """A recipe's mixture (`ftdata.mix.build`); its key covers the recipe, every source file, the evaluation
    sets and what each source's stage read."""
    from ftdata.mix.build import build_recipe, recipe_stages
    from ftdata.mix.recipe import recipe_inputs

    taken, out = time.time_ns(), opts.output
    if out.rejects_path:
        inputs = safeio.input_paths(
            recipe.origin, *(f for s in recipe.sources for f in s.files()), *recipe.eval_files()
        )
        safeio.check_rejects_path(Path(out.rejects_path), inputs)
    stages = recipe_stages(recipe, tok)
    with cache.digests(out.cache_dir) as files:
        key = (
            _key([*recipe_inputs(recipe, files), *(i for s in stages for i in s.inputs(files)), *declared], opts)
            if keyed
            else None
        )
        if key is not None and (hit := _hit(key, out, files)) is not None:
            return hit
        rejects_file = _rejects_file(out, scratch)
        media: dict[str, Stat | None] | None = {} if key is not None else None
        built = opts.updated(rejects_path=str(rejects_file)) if rejects_file is not None else opts
        dataset, report = build_recipe(
            recipe, tokenizer=tok, options=built, progress=progress, stages=stages, media=media
        )
        report.rejects_path = out.rejects_path
        manifest = Manifest.of(media, files, taken_ns=taken) if media is not None else None
        return _finish_keyed(dataset, report, key, out, rejects=rejects_file, media=manifest)


__all__ = ["BuildResult", "check_built", "declare", "in_memory", "rejects_place", "rough_need", "write_rows"]
