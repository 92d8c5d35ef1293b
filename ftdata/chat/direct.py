"""One conversation's renders by its chat template run directly: what `apply_chat_template` hands the template,
built once per message instead of once per render.

A long record is rendered many times over (its inference prompts and history turns are checked on prefixes,
its turns located on sentinel copies), each render a whole-conversation call of

    tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=g, **kwargs)

whose work outside Jinja is half a render's: transformers picks the template (`get_chat_template(None, tools)`),
normalises every message (`_normalize_chat_messages`: objects to dicts, None values dropped), rebuilds messages,
tools and kwargs out of plain JSON types (`_plain_template_data`), copies a reasoning under its other names
(`_alias_reasoning_fields`), and renders the compiled template with `messages`, `tools`, `documents=None`,
`add_generation_prompt` and the tokenizer's special tokens overlaid by the kwargs. Every step before the render
works message by message, so `Direct` runs those same transformers functions on each message once (a message object
of the bound conversation) and hands the template what transformers would: the same text, proven on every stored
template and TRL's (tests/chat/test_direct.py), in one render instead of the conversion and the render.

Anything it cannot stand behind is left to `apply_chat_template` (`__call__` answers None): a tokenizer whose
`apply_chat_template` is not transformers' own (a processor, Mistral's), a transformers without those steps, a
kwarg that `apply_chat_template` takes for itself or that shadows a template variable, a tool that is not a dict, a
message that is not one, an empty conversation, and every render that raises (the call then raises with its own
message). The bound messages are read, never changed: ftdata builds new message dicts for every change it renders.
Those copies' data is kept as well (a long record's sentinel renders hand the same copies to two or three renders:
a quarter of the conversions of 200 agent examples), and served again only while a copy holds the very values it
held.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ftdata.chat import sandbox
from ftdata.chat.prefixes import Watched, loop_shaped, passes_apart
from ftdata.guard import limits

__all__ = ["Direct"]

_VARIABLES = ("messages", "tools", "documents", "add_generation_prompt")  # what transformers passes beside kwargs


@functools.cache
def _steps() -> tuple[Any, Any, Any, frozenset[str], Any] | None:
    """transformers' own conversion steps, `apply_chat_template`'s named parameters and the function itself; None
    where this transformers lacks one of them."""
    try:
        from transformers.tokenization_utils_base import PreTrainedTokenizerBase
        from transformers.utils import chat_template_utils as ctu

        steps = (ctu._normalize_chat_messages, ctu._plain_template_data, ctu._alias_reasoning_fields)
        named = inspect.signature(PreTrainedTokenizerBase.apply_chat_template).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return None
    own = frozenset(n for n, p in named.items() if p.kind is not inspect.Parameter.VAR_KEYWORD)
    return (*steps, own, PreTrainedTokenizerBase.apply_chat_template)


def _same_items(message: dict[str, Any], items: tuple[tuple[Any, Any], ...]) -> bool:
    """Whether `message` holds exactly `items` (each key the very value it held)."""
    return len(message) == len(items) and all(message.get(k, _MISSING) is v for k, v in items)


_MISSING = object()  # no value a message holds


class Direct:
    """`apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=g, **kwargs)` for messages
    that hold those of `msgs` (a prefix, or copies with some messages changed), with the template data of each of
    `msgs` built once. `__call__` answers None where it does not render (see the module)."""

    def __init__(self, tokenizer: Any, msgs: Sequence[Any], *, tools: list[Any] | None, kwargs: Mapping[str, Any]):
        self._compiled: Any = None
        self._data: dict[int, tuple[Any, dict[str, Any]]] = {}  # id(message) -> (message, its template data)
        # The copies rendered (a message of `msgs` with a piece replaced by a sentinel), by id: (copy, its items as
        # rendered, its template data); served again only while each of its keys holds the very value it held.
        self._copies: dict[int, tuple[Any, tuple[tuple[Any, Any], ...], dict[str, Any]]] = {}
        steps = _steps()
        if steps is None:
            return
        normalize, plain, alias, own, apply = steps
        if getattr(type(tokenizer), "apply_chat_template", None) is not apply:
            return
        if any(name in own for name in kwargs) or (tools is not None and not all(type(t) is dict for t in tools)):
            return
        try:
            source = tokenizer.get_chat_template(None, tools)
            variables = plain({**tokenizer.special_tokens_map, **kwargs})
            compiled = sandbox.bounded_chat_template(source)  # what `apply_chat_template` renders, bounded
            tool_data = plain(tools)
        except Exception:  # noqa: BLE001 (no template, a compile error: apply_chat_template says so)
            return
        if not isinstance(source, str) or any(name in variables for name in _VARIABLES):
            return
        self._steps = (normalize, plain, alias)
        self._variables = {"tools": tool_data, "documents": None, **variables}
        self._compiled = compiled
        self._source = source
        self._written: dict[Any, tuple[Any, str]] = {}
        for m in msgs:
            data = self._message(m)
            if data is not None:
                self._data[id(m)] = (m, data)

    def _message(self, message: Any) -> dict[str, Any] | None:
        """The template data transformers builds of one message; None where it is not a dict."""
        if not isinstance(message, dict):
            return None
        normalize, plain, alias = self._steps
        try:
            (data,) = alias([plain(normalize([message])[0])])
        except Exception:  # noqa: BLE001 (apply_chat_template raises on it with its own message)
            return None
        return data if isinstance(data, dict) else None

    def __call__(self, messages: Sequence[Any], *, generation: bool, what: object) -> str | None:
        """The render of `messages`, as `apply_chat_template` writes it within the render limits of
        `ChatRenderer`; None where it is left to `apply_chat_template`.

        Raises:
            LimitExceeded: the render ran too long or built too much (named `what`, as `ChatRenderer` names it).
        """
        data = self._template_data(messages)
        return None if data is None else self._render(data, generation, what)

    def watched(self, messages: Sequence[Any], *, lies: bool = False, what: object) -> Watched | None:
        """`messages` rendered (without the generation prompt) through a `Watched` sequence, for
        `ftdata.chat.prefixes`: its record of what the template asked of them, with the text it wrote
        (`Watched.text`; `lies`: each look ahead told there is no next message); None where the template is not
        `loop_shaped`, the render is left to `apply_chat_template`, or it passes a limit (the prefixes are then
        rendered one by one)."""
        data = self._template_data(messages)
        if data is None or not loop_shaped(self._compiled.environment, self._source):
            return None
        seen = Watched(data, self._compiled.root_render_func.__code__, lies=lies)
        try:
            seen.text = self._render(seen, False, what, seen)
        except limits.LimitExceeded:
            return None
        return seen if seen.text is not None else None

    def passes_apart(self) -> bool:
        """Whether the template's loop leaves nothing from one pass to the next (`prefixes.passes_apart`)."""
        return self._compiled is not None and passes_apart(self._compiled.environment, self._source)

    def _template_data(self, messages: Sequence[Any]) -> list[dict[str, Any]] | None:
        """What transformers hands the template as `messages`; None where this render is left to it."""
        if self._compiled is None or not messages:
            return None
        data = []
        for m in messages:
            held = self._data.get(id(m))
            if held is not None and held[0] is m:
                one = held[1]
            elif (copy := self._copies.get(id(m))) is not None and copy[0] is m and _same_items(m, copy[1]):
                one = copy[2]
            else:  # a copy with a piece replaced: kept with its items, as a record's sentinel renders share copies
                made = self._message(m)
                if made is None:
                    return None
                self._copies[id(m)] = (m, tuple(m.items()), made)  # held: its id names it while it is kept
                one = made
            data.append(one)
        return data

    def _render(self, data: Sequence[Any], generation: bool, what: object, seen: Watched | None = None) -> str | None:
        """The template rendered with `data` as `messages`; None where it raises. `seen`: kept told how much text
        has been written (`Watched.at`) as each part is."""
        compiled = self._compiled
        variables = {"messages": data, "add_generation_prompt": generation, **self._variables}
        token = sandbox.WRITTEN.set(self._written)
        try:
            with limits.time_limit(limits.limits().render_seconds, what):
                # `Template.render` minus its traceback rewriting: the same parts joined by the same `concat`.
                parts = compiled.root_render_func(compiled.new_context(variables))
                text = compiled.environment.concat(parts if seen is None else _counted(parts, seen))
        except limits.LimitExceeded as exc:
            raise exc if str(exc).startswith(str(what)) else limits.LimitExceeded(f"{what}: {exc}") from None
        except Exception:  # noqa: BLE001 (the template raised: apply_chat_template raises it with its own message)
            return None
        finally:
            sandbox.WRITTEN.reset(token)
        return limits.check_size(text, what) if isinstance(text, str) else None


def _counted(parts: Iterator[str], seen: Watched) -> Iterator[str]:
    """`parts`, with `seen.at` the length of those handed on before the next is asked for."""
    for part in parts:
        yield part
        seen.at += len(part)
