"""Traced contents: strings that record every way a chat template looks at them (`ftdata.chat.splice`'s proof).

A probe content is a `Traced` string. While a template renders it, each use is recorded in the current `Trace`:

    {{ content }}                        write      the text reaches the output as given
    'a' + content, content ~ 'a'         concat     a Traced string of both (still traced); written when output
    {% if content %}, '</think>' in c,   predicate  an assumption with the probe's answer: a record's content
    c.startswith('x'), c == ''                      must answer the same to be spliced
    anything else (trim, split, replace, fatal      the text may have been changed or read: the role sequence
    lower, slicing, len, |tojson, hash...)          is not spliced (the use also ends the render)

Python reads a str subclass's characters without asking it in a few places ("".join, json.dumps, `x in 'lit'`,
str methods given it as an argument), so the environment a probe renders in (`probe_environment`) routes those
through recorded calls: joins and block outputs stay traced, `in` is a predicate, and a filter, test or call that
is given a traced value (anywhere inside its arguments) is fatal unless it is known not to read text.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NoReturn

from ftdata.chat import sandbox
from ftdata.guard.limits import checked_size

__all__ = ["Ask", "Form", "Predicate", "Trace", "Traced", "UnspliceableUse", "probe_environment", "tracing", "written"]


class Ask(Enum):
    """What a template asked about a content (a `Predicate`)."""

    NONEMPTY = "nonempty"  # {% if content %}
    CONTAINS = "contains"  # 'x' in content
    WITHIN = "within"  # content in 'xyz'
    STARTSWITH = "startswith"
    ENDSWITH = "endswith"
    EQUALS = "equals"  # content == 'x' (and !=)


Form = tuple[str | int, ...]  # a traced text: literal strings and message indices (their contents), in order


@dataclass(frozen=True, slots=True)
class Predicate:
    """A question the template asked about a text built from contents (`form`), and the probes' answer."""

    form: Form
    ask: Ask
    arg: str | tuple[str, ...]
    answer: bool

    def holds(self, contents: Sequence[str]) -> bool:
        """Whether the text `form` builds from `contents` answers as the probes' did."""
        form = self.form
        text = contents[form[0]] if len(form) == 1 and isinstance(form[0], int) else _text(form, contents)
        return _ANSWER[self.ask](text, self.arg) is self.answer


def _text(form: Form, contents: Sequence[str]) -> str:
    return "".join(contents[part] if isinstance(part, int) else part for part in form)


_ANSWER = {
    Ask.NONEMPTY: lambda c, _: bool(c),
    Ask.CONTAINS: lambda c, a: a in c,
    Ask.WITHIN: lambda c, a: c in a,
    Ask.STARTSWITH: lambda c, a: c.startswith(a),
    Ask.ENDSWITH: lambda c, a: c.endswith(a),
    Ask.EQUALS: lambda c, a: c == a,
}


@dataclass
class Trace:
    """What one probe render recorded: the fatal uses and the predicates (in order, without repeats)."""

    fatal: list[str] = field(default_factory=list)
    predicates: list[Predicate] = field(default_factory=list)

    def ask(self, predicate: Predicate) -> bool:
        if predicate not in self.predicates:
            self.predicates.append(predicate)
        return predicate.answer


class UnspliceableUse(Exception):
    """A template used a probe content in a way a splice cannot follow (recorded in the trace too)."""


_TRACE: ContextVar[Trace | None] = ContextVar("ftdata_splice_trace", default=None)


@contextmanager
def tracing() -> Iterator[Trace]:
    """Record the uses of every `Traced` string inside the block into the yielded trace."""
    trace = Trace()
    token = _TRACE.set(trace)
    try:
        yield trace
    finally:
        _TRACE.reset(token)


def _fatal(use: str) -> NoReturn:
    trace = _TRACE.get()
    if trace is not None:
        trace.fatal.append(use)
    raise UnspliceableUse(use)


def _form(value: Any) -> Form:
    """What a traced string is built of (empty for a plain string)."""
    return object.__getattribute__(value, "_form") if isinstance(value, Traced) else ()


def _parts(value: Any) -> tuple[int, ...]:
    """The probe indices a string holds, in order (none for a plain string)."""
    return tuple(part for part in _form(value) if isinstance(part, int))


def _joined(items: list[str]) -> str:
    """`items` concatenated; Traced when one of them is (its form: the items' forms and literals, in order)."""
    form = tuple(part for item in items for part in (_form(item) or ((str.__str__(item),) if item else ())))
    text = "".join(items)  # reads the characters as they are, asks no item anything
    return Traced(text, form) if any(isinstance(part, int) for part in form) else text


def written(value: Any) -> tuple[int, ...]:
    """The probes an output part writes (a part yielded by the template's root render function)."""
    return _parts(value)


def _fatal_dunder(name: str) -> Any:
    def use(self: Traced, *args: Any) -> Any:
        _fatal(f"{name} of a content")

    use.__name__ = name
    return use


class Traced(str):
    """A content (or text built from contents by concatenation) whose every use is recorded (module docstring)."""

    def __new__(cls, text: str, form: Form) -> Traced:
        self = super().__new__(cls, text)
        object.__setattr__(self, "_form", form)
        return self

    def _ask(self, ask: Ask, arg: Any, answer: bool) -> bool:
        plain = isinstance(arg, str) or (isinstance(arg, tuple) and all(isinstance(a, str) for a in arg))
        if not plain or _parts(arg) or (isinstance(arg, tuple) and any(map(_parts, arg))):
            _fatal(f"asks {ask.value} of a content with {type(arg).__name__}")
        arg = str.__str__(arg) if isinstance(arg, str) else tuple(map(str.__str__, arg))
        trace = _TRACE.get()
        return trace.ask(Predicate(_form(self), ask, arg, answer)) if trace is not None else answer

    def __getattribute__(self, name: str) -> Any:
        if name == "__class__":  # isinstance and ABC checks: reads no text
            return Traced
        if name in ("startswith", "endswith"):
            ask = Ask.STARTSWITH if name == "startswith" else Ask.ENDSWITH
            method = getattr(str, name)

            def predicate(prefix: Any, *bounds: Any) -> bool:
                if bounds:
                    _fatal(f"{name} of a content with bounds")
                return self._ask(ask, prefix, method(self, prefix))

            return predicate
        if name == "_ask":
            return object.__getattribute__(self, name)
        _fatal(f"reads .{name} of a content")

    def __bool__(self) -> bool:
        return self._ask(Ask.NONEMPTY, "", str.__len__(self) > 0)

    def __contains__(self, item: Any) -> bool:
        if not isinstance(item, str):
            _fatal("`in` a content with a non-string")
        return self._ask(Ask.CONTAINS, item, str.__contains__(self, item))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, str):
            return NotImplemented
        return self._ask(Ask.EQUALS, other, str.__eq__(self, other))

    def __ne__(self, other: object) -> bool:
        if not isinstance(other, str):
            return NotImplemented
        return not self._ask(Ask.EQUALS, other, str.__eq__(self, other))

    def __add__(self, other: Any) -> Any:
        return _joined([self, other]) if isinstance(other, str) else NotImplemented

    def __radd__(self, other: Any) -> Any:
        return _joined([other, self]) if isinstance(other, str) else NotImplemented

    # Every other way Python asks a str for its text or its shape: fatal (`__str__` too: a filter's `str(content)`
    # copies the text untraced; the output's `str()` goes through `_Output`). Defined with the class, not patched.
    __str__ = _fatal_dunder("__str__")
    __repr__ = _fatal_dunder("__repr__")
    __format__ = _fatal_dunder("__format__")
    __hash__ = _fatal_dunder("__hash__")
    __len__ = _fatal_dunder("__len__")
    __iter__ = _fatal_dunder("__iter__")
    __getitem__ = _fatal_dunder("__getitem__")
    __mod__ = _fatal_dunder("__mod__")
    __rmod__ = _fatal_dunder("__rmod__")
    __mul__ = _fatal_dunder("__mul__")
    __rmul__ = _fatal_dunder("__rmul__")
    __lt__ = _fatal_dunder("__lt__")
    __le__ = _fatal_dunder("__le__")
    __gt__ = _fatal_dunder("__gt__")
    __ge__ = _fatal_dunder("__ge__")
    __reduce__ = _fatal_dunder("__reduce__")
    __reduce_ex__ = _fatal_dunder("__reduce_ex__")
    __getnewargs__ = _fatal_dunder("__getnewargs__")


class _Output:
    """A traced value on its way to the output: `str()` of it is the value itself, still traced (`finalize`)."""

    __slots__ = ("value",)

    def __init__(self, value: Traced):
        self.value = value

    def __str__(self) -> str:
        return self.value


def _finalize(value: Any) -> Any:
    """The environment's `finalize`: every `{{ }}` output passes here before `str()`."""
    return _Output(value) if isinstance(value, Traced) else value


def _holds(value: Any, depth: int = 0) -> bool:
    """Whether a traced string is anywhere in `value` (strings, lists, tuples, dicts; 8 levels)."""
    if isinstance(value, Traced):
        return True
    if depth > 8 or isinstance(value, str):
        return False
    if isinstance(value, (list, tuple)):
        return any(_holds(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return any(_holds(k, depth + 1) or _holds(v, depth + 1) for k, v in value.items())
    return False


# Filters and tests that read no text of what they are given (they select, count lists, or pass values on; what
# they do to a content itself goes through its recorded methods). Any other, given a traced value, is fatal.
_BLIND_FILTERS = frozenset(
    "attr batch count d default first items last length list map reject rejectattr reverse select selectattr "
    "slice string".split()
)
_BLIND_TESTS = frozenset(
    "boolean callable defined eq equalto false float integer iterable mapping ne none number sameas sequence "
    "string true undefined == !=".split()
)
_CLOCKS = ("strftime_now", "lipsum")  # globals whose result changes between calls: a skeleton would freeze it


def _watched(kind: str, name: str, func: Any, blind: frozenset[str]) -> Any:
    def watched(*args: Any, **kwargs: Any) -> Any:
        if name not in blind and (_holds(args) or _holds(kwargs)):
            _fatal(f"the {name} {kind} on a content")
        return func(*args, **kwargs)

    if hasattr(func, "jinja_pass_arg"):
        watched.jinja_pass_arg = func.jinja_pass_arg  # type: ignore[attr-defined]  # Jinja's marker, copied
    return watched


class _ProbeEnvironment:
    """Mixin of `probe_environment`: the sandbox's operations, with traced values kept traced or recorded."""

    @property
    def code_generator_class(self) -> type:
        return _probe_code_generator()

    @staticmethod
    def concat(parts: Any) -> str:
        """Output of a `{% set %}` block, a macro, a render: traced when a part is."""
        parts = list(parts)
        checked_size("the template", sum(map(str.__len__, parts)))
        return _joined(parts)

    @staticmethod
    def bounded_join(join: Any, seq: Any) -> str:
        """`~`: each operand as `str()` writes it (a traced one as it is), joined; traced when one is."""
        items = [v if isinstance(v, str) else str(v) for v in seq]
        if join is not _STR_JOIN and any(map(_parts, items)):
            _fatal("a ~ concatenation that escapes a content")
        checked_size("a ~ concatenation", sum(map(str.__len__, items)))
        return _joined(items)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "+" and isinstance(left, str) and isinstance(right, str) and (_parts(left) or _parts(right)):
            checked_size("str + str", str.__len__(left) + str.__len__(right))
            return left + right
        return super().call_binop(context, operator, left, right)  # type: ignore[misc]  # the sandbox's

    def getitem(self, obj: Any, argument: Any) -> Any:
        if _parts(argument):  # a content as a key or attribute name: looked up by its characters
            _fatal("a content used as a key")
        return super().getitem(obj, argument)  # type: ignore[misc]  # the sandbox's

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if any(__obj is self.globals.get(name) for name in _CLOCKS):  # type: ignore[attr-defined]  # Environment's
            _fatal(f"calls {getattr(__obj, '__name__', 'a clock')}: the render changes over time")
        given = {k: v for k, v in kwargs.items() if k not in ("_loop_vars", "_block_vars")}  # Jinja's own
        if not _blind_call(self, __obj) and (_holds(args) or _holds(given)):
            _fatal(f"passes a content to {getattr(__obj, '__name__', 'a function')}")
        return super().call(__context, __obj, *args, **kwargs)  # type: ignore[misc]  # the sandbox's

    def probe_in(self, item: Any, container: Any, negate: bool) -> bool:
        """`item in container` (the code generator's `in` and `not in`), recorded where it reads a content."""
        if isinstance(container, str) and _parts(item):
            if not isinstance(container, Traced):
                found = item._ask(Ask.WITHIN, container, str.__contains__(container, item))
                return found is not negate
            _fatal("`in` between two contents")
        return (item in container) is not negate


def _blind_call(env: Any, obj: Any) -> bool:
    """Calls that read no text of their arguments: macros (their bodies are traced), namespace() and dict()."""
    from jinja2.runtime import Macro
    from jinja2.utils import Namespace

    if isinstance(obj, Macro) or obj is env.globals.get("dict"):
        return True
    if getattr(obj, "__name__", "") == "get" and type(getattr(obj, "__self__", None)) is dict:
        return True  # a message's .get(key, default): a value passed on, no text read
    return isinstance(obj, type) and issubclass(obj, Namespace)


def probe_environment() -> Any:
    """A bounded copy of transformers' chat environment in which traced contents stay traced (module docstring)."""
    env = sandbox.chat_environment(_ProbeEnvironment)
    env.finalize = _finalize  # set after __init__, which sets it; read when a template compiles
    for name, func in list(env.filters.items()):
        env.filters[name] = _watched("filter", name, func, _BLIND_FILTERS)
    for name, func in list(env.tests.items()):
        env.tests[name] = _watched("test", name, func, _BLIND_TESTS)
    return env


def _str_join() -> Any:
    from jinja2.runtime import str_join

    return str_join


_STR_JOIN = _str_join()


_GENERATOR: list[type] = []


def _probe_code_generator() -> type:
    """The sandbox's code generator with `a in b` and `a not in b` compiled to `environment.probe_in`."""
    if _GENERATOR:
        return _GENERATOR[0]
    from jinja2.exceptions import TemplateSyntaxError

    base: Any = sandbox.bounded_code_generator()

    class ProbeCodeGenerator(base):
        def visit_Compare(self, node: Any, frame: Any) -> None:
            ops = [op.op for op in node.ops]
            if not {"in", "notin"} & set(ops):
                return super().visit_Compare(node, frame)
            if len(ops) != 1:
                raise TemplateSyntaxError("a chained `in` comparison is not traced", node.lineno)
            self.write("environment.probe_in(")
            self.visit(node.expr, frame)
            self.write(", ")
            self.visit(node.ops[0].expr, frame)
            self.write(f", {ops[0] == 'notin'})")
            return None

    _GENERATOR.append(ProbeCodeGenerator)
    return ProbeCodeGenerator
