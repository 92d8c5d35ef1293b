"""KTO rows (`task=kto`): the preference task's engine on unpaired records, one completion and its true/false label
each (`ftdata.run.preference`: the same rendering, verification and fit)."""

from __future__ import annotations

from ftdata.run.preference import PairModule, PairTask
from ftdata.types import Task

__all__ = ["TASK"]

TASK: PairModule = PairTask(Task.KTO)
