"""A build in this process: its rows written to scratch, its rejects to their file, its dataset memory-mapped.

    source ──run loop (loop.run, reducer engine.chunk)──▶ rows file ──rows.finish──▶ Dataset (+ cache entry)

`in_memory` is the dataset a build returns without OUT (`prepare`, `build_sft_dataset`, training's
data step) and what `publish` writes into OUT; `write_rows` is the loop every build of rows shares
(the Ray shards' too).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftdata.build import cache
from ftdata.build.export import REJECTS
from ftdata.build.fingerprint import build_fingerprint, recipe_fingerprint
from ftdata.errors import FtdataError
from ftdata.guard import safeio, space
from ftdata.options import BuildOptions, RunOptions
from ftdata.run import loop
from ftdata.run.rows import ArrowRows, finish
from ftdata.run.engine import Ran, Stage, chunk
from ftdata.run.executors import Executor
from ftdata.run.report import BuildReport, RejectsWriter


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
    source: Any, stage: Stage, options: RunOptions, *, report: BuildReport, rows: ArrowRows, sink: RejectsWriter,
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


def in_memory(
    source: Any, tok: Any, opts: BuildOptions, progress: Callable[[int], None] | None, *, out: space.Place | None = None
) -> BuildResult:
    """The dataset in memory (memory-mapped Arrow), from the cache when `cache_dir` holds this build.

    A failed build removes its scratch now; a full disk is a `DiskFullError` naming scratch
    space, the rejects file's folder or `out` (the output folder, when the rejects go there).
    """
    from ftdata.mix import Recipe

    rejects = opts.output.rejects_path
    places = (out,) if out is not None else (rejects_place(Path(rejects)),) if rejects else ()
    if isinstance(source, Recipe):
        with space.disk_space(_scratch_place(None, rough=None), *places):
            return _recipein_memory(source, tok, opts, progress)
    scratch: list[Path] = []
    try:
        with space.disk_space(_scratch_place(lambda: scratch[0] if scratch else None, rough=rough_need(source)), *places):
            return _buildin_memory(source, tok, opts, progress, scratch=scratch)
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


def rejects_place(path: Path, *, need: int | None = None) -> space.Place:
    return space.Place(
        path.parent, "the rejects file's folder", "free space there or give another rejects file", expected=lambda: need
    )


def _buildin_memory(
    source: Any, tok: Any, opts: BuildOptions, progress: Callable[[int], None] | None, *, scratch: list[Path]
) -> BuildResult:
    """`_in_memory` of a source (not a recipe); the scratch folder it makes is appended to `scratch`."""
    started = time.perf_counter()
    data, out = opts.data, opts.output
    stage = Stage(tok, data)
    if out.rejects_path:
        safeio.check_rejects_path(Path(out.rejects_path), safeio.input_paths(source))
    fingerprint = build_fingerprint(source, tok, data) if out.cache_dir else ""
    if fingerprint and (cached := cache.load_cached(Path(out.cache_dir), fingerprint, rejects_path=out.rejects_path)) is not None:  # type: ignore[arg-type]
        dataset, report = cached
        report.cached = True
        return BuildResult(dataset, report)
    report = _new_report(source, tok, stage, fingerprint)
    scratch.append(safeio.scratch_dir())
    # A cache entry keeps the full rejects file, so a cached build writes one even without rejects_path.
    rejects_file = out.rejects_path or (scratch[0] / REJECTS if fingerprint else None)
    rows = ArrowRows(scratch[0] / "rows.arrow", images=stage.vision is not None)
    write_rows(source, stage, opts.run, report=report, rows=rows, sink=RejectsWriter(report, rejects_file), progress=progress)
    report.rejects_path = out.rejects_path
    check_built(report, rows.rows)
    dataset = finish(rows.path, data, report)
    report.seconds = round(time.perf_counter() - started, 3)
    if fingerprint:
        dataset = cache.save_cached(dataset, report, Path(out.cache_dir), fingerprint, rejects=Path(rejects_file))  # type: ignore[arg-type]
    return BuildResult(dataset, report)


def _recipein_memory(recipe: Any, tok: Any, opts: BuildOptions, progress: Callable[[int], None] | None) -> BuildResult:
    """A recipe's mixture (`ftdata.mix.build`); its fingerprint covers the recipe and every source file."""
    from ftdata.mix.build import build_recipe

    if opts.output.rejects_path:
        inputs = safeio.input_paths(recipe.origin, *(f for s in recipe.sources for f in s.files()))
        safeio.check_rejects_path(Path(opts.output.rejects_path), inputs)
    dataset, report = build_recipe(recipe, tokenizer=tok, options=opts, progress=progress)
    report.fingerprint = recipe_fingerprint(recipe, tok, opts.data)
    return BuildResult(dataset, report)


__all__ = ["BuildResult", "check_built", "in_memory", "rejects_place", "rough_need", "write_rows"]
