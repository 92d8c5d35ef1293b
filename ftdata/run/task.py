"""What a build makes when `task` is not given: the data's first record says.

    first record  chosen/rejected, UltraFeedback's rated completions   -> preference rows
                  TRL's prompt + completion + a JSON true/false label  -> kto rows
                  messages + a true/false label                        -> asked: --task kto or --task sft
                  anything else                                        -> sft rows (task stays None)

An SFT build (task None) refuses a later preference-shaped record, naming --task (`Stage.examples`),
so preference data is never built as SFT in silence. A source that can be read only once (a pipe, an
iterator) is not read ahead: its build is SFT until a preference-shaped record stops it the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError, RecordError
from ftdata.options import BuildOptions, DataOptions
from ftdata.records.preference import detect_task, preference_columns
from ftdata.run.loop import read_batches
from ftdata.types import Task

__all__ = ["data_task", "with_task"]


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
            return None if task is Task.SFT else task
    return None


def with_task(source: Any, options: BuildOptions) -> BuildOptions:
    """`options` with the task `source`'s data names when none is given (unchanged for SFT data).

    Raises:
        ConfigError: an option that does not apply to the detected task (packing for preference rows).
        RecordError: see `data_task`.
    """
    if options.data.task is not None:
        return options
    task = data_task(source, options.data)
    if task is None:
        return options
    try:
        return options.updated(task=task)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (task={task.value}: the data's first record is {task.value} data)") from None
