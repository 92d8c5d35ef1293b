"""User Jinja run bounded: a sandbox whose strings and lists cannot grow past the size limit, chat
templates rendered with the same checks (`bounded_chat_templates`), and filter expressions.

A Jinja template or a filter expression comes from the user, and its work grows with the
data: five nested loops or `'x' * 3000000000` would otherwise hang or exhaust memory. The
limits themselves (time, size, read from the environment) are `ftdata.guard.limits`; this
module applies them to Jinja, where every `*`, `**`, `%`, `+`, `~` and growing filter is
checked before it builds.
"""

from __future__ import annotations

import contextvars
import functools
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ftdata.errors import ConfigError, FtdataError, Location, TemplateError
from ftdata.guard.limits import (
    LimitExceeded,
    RecordOverLimit,
    checked_size,
    limits,
    output_too_long,
    time_limit,
    too_big,
)


_WIDTH = re.compile(r"%[-+ #0]*(\d+)")


_SIZED = (str, bytes, list, tuple)


def _sized(value: Any) -> bool:
    return isinstance(value, _SIZED)


def _length(value: Any) -> int:
    """Characters of `value` as a template writes it (elements of a list). A str is measured as a str: a
    subclass's own `len` is the template's use of it, not the size check's (`ftdata.chat.traced`)."""
    if isinstance(value, str):
        return str.__len__(value)
    return len(value) if _sized(value) else len(str(value))


def _bounded_join(join: Callable[[Any], Any], seq: Any) -> Any:
    """`~` (Jinja's concatenation): the operands' sizes summed before they are joined."""
    seq = tuple(seq)
    checked_size("a ~ concatenation", sum(map(_length, seq)))
    return join(seq)


def _bounded_concat(parts: Any) -> str:
    """The environment's `concat`: the output of a render, a `{% set %}` block or a macro, counted as it grows."""
    cap, size, out = limits().render_chars, 0, []
    for part in parts:
        size += len(part)
        if size > cap:
            raise output_too_long("the template", cap)
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
        widths = [int(w) for w in _WIDTH.findall(value)] + [
            int(w) for w in re.findall(r"\{[^{}]*:[^{}\d]*(\d+)", value)
        ]
        return len(value) + max(widths, default=0) + sum(map(_length, args))
    return None


@functools.cache
def bounded_code_generator() -> type:
    """Jinja's code generator with `~` routed through the size check (it calls `str_join` directly): the base of
    this sandbox's templates, and of any environment that compiles them further (`ftdata.chat.traced`'s probes)."""
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


# Every name `getattr` finds on a plain dict (its type's and object's): any other name is read as a key.
_DICT_NAMES = frozenset(dir(dict))


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
    def code_generator_class(self) -> type:
        return bounded_code_generator()

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "+":  # chat templates add strings on every turn: the common case first, and cheap
            if (
                isinstance(left, _SIZED)
                and isinstance(right, _SIZED)
                and len(left) + len(right) > (cap := limits().render_chars)
            ):
                raise too_big(f"{type(left).__name__} + {type(right).__name__}", len(left) + len(right), cap)
            return left + right  # what the sandbox's binop_table["+"] does
        cap = limits().render_chars
        if operator == "*":
            seq, n = (left, right) if _sized(left) else (right, left)
            if _sized(seq) and isinstance(n, int) and len(seq) * n > cap:
                raise too_big(f"{type(seq).__name__} * {n}", len(seq) * n, cap)
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            bits = abs(left).bit_length() * right
            if right > 0 and bits > cap:
                raise too_big(f"{left} ** {right}", bits // 3, cap)
        elif operator == "%" and isinstance(left, str):
            widths = [int(w) for w in _WIDTH.findall(left)]
            if widths and max(widths) > cap:
                raise too_big("a % format width", max(widths), cap)
        return super().call_binop(context, operator, left, right)  # type: ignore[misc]  # jinja's sandbox methods are untyped

    def getattr(self, obj: Any, attribute: str) -> Any:
        """`obj.attribute` as the sandbox reads it, without its two exceptions for a plain dict's key: a chat
        template reads `message.role`, `message.content`, `message.tool_calls` on every message of every render
        (a fifth of the Python time of a long agent build). A dict has no attribute of its own (no `__dict__`), so
        a name its type lacks is read as a key, missing or not, exactly as the sandbox reads it."""
        if type(obj) is dict and attribute not in _DICT_NAMES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)  # type: ignore[attr-defined]  # the sandbox's
        return super().getattr(obj, attribute)  # type: ignore[misc]  # jinja's sandbox methods are untyped

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        cap = limits().render_chars
        name = getattr(__obj, "__name__", "a function")
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool) and value > cap:
                raise too_big(f"calling {name} with {value}", value, cap)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and (size := _grown(name, owner, args)) is not None:
            checked_size(f"str.{name}", size)
        out = super().call(__context, __obj, *args, **kwargs)  # type: ignore[misc]  # as above
        if _sized(out) and _length(out) > cap:  # what no check above foresaw: stopped after one step
            raise too_big(f"calling {name}", _length(out), cap)
        return out


def _checked_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A Jinja filter that grows a string (`center`, `indent`, `join`, `replace`, `format`), refused
    when what it would build passes the size limit."""
    context = hasattr(func, "jinja_pass_arg")  # join and replace take the evaluation context first

    def bounded(*args: Any, **kwargs: Any) -> Any:
        value, rest = (args[1], args[2:]) if context else (args[0], args[1:])
        if name == "center":
            width = rest[0] if rest else kwargs.get("width", 80)
            size: int | None = width if isinstance(width, int) else 0
        elif name == "join":
            sep = rest[0] if rest else kwargs.get("d", "")
            size = (
                0
                if kwargs.get("attribute", rest[1] if len(rest) > 1 else None) is not None
                else _grown("join", str(sep), (value,))
            )
        elif name == "indent":
            size = _grown(name, str(value), (rest[0] if rest else kwargs.get("width", 4),))
        else:
            size = _grown(name, str(value), (*rest, *kwargs.values()))
        checked_size(f"the {name} filter", size or 0)
        out = func(*args, **kwargs)
        checked_size(f"the {name} filter", len(out) if _sized(out) else 0)
        return out

    if context:
        bounded.jinja_pass_arg = func.jinja_pass_arg  # type: ignore[attr-defined]  # a filter's marker attribute, copied as Jinja reads it
    return bounded


_GROWING_FILTERS = ("center", "indent", "join", "replace", "format")


def sandbox(**options: Any) -> Any:
    """An immutable Jinja sandbox with the size limits above; `include`/`import`/`extends` find nothing."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # _Bounded's code_generator_class is a property over Environment's class attribute; Jinja reads both alike.
    class BoundedSandbox(_Bounded, ImmutableSandboxedEnvironment):  # type: ignore[override]  # (above)
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

    compile_template.ftdata_bounded = True  # type: ignore[attr-defined]  # a marker attribute on the function: the patch is applied once
    compile_template.original = original  # type: ignore[attr-defined]  # transformers' own, for `chat_environment`
    ctu._compile_jinja_template = compile_template  # type: ignore[assignment]  # its cache wrapper, replaced by ours


# A process that renders many templates in turn (a template matrix, a service of several models) compiles each
# once: 32 held a fifth of the test suite's 175 templates, each compiled five times on average. 256 hold ~10 MB
# (TRL's 72 templates: 2.8 MB).
@functools.lru_cache(maxsize=256)
def _bounded_chat_template(source: str, env: Any) -> Any:
    return _bounded_environment(env).from_string(source)


def bounded_chat_template(source: str) -> Any:
    """`source` compiled as `apply_chat_template` compiles it within `bounded_chat_templates` (the same cached
    template). Raises what Jinja raises on it.

    Raises:
        TemplateError: transformers has no chat-template compile step to take the environment from.
    """
    return _bounded_chat_template(source, _transformers_environment())


def _transformers_environment() -> Any:
    from transformers.utils import chat_template_utils as ctu

    _wrap_chat_compiler()
    original = getattr(ctu._compile_jinja_template, "original", None)
    if original is None:
        raise TemplateError("this transformers has no chat-template compile step (_compile_jinja_template)")
    return original("").environment


def chat_environment(*mixins: type) -> Any:
    """A new environment like the one transformers renders chat templates in (its filters, globals, extensions and
    whitespace options) with the size limits of `sandbox`, and `mixins` before both (`ftdata.chat.traced`).

    Raises:
        TemplateError: transformers has no chat-template compile step to take the environment from.
    """
    return _bounded_environment(_transformers_environment(), mixins)


# The `tojson` outputs of one `ftdata.chat.direct.Direct`'s renders (None outside them), by (id of the value, the
# filter's options): the value and its text.
# A chat template writes the tool schemas and every call's arguments with `tojson` on every render; the values are
# the conversation's template data, which neither ftdata nor the sandbox (it is immutable) changes, and each is held
# here while its text is, so an id names one value.
WRITTEN: contextvars.ContextVar[dict[Any, tuple[Any, str]] | None] = contextvars.ContextVar(
    "ftdata_direct_tojson", default=None
)


def _once(tojson: Any) -> Any:
    """transformers' `tojson` filter, written once per dict or list value within a `Direct` (`WRITTEN`); as it is
    outside one. Every bounded chat environment has it: `Direct` renders the very template that
    `apply_chat_template` renders within `bounded_chat_templates`, one compile for both."""

    def written(value: Any, *args: Any, **kwargs: Any) -> Any:
        memo = WRITTEN.get()
        if memo is None or type(value) not in (dict, list):
            return tojson(value, *args, **kwargs)
        try:
            key = (id(value), args, tuple(sorted(kwargs.items())))
            held = memo.get(key)
        except TypeError:  # an option that is not hashable (a list of separators)
            return tojson(value, *args, **kwargs)
        if held is not None and held[0] is value:
            return held[1]
        text = tojson(value, *args, **kwargs)
        memo[key] = (value, text)
        return text

    return written


def _bounded_environment(env: Any, mixins: tuple[type, ...] = ()) -> Any:
    bounded = type(f"Bounded{type(env).__name__}", (*mixins, _Bounded, type(env)), {})(
        trim_blocks=env.trim_blocks,
        lstrip_blocks=env.lstrip_blocks,
        keep_trailing_newline=env.keep_trailing_newline,
        extensions=[type(e) for e in env.extensions.values()],
    )
    bounded.filters.update(env.filters)
    bounded.globals.update(env.globals)
    for name in _GROWING_FILTERS:
        bounded.filters[name] = _checked_filter(name, env.filters[name])
    if "tojson" in env.filters:
        bounded.filters["tojson"] = _once(env.filters["tojson"])
    return bounded


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
                raise output_too_long(what, lim.render_chars)
            parts.append(part)
    return "".join(parts)


# --- filter expressions ------------------------------------------------------------------------


def compile_filter(expression: str | Callable[[Any], bool] | None) -> Callable[..., bool] | None:
    """A row predicate `keep(row, location=None)` from a callable or a Jinja expression over the row's fields.

    `"not input"` keeps records whose `input` is empty (a seed workflow's filter). The
    expression runs in a sandbox with time and size limits (`ftdata.guard.limits`); a field the
    record lacks is an error naming the record and its fields (write `x is defined and ...`
    for a field only some records have), not a silent "false".

    Raises:
        ConfigError: the expression is invalid, or fails on a record (the message names it).
        RecordOverLimit: one evaluation ran past the time or size limit (a `RecordError` with
            code `over_limit`, naming the record: rejected under on_error="skip").
    """
    if expression is None:
        return None
    if callable(expression):
        user = expression
        return lambda row, location=None: bool(user(row))
    from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError

    try:
        compiled = sandbox(undefined=StrictUndefined).compile_expression(expression)
    except TemplateSyntaxError as exc:
        raise ConfigError(f"filter {expression!r} is not a valid expression: {exc.message}") from None

    def keep(row: Any, location: Location | None = None) -> bool:
        if not isinstance(row, Mapping):
            return True
        where, label = f"{location}: " if location is not None else "", f"filter {expression!r}"
        try:
            with time_limit(limits().filter_seconds, label, limit="filter_seconds"):
                return bool(compiled(**row))
        except LimitExceeded as exc:  # this record made it too slow or too big, not the build
            said = str(exc)
            raise RecordOverLimit(said if said.startswith(label) else f"{label}: {said}", location=location) from None
        except UndefinedError as exc:
            fields = ", ".join(map(str, row)) or "none"
            raise ConfigError(
                f"{where}filter {expression!r}: {exc.message}; the record's fields are {fields}; check the spelling, "
                "or write `FIELD is defined and ...` for a field only some records have"
            ) from None
        except Exception as exc:  # noqa: BLE001 - the user's expression: ZeroDivisionError, SecurityError, ...
            if isinstance(exc, FtdataError):
                raise
            detail = getattr(exc, "message", None) or str(exc)
            raise ConfigError(f"{where}filter {expression!r} failed: {type(exc).__name__}: {detail}") from None

    return keep
