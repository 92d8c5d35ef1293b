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
from ftdata.run.engine import TASKS, task_module
from ftdata.run.loop import read_batches
from ftdata.run.option_rules import check
from ftdata.types import Task

__all__ = ["check_options", "data_task", "first_record", "sources_task", "with_task"]


def _once(source: Any) -> bool:
    """Whether `source` can be read only once: an iterator, a pipe or FIFO."""
    if isinstance(source, Iterator):
        return True
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        return path.exists() and not (path.is_file() or path.is_dir())
    return False


def data_task(source: Any, options: DataOptions) -> Task | None:
    """The task `source`'s first readable record names (after the filter): PREFERENCE, KTO or PROMPTS, or
    None (SFT data, no record, or a source read only once).

    Raises:
        RecordError: a true/false label beside a conversation (the message asks for --task kto or --task sft).
        ReaderError: the source cannot be read.
    """
    first = None if _once(source) else first_record(source, options)
    return None if first is None else _named(*first, options)


def _named(location: Any, row: Any, options: DataOptions) -> Task | None:
    """The task one record's shape names, None for SFT data."""
    task = detect_task(row, location, columns=preference_columns(options.columns))
    if task is Task.SFT and looks_like_prompts(row):
        return Task.PROMPTS
    return None if task is Task.SFT else task


def first_record(source: Any, options: DataOptions) -> tuple[Any, Any] | None:
    """`(location, row)` of the first readable record of `source` (a row the reader could not read is the
    build's reject, not a shape), or None: none."""
    for batch in read_batches(source, options, batch_size=1):
        for location, row in batch.records:
            if not isinstance(row, RecordError):
                return location, row
    return None


def check_options(options: DataOptions) -> DataOptions:
    """`options`, checked against the rules of the task it gives (`TaskModule.rules`): what a build would refuse,
    refused as soon as the task is known (`ftdata.run.option_rules`). No task given: unchecked here, the data names
    the task (`with_task`), and `Stage` checks its task's rules.

    Raises:
        ConfigError: an option the task does not read (packing with task=preference; max_prompt_length with
            task=sft), naming it and the fix.
    """
    if options.task is not None:
        check(options, task=task_module(options.task), tasks=[task_module(task) for task in TASKS])
    return options


def with_task(source: Any, options: BuildOptions) -> BuildOptions:
    """`options` with the task `source`'s data names when none is given (unchanged for SFT data), checked against
    that task's rules (`check_options`): a given task before anything is read.

    Raises:
        ConfigError: an option that does not apply to the task, given or detected (packing for preference rows).
        RecordError: see `data_task`.
    """
    data = check_options(options.data)
    needed = data.task is None or (data.task is Task.PROMPTS and data.reward_columns is None)
    first = first_record(source, data) if needed and not _once(source) else None  # read once: the task and the columns
    if options.data.task is None:
        task = None if first is None else _named(*first, options.data)
        if task is None:
            return options
        try:
            options = options.updated(task=task)
            check_options(options.data)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (task={task.value}: the data's first record is {task.value} data)") from None
    if options.data.task is not Task.PROMPTS or options.data.reward_columns is not None:
        return options
    if _once(source):
        raise ConfigError("a prompt set read once (a pipe) cannot type its reward columns from its first record; name them: reward_columns={'answer': 'string'}")
    row = None if first is None else first[1]
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
        named = {name: RewardColumns.of_row((first_record(path, options.data) or (None, None))[1], prompt_columns(options.data.columns))
                 for name, (path, options) in sources.items()}  # fmt: skip
        out["reward_columns"] = RewardColumns.union(named).types
    return out
