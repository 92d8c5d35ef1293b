"""The build driver: `ftdata.build(source, out, ...)` is the one way a dataset is built.

    source ──run loop (loop.run, reducer stage.reduce)──▶ rows ──output──▶ in memory │ OUT folder │ OUT shards
                                                          └──────────────▶ report, rejects, build.json, cache

Output, by what is asked for:

    out=None                    a `datasets.Dataset` (or DatasetDict) in memory: `prepare`,
                                `build_sft_dataset`, `ftdata train`'s data step
    out=FOLDER                  the dataset (arrow, parquet or jsonl), rejects.jsonl and build.json
                                in FOLDER, published together when the build succeeds
                                (`ftdata.build.publish`): `ftdata build -o`
    out=FOLDER or URI, engine=ray
                                sharded Parquet written by the Ray workers (`ftdata.build.shards`),
                                unless output_format asks for arrow or jsonl

`engine` means the same thing on every path: where the per-record work runs. A build to a
folder with engine=ray writes shards from the workers (a corpus never passes through this
process); in memory, or with output_format arrow/jsonl, its sequences come back here.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ftdata.build.serving import check_in_memory
from ftdata.build.local import BuildResult, in_memory
from ftdata.build.publish import to_out
from ftdata.errors import ConfigError, ReaderError
from ftdata.guard.opened import opened_once
from ftdata.guard.inputs import Input
from ftdata.io.readers import data_files
from ftdata.io.resources import shared_tokenizer, tokenizer_label
from ftdata.options import DATA_FIELDS, BuildOptions
from ftdata.run.executors import not_a_spawned_start
from ftdata.run.stage import task_module
from ftdata.types import Task
from ftdata.run.report import BuildReport
from ftdata.run.task import with_task

__all__ = ["BuildResult", "build", "build_sft_dataset", "checked", "prepare", "tokenizer_spec"]


def _as_recipe(
    source: Any, options: BuildOptions | None, flat: dict[str, Any], *, allow_code: bool
) -> tuple[Any, BuildOptions | None, bool]:
    """(the recipe, its options with the given run and output options, True) when `source` is a recipe (or another
    tool's declaration of its datasets: `ftdata.mix.declared.recipe_of` decides), else (source, options, False).

    Raises:
        ConfigError: a data option given beside a recipe (it belongs in the recipe), or a recipe
            source with a code reader without `allow_code`.
    """
    from ftdata.mix.declared import recipe_of

    given = options.to_mapping() if options is not None else flat
    recipe = recipe_of(source, given, allow_code=allow_code)
    if recipe is None:
        return source, options, False
    from ftdata.mix.recipe import check_nothing_beside

    check_nothing_beside(recipe, given)
    run_output = {k: v for k, v in given.items() if k not in DATA_FIELDS}
    return recipe, recipe.build_options().updated(**run_output), True


def source_files(source: Any, *, recipe: bool) -> list[Any]:
    """The files a build reads its records from: a recipe's sources' (and its evaluation files), else `source`
    itself, a folder among them as the data files its reader reads (`ftdata.io.readers.data_files`). The build
    holds each open once (`ftdata.guard.opened`), which passes over what is no file (a hub id, a `save_to_disk`
    folder, a `Dataset`)."""
    try:
        named = [path for spec in source.sources for path in spec.files()] + source.eval_files() if recipe else [source]
    except ConfigError:  # a glob that matches nothing: the build says so, where it reads the source
        return []
    return [file for path in named for file in _data_files(path)]


def _data_files(path: Any) -> list[Any]:
    """A folder's data files (none for a `save_to_disk` folder, read by `datasets`), else [path]."""
    if not isinstance(path, (str, os.PathLike)) or not (folder := Path(path).expanduser()).is_dir():
        return [path]
    try:
        return list(data_files(folder) or [])
    except ReaderError:  # no data files, files it cannot read: the reader says so, where it reads the folder
        return []


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
    config: Path | Input | None = None,
    allow_code: bool = False,
    **flat: Any,
) -> BuildResult:
    """Build `source` into a dataset in memory (`out=None`) or into `out`; see the module docstring.

    Options come as flat keywords (`max_length=512`, `engine="processes"`) or, already
    validated, as `options` (not both). `source` may be a recipe (a `Recipe` or its YAML
    file; `allow_code` lets its sources name a `module:function` reader). `tokenizer`: a
    loaded fast tokenizer or a local folder; None takes `tokenizer_spec`'s choice. A build to
    a folder is cached by default (`cache=False` builds from scratch; see `OutputOptions`).
    `output_format`: arrow (default), parquet or jsonl for a folder. `progress`: called after
    each batch with the records read for it. `protect`: further paths OUT must not overwrite
    (a config file); `tokenizer_name` is recorded in build.json (default: `tokenizer_label`),
    and `config` (the file the options came from) too, by its bytes, which are part of the
    build's key (a path is read for them; the CLI passes the `Input` of the bytes it parsed).

    Raises:
        ConfigError: a bad option or output; ReaderError, RecordError, TemplateError: see docs;
        FtdataError: no records, or every record rejected.
    """
    not_a_spawned_start()
    if options is not None and flat:
        raise ConfigError(f"pass options as keywords or as options=, not both (got {', '.join(flat)})")
    source, options, recipe = _as_recipe(source, options, flat, allow_code=allow_code)
    with opened_once(source_files(source, recipe=recipe)):  # count, task, digest and rows read one descriptor
        return _build(
            source,
            out,
            recipe=recipe,
            options=options or BuildOptions.from_mapping(flat),
            tokenizer=tokenizer,
            output_format=output_format,
            progress=progress,
            tokenizer_name=tokenizer_name,
            protect=protect,
            config=config,
        )


def _build(
    source: Any,
    out: str | Path | None,
    *,
    recipe: bool,
    options: BuildOptions,
    tokenizer: Any,
    output_format: str | None,
    progress: Callable[[int], None] | None,
    tokenizer_name: str | None,
    protect: Sequence[Any],
    config: Path | Input | None,
) -> BuildResult:
    opts = options
    if recipe:
        from ftdata.mix.build import check_shares

        check_shares(source)  # a share that cannot be met fails before any tokenizing
    else:
        opts = with_task(source, opts)  # preference-shaped data builds preference rows (ftdata.run.task)
    spec = tokenizer if tokenizer is not None else tokenizer_spec(None, opts, recipe=source if recipe else None)
    if out is None and output_format is not None:
        raise ConfigError(f"output_format={output_format!r} needs an output: give out=FOLDER")
    with shared_tokenizer(spec) as tok:  # the build only reads it: a second build of this process skips the parse
        if out is None:
            result = in_memory(source, tok, opts, progress)
            result.options = opts
            check_in_memory(tok, opts, result.dataset)
            return result
        return to_out(
            source,
            out,
            tok,
            opts,
            output_format=output_format,
            tokenizer_name=tokenizer_name or tokenizer_label(spec, tok),
            protect=protect,
            config=config,
            progress=progress,
        )


def tokenizer_spec(given: Any, options: BuildOptions, *, recipe: Any = None) -> Any:
    """What a build tokenizes with: the tokenizer given, else the recipe's, else the processor
    folder's own (a build with media), else None (the bundled SmolLM2)."""
    if given is not None:
        return given
    if recipe is not None and recipe.tokenizer:
        return recipe.tokenizer
    if options.data.processor is not None:
        from ftdata.media.processors import processor_tokenizer

        return processor_tokenizer(options.data.processor)
    return None


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
    is called after each batch with the number of records read for it (filtered ones
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
        source,
        tokenizer=tokenizer,
        template=template,
        max_length=max_length,
        packing=packing,
        test_size=test_size,
        seed=seed,
        **options,
    )
    checked(result.report, max_reject_ratio=options.get("max_reject_ratio"), stacklevel=3)
    return result.dataset


def checked(report: BuildReport, *, max_reject_ratio: float | None, stacklevel: int = 2) -> BuildReport:
    """Warn (one line) when records were rejected or cut; raise past `max_reject_ratio`.

    Raises:
        FtdataError: more than `max_reject_ratio` of the records read were rejected.
    """
    if report.rejected or report.cut:
        where = f"; see {report.rejects_path}" if report.rejects_path else "; pass rejects_path=... to list them"
        unit = task_module(Task(report.task)).unit
        warnings.warn(f"ftdata: {report.summary(unit=unit)}{where}", stacklevel=stacklevel)
    report.check_reject_ratio(max_reject_ratio)
    return report
