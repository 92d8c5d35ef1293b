"""Executors: where the per-record work runs. One interface, three places.

    local      in this process, a few batches at a time on threads (the tokenizer releases
               the GIL while it encodes)
    processes  N worker processes on this machine: on Linux forked from multiprocessing's fork
               server (started once per process, by spawn: the build's threads stay out of the
               fork), elsewhere started with `spawn`
    ray        tasks on a Ray cluster (`pip install 'ftdata[ray]'`): a local one started for
               the build, or the one at `ray_address`

`Executor.map(fn, spec, batches)` applies a module-level `fn(spec, batch)` to every batch
and yields the results in batch order, so whatever the caller writes from them is the same
under every executor. `spec` is small and picklable; it crosses to each worker once, then
only batches travel. A `FtdataError` raised in a worker reaches the caller as the same
error (type, message, location), never as a pool traceback.

A pool costs time to start (each worker unpickles the tokenizer; a spawned one, and the fork server
once, import ftdata and transformers first: seconds), so
`processes` keeps an input of fewer than `IN_PROCESS_BELOW` records in this process.
"""

from __future__ import annotations

import ctypes
import gc
import os
import pickle
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager, nullcontext
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import chain
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ftdata.errors import ConfigError, FtdataError
from ftdata.guard.reaper import Reaper, die_with_parent
from ftdata.guard.scratch import drop_scratch, scratch_dir
from ftdata.run.held import Held
from ftdata.types import Engine

__all__ = [
    "IN_PROCESS_BELOW",
    "IN_PROCESS_CHARS",
    "Engine",
    "Executor",
    "LocalExecutor",
    "ProcessExecutor",
    "Raised",
    "RayExecutor",
    "default_workers",
    "executor",
    "local_threads",
    "not_a_spawned_start",
    "pickled",
    "ray_cluster",
    "ray_failure",
    "ray_spec",
]

B = TypeVar("B", bound=Sized)
T = TypeVar("T")

# Records, and characters of text, below which engine=processes runs in this process: starting the workers
# (seconds: each imports ftdata and unpickles the tokenizer) costs more than a few thousand records take in one
# process (~1,500-2,000 Alpaca records/s, about 1 MB of text a second, on one core). Both bounds: a few dozen
# long agent sessions (110 KB each) are already seconds of work, and go to the workers.
IN_PROCESS_BELOW = 5000
IN_PROCESS_CHARS = 4_000_000


def default_workers() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def local_threads() -> int:
    """Threads of engine=local: one per core (a third thread on
    two cores cost 4-9% more CPU, and kept them no busier)."""
    return default_workers()


class Executor(Protocol):
    """Runs `fn(spec, batch)` over batches, yielding the results in batch order."""

    def map(self, fn: Callable[[Any, B], T], spec: Any, batches: Iterable[B]) -> Iterator[T]: ...


class LocalExecutor:
    """In this process: `threads` batches at a time, each tokenized by a single-threaded tokenizer.

    The tokenizer releases the GIL while it encodes, so one thread's Python (format, render,
    labels) runs while others encode. That keeps every core busy; with the tokenizer's own
    threads on one batch at a time, the cores idle while Python runs (see docs/performance.md).
    Two batches per thread are read ahead: results come back in batch order, and with only
    one per thread a thread that finished before the oldest batch would wait for it, idle.
    An error reading batch k+n is raised only after batches up to k+n-1 have been returned,
    as with one thread. On one thread as on several, the garbage collector stays out of the
    batches' way while they run (`_quiet_collector`).
    """

    def __init__(self, threads: int = 1):
        self.threads = threads

    def map(self, fn: Callable[[Any, B], T], spec: Any, batches: Iterable[B]) -> Iterator[T]:
        if self.threads <= 1:
            with _quiet_collector():
                for batch in batches:
                    yield fn(spec, batch)
            return
        rest = iter(batches)
        head, failure = _first(rest, 2)
        with _one_tokenizer_thread(), _quiet_collector():
            if len(head) > 1 and failure is None:
                with _long_turns(), ThreadPoolExecutor(self.threads, thread_name_prefix="ftdata") as pool:
                    submit = lambda batch: pool.submit(fn, spec, batch)  # noqa: E731
                    yield from _in_order(pool, submit, chain(head, rest), 2 * self.threads)
                return
            for batch in head:  # one batch: nothing to overlap, so no pool
                yield fn(spec, batch)
        if failure is not None:
            raise failure


def _first(batches: Iterator[B], n: int) -> tuple[list[B], FtdataError | None]:
    """Up to the first `n` batches, and the `FtdataError` that reading the next one raised (raised by the caller
    after the batches before it, as `_in_order` does)."""
    head: list[B] = []
    while len(head) < n:
        try:
            batch = next(batches, None)
        except FtdataError as exc:
            return head, exc
        if batch is None:
            break
        head.append(batch)
    return head, None


@contextmanager
def _one_tokenizer_thread() -> Iterator[None]:
    """The Rust tokenizer single-threaded while it lasts: the tokenizers library reads the variable per call."""
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved


# How long a thread may run Python before it must hand the GIL to a waiting one, while a build runs
# (Python's default: 5 ms). A build thread gives it up by itself whenever it calls the tokenizer, so
# the forced handovers between two build threads cost more than they gave: at 20 ms, 3,000 preference
# pairs took 4-5% less wall time and 20,000 3% (same CPU; docs/preference.md#speed).
SWITCH_INTERVAL = 0.02


def _set_long_turns() -> float:
    """The interpreter's switch interval at least `SWITCH_INTERVAL` while builds' threads run (it is the
    process's: another thread of the caller's waits up to that long for the GIL meanwhile); the caller's, returned
    to be restored when the last build running ends."""
    saved = sys.getswitchinterval()
    sys.setswitchinterval(max(saved, SWITCH_INTERVAL))
    return saved


_long_turns = Held(_set_long_turns, sys.setswitchinterval)


# Container objects allocated (net) between two young-generation collections while a build
# runs; Python's default is 700, a collection every record or two. Each collection walks every
# young object alive, the batches in flight included, and promotes the survivors, which the
# older generations then walked again: 0.5-0.8 s of a 20k-record build with the GIL held, so
# no thread ran Python meanwhile. Garbage without cycles is freed by reference counting either
# way; cyclic garbage waits for at most this many allocations.
YOUNG_COLLECTION_EVERY = 50_000


def hand_back_freed_memory() -> None:
    """Return the memory freed so far to the system (glibc's `malloc_trim`; nothing elsewhere).

    glibc serves an array of up to 32 MiB from its heap once one of that size was freed (its mmap threshold rises
    to it), and a freed heap block stays the process's. A phase that frees many whole-length arrays (a recipe's
    mixture) then leaves them counted in the next phase's peak: 36 MiB of a million-record recipe build's.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc (TypeError: no handle to the running program)
        return
    trim(0)


# When a check last found the caller's heap frozen (time.monotonic), None when it found it not frozen. Asking
# (`gc.get_freeze_count`) walks every frozen object, ~0.1 us each: 20 ms of a small build on a test worker's frozen
# heap, half a second on a heap of millions. So a frozen heap is asked about again only after `FROZEN_CHECK_EVERY_S`
# (one that is not frozen costs nothing to ask about: it is asked each time).
FROZEN_CHECK_EVERY_S = 60.0
_frozen_seen: float | None = None


def _quiet() -> tuple[tuple[int, int, int], bool]:
    """The garbage collector out of the builds' way while they run: a frozen heap, rare young collections.

    The objects alive before the build (the modules, the tokenizer, the caller's objects) do
    not change during it, yet each full collection walked all of them while holding the GIL
    (0.1 s each): they are frozen, and unfrozen after, so their garbage is collected as before.
    A caller that froze its own heap (say, before forking workers) keeps it as it is: that
    state is theirs (`_callers_heap_frozen`). The young generation is collected every `YOUNG_COLLECTION_EVERY`
    allocations instead of 700. Returns what `_loud` puts back when the last build running ends: the caller's
    thresholds, and whether this froze the heap.
    """
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], YOUNG_COLLECTION_EVERY), *thresholds[1:])
    froze = not _callers_heap_frozen()
    if froze:
        gc.freeze()
    return thresholds, froze


def _loud(saved: tuple[tuple[int, int, int], bool]) -> None:
    thresholds, froze = saved
    if froze:
        gc.unfreeze()
    gc.set_threshold(*thresholds)


_quiet_collector = Held(_quiet, _loud)


def _callers_heap_frozen() -> bool:
    """Whether the caller froze its heap: asked of the collector, or, within `FROZEN_CHECK_EVERY_S` of finding it
    frozen, taken as still so (had the caller unfrozen it meanwhile, a build would run unfrozen: slower, no other
    change). Asked by the first build to enter `_quiet_collector`, under its lock."""
    global _frozen_seen
    now = time.monotonic()
    if _frozen_seen is not None and now - _frozen_seen < FROZEN_CHECK_EVERY_S:
        return True
    _frozen_seen = now if gc.get_freeze_count() else None
    return _frozen_seen is not None


def _in_order(pool: Any, submit: Callable[[B], Future[T]], batches: Iterator[B], ahead: int) -> Iterator[T]:
    """Submit up to `ahead` batches at a time; yield their futures' results in batch order.

    A `FtdataError` reading a batch is raised after the batches before it have been yielded.
    """
    pending: deque[Future[T]] = deque()
    failure: FtdataError | None = None
    try:
        while True:
            while failure is None and len(pending) < ahead:
                try:
                    batch = next(batches, None)
                except FtdataError as exc:
                    failure = exc
                    break
                if batch is None:
                    break
                pending.append(submit(batch))
            if not pending:
                break
            yield pending.popleft().result()
        if failure is not None:
            raise failure
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class Raised:
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


def _one_thread() -> None:
    # The workers are the parallelism: one tokenizer thread each. Set before the tokenizer is
    # unpickled, so its thread pool is sized by them.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"


def _init_worker(spec_file: str, build: int, forked: bool, environ: dict[str, str]) -> None:
    global _SPEC
    # A SIGKILL of the build leaves no worker (nor the resource tracker they keep alive). Started by spawn, the
    # worker's parent is the build. Forked from the fork server, it is the server, which ends when every holder of
    # the write end of its pipe from the build is gone: the build, and each forked process, which gets a copy (for
    # processes of its own). The server is alive while this worker holds its copy, so its pid is read first; the
    # worker then lets the copy go, and the server ends with the build (`die_with_parent` sees one that ended since).
    parent = os.getppid() if forked else build
    if forked:
        from multiprocessing import forkserver

        server: Any = forkserver._forkserver  # the module's one ForkServer, as this process inherited it
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None
    die_with_parent(parent)
    # The build's environment as it is now, not as the fork server found it when it started (an earlier build's, in
    # a long-lived process); its folder and import path come with multiprocessing's preparation, as under spawn.
    os.environ.clear()
    os.environ.update(environ)
    _one_thread()
    with open(spec_file, "rb") as f:
        _SPEC = pickle.load(f)
    # The worker's modules and tokenizer stay for its life: full collections skip them, and the
    # young generation is collected as rarely as in a local build (see _quiet_collector).
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])


def _call(fn: Callable[[Any, Any], T], batch: Any) -> T | Raised:
    try:
        return fn(_SPEC, batch)
    except FtdataError as exc:
        return Raised(exc)


class ProcessExecutor:
    """`num_workers` spawned processes, at most two batches per worker in flight.

    The first batches are read ahead until `in_process_below` records, or `IN_PROCESS_CHARS` characters of text
    (a batch's `chars`, where it counts them), are seen; a smaller input runs in this process. An error reading
    batch k+n is raised only after batches up to k+n-1 have been returned, so the first error is the one a local
    run raises.
    """

    def __init__(self, num_workers: int, *, in_process_below: int | None = None):
        self.num_workers = num_workers
        self.in_process_below = IN_PROCESS_BELOW if in_process_below is None else in_process_below

    def map(self, fn: Callable[[Any, B], T], spec: Any, batches: Iterable[B]) -> Iterator[T]:
        source = iter(batches)
        ahead: list[B] = []
        failure: BaseException | None = None
        records = chars = 0
        small = True  # below both bounds so far
        try:
            while small and (batch := next(source, None)) is not None:
                ahead.append(batch)
                records, chars = records + len(batch), chars + getattr(batch, "chars", 0)
                small = records < self.in_process_below and chars < IN_PROCESS_CHARS
        except FtdataError as exc:
            failure = exc
        if failure is not None or small:
            yield from LocalExecutor(local_threads()).map(fn, spec, ahead)
            if failure is not None:
                raise failure
            return
        yield from self._pool(fn, spec, chain(ahead, source))

    def _pool(self, fn: Callable[[Any, B], T], spec: Any, batches: Iterator[B]) -> Iterator[T]:
        # The spec (the tokenizer: megabytes) goes to the workers in a file, not in their start arguments:
        # spawn writes those into a pipe whose read end the parent holds until the write is done, so a
        # worker that dies as it starts (a script without the `__main__` guard) would block the build forever.
        payload = pickled(spec, "processes")
        scratch = scratch_dir()
        spec_file = scratch / "spec.pickle"
        spec_file.write_bytes(payload)
        context = _context()
        forked = context.get_start_method() == "forkserver"
        start = (str(spec_file), os.getpid(), forked, dict(os.environ))
        pool = ProcessPoolExecutor(self.num_workers, mp_context=context, initializer=_init_worker, initargs=start)
        try:
            for result in _in_order(pool, lambda batch: pool.submit(_call, fn, batch), batches, 2 * self.num_workers):
                if isinstance(result, Raised):
                    raise result.error() from None
                yield result
        except BrokenProcessPool:
            raise _died() from None
        finally:
            drop_scratch(scratch)


# What the fork server imports once, so that each worker forked from it starts with them imported: the worker's own
# code, and transformers, which unpickling the tokenizer needs (1.7 s of a spawned worker's 3.5 s start, measured).
FORK_SERVER_PRELOAD = ["ftdata.run.executors", "ftdata.run.loop", "ftdata.run.stage", "transformers"]


def _context() -> Any:
    """Where the workers come from: on Linux, forked from multiprocessing's fork server, a process started once (by
    spawn) per build process, with `FORK_SERVER_PRELOAD` imported (its other threads: numpy's BLAS pool and pyarrow's
    jemalloc background thread, which both handle a fork; the Rust tokenizer is not imported there): a worker starts
    in a fraction of a second, where a spawned one imports ftdata and transformers first (~3.5 s, every build). A
    forked worker prepares as a spawned one does (the build's folder, import path and main script: the `__main__` guard
    is still needed). Elsewhere (macOS, Windows), and where the server's socket would not fit under TMPDIR
    (`_fork_server_fits`): spawn."""
    import multiprocessing

    linux = sys.platform.startswith("linux") and "forkserver" in multiprocessing.get_all_start_methods()
    if not linux or not _fork_server_fits():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(FORK_SERVER_PRELOAD)  # read when the server starts: once per process
    return context


# The longest path a Unix socket binds to on Linux (its `sun_path` holds 108 bytes with the closing NUL).
UNIX_SOCKET_PATH = 107


def _fork_server_fits() -> bool:
    """Whether the fork server's socket fits in multiprocessing's temp folder (`pymp-XXXXXXXX` in TMPDIR, made once a
    process, removed at its exit): under a TMPDIR longer than 75 bytes (a job's scratch on a cluster, a deep test
    folder) the server fails to start with `OSError: AF_UNIX path too long`, so workers are spawned instead."""
    from multiprocessing import util

    return len(os.fsencode(util.get_temp_dir())) + len("/listener-12345678") <= UNIX_SOCKET_PATH


GUARD = 'put the build under `if __name__ == "__main__":`, or use engine=local'


def not_a_spawned_start() -> None:
    """Refuse a build in a process that `spawn` is starting: one that runs the main script again to
    unpickle its work (engine=processes' workers, anyone's), whose top level calls the build.

    The build would run again in every such worker, and into the same OUT it would wait for the lock
    the real build holds, while that build waits for the worker: a deadlock. `_inheriting` is the flag
    multiprocessing itself checks to refuse starting a process there (`spawn._check_not_importing_main`).

    Raises:
        ConfigError: this process is running its main script as a spawned process starts.
    """
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # runpy runs the script as `__mp_main__`; `__main__` is still the interpreter's own until it is done
        script = getattr(sys.modules.get("__mp_main__"), "__file__", None) or "the main module"
        raise ConfigError(
            f"a worker process started with spawn runs {script} again, and its top level starts a build; {GUARD}"
        )


def _died() -> FtdataError:
    """Why a worker process may have died: a script that starts the build at its top level, which each
    spawned worker runs again (Python's rule for spawn: the `__main__` guard), else memory."""
    script = getattr(sys.modules.get("__main__"), "__file__", None)
    try:
        guarded = script is None or "__main__" in Path(script).read_text(encoding="utf-8", errors="replace")
    except OSError:
        guarded = True
    if not guarded:
        return ConfigError(
            f"a worker process died: engine=processes starts workers that run {script} again, and its top level "
            f"starts a build; {GUARD}"
        )
    return FtdataError(
        "a worker process died (killed for memory?); lower num_workers or batch_size, or use engine=local"
    )


def pickled(spec: Any, engine: str) -> bytes:
    try:
        return pickle.dumps(spec)
    except Exception as exc:  # lambdas, open handles, locks: pickle raises several types
        raise ConfigError(
            f"engine={engine} cannot send this build to worker processes ({type(exc).__name__}: {exc}); "
            "pass picklable options and tokenizer, or use engine=local"
        ) from None


_RAY_SPECS: dict[str, Any] = {}  # spec key -> the unpickled spec, once per Ray worker process


def ray_spec(key: str, payload: list[Any]) -> Any:
    """In a Ray worker: the spec put in the object store as `payload[0]`, fetched and unpickled once per process.

    The reference travels inside a list so that Ray passes it as is instead of fetching it for every task.
    """
    if key not in _RAY_SPECS:
        import ray

        _one_thread()
        _RAY_SPECS.clear()  # one build's spec at a time
        _RAY_SPECS[key] = pickle.loads(ray.get(payload[0]))
    return _RAY_SPECS[key]


def _ray_call(fn: Callable[[Any, Any], T], key: str, payload: list[Any], batch: Any) -> T | Raised:
    """One batch in a Ray worker."""
    try:
        return fn(ray_spec(key, payload), batch)
    except FtdataError as exc:
        return Raised(exc)


@contextmanager
def ray_cluster(address: str | None, num_workers: int | None) -> Iterator[tuple[Any, int]]:
    """(the `ray` module, the CPUs to use) on the cluster at `address`, or on a local one started here.

    A cluster this process already joined (`ray.init()` before the build) is used as it is;
    one started here is stopped at the end, and killed by a watchdog (`reaper.Reaper`) if this
    process is killed first.

    Raises:
        ConfigError: Ray is not installed, or the cluster cannot be started or reached.
    """
    import logging

    try:
        import ray
    except ImportError:
        raise ConfigError("engine=ray needs Ray: pip install 'ftdata[ray]' (or use engine=processes)") from None
    started = not ray.is_initialized()
    with Reaper() if started and address is None else nullcontext():
        if started:
            try:
                ray.init(
                    address=address,
                    num_cpus=None if address else num_workers,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
            except Exception as exc:  # ConnectionError, RuntimeError, ValueError: whatever the address gave
                # a local cluster's sockets go under RAY_TMPDIR, else TMPDIR (~70 bytes more: a Unix socket takes 107)
                fix = "; set RAY_TMPDIR to a short folder (such as /tmp)" if "AF_UNIX path" in str(exc) else ""
                raise ConfigError(
                    f"engine=ray could not start or reach a Ray cluster at {address or 'this machine'}: {exc}{fix}"
                ) from None
        try:
            yield ray, num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        finally:
            if started:
                ray.shutdown()


def ray_failure(exc: BaseException) -> FtdataError:
    """One line for a Ray task that failed without a `FtdataError` (a worker died, a bug)."""
    cause = getattr(exc, "cause", None) or exc
    return FtdataError(f"a Ray worker failed: {type(cause).__name__}: {(str(cause).splitlines() or [''])[0]}")


class RayExecutor:
    """Ray tasks, at most two batches per worker in flight, results in batch order.

    Connects to the cluster at `address` (e.g. "auto", "ray://head:10001"), or starts a local
    one of `num_workers` CPUs for the build and stops it after. A cluster this process already
    joined (`ray.init()` before the build) is used as it is. Every input runs on the cluster:
    asking for Ray is asking for it, whatever the size.
    """

    def __init__(self, num_workers: int | None, *, address: str | None = None):
        self.num_workers = num_workers
        self.address = address

    def map(self, fn: Callable[[Any, B], T], spec: Any, batches: Iterable[B]) -> Iterator[T]:
        import uuid

        payload = pickled(spec, "ray")
        with ray_cluster(self.address, self.num_workers) as (ray, workers):
            task = ray.remote(num_cpus=1, max_retries=0)(_ray_call)
            key, ref = uuid.uuid4().hex, ray.put(payload)
            pending: deque[Any] = deque()
            source = iter(batches)
            while True:
                while len(pending) < 2 * workers and (batch := next(source, None)) is not None:
                    pending.append(task.remote(fn, key, [ref], batch))
                if not pending:
                    break
                try:
                    result = ray.get(pending.popleft())
                except ray.exceptions.RayError as exc:
                    raise ray_failure(exc) from None
                if isinstance(result, Raised):
                    raise result.error() from None
                yield result


def executor(engine: Engine, num_workers: int | None, *, ray_address: str | None = None) -> Executor:
    """The executor for `engine` (`num_workers` None: one per CPU core, or the Ray cluster's CPUs)."""
    if engine is Engine.PROCESSES:
        return ProcessExecutor(num_workers or default_workers())
    if engine is Engine.RAY:
        return RayExecutor(num_workers, address=ray_address)
    return LocalExecutor(local_threads())
