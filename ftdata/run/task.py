"""What a build makes when `task` is not given: the data's first record says.

    first record  chosen/rejected, UltraFeedback's rated completions   -> preference rows
                  a completion or messages + a JSON true/false label   -> kto rows (TRL, LLaMA-Factory)
                    (`label`, `kto_tag`, `tag`); the label as text     -> asked: --task kto or --task sft
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
from ftdata.options import BuildOptions, DataOptions
from ftdata.records.preference import PREFERENCE_FIELDS, detect_task, preference_columns
from ftdata.records.prompts import PROMPT_FIELDS, RewardColumns, looks_like_prompts, nested_paths, prompt_columns
from ftdata.records.reward_types import SKIP
from ftdata.run.stage import task_module
from ftdata.run.loop import read_batches
from ftdata.run.option_rules import check
from ftdata.types import Task

__all__ = ["check_options", "data_task", "first_record", "sources_task", "task_reason", "with_task"]


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
        RecordError: a label written as text beside SFT data (the message asks for --task kto or --task sft).
        ReaderError: the source cannot be read.
    """
    first = None if _once(source) else first_record(source, options)
    return None if first is None else _named(*first, options)


def _named(location: Any, row: Any, options: DataOptions) -> Task | None:
    """The task one record's shape names, None for SFT data."""
    # a key only a prompt set's map takes (`ground_truth=reward_model.ground_truth`) says nothing of pairs
    known = {key: column for key, column in (options.columns or {}).items() if key in _PAIR_KEYS}
    task = detect_task(row, location, columns=preference_columns(known))
    if task is Task.SFT and looks_like_prompts(row, prompt_columns(options.columns)):
        return Task.PROMPTS
    return None if task is Task.SFT else task


_PAIR_KEYS = frozenset(alias for aliases in PREFERENCE_FIELDS.values() for alias in aliases)


def task_reason(row: Any, task: Task | None, options: DataOptions, *, given: bool) -> str:
    """Why a build makes `task`'s rows, for its summary: given, or what its first record (`row`) is."""
    name = (task or Task.SFT).value
    if given:
        return f"given (task={name})"
    if row is None:
        return "no record to read ahead (a source read once, or none): SFT unless a record says otherwise"
    columns = prompt_columns(options.columns)
    if task is Task.PROMPTS:
        prompt = columns.column(row, "messages") or columns.column(row, "instruction") or "the prompt"
        return f"the first record is a prompt with no completion ({prompt})"
    if task is Task.PREFERENCE:
        return "the first record is a preference pair (chosen/rejected)"
    if task is Task.KTO:
        label = preference_columns(options.columns).column(row, "label") if isinstance(row, Mapping) else None
        return (
            f"the first record is a completion with a true/false {label or 'label'!r} (unpaired preference rows); "
            "--task sft ignores the label"
        )
    if isinstance(row, Mapping) and columns.column(row, "messages") is None:
        question = columns.column(row, "instruction")
        answer = next(
            (c for c in ("answer", "solution", "ground_truth") if c in row and c not in columns.claimed), None
        )
        if question in ("question", "problem", "query", "prompt") and answer is not None:
            return (
                f"the first record is question/answer data ({question}, {answer}), built as SFT (train on the "
                "answers); for a GRPO/RLOO prompt set (the answer as a reward column) pass --task prompts"
            )
    return "the first record is SFT data (a conversation, or an instruction and its response)"


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
        check(options, task=task_module(options.task), tasks=[task_module(task) for task in Task])
    return options


def with_task(source: Any, options: BuildOptions) -> BuildOptions:
    """`options` with the task `source`'s data names when none is given (unchanged for SFT data), checked against
    that task's rules (`check_options`): a given task before anything is read.

    Raises:
        ConfigError: an option that does not apply to the task, given or detected (packing for preference rows).
        RecordError: see `data_task`.
    """
    data = check_options(options.data)
    needed = data.task is None or data.task is Task.PROMPTS
    first = (
        first_record(source, data) if needed and not _once(source) else None
    )  # read once: the task, its reason and the columns
    row = None if first is None else first[1]
    if options.data.task is None:
        task = None if first is None else _named(*first, options.data)
        if task is None:
            return options.with_task_reason(task_reason(row, None, data, given=False))
        if task is Task.PROMPTS:
            _renames_told(options.data)
        try:
            options = options.updated(task=task)
            check_options(options.data)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (task={task.value}: the data's first record is {task.value} data)") from None
    reason = task_reason(row, options.data.task, options.data, given=data.task is not None)
    if options.data.task is not Task.PROMPTS:
        return options.with_task_reason(reason)
    if options.data.reward_columns is not None:
        return options.updated(reward_columns=_named_columns(row, options)).with_task_reason(reason)
    if _once(source):
        raise ConfigError(
            "a prompt set read once (a pipe) cannot type its reward columns from its first record; name them: "
            "reward_columns={'answer': 'string'}"
        )
    return options.updated(
        reward_columns=RewardColumns.of_row(row, prompt_columns(options.data.columns)).types or {}
    ).with_task_reason(reason)


def _renames_told(data: DataOptions) -> None:
    """A prompt set found in the data takes a map key that is no field only for a nested field
    (`ground_truth=reward_model.ground_truth`); a plain rename to a new name (`better=good`, a typo of `chosen`?)
    needs the task told.

    Raises:
        ConfigError: such a key, naming the fields and --task prompts.
    """
    named = prompt_columns(data.columns).named
    for key, source in named.items():
        if "." not in source and key not in _PAIR_KEYS:
            fields = ", ".join(sorted({*PREFERENCE_FIELDS, *PROMPT_FIELDS}))
            raise ConfigError(
                f"column map key must be one of {fields}; got {key!r}={source!r} (a prompt set's map may name its own "
                "columns: pass --task prompts to make it a column of the rows)"
            )


def _named_columns(row: Any, options: BuildOptions) -> dict[str, str]:
    """`reward_columns` as given (a subset of the columns), checked against the first record `row` (None: read
    once, taken as given); the first record's other columns are left out of the rows (`skip`).

    Raises:
        ConfigError: a column given that the first record does not have (naming a nested field of that name).
    """
    given = dict(options.data.reward_columns or {})
    if not isinstance(row, Mapping):
        return given
    columns = prompt_columns(options.data.columns)
    has = RewardColumns.of_row(row, columns).types or {}
    for name, kind in given.items():
        if name in has or kind == SKIP or kind.endswith("?") or name in row:
            continue
        nested = nested_paths(row, name)
        fix = (
            f"it has {nested[0]}: map it with --columns {name}={nested[0]}"
            if nested
            else f"its columns are {', '.join(has) or 'none'}"
        )
        raise ConfigError(f"reward_columns names {name} and the prompt set's first record has no column {name}; {fix}")
    return {**given, **{name: SKIP for name in has if name not in given}}


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
            raise ConfigError(
                f"the sources hold different kinds of data ({kinds}); a build makes one kind of rows: "
                "split the recipe, or set task: at its top"
            )
        task = next(iter(found.values()), Task.SFT)
        if task is not Task.SFT:
            out["task"] = task
    if task is Task.PROMPTS and common.data.reward_columns is None:
        named = {
            name: RewardColumns.of_row(
                (first_record(path, options.data) or (None, None))[1], prompt_columns(options.data.columns)
            )
            for name, (path, options) in sources.items()
        }
        out["reward_columns"] = RewardColumns.union(named).types
    return out
