"""The options a task refuses, never ignores: declared by each task, applied where the task is first known.

A task's rules (`TaskModule.rules`, a `TaskRules`) name the options only it reads (`own`: a prompt set's
`max_prompt_length`) and the options, or values of them, that mean nothing for its rows (`refuses`: packing for
pairs, with why). `check` applies them to options whose task is known:

    BuildOptions(task="preference", packing=True)   its values checked (options.py): no task's rule there
    run.task.with_task, run.task.check_options      the given task's rules, or those of the task the data names
    Stage(tokenizer, options)                       again, for every path that compiles one (a recipe's sources)

    ftdata.build(data, task="prompts", packing=True)
    ConfigError: packing=True does not apply to task=prompts: the trainer generates from each prompt alone; drop packing
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ftdata.errors import ConfigError
from ftdata.options import DATA_FIELDS, DataOptions
from ftdata.types import Task

__all__ = ["Refused", "Ruled", "TaskRules", "check"]


@dataclass(frozen=True, slots=True)
class Refused:
    """An option a task refuses when it is set (`values`: () = to anything but its default; else to one of
    these), and why it means nothing for the task's rows."""

    option: str
    why: str
    values: tuple[object, ...] = ()

    def given(self, options: DataOptions) -> bool:
        value = getattr(options, self.option)
        if self.values:
            return value in self.values
        return value is not DATA_FIELDS[self.option].default and value != DATA_FIELDS[self.option].default


@dataclass(frozen=True, slots=True)
class TaskRules:
    """What a task says of the options: the ones only it reads (`own`, refused for every other task, naming it as
    `noun`: "prompt sets"), and the ones it refuses (`refuses`)."""

    own: tuple[str, ...] = ()
    noun: str = ""
    refuses: tuple[Refused, ...] = ()


class Ruled(Protocol):
    """A task as `check` reads it (a `TaskModule`)."""

    @property
    def task(self) -> Task: ...

    @property
    def rules(self) -> TaskRules: ...


def check(options: DataOptions, *, task: Ruled, tasks: Iterable[Ruled]) -> None:
    """Refuse what `options` set that `task` does not read: another task's own options, then its refusals.

    Raises:
        ConfigError: one line naming the option, its value, the task and the fix (drop it).
    """
    for other in tasks:
        if other.task is task.task:
            continue
        for name in other.rules.own:
            if name not in task.rules.own and Refused(name, "").given(options):
                raise ConfigError(
                    f"{name} applies to {other.rules.noun} (task={other.task.value}), got task={task.task.value}; "
                    f"drop {name}"
                )
    for rule in task.rules.refuses:
        if rule.given(options):
            value = getattr(options, rule.option)
            raise ConfigError(
                f"{rule.option}={getattr(value, 'value', value)!r} does not apply to task={task.task.value}: "
                f"{rule.why}; "
                f"drop {rule.option}"
            )
