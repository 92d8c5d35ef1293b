"""Bounded work: time and size limits for template renders, filter expressions, YAML configs and
compressed inputs.

A Jinja template or a filter expression comes from the user, and its work grows with the
data: five nested loops, `'x' * 3000000000` or a YAML "billion laughs" would otherwise hang
or exhaust memory. Each is bounded here and fails with one line naming what ran too long.

Limits come from environment variables, read on every use (so a test or a user can change
them without touching code) except inside `pinned()`, where a batch of records reads them once:

    FTDATA_RENDER_TIMEOUT    seconds one template render may take (10)
    FTDATA_RENDER_MAX_CHARS  characters one render (or one string it builds) may hold (10000000)
    FTDATA_FILTER_TIMEOUT    seconds one filter evaluation may take (2)
    FTDATA_YAML_MAX_BYTES    size of a YAML config file (1048576)
    FTDATA_YAML_MAX_NODES    values in a YAML config after expanding its aliases (100000)
    FTDATA_PAD_MAX_BYTES     memory padding=max_length may take (half of this machine's memory)
    FTDATA_TOKENIZER_MAX_BYTES  size of one file of a tokenizer folder, checked before parsing (268435456: 256 MiB)

(What a reader may take, lines, strings and decompressed bytes, is a build option: `ftdata.io.bounds`.)

The time limit works in any thread: a watchdog thread raises `Timeout` asynchronously in the
thread that overran (at its next Python bytecode), so it stops pure-Python loops such as
Jinja's. It cannot interrupt one long C call; the size checks on `*`, `**` and `%` below stop
the ones a template can reach.
"""

from __future__ import annotations

import contextvars
import ctypes
import functools
import itertools
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
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
    values = {}
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
                f"{self.what} took longer than {self.seconds:g} s; make it cheaper, or raise {env_name(self.limit)} if it needs more"
            ) from None


# --- Jinja: a sandbox with size limits ----------------------------------------------------------

_WIDTH = re.compile(r"%[-+ #0]*(\d+)")


def _too_big(what: str, size: int, cap: int) -> LimitExceeded:
    return LimitExceeded(
        f"{what} would build {size:,} characters (limit {cap:,}); raise {env_name('render_chars')} if it needs more"
    )


_SIZED = (str, bytes, list, tuple)


def _sized(value: Any) -> bool:
    return isinstance(value, _SIZED)


def _length(value: Any) -> int:
    """Characters of `value` as a template writes it (elements of a list)."""
    return len(value) if _sized(value) else len(str(value))


def _checked_size(what: str, size: int) -> None:
    cap = limits().render_chars
    if size > cap:
        raise _too_big(what, size, cap)


def _bounded_join(join: Callable[[Any], Any], seq: Any) -> Any:
    """`~` (Jinja's concatenation): the operands' sizes summed before they are joined."""
    seq = tuple(seq)
    _checked_size("a ~ concatenation", sum(map(_length, seq)))
    return join(seq)


def _bounded_concat(parts: Any) -> str:
    """The environment's `concat`: the output of a render, a `{% set %}` block or a macro, counted as it grows."""
    cap, size, out = limits().render_chars, 0, []
    for part in parts:
        size += len(part)
        if size > cap:
            raise _output_too_long("the template", cap)
        out.append(part)
    return "".join(out)


def _grown(name: str, value: Any, args: tuple[Any, ...]) -> int | None:
    """What a string method or filter `name` would build from `value` (a str) and `args`, or None
    when it cannot grow a string past its inputs."""
    if name == "join":  # `sep.join(items)` / `items|join(sep)`: value is the separator
        items = list(args[0]) if args else []
        return sum(map(_length, items)) + len(value) * max(len(items) - 1, 0)
    if name == "replace" and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        hits = value.count(old) if old else len(value) + 1
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            hits = min(hits, args[2])
        return len(value) + hits * max(len(new) - len(old), 0)
    if name == "indent":
        width = args[0] if args else 4
        return len(value) + _length(width) * (value.count("\n") + 1)
    if name in ("format", "format_map"):
        widths = [int(w) for w in _WIDTH.findall(value)] + [int(w) for w in re.findall(r"\{[^{}]*:[^{}\d]*(\d+)", value)]
        return len(value) + max(widths, default=0) + sum(map(_length, args))
    return None


@functools.cache
def _code_generator() -> type:
    """Jinja's code generator with `~` routed through the size check (it calls `str_join` directly)."""
    from jinja2.compiler import CodeGenerator

    class BoundedCodeGenerator(CodeGenerator):
        def visit_Concat(self, node: Any, frame: Any) -> None:
            if frame.eval_ctx.volatile:
                join = "(markup_join if context.eval_ctx.volatile else str_join)"
            else:
                join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
            self.write(f"environment.bounded_join({join}, (")
            for arg in node.nodes:
                self.visit(arg, frame)
                self.write(", ")
            self.write("))")

    return BoundedCodeGenerator


class _Bounded:
    """Mixin for a Jinja sandbox: no operation builds a string or list past the size limit.

    `*`, `**` and `%` are checked on their operands; `+` and `~` on the sizes they add; a
    string method or filter that grows its input (`join`, `replace`, `format`, `indent`,
    `center`) on what it would build; every output (a render, a `{% set %}` block, a macro)
    as it grows. So a template that doubles a string stops at the limit, not at 4 GiB.
    """

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    bounded_join = staticmethod(_bounded_join)
    concat = staticmethod(_bounded_concat)

    @property
    def code_generator_class(self) -> type:  # type: ignore[override]
        return _code_generator()

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "+":  # chat templates add strings on every turn: the common case first, and cheap
            if isinstance(left, _SIZED) and isinstance(right, _SIZED) and len(left) + len(right) > (cap := limits().render_chars):
                raise _too_big(f"{type(left).__name__} + {type(right).__name__}", len(left) + len(right), cap)
            return left + right  # what the sandbox's binop_table["+"] does
        cap = limits().render_chars
        if operator == "*":
            seq, n = (left, right) if _sized(left) else (right, left)
            if _sized(seq) and isinstance(n, int) and len(seq) * n > cap:
                raise _too_big(f"{type(seq).__name__} * {n}", len(seq) * n, cap)
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            bits = abs(left).bit_length() * right
            if right > 0 and bits > cap:
                raise _too_big(f"{left} ** {right}", bits // 3, cap)
        elif operator == "%" and isinstance(left, str):
            widths = [int(w) for w in _WIDTH.findall(left)]
            if widths and max(widths) > cap:
                raise _too_big("a % format width", max(widths), cap)
        return super().call_binop(context, operator, left, right)  # type: ignore[misc]

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        cap = limits().render_chars
        name = getattr(__obj, "__name__", "a function")
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool) and value > cap:
                raise _too_big(f"calling {name} with {value}", value, cap)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and (size := _grown(name, owner, args)) is not None:
            _checked_size(f"str.{name}", size)
        out = super().call(__context, __obj, *args, **kwargs)  # type: ignore[misc]
        if _sized(out) and len(out) > cap:  # what no check above foresaw: stopped after one step
            raise _too_big(f"calling {name}", len(out), cap)
        return out


def _checked_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A Jinja filter that grows a string (`center`, `indent`, `join`, `replace`, `format`), refused
    when what it would build passes the size limit."""
    context = hasattr(func, "jinja_pass_arg")  # join and replace take the evaluation context first

    def bounded(*args: Any, **kwargs: Any) -> Any:
        value, rest = (args[1], args[2:]) if context else (args[0], args[1:])
        if name == "center":
            width = rest[0] if rest else kwargs.get("width", 80)
            size = width if isinstance(width, int) else 0
        elif name == "join":
            sep = rest[0] if rest else kwargs.get("d", "")
            size = 0 if kwargs.get("attribute", rest[1] if len(rest) > 1 else None) is not None else _grown("join", str(sep), (value,))
        elif name == "indent":
            size = _grown(name, str(value), (rest[0] if rest else kwargs.get("width", 4),))
        else:
            size = _grown(name, str(value), (*rest, *kwargs.values()))
        _checked_size(f"the {name} filter", size or 0)
        out = func(*args, **kwargs)
        _checked_size(f"the {name} filter", len(out) if _sized(out) else 0)
        return out

    if context:
        bounded.jinja_pass_arg = func.jinja_pass_arg  # type: ignore[attr-defined]
    return bounded


_GROWING_FILTERS = ("center", "indent", "join", "replace", "format")


def sandbox(**options: Any) -> Any:
    """An immutable Jinja sandbox with the size limits above; `include`/`import`/`extends` find nothing."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedSandbox(_Bounded, ImmutableSandboxedEnvironment):
        pass

    env = BoundedSandbox(**options)
    for name in _GROWING_FILTERS:
        env.filters[name] = _checked_filter(name, env.filters[name])
    return env


# --- chat templates: transformers compiles and renders them ------------------------------------

_BOUND_CHAT = contextvars.ContextVar("ftdata_bounded_chat_templates", default=False)


@contextmanager
def bounded_chat_templates() -> Iterator[None]:
    """Within the block, `apply_chat_template` renders with the size limits of `sandbox`.

    transformers compiles a chat template in its own sandbox (its filters, globals and the
    `{% generation %}` extension) and renders it in one call, so neither the output nor a
    `'x' * 3000000000` can be bounded from outside. Its compile step is wrapped once: inside
    this block it returns the same template compiled by a subclass of transformers' own
    environment with the `*`, `**`, `%` and width checks above; outside, transformers' own.
    A transformers without that compile step keeps its own (the time limit still holds).
    """
    _wrap_chat_compiler()
    token = _BOUND_CHAT.set(True)
    try:
        yield
    finally:
        _BOUND_CHAT.reset(token)


def _wrap_chat_compiler() -> None:
    from transformers.utils import chat_template_utils as ctu

    original = getattr(ctu, "_compile_jinja_template", None)
    if original is None or getattr(original, "ftdata_bounded", False):
        return

    def compile_template(source: str) -> Any:
        if not _BOUND_CHAT.get():
            return original(source)
        # transformers' environment, taken from an empty template: compiling `source` in it would
        # already fold constants such as 'x' * 3000000000.
        return _bounded_chat_template(source, original("").environment)

    compile_template.ftdata_bounded = True  # type: ignore[attr-defined]
    ctu._compile_jinja_template = compile_template


@functools.lru_cache(maxsize=32)
def _bounded_chat_template(source: str, env: Any) -> Any:
    bounded = type(f"Bounded{type(env).__name__}", (_Bounded, type(env)), {})(
        trim_blocks=env.trim_blocks, lstrip_blocks=env.lstrip_blocks, keep_trailing_newline=env.keep_trailing_newline,
        extensions=[type(e) for e in env.extensions.values()],
    )  # fmt: skip
    bounded.filters.update(env.filters)
    bounded.globals.update(env.globals)
    for name in _GROWING_FILTERS:
        bounded.filters[name] = _checked_filter(name, env.filters[name])
    return bounded.from_string(source)


def check_size(text: str, what: str) -> str:
    """`text`, or LimitExceeded when it is longer than the render size limit."""
    cap = limits().render_chars
    if len(text) > cap:
        raise _output_too_long(what, cap)
    return text


def _output_too_long(what: object, cap: int) -> LimitExceeded:
    return LimitExceeded(f"{what} output passed {cap:,} characters; raise {env_name('render_chars')} if it needs more")


def render(compiled: Any, variables: dict[str, Any], *, what: object) -> str:
    """Render a compiled Jinja template within the time and output-size limits.

    Raises:
        LimitExceeded: the render took too long or its output grew past the size limit.
    """
    lim = limits()
    parts: list[str] = []
    size = 0
    with time_limit(lim.render_seconds, what):
        # `Template.generate` minus its traceback rewriting: the same parts, the same exceptions.
        for part in compiled.root_render_func(compiled.new_context(variables)):
            size += len(part)
            if size > lim.render_chars:
                raise _output_too_long(what, lim.render_chars)
            parts.append(part)
    return "".join(parts)


# --- YAML --------------------------------------------------------------------------------------


def _yaml_error(source: str, exc: Exception) -> ConfigError:
    """`config.yaml:3:10: invalid YAML: mapping values are not allowed here` (line and column of the problem)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
    what = " ".join(filter(None, (getattr(exc, "context", None), getattr(exc, "problem", None)))) or str(exc).splitlines()[0]
    return ConfigError(f"{where}: invalid YAML: {what}")


def load_yaml(text: str, *, source: str) -> Any:
    """`yaml.safe_load` with a size limit and a limit on values after alias expansion.

    Aliases let a 1 kB file stand for billions of values ("billion laughs"); the node graph
    is composed first (aliases stay references), its expanded size counted, and only then
    constructed.

    Raises:
        ConfigError: invalid YAML, or a file past a limit.
    """
    import yaml

    lim = limits()
    if len(text.encode("utf-8", "surrogatepass")) > lim.yaml_bytes:
        raise ConfigError(
            f"{source}: config is larger than {lim.yaml_bytes:,} bytes; raise {env_name('yaml_bytes')} if it must be"
        )
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        raise _yaml_error(source, exc) from None
    if node is None:
        return None
    sizes: dict[int, int] = {}

    def expanded(n: Any, depth: int = 0) -> int:
        if id(n) in sizes:
            return sizes[id(n)]
        if depth > 100:
            raise ConfigError(f"{source}: config nests deeper than 100 levels")
        sizes[id(n)] = 1  # a recursive alias counts once instead of looping
        if isinstance(n, yaml.MappingNode):
            total = 1 + sum(expanded(k, depth + 1) + expanded(v, depth + 1) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            total = 1 + sum(expanded(v, depth + 1) for v in n.value)
        else:
            total = 1
        sizes[id(n)] = total
        if total > lim.yaml_nodes:
            raise ConfigError(
                f"{source}: config expands to more than {lim.yaml_nodes:,} values (YAML aliases); "
                f"write the values out, or raise {env_name('yaml_nodes')}"
            )
        return total

    expanded(node)
    try:
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _yaml_error(source, exc) from None
    finally:
        loader.dispose()
