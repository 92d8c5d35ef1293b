"""A setting of the whole process, changed while any of several callers is inside and put back by the last to leave.

Builds and trainings may run at once in one process, each in a thread of the caller's, and some of what they change
belongs to the process: the interpreter's switch interval, the collector's thresholds and freeze, a library's
function. The first to enter saves the caller's setting and sets ftdata's; the last to leave puts the saved one
back. Two callers at once never restore each other's (the second saving what the first set).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

__all__ = ["Held"]

S = TypeVar("S")


class Held(Generic[S]):
    """`with held():` runs `take` (which sets ftdata's setting and returns the caller's, saved) when no one else is
    inside, and `restore(saved)` when the last one inside leaves; both under one lock."""

    def __init__(self, take: Callable[[], S], restore: Callable[[S], None]) -> None:
        self._take, self._restore = take, restore
        self._lock = threading.Lock()
        self._inside = 0
        self._saved: list[S] = []  # the caller's setting while anyone is inside

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._inside == 0:
                self._saved.append(self._take())
            self._inside += 1
        try:
            yield
        finally:
            with self._lock:
                self._inside -= 1
                if self._inside == 0:
                    self._restore(self._saved.pop())
