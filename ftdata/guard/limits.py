"""Bounded work: the time and size limits of template renders, filter expressions, YAML configs and
compressed inputs, and the checks that apply them.

A Jinja template or a filter expression comes from the user, and its work grows with the
data: five nested loops, `'x' * 3000000000` or a YAML "billion laughs" would otherwise hang
or exhaust memory. Each is bounded and fails with one line naming what ran too long. The
limits and their checks are here, in the standard library alone; Jinja is bounded with them in
`ftdata.chat.sandbox`, YAML in `ftdata.io.config_files`.

Limits come from environment variables, read on every use (so a test or a user can change
them without touching code) except inside `pinned()`, where a batch of records reads them once:

    FTDATA_RENDER_TIMEOUT    seconds one template render may take (10)
    FTDATA_RENDER_MAX_CHARS  characters one render (or one string it builds) may hold (10000000)
    FTDATA_FILTER_TIMEOUT    seconds one filter evaluation may take (2)
    FTDATA_YAML_MAX_BYTES    size of a YAML config file (1048576)
    FTDATA_YAML_MAX_NODES    values in a YAML config after expanding its aliases (100000)
    FTDATA_PAD_MAX_BYTES     memory padding=max_length may take (half of this machine's memory)
    FTDATA_TOKENIZER_MAX_BYTES  size of one file of a tokenizer folder, checked before parsing (268435456: 256 MiB)

(What a reader may take, lines, strings and decompressed bytes, is a build option: `ftdata.guard.bounds`.)

The time limit works in any thread: a watchdog thread raises `Timeout` asynchronously in the
thread that overran (at its next Python bytecode), so it stops pure-Python loops such as
Jinja's. It cannot interrupt one long C call; the sandbox's size checks on `*`, `**` and `%` stop
the ones a template can reach.
"""

from __future__ import annotations

import contextvars
import ctypes
import functools
import itertools
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ftdata.errors import ConfigError, FtdataError, Location, RecordError
from ftdata.outcomes import RejectCode

_ENV = {
    "render_seconds": ("FTDATA_RENDER_TIMEOUT", 10.0),
    "render_chars": ("FTDATA_RENDER_MAX_CHARS", 10_000_000),
    "filter_seconds": ("FTDATA_FILTER_TIMEOUT", 2.0),
    "yaml_bytes": ("FTDATA_YAML_MAX_BYTES", 1 << 20),
    "yaml_nodes": ("FTDATA_YAML_MAX_NODES", 100_000),
    "pad_bytes": ("FTDATA_PAD_MAX_BYTES", 0),  # 0: half this machine's memory
    "tokenizer_bytes": ("FTDATA_TOKENIZER_MAX_BYTES", 256 << 20),  # the largest real tokenizer.json: ~35 MB
}


class LimitExceeded(FtdataError):
    """A render, filter or config went past a limit (time or size). The message names the limit."""

    exit_code = 5


class RecordOverLimit(RecordError, LimitExceeded):
    """A render of one record went past a limit: rejected under `on_error="skip"` like any bad
    record (code `over_limit`), the same one-line error as before otherwise. The message names the record."""

    exit_code = 5

    def __init__(self, message: str, *, location: Location | None = None):
        super().__init__(message, location=location, code=RejectCode.OVER_LIMIT)


class Timeout(BaseException):
    """Raised inside the thread that overran its time limit.

    A BaseException, so the `except Exception` of a template library cannot swallow it.
    """


@dataclass(frozen=True)
class Limits:
    render_seconds: float
    render_chars: int
    filter_seconds: float
    yaml_bytes: int
    yaml_nodes: int
    pad_bytes: int
    tokenizer_bytes: int


_PINNED: contextvars.ContextVar[Limits | None] = contextvars.ContextVar("ftdata_pinned_limits", default=None)


def limits() -> Limits:
    """The limits in force now (environment variables over the defaults, or the `pinned` ones).

    Raises:
        ConfigError: a variable that is not a positive number.
    """
    if (pinned := _PINNED.get()) is not None:
        return pinned
    # Parsed once per set of values (parsing took 15 µs, more than a render).
    return _parse(tuple(os.environ.get(var) for var, _ in _ENV.values()))


@contextmanager
def pinned() -> Iterator[Limits]:
    """The limits read once for the block, in this thread: a batch of renders reads the
    environment variables once instead of per render and per template call (9 µs each time).

    Raises:
        ConfigError: a variable that is not a positive number.
    """
    lim = limits()
    token = _PINNED.set(lim)
    try:
        yield lim
    finally:
        _PINNED.reset(token)


@functools.lru_cache(maxsize=8)
def _parse(raws: tuple[str | None, ...]) -> Limits:
    values: dict[str, Any] = {}
    for (name, (var, default)), raw in zip(_ENV.items(), raws):
        if raw is None:
            values[name] = default or half_memory()
            continue
        try:
            value = type(default)(float(raw)) if isinstance(default, int) else float(raw)
        except ValueError:
            value = 0
        if value <= 0:
            raise ConfigError(f"{var} must be a positive number, got {var}={raw!r}")
        values[name] = value
    return Limits(**values)


def half_memory() -> int:
    """Half of this machine's physical memory, in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def env_name(limit: str) -> str:
    """The environment variable that sets `limit` (e.g. `render_seconds` -> FTDATA_RENDER_TIMEOUT)."""
    return _ENV[limit][0]


# --- time -------------------------------------------------------------------------------------


class _Watchdog:
    """One daemon thread per process that raises `Timeout` in threads past their deadline."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # the thread does not survive a fork

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._entries: dict[int, tuple[float, int]] = {}  # token -> (deadline, thread id)
        self._fired: set[int] = set()
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None
        self._wakes = math.inf  # when the watchdog thread wakes next (inf: only when notified)

    def _run(self) -> None:
        with self._cond:
            while True:
                if not self._entries:
                    self._wakes = math.inf
                    self._cond.wait()
                    continue
                token, (deadline, tid) = min(self._entries.items(), key=lambda kv: kv[1][0])
                left = deadline - time.monotonic()
                if left > 0:
                    self._wakes = deadline
                    self._cond.wait(left)
                    continue
                del self._entries[token]
                self._fired.add(token)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), ctypes.py_object(Timeout))

    def start(self, seconds: float) -> int:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ftdata-limits", daemon=True)
                self._thread.start()
            token = next(self._tokens)
            deadline = time.monotonic() + seconds
            self._entries[token] = (deadline, threading.get_ident())
            if deadline < self._wakes:  # else the watchdog wakes in time anyway: no thread switch per render
                self._cond.notify()
            return token

    def stop(self, token: int) -> None:
        with self._cond:
            self._entries.pop(token, None)
            if token in self._fired:
                self._fired.discard(token)
                # Fired just as the block ended: take back the exception not yet delivered.
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(threading.get_ident()), None)


_WATCHDOG = _Watchdog()


class time_limit:  # noqa: N801 (used as a function: `with time_limit(...)`)
    """Run the block for at most `seconds`; past that, raise `LimitExceeded` naming `what`.

    A class rather than a `@contextmanager` generator: it wraps every render, and the
    generator machinery cost more than the watchdog it starts.

    >>> with time_limit(0.1, "template 'slow.jinja'"):  # doctest: +SKIP
    ...     while True: pass
    LimitExceeded: template 'slow.jinja' took longer than 0.1 s; raise FTDATA_RENDER_TIMEOUT if it needs more
    """

    __slots__ = ("limit", "seconds", "token", "what")

    def __init__(self, seconds: float, what: object, *, limit: str = "render_seconds"):
        self.seconds, self.what, self.limit = seconds, what, limit  # `what`: formatted only for the message

    def __enter__(self) -> None:
        self.token = _WATCHDOG.start(self.seconds)

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        _WATCHDOG.stop(self.token)
        if kind is not None and issubclass(kind, Timeout):
            raise LimitExceeded(
                f"{self.what} took longer than {self.seconds:g} s; make it cheaper, or raise {env_name(self.limit)} "
                "if it needs more"
            ) from None


# --- Jinja: a sandbox with size limits ----------------------------------------------------------


# --- size -------------------------------------------------------------------------------------


def too_big(what: str, size: int, cap: int) -> LimitExceeded:
    return LimitExceeded(
        f"{what} would build {size:,} characters (limit {cap:,}); raise {env_name('render_chars')} if it needs more"
    )


def checked_size(what: str, size: int) -> None:
    cap = limits().render_chars
    if size > cap:
        raise too_big(what, size, cap)


def check_size(text: str, what: object) -> str:
    """`text`, or LimitExceeded when it is longer than the render size limit."""
    cap = limits().render_chars
    if len(text) > cap:
        raise output_too_long(what, cap)
    return text


def output_too_long(what: object, cap: int) -> LimitExceeded:
    return LimitExceeded(f"{what} output passed {cap:,} characters; raise {env_name('render_chars')} if it needs more")
