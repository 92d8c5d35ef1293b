"""Executors: where the per-record work runs. One interface, two places.

    local      in this process, batch after batch
    processes  N worker processes on this machine, started with `spawn` (safe with threads,
               the same on Linux, macOS and Windows)

`Executor.map(fn, spec, batches)` applies a module-level `fn(spec, batch)` to every batch
and yields the results in batch order, so whatever the caller writes from them is the same
under every executor. `spec` is small and picklable; it crosses to each worker once, then
only batches travel. A `FtdataError` raised in a worker reaches the caller as the same
error (type, message, location), never as a pool traceback.

A pool costs seconds to start (each worker imports ftdata and unpickles the tokenizer), so
`processes` keeps an input of fewer than `IN_PROCESS_BELOW` records in this process.
"""

from __future__ import annotations

import os
import pickle
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from enum import Enum
from itertools import chain
from typing import Any, Protocol, TypeVar

from ftdata.errors import ConfigError, FtdataError

__all__ = ["IN_PROCESS_BELOW", "Engine", "Executor", "LocalExecutor", "ProcessExecutor", "default_workers", "executor"]

B = TypeVar("B", bound=Sized)
T = TypeVar("T")

# Records below which engine=processes runs in this process: starting the workers (seconds:
# each imports ftdata and unpickles the tokenizer) costs more than a few thousand records take
# in one process (~1,500-2,000 Alpaca records/s on one core).
IN_PROCESS_BELOW = 5000


class Engine(str, Enum):
    """Where the per-record work runs."""

    LOCAL = "local"
    PROCESSES = "processes"

    @classmethod
    def parse(cls, value: Any, *, name: str = "engine") -> Engine:
        try:
            return cls(value.value if isinstance(value, Enum) else value)
        except ValueError:
            raise ConfigError(f"{name} must be one of {', '.join(e.value for e in cls)}, got {name}={value!r}") from None


def default_workers() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Executor(Protocol):
    """Runs `fn(spec, batch)` over batches, yielding the results in batch order."""

    def map(self, fn: Callable[[Any, B], T], spec: Any, batches: Iterable[B]) -> Iterator[T]: ...


class LocalExecutor:
    """In this process."""

    def map(self, fn: Callable[[Any, B], T], spec: Any, batches: Iterable[B]) -> Iterator[T]:
        for batch in batches:
            yield fn(spec, batch)


class _Raised:
    """A `FtdataError` from a worker, carried back as data and raised again in the parent.

    Returned rather than raised: the pool would chain a remote traceback to it, and a
    `RecordError` (keyword-only arguments) would lose its location when unpickled.
    """

    def __init__(self, exc: FtdataError):
        self.type, self.message, self.state = type(exc), str(exc), dict(vars(exc))

    def error(self) -> FtdataError:
        exc = self.type.__new__(self.type)
        Exception.__init__(exc, self.message)
        vars(exc).update(self.state)
        return exc


_SPEC: Any = None  # the spec of this worker process


def _init_worker(payload: bytes) -> None:
    global _SPEC
    # The workers are the parallelism: one tokenizer thread each. Set before the tokenizer is
    # unpickled, so its thread pool is sized by them.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"
    _SPEC = pickle.loads(payload)


def _call(fn: Callable[[Any, Any], T], batch: Any) -> T | _Raised:
    try:
        return fn(_SPEC, batch)
    except FtdataError as exc:
        return _Raised(exc)


class ProcessExecutor:
    """`num_workers` spawned processes, at most two batches per worker in flight.

    The first batches are read ahead until `in_process_below` records are seen; a smaller
    input runs in this process. An error reading batch k+n is raised only after batches
    up to k+n-1 have been returned, so the first error is the one a local run raises.
    """

    def __init__(self, num_workers: int, *, in_process_below: int | None = None):
        self.num_workers = num_workers
        self.in_process_below = IN_PROCESS_BELOW if in_process_below is None else in_process_below

    def map(self, fn: Callable[[Any, B], T], spec: Any, batches: Iterable[B]) -> Iterator[T]:
        source = iter(batches)
        ahead: list[B] = []
        failure: BaseException | None = None
        try:
            while sum(map(len, ahead)) < self.in_process_below and (batch := next(source, None)) is not None:
                ahead.append(batch)
        except FtdataError as exc:
            failure = exc
        if failure is not None or sum(map(len, ahead)) < self.in_process_below:
            yield from LocalExecutor().map(fn, spec, ahead)
            if failure is not None:
                raise failure
            return
        yield from self._pool(fn, spec, chain(ahead, source))

    def _pool(self, fn: Callable[[Any, B], T], spec: Any, batches: Iterator[B]) -> Iterator[T]:
        import multiprocessing

        try:
            payload = pickle.dumps(spec)
        except Exception as exc:  # lambdas, open handles, locks: pickle raises several types
            raise ConfigError(
                f"engine=processes cannot send this build to worker processes ({type(exc).__name__}: {exc}); "
                "pass picklable options and tokenizer, or use engine=local"
            ) from None
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(self.num_workers, mp_context=context, initializer=_init_worker, initargs=(payload,))
        pending: deque[Future[T | _Raised]] = deque()
        failure: BaseException | None = None
        try:
            while True:
                while failure is None and len(pending) < 2 * self.num_workers:
                    try:
                        batch = next(batches, None)
                    except FtdataError as exc:
                        failure = exc
                        break
                    if batch is None:
                        break
                    pending.append(pool.submit(_call, fn, batch))
                if not pending:
                    break
                try:
                    result = pending.popleft().result()
                except BrokenProcessPool:
                    raise FtdataError(
                        "a worker process died (killed for memory?); lower num_workers or batch_size, or use engine=local"
                    ) from None
                if isinstance(result, _Raised):
                    raise result.error() from None
                yield result
            if failure is not None:
                raise failure
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def executor(engine: Engine, num_workers: int | None) -> Executor:
    """The executor for `engine` (`num_workers` None: one per CPU core)."""
    if engine is Engine.PROCESSES:
        return ProcessExecutor(num_workers or default_workers())
    return LocalExecutor()
