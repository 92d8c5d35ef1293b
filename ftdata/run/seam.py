"""What a task hands the record engine, typed: its measured item, its fit, its part of a batch.

    task.measure ──▶ Item (or a Reject) ──task.fit──▶ Fit (rows, why cut) ──task.reduce──▶ Part (arrays, counts)

`Stage.run` reads an item's and a fit's attributes through these protocols, whatever the task: the engine never
asks which task made them. Every task's part of a batch is a `Part`: the rejects, the counts, the media files
read, each row's record and its units (tokens and trained tokens), which the build paths and a recipe's planner
read alike. A task compiles what it reads records with once per stage (`TaskState`).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import Field, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np

from ftdata.chat.trajectory import SplitRow
from ftdata.guard.inputs import Stat
from ftdata.outcomes import Note, RejectCode
from ftdata.run.drift import Drift
from ftdata.run.report import BuildReport, Reject
from ftdata.types import Example, Rendered

__all__ = ["Fit", "Item", "Memo", "Noted", "Once", "Part", "Rows", "SourceStats", "TaskState"]

T = TypeVar("T")
PartT_contra = TypeVar("PartT_contra", bound="Part", contravariant=True)


class Noted(Protocol):
    """An item's tokens as the engine reads them: the notes its render and check left."""

    @property
    def notes(self) -> tuple[Note, ...]: ...


class SourceStats(Protocol):
    """What a task's `stats` measured of a source, as `ftdata stats` and a recipe's plan read it."""

    tokenizer: str  # the label the CLI sets: what measured it
    counts: BuildReport  # records read, filtered, rejected (by code)

    def to_dict(self) -> dict[str, Any]:
        """Everything measured, as `ftdata stats --json` writes it."""
        ...

    def planned(self) -> tuple[int, int, np.ndarray, np.ndarray]:
        """(records, rows, each row's tokens, each row's trained tokens): what a recipe's planner draws from."""
        ...


class Item(Protocol):
    """A measured item (rendered, tokenized, verified; not fitted) as `Stage.run` reads it."""

    @property
    def example(self) -> Example: ...

    @property
    def location(self) -> str: ...

    @property
    def total(self) -> int:
        """Its tokens: what the report's truncate rejects name."""
        ...

    @property
    def rendered(self) -> Rendered: ...

    @property
    def tokenized(self) -> Noted: ...

    @property
    def split_row(self) -> SplitRow | None:
        """The row of a record split by history=inference it is (SFT), None for a record's only row."""
        ...

    @property
    def drift(self) -> tuple[Drift, ...]:
        """Its trained turns' recorded token ids against its tokens (SFT), () where it has none."""
        ...


class OneRow:
    """An item that is its record's only row, with no recorded token ids to check: a pair, a prompt."""

    __slots__ = ()

    @property
    def split_row(self) -> SplitRow | None:
        return None

    @property
    def drift(self) -> tuple[Drift, ...]:
        return ()


class Fit(Protocol):
    """An item fitted to the task's length limits: its rows (none: dropped) and, when anything was cut, why. A
    dataclass: the engine empties the rows of a record it does not keep whole with `dataclasses.replace`."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    @property
    def rows(self) -> Sequence[object]: ...

    @property
    def reason(self) -> str: ...

    @property
    def code(self) -> RejectCode | None: ...


class TaskState(Protocol):
    """What a task compiles once per stage from its options (`TaskModule.compiled`): a frozen object whose fields
    are the task's column maps and readers; what it makes on first use sits in a `Once` or a `Memo` field."""


class Once(Generic[T]):
    """A value made on first use, once per stage (under a lock: engine=local measures batches on several threads)."""

    __slots__ = ("_lock", "_make", "_value")

    def __init__(self, make: Callable[[], T]):
        self._make = make
        self._lock = threading.Lock()
        self._value: T | None = None

    def get(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._make()
            return self._value


class Memo(Generic[T]):
    """Values made on first use per key, once per stage; made outside the lock (a make may render templates),
    so two threads may both make one: both get the first stored."""

    __slots__ = ("_lock", "_values")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, T] = {}

    def get(self, key: str, make: Callable[[], T]) -> T:
        with self._lock:
            if key in self._values:
                return self._values[key]
        value = make()
        with self._lock:
            return self._values.setdefault(key, value)


class Rows(Protocol[PartT_contra]):
    """The writer of a build's rows file (`TaskModule.open_rows`): parts in, whole rows out."""

    @property
    def path(self) -> Path: ...

    @property
    def rows(self) -> int:
        """Rows written so far."""
        ...

    @property
    def records(self) -> int:
        """Records written so far (a record's rows count once)."""
        ...

    @property
    def weighted(self) -> bool:
        """Whether a row with loss weights was written (SFT's rows only may carry them)."""
        ...

    def add(self, part: PartT_contra) -> None: ...

    def close(self) -> None: ...


@dataclass(kw_only=True)
class Part(ABC):
    """A build's part of one batch, whatever the task (made in the worker): each row's record in the batch
    (`groups`; the held-out split keeps records whole), every reject (for the file), the counts, the media
    files the batch read (`Ran.read`), and each row's units."""

    groups: np.ndarray
    rejects: list[Reject] = field(default_factory=list)
    report: BuildReport = field(default_factory=BuildReport)
    read: dict[str, Stat | None] = field(default_factory=dict)

    @property
    def records(self) -> int:
        """The records the batch held (kept or not)."""
        return self.report.records

    @abstractmethod
    def units(self) -> tuple[np.ndarray, np.ndarray]:
        """Each row's tokens and trained tokens, as a recipe counts them."""
