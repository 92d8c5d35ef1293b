"""A build written to OUT: a local folder, published whole (`safeio.OutputDir`), or a URI (engine=ray).

    build(source, out) ─▶ to_out ─┬─ a folder: _to_folder: the rows (local.in_memory) or Ray's shards, staged
                                  │  inside OUT with rejects.jsonl and build.json, published together
                                  └─ a URI:    _to_store: Ray's shards, build.json last (`store.StoreOut`)

A build that fails leaves OUT as it was; one that had read its records keeps their rejects
beside the earlier build and names them in the error (`_keep_rejects`). A full disk is a
`DiskFullError` naming the output folder, scratch or the rejects file's folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError, DiskFullError, FtdataError
from ftdata.run.stage import task_module
from ftdata.types import Task
from ftdata.build import cache, export
from ftdata.guard import safeio, space
from ftdata.guard.inputs import Input, InputKind, text_input
from ftdata.io import store
from ftdata.io.resources import cache_root
from ftdata.options import BuildOptions
from ftdata.build.local import BuildResult, declare, in_memory, rejects_place, rough_need
from ftdata.build.serving import serving_record
from ftdata.types import Engine

IMAGES = "images"  # OUT/images: the inline media items (sha256: refs) of a build with a processor

__all__ = ["to_out"]


def _output_format(output_format: str | None, *, sharded: bool) -> str:
    if sharded:
        return "parquet"
    return export.check_output_format(output_format or "arrow")


def to_out(
    source: Any,
    out: str | Path,
    tok: Any,
    opts: BuildOptions,
    *,
    output_format: str | None,
    tokenizer_name: str,
    protect: Sequence[Any],
    config: Path | Input | None,
    progress: Callable[[int], None] | None,
) -> BuildResult:
    """The build written into OUT (a folder, or with engine=ray a URI), build.json last."""
    from ftdata.mix import Recipe

    recipe = isinstance(source, Recipe)
    remote = store.is_uri(str(out))
    shards = opts.run.engine is Engine.RAY and output_format in (
        None,
        "parquet",
    )  # engine=ray to OUT: OUT/data/*.parquet
    sharded = shards and not recipe  # written by the workers; a recipe is mixed here, so the driver writes its shards
    if remote and not shards:
        raise ConfigError(
            f"-o {out}: only engine=ray writes to a URI (every node writes its shards there); "
            "add --engine ray, or give a local folder"
        )
    if shards and recipe and opts.data.test_size is not None:
        raise ConfigError(
            f"test_size={opts.data.test_size!r}: a recipe's Parquet shards (engine=ray) hold one split; "
            "use output_format='arrow' (--output-format arrow) for train and test, or drop test_size"
        )
    fmt = _output_format(output_format, sharded=shards)
    if sharded and opts.output.cache_dir:
        opts = opts.updated(cache_dir=None)  # workers write straight to OUT: there is nothing to cache
    elif opts.output.cache and not opts.output.cache_dir and opts.run.engine is not Engine.RAY:
        opts = opts.updated(cache_dir=str(cache_root() / "builds"))  # a build to a folder is cached unless cache=False
    if recipe:
        named = [source.origin, *(f for s in source.sources for f in s.files()), *source.eval_files()]
    else:
        named = [source, opts.data.template, opts.data.chat_template, opts.data.processor]
    inputs = safeio.input_paths(*named, getattr(tok, "name_or_path", None), *protect)  # the tokenizer's folder too
    if opts.output.rejects_path:
        safeio.check_rejects_path(Path(opts.output.rejects_path), inputs)
    facts = Facts(tokenizer_name, _config_input(config))
    if remote:
        return _to_store(source, str(out), tok, opts, fmt=fmt, sharded=sharded, facts=facts, progress=progress)
    return _to_folder(
        source,
        Path(out).expanduser(),
        tok,
        opts,
        fmt=fmt,
        inputs=inputs,
        sharded=sharded,
        shards=shards,
        facts=facts,
        progress=progress,
    )


@dataclass(frozen=True)
class Facts:
    """What build.json records besides the build's own result: how to name the tokenizer, the config file."""

    tokenizer_name: str
    config: Input | None

    @property
    def declared(self) -> tuple[Input, ...]:
        """The inputs read before the build (the config file): part of its key."""
        return (self.config,) if self.config is not None else ()


def _config_input(config: Path | Input | None) -> Input | None:
    """The config file the options came from, by its bytes: as the CLI read them (an `Input`), or read here from a
    path (the options it gave are in the key too).

    Raises:
        OSError: the file cannot be read.
    """
    if config is None or isinstance(config, Input):
        return config
    return text_input(InputKind.CONFIG, str(config), Path(config).read_bytes(), path=Path(config).absolute())


def _to_store(
    source: Any,
    out: str,
    tok: Any,
    opts: BuildOptions,
    *,
    fmt: str,
    sharded: bool,
    facts: Facts,
    progress: Callable[[int], None] | None,
) -> BuildResult:
    """engine=ray into a URI: the workers' shards, or a recipe's mixture written here as shards."""
    if not opts.output.rejects_path and not sharded:  # written here first, then copied into OUT
        opts = opts.updated(rejects_path=str(safeio.scratch_dir() / export.REJECTS))
    place = store.store_place(out, expected=lambda: rough_need(source))
    with (
        store.StoreOut(out) as target,
        space.disk_space(place, space.scratch_place()),
    ):  # inside: measured before it is deleted
        if sharded:
            from ftdata.build.shards import DATA, REJECTS_DIR, build_shards

            result = BuildResult(None, build_shards(source, tokenizer=tok, options=opts, target=target))
            result.inputs = declare(source, tok, opts, declared=facts.declared, report=result.report)
            files, rejects_name = [DATA], f"{REJECTS_DIR}/"
        else:
            result = in_memory(source, tok, opts, progress, declared=facts.declared, keyed=True)
            files, rejects_name = export.write_shards(result.dataset, target), export.REJECTS
            with target.write(export.REJECTS) as tmp:
                shutil.copyfile(str(opts.output.rejects_path), tmp)
        record = _manifest(result, opts, facts, fmt=fmt, files=files, rejects=rejects_name)
        record.update(serving_record(source, tok, opts, result.dataset))
        export.write_manifest(target, record)
    return _published(result, out=target.path, fmt=fmt, files=files, record=record, options=opts)


def _to_folder(
    source: Any,
    folder: Path,
    tok: Any,
    opts: BuildOptions,
    *,
    fmt: str,
    inputs: list[Path],
    sharded: bool,
    shards: bool,
    facts: Facts,
    progress: Callable[[int], None] | None,
) -> BuildResult:
    """The build into a local folder: every file staged inside OUT and published together by `OutputDir.finish`.

    The rejects go to OUT/rejects.jsonl with the rest; a `rejects_path` of the user's gets a
    copy once OUT is published. A build that fails after its records were read keeps its
    rejects beside the earlier build (OUT/.ftdata-failed-rejects.jsonl, or the user's `rejects_path`)
    and says where in the error; OUT's earlier build is not touched.
    """
    given = opts.output.rejects_path
    inside = given is not None and Path(given).expanduser().resolve().parent == folder.resolve()
    recorded = opts if sharded or given else opts.updated(rejects_path=str(folder / export.REJECTS))
    target = safeio.OutputDir(folder, inputs=inputs)
    expected: list[int] = []
    place = space.Place(
        folder,
        "the output folder",
        "free space there or give another output folder (this one is left as it was)",
        mine=lambda: target.staging.path if target.staging else None,
        expected=lambda: expected[0] if expected else rough_need(source),
    )
    with space.disk_space(place), target, space.disk_space(place):
        staging = target.staging
        assert staging is not None
        if sharded:
            from ftdata.build.shards import DATA, REJECTS_DIR, build_shards

            result = BuildResult(None, build_shards(source, tokenizer=tok, options=opts, target=staging))  # type: ignore[arg-type]  # a sharded build returns no in-memory dataset
            result.inputs = declare(source, tok, opts, declared=facts.declared, report=result.report)
            files, rejects_name = [DATA], f"{REJECTS_DIR}/"
        else:
            staged = target.staged(export.REJECTS)
            try:
                result = in_memory(
                    source,
                    tok,
                    opts.updated(rejects_path=str(staged)),
                    progress,
                    out=place,
                    declared=facts.declared,
                    keyed=True,
                )
            except FtdataError as exc:
                _keep_rejects(target, staged, given if given and not inside else None, exc)
                raise
            dataset = result.dataset
            expected.append(cache.dataset_bytes(dataset) + space.tree_bytes(staged))
            if shards:
                files = export.write_shards(dataset, target)
            else:
                files = [
                    str(p.relative_to(folder))
                    for p in export.write_dataset(
                        dataset, target, fmt=fmt, tokenizer=tok, task=task_module(Task(result.report.task))
                    )
                ]
            rejects_name = export.REJECTS
            files += _stage_media(dataset, staging, opts)
            if inside and Path(given).name != export.REJECTS:  # type: ignore[arg-type]  # given is set when inside is
                shutil.copyfile(staged, target.staged(Path(given).name))  # type: ignore[arg-type]  # as above
            result.report.rejects_path = given or str(folder / export.REJECTS)
        on_disk = export.disk_facts(staging.path, [*files, rejects_name])
        record = _manifest(result, recorded, facts, fmt=fmt, files=files, rejects=rejects_name, on_disk=on_disk)
        record.update(serving_record(source, tok, opts, result.dataset))
        export.write_manifest(target, record)
        target.finish()
    if given and not inside and not sharded:  # the user's copy (engine=ray wrote its own)
        source_rejects = folder / export.REJECTS
        try:
            place = rejects_place(Path(given), need=source_rejects.stat().st_size)
            with space.disk_space(place), safeio.atomic_path(Path(given)) as tmp:
                shutil.copyfile(source_rejects, tmp)
        except DiskFullError as exc:
            exc.add_note(f"{folder} holds the finished build, its rejects in {source_rejects}")
            raise
    return _published(result, out=folder, fmt=fmt, files=files, record=record, options=recorded)


def _published(
    result: BuildResult, *, out: Path | str, fmt: str, files: list[str], record: dict[str, Any], options: BuildOptions
) -> BuildResult:
    """`result` with what was written to OUT."""
    result.out, result.output_format, result.files, result.manifest, result.options = out, fmt, files, record, options
    return result


def _stage_media(dataset: Any, staging: safeio.Staging, opts: BuildOptions) -> list[str]:
    """Stage the inline media items (`sha256:` refs) the rows name
    as OUT/images, published with the build; [] or ["images"].

    Inline items are written once, content-addressed, to the store (`image_dir`, else
    ~/.cache/ftdata/images) while records are read; the build's own are linked (or copied) from
    there, so OUT holds exactly the items its rows name, and a cached build gets them too.

    Raises:
        FtdataError: an item the rows name is no longer in the store (it was removed since the build was cached).
    """
    from ftdata.media.column import MEDIA_FIELD
    from ftdata.media.images import DIGEST, default_store, stored

    refs: set[str] = set()
    for split in dataset.values() if hasattr(dataset, "values") else [dataset]:
        if MEDIA_FIELD in split.column_names:
            refs.update(i["ref"] for row in split[MEDIA_FIELD] for i in row or () if i["ref"].startswith(DIGEST))
    if not refs:
        return []
    store_dir = Path(opts.data.image_dir).expanduser() if opts.data.image_dir else default_store()
    folder = staging.path / IMAGES
    folder.mkdir(exist_ok=True)
    for ref in sorted(refs):
        path = stored(ref, store_dir)
        if path is None:
            raise FtdataError(f"inline item {ref} is not in the store {store_dir}; build again with --no-cache")
        try:
            os.link(path, folder / path.name)
        except OSError:  # another filesystem, or links not allowed
            shutil.copyfile(path, folder / path.name)
    staging.add(IMAGES)
    return [IMAGES]


def _keep_rejects(target: safeio.OutputDir, staged: Path, given: str | None, exc: FtdataError) -> None:
    """A failed build's rejects, kept where the user can read them (named in a note on `exc`); OUT's build untouched."""
    if isinstance(exc, DiskFullError) or not staged.is_file() or staged.stat().st_size == 0:
        return
    if given:
        with safeio.atomic_path(Path(given)) as tmp:
            shutil.copyfile(staged, tmp)
        where = Path(given)
    else:
        where = target.keep_failed(staged)
    state = "keeps its earlier build" if (target.path / export.MANIFEST).exists() else "holds no build"
    exc.add_note(f"the rejects of this build are in {where}; {target.path} {state}")


def _manifest(
    result: BuildResult,
    opts: BuildOptions,
    facts: Facts,
    *,
    fmt: str,
    files: list[str],
    rejects: str,
    on_disk: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return export.manifest(
        inputs=result.inputs,
        tokenizer_name=facts.tokenizer_name,
        options=opts,
        report=result.report,
        output_format=fmt,
        files=files,
        rejects=rejects,
        on_disk=on_disk,
    )
