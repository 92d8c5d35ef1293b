"""What a build makes when `task` is not given: the data's first record says.

    first record  chosen/rejected, UltraFeedback's rated completions   -> preference rows
                  TRL's prompt + completion + a JSON true/false label  -> kto rows
                  messages + a true/false label                        -> asked: --task kto or --task sft
                  a prompt with no completion (TRL's prompt alone,     -> a prompt set (task prompts)
                  MATH's problem, messages ending on a user turn)
                  anything else                                        -> sft rows (task stays None)

A prompt set's reward columns are typed from the same first record (`RewardColumns.of_row`) unless
`reward_columns` names them; a source read only once must name them.

An SFT build (task None) refuses a later preference-shaped record, naming --task (`Stage.examples`),
so preference data is never built as SFT in silence. A source that can be read only once (a pipe, an
iterator) is not read ahead: its build is SFT until a preference-shaped record stops it the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError, RecordError
from ftdata.records.prompts import RewardColumns, looks_like_prompts, prompt_columns
from ftdata.options import BuildOptions, DataOptions
from ftdata.records.preference import detect_task, preference_columns
from ftdata.run.loop import read_batches
from ftdata.types import Task

__all__ = ["data_task", "first_row", "sources_task", "with_task"]


def _once(source: Any) -> bool:
    """Whether `source` can be read only once: an iterator, a pipe or FIFO."""
    if isinstance(source, Iterator):
        return True
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        return path.exists() and not (path.is_file() or path.is_dir())
    return False


def data_task(source: Any, options: DataOptions) -> Task | None:
    """The task `source`'s first readable record names (after the filter): PREFERENCE or KTO, or None
    (SFT data, no record, or a source read only once).

    Raises:
        RecordError: a true/false label beside a conversation (the message asks for --task kto or --task sft).
        ReaderError: the source cannot be read.
    """
    if _once(source):
        return None
    columns = preference_columns(options.columns)
    for batch in read_batches(source, options, batch_size=1):
        for location, row in batch.records:
            if isinstance(row, RecordError):  # a row the reader could not read: the build rejects it
                continue
            task = detect_task(row, location, columns=columns)
            if task is Task.SFT and looks_like_prompts(row):
                return Task.PROMPTS
            return None if task is Task.SFT else task
    return None


def first_row(source: Any, options: DataOptions) -> Any:
    """The first readable record of `source` (None: none)."""
    for batch in read_batches(source, options, batch_size=1):
        for _, row in batch.records:
            if not isinstance(row, RecordError):
                return row
    return None


def with_task(source: Any, options: BuildOptions) -> BuildOptions:
    """`options` with the task `source`'s data names when none is given (unchanged for SFT data).

    Raises:
        ConfigError: an option that does not apply to the detected task (packing for preference rows).
        RecordError: see `data_task`.
    """
    if options.data.task is None:
        task = data_task(source, options.data)
        if task is None:
            return options
        try:
            options = options.updated(task=task)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (task={task.value}: the data's first record is {task.value} data)") from None
    if options.data.task is not Task.PROMPTS or options.data.reward_columns is not None:
        return options
    if _once(source):
        raise ConfigError("a prompt set read once (a pipe) cannot type its reward columns from its first record; name them: reward_columns={'answer': 'string'}")
    row = first_row(source, options.data)
    return options.updated(reward_columns=RewardColumns.of_row(row, prompt_columns(options.data.columns)).types or {})


def sources_task(sources: Mapping[str, tuple[Any, BuildOptions]], common: BuildOptions) -> dict[str, Any]:
    """The options a recipe's sources (`name -> (first file, its options)`) take from their data when `common`
    (the recipe's) sets none: `task` when their first records name one, `reward_columns` for a prompt set (each
    source's first record's columns; one some source lacks may be missing, `type?`).

    Raises:
        ConfigError: sources of different tasks (a build makes one kind of rows); a reward column two sources
            type differently.
    """
    out: dict[str, Any] = {}
    task = common.data.task
    if task is None:
        found = {name: data_task(first, options.data) or Task.SFT for name, (first, options) in sources.items()}
        if len(set(found.values())) > 1:
            kinds = ", ".join(f"{name} is {kind.value}" for name, kind in found.items())
            raise ConfigError(f"the sources hold different kinds of data ({kinds}); a build makes one kind of rows: "
                              "split the recipe, or set task: at its top")  # fmt: skip
        task = next(iter(found.values()), Task.SFT)
        if task is not Task.SFT:
            out["task"] = task
    if task is Task.PROMPTS and common.data.reward_columns is None:
        named = {name: RewardColumns.of_row(first_row(first, options.data), prompt_columns(options.data.columns)) for name, (first, options) in sources.items()}
        out["reward_columns"] = RewardColumns.union(named).types
    return out
