"""The chat renderer: a tokenizer's own chat template bound to the build's kwargs, called per conversation within
the time and size limits, and the scope (`shared_renders`) in which one unit of work renders each prompt once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from ftdata.chat import prefixes, sandbox, splice
from ftdata.chat.direct import Direct
from ftdata.chat.prefixes import Prefixes
from ftdata.chat.contents import STRING, ContentForm, as_parts, collapse, contents_of, media_count
from ftdata.errors import Location, TemplateError
from ftdata.guard import limits

__all__ = ["Bound", "ChatRenderer", "shared_renders"]


# The renders of one unit of work (the sides of one preference pair, the rows of one record), by their
# arguments, and whether renders without the generation prompt are kept too; None outside one. A context
# variable: each build thread has its own, so a unit's renders are never another thread's.
_SHARED: ContextVar[tuple[dict[tuple[str, ...], str], bool] | None] = ContextVar("ftdata_shared_renders", default=None)


@contextmanager
def shared_renders(*, every: bool = False) -> Iterator[None]:
    """Inference prompts (generation=True renders) inside are rendered once per distinct set of arguments:
    the two sides of a preference pair have the same prompt, and each side's rule renders its history
    turns' prompts, which are the other side's too. `every`: every render is kept (a multi-turn record's
    history check renders each trained turn as the last one, and the rows it splits into render them
    again). Scoped to the block: nothing is served from one record to another."""
    token = _SHARED.set(({}, every))
    try:
        yield
    finally:
        _SHARED.reset(token)


# One encoder for every key: `json.dumps` with options builds a new one per call. No circularity check
# (half the cost): a render's arguments are read from data, and a cycle ends in RecursionError, not shared.
_KEYS = json.JSONEncoder(ensure_ascii=False, check_circular=False)


def _render_key(
    messages: Any, generation: bool, tools: Any, kwargs: Any, known: dict[int, tuple[Any, str]] | None = None
) -> tuple[str, ...] | None:
    """The arguments of a render as exact strings (JSON keeps str, int, float, bool and None apart and keys in
    order): each message's, then `generation`'s, `tools`' and `kwargs`'; None for arguments JSON does not write (a
    render that is then not shared).

    `known`: values already written (id -> (value, its JSON)): a long conversation's many renders write each message
    and its tool schemas once, and its keys hash in time linear in their messages (a string caches its hash; one
    string of the whole conversation per render was hashed, and built, anew: 14% of a 110 KB agent build)."""
    try:
        parts = [_json(m, known) for m in messages]
        parts += (_KEYS.encode(generation), _json(tools, known), _KEYS.encode(kwargs))
        return tuple(parts)
    except (TypeError, ValueError, RecursionError):
        return None


def _json(value: Any, known: dict[int, tuple[Any, str]] | None) -> str:
    held = known.get(id(value)) if known is not None else None
    return held[1] if held is not None and held[0] is value else _KEYS.encode(value)


def _written(values: list[Any]) -> dict[int, tuple[Any, str]]:
    """Each value's JSON (a conversation's messages, its tools), by id, for `_render_key`; one JSON does not write
    is left out."""
    out = {}
    for v in values:
        try:
            out[id(v)] = (v, _KEYS.encode(v))
        except (TypeError, ValueError, RecursionError):
            continue
    return out


class _Naming:
    """'the chat template on record LOCATION', written out only for an error: formatting a location on every
    render cost more than the time limit around it."""

    __slots__ = ("location",)

    def __init__(self, location: Location | None):
        self.location = location

    def __str__(self) -> str:
        return "the chat template" + (f" on record {self.location}" if self.location is not None else "")


class ChatRenderer:
    """The tokenizer's own chat template, called as `render(messages, generation=..., tools=...)`.

    `kwargs` (the build's `chat_template_kwargs`) go to every render; a call's own `kwargs`
    (a record's `template_kwargs`) are merged over them: the record wins.
    """

    def __init__(
        self,
        tokenizer: Any,
        kwargs: Mapping[str, Any] | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ):
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; "
                "pass template='alpaca' (or another prompt template)"
            )
        self.tokenizer = tokenizer
        self.kwargs = dict(kwargs or {})
        self.tools = list(tools) if tools else None  # probes only: a render's own `tools` win
        self.contents = (
            STRING  # string contents, or lists of parts for templates that read only those (chat/contents.py)
        )
        self.contents = contents_of(self)
        self.skeletons = splice.Skeletons()  # what `render_all` splices, per role sequence

    def __call__(
        self,
        messages: list[dict[str, Any]],
        *,
        generation: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        location: Location | None = None,
        direct: Direct | None = None,
        known: dict[int, tuple[Any, str]] | None = None,
    ) -> str:
        """The rendered text, within the time and size limits of `ftdata.guard.limits`. `direct` and `known`:
        the template data and JSON of the conversation `messages` come from, built once (`bind`).

        Raises:
            TemplateError: the template raised.
            LimitExceeded: the render ran too long or built too much; names `location`.
        """
        unit = _SHARED.get()
        # Only prompts (generation=True) repeat within a pair: its sides' conversations differ in their last turn.
        key = (
            _render_key(messages, generation, tools, kwargs, known)
            if unit is not None and (generation or unit[1])
            else None
        )
        if key is not None and key in unit[0]:  # type: ignore[index]  # key is set only when unit is
            return unit[0][key]  # type: ignore[index]  # as above
        text = None
        if direct is not None and self.contents.form_of(messages) is not ContentForm.PARTS:
            text = direct(messages, generation=generation, what=_Naming(location))
        if text is None:
            text = self._render(messages, generation=generation, tools=tools, kwargs=kwargs, location=location)
        if key is not None:
            unit[0][key] = text  # type: ignore[index]  # as above
        return text

    def bind(
        self,
        msgs: list[dict[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        location: Location | None = None,
    ) -> Bound:
        """`render(messages, generation=False)`: `self(messages, generation=..., tools=..., kwargs=..., location=...)`
        for the many renders of one conversation `msgs` (its prefixes, copies with some messages changed), the
        template data of each of its messages built once (`ftdata.chat.direct`): the same text."""
        return Bound(self, msgs, tools=tools, kwargs=kwargs, location=location)

    def render_all(self, conversations: list[list[dict[str, Any]]], *, generation: bool) -> list[str] | None:
        """Every conversation rendered as TRL's trainers render a batch of prompts: each the text
        `self(conversation, generation=...)` gives (one compiled template, the same kwargs and tools), spliced
        from its role sequence's proven skeleton (`ftdata.chat.splice`) or rendered by one `apply_chat_template`
        call, each within the size limit. None when the template raises, a limit is passed, or a conversation
        holds media: rendered one by one, each says why.
        """
        if not conversations or any(self.contents.form_of(c) is ContentForm.PARTS for c in conversations):
            return None
        return splice.render_all(
            self.tokenizer,
            conversations,
            generation=generation,
            tools=self.tools,
            kwargs=self.kwargs,
            skeletons=self.skeletons,
        )

    def _render(
        self,
        messages: list[dict[str, Any]],
        *,
        generation: bool,
        tools: Sequence[Mapping[str, Any]] | None,
        kwargs: Mapping[str, Any] | None,
        location: Location | None,
    ) -> str:
        what = _Naming(location)
        images = 0
        if self.contents.form_of(messages) is ContentForm.PARTS:  # LLaVA-Next, Idefics3, records with media: each
            images, messages = media_count(messages), as_parts(messages)  # image back to one MEDIA after
        try:
            with limits.time_limit(limits.limits().render_seconds, what), sandbox.bounded_chat_templates():
                text = self.tokenizer.apply_chat_template(
                    messages,
                    tools=list(tools) if tools else self.tools,
                    tokenize=False,
                    add_generation_prompt=generation,
                    **{**self.kwargs, **(kwargs or {})},
                )
        except limits.LimitExceeded as exc:
            raise exc if str(exc).startswith(str(what)) else limits.LimitExceeded(f"{what}: {exc}") from None
        except Exception as exc:  # templates raise jinja2 errors, TypeErrors, KeyErrors...
            roles = ",".join(m["role"] for m in messages)
            raise TemplateError(f"chat template raised for roles [{roles}]: {exc}") from None
        text = limits.check_size(text if isinstance(text, str) else "".join(text), what)
        return collapse(text, self.contents, images) if images else text


class Bound:
    """A `ChatRenderer` bound to one conversation (`ChatRenderer.bind`): called as `render(messages, generation=...)`
    on it, its prefixes and copies of it; `prefixes(text)`: its prefix renders read off its render A (`text`),
    where the template proves them (`ftdata.chat.prefixes`)."""

    def __init__(
        self,
        renderer: ChatRenderer,
        msgs: list[dict[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None,
        kwargs: Mapping[str, Any] | None,
        location: Location | None,
    ):
        self._renderer, self._msgs, self._tools, self._kwargs, self._location = renderer, msgs, tools, kwargs, location
        self._direct = Direct(
            renderer.tokenizer,
            msgs,
            tools=list(tools) if tools else renderer.tools,
            kwargs={**renderer.kwargs, **(kwargs or {})},
        )
        self._known: dict[int, tuple[Any, str]] | None = None  # the messages' and tools' JSON, for keys: when asked

    def __call__(self, messages: list[dict[str, Any]], *, generation: bool = False) -> str:
        if self._known is None and _SHARED.get() is not None:
            self._known = _written([*self._msgs, *([self._tools] if self._tools is not None else [])])
        return self._renderer(
            messages,
            generation=generation,
            tools=self._tools,
            kwargs=self._kwargs,
            location=self._location,
            direct=self._direct,
            known=self._known,
        )

    def prefixes(self, text: str) -> Prefixes | None:
        """`render(msgs[:n], generation=g)` for the n that one watched render of the conversation proves (A is
        `text`); None where none is (the template's shape, media, a render left to `apply_chat_template`)."""
        msgs = self._msgs
        if self._renderer.contents.form_of(msgs) is ContentForm.PARTS:
            return None
        what = _Naming(self._location)
        return prefixes.read(
            text, msgs, self, lambda lies: self._direct.watched(msgs, lies=lies, what=what), self._direct.passes_apart
        )
