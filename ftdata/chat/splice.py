"""The splice: a batch of plain conversations rendered with the chat template run once per role sequence, not once
per conversation, each text byte-identical to transformers' `apply_chat_template`.

    probe render (once per template, role sequence, generation flag, kwargs and tools):
        messages [user: P0]                  P0 a `Traced` probe content (`ftdata.chat.traced`)
        ──template──▶ '<|im_start|>user\\n' P0 '<|im_end|>\\n<|im_start|>assistant\\n'
                      └── skeleton[0] ───┘      └──────────── skeleton[1] ─────────────┘
    each record:  skeleton[0] + c0 + skeleton[1] + ...   when c0.. answer the template's questions as P0.. did

A skeleton is valid only when it is proven, never assumed:

- the template used each probe only in ways the trace follows (written, concatenated, asked a predicate); any other
  use (trim, split, replace, |tojson, slicing, len, ...) leaves the role sequence to the template;
- every probe was written exactly once, in message order, and its text (quotes, a backslash, `<&>`, a newline,
  edge spaces, non-ASCII: what any transform changes) appears verbatim exactly once in the output;
- the probe render equals `apply_chat_template` of the same texts (so the probe ran as transformers runs it), and a
  second probe set of other lengths and characters gives the same skeleton and the same predicate answers.

A record whose content answers a predicate otherwise (`'</think>' in content` where the probe said no), a
conversation with other fields or non-string contents, and every role sequence without a valid skeleton are
rendered by the template, in one `apply_chat_template` call for the batch, as before.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ftdata.chat import sandbox
from ftdata.chat.traced import Predicate, Traced, probe_environment, tracing, written
from ftdata.guard import limits

__all__ = ["PROBE_SETS", "Skeleton", "Skeletons", "probe_skeleton", "render_all", "splice_all"]

# Two probe sets, message index i: what a template's transform of a content would change (quotes for |tojson and
# escapes, edge spaces for trim, both cases for lower/upper, a newline for indent/split), of other lengths.
PROBE_SETS: tuple[Callable[[int], str], ...] = (
    lambda i: f" '\"x<&>\\\\é\n{i} ",
    lambda i: f"\tZ{i}Ж\\'\"&<>\r\n\tQ ",
)
_KEYS = json.JSONEncoder(ensure_ascii=False, check_circular=False, sort_keys=True)
_RESERVED = ("messages", "tools", "documents", "add_generation_prompt")  # what transformers passes beside kwargs


@dataclass(frozen=True, slots=True)
class Skeleton:
    """What a template writes around the contents of one role sequence: `pieces[i]` before content i, the last
    after them all; a record is spliced when its contents answer every predicate as the probes did."""

    pieces: tuple[str, ...]
    predicates: tuple[Predicate, ...]

    def text(self, contents: Sequence[str]) -> str | None:
        """The render of `contents`, or None when a content answers a predicate otherwise than the probe."""
        for predicate in self.predicates:
            if not predicate.holds(contents):
                return None
        out = [self.pieces[0]]
        for content, piece in zip(contents, self.pieces[1:]):
            out += (content, piece)
        return "".join(out)


_UNKNOWN = object()  # a key not in `Skeletons` (None is a skeleton found impossible)


class Skeletons:
    """The skeletons found (or found impossible: None), by template, kwargs, tools, role sequence and generation
    flag; at most `size`, the oldest forgotten first."""

    def __init__(self, size: int = 64):
        self.size = size
        self._found: dict[Hashable, Skeleton | None] = {}

    def get(self, key: Hashable, make: Callable[[], Skeleton | None]) -> Skeleton | None:
        """The skeleton of `key`, made on first use. Threads share it without a lock: each step is one dict
        operation (two threads may both make a skeleton: the same one), and an eviction another thread's insert
        interrupts is left to that thread."""
        found = self._found.get(key, _UNKNOWN)
        if found is not _UNKNOWN:
            return found  # type: ignore[return-value]  # a Skeleton or None, never the marker
        found = self._found[key] = make()
        while len(self._found) > self.size:
            try:
                self._found.pop(next(iter(self._found)), None)
            except (RuntimeError, StopIteration):  # changed by another thread meanwhile
                break
        return found


@dataclass(frozen=True, slots=True)
class _Template:
    """One batch's template: the tokenizer, the template source, the tools and kwargs as transformers passes them."""

    tokenizer: Any
    source: str
    tools: list[Any] | None
    kwargs: Mapping[str, Any]  # the build's chat_template_kwargs
    variables: dict[str, Any]  # the kwargs over the tokenizer's special tokens: what the template sees
    key: str  # the kwargs and tools as one exact string


def render_all(
    tokenizer: Any,
    conversations: list[list[dict[str, Any]]],
    *,
    generation: bool,
    tools: list[Any] | None,
    kwargs: Mapping[str, Any],
    skeletons: Skeletons,
) -> list[str] | None:
    """Every conversation's text, as `apply_chat_template(conversation, tools=tools, **kwargs)` writes it: spliced
    where a skeleton is proven (`splice_all`), the rest rendered by one template call. None when that call raises
    or a text passes the render size limit (the caller renders one by one, where each error names its record)."""
    texts = splice_all(tokenizer, conversations, generation=generation, tools=tools, kwargs=kwargs, skeletons=skeletons)
    rest = [i for i, text in enumerate(texts) if text is None]
    if rest:
        rendered = _render_batch(tokenizer, [conversations[i] for i in rest], generation, tools, kwargs)
        if rendered is None:
            return None
        for i, text in zip(rest, rendered):
            texts[i] = text
    cap = limits.limits().render_chars
    if any(not isinstance(t, str) or len(t) > cap for t in texts):
        return None
    return texts  # type: ignore[return-value]  # every None was filled above


def splice_all(
    tokenizer: Any,
    conversations: list[list[dict[str, Any]]],
    *,
    generation: bool,
    tools: list[Any] | None,
    kwargs: Mapping[str, Any],
    skeletons: Skeletons,
) -> list[str | None]:
    """Each conversation spliced from its role sequence's skeleton, or None where it is not (see the module)."""
    template = _template(tokenizer, tools, kwargs)
    if template is None:
        return [None] * len(conversations)
    out: list[str | None] = []
    for conversation in conversations:
        plain = _plain(conversation)
        if plain is None:
            out.append(None)
            continue
        roles, contents = plain
        key = (template.source, template.key, roles, generation)
        skeleton = skeletons.get(key, functools.partial(probe_skeleton, template, roles, generation=generation))
        out.append(skeleton.text(contents) if skeleton is not None else None)
    return out


def _template(tokenizer: Any, tools: list[Any] | None, kwargs: Mapping[str, Any]) -> _Template | None:
    """The batch's template and the arguments transformers renders it with; None when they are not JSON data."""
    try:
        source = tokenizer.get_chat_template(None, tools)
        merged = {**tokenizer.special_tokens_map, **kwargs}
        key = _KEYS.encode([merged, tools])
    except (TypeError, ValueError, RecursionError):
        return None
    if not isinstance(source, str) or any(name in merged for name in _RESERVED):
        return None
    return _Template(tokenizer, source, tools, kwargs, merged, key)


def _plain(conversation: Any) -> tuple[tuple[str, ...], list[str]] | None:
    """The role sequence and contents of a conversation of {role, content} messages with string values, else None."""
    if not isinstance(conversation, list) or not conversation:
        return None
    roles, contents = [], []
    for message in conversation:
        if type(message) is not dict or len(message) != 2:
            return None
        role, content = message.get("role"), message.get("content")
        if type(role) is not str or type(content) is not str:
            return None
        roles.append(role)
        contents.append(content)
    return tuple(roles), contents


def probe_skeleton(template: _Template, roles: tuple[str, ...], *, generation: bool) -> Skeleton | None:
    """The skeleton of `roles`, proven by two probe renders (module docstring), or None."""
    found = [_probe(template, roles, generation, texts) for texts in PROBE_SETS]
    if any(f is None for f in found) or any(f != found[0] for f in found):
        return None
    return found[0]


def _probe(
    template: _Template, roles: tuple[str, ...], generation: bool, texts: Callable[[int], str]
) -> Skeleton | None:
    """One probe render: the skeleton it proves, or None."""
    probes = [texts(i) for i in range(len(roles))]
    parts, trace = _traced_render(template, roles, probes, generation)
    if parts is None or trace.fatal or [i for part in parts for i in written(part)] != list(range(len(roles))):
        return None
    text = "".join(parts)  # the characters as written
    plain = [{"role": role, "content": probe} for role, probe in zip(roles, probes)]
    if [text] != _render_batch(template.tokenizer, [plain], generation, template.tools, template.kwargs):
        return None  # the probe did not run as transformers runs the template
    pieces, at = [], 0
    for probe in probes:
        start = text.find(probe, at)
        if start < 0 or text.count(probe) != 1:
            return None
        pieces.append(text[at:start])
        at = start + len(probe)
    pieces.append(text[at:])
    return Skeleton(tuple(pieces), tuple(trace.predicates))


def _traced_render(template: _Template, roles: tuple[str, ...], probes: list[str], generation: bool) -> Any:
    """The output parts of the template rendered on traced probes (None when it raised or a use was fatal), and
    the trace. The variables are transformers' (`render_jinja_template`): messages, tools, documents, the flag,
    the special tokens and kwargs."""
    compiled = _compiled(template.source)
    messages = [{"role": r, "content": Traced(p, (i,))} for i, (r, p) in enumerate(zip(roles, probes))]
    variables: dict[str, Any] = {"messages": messages, "tools": template.tools, "documents": None}
    variables |= {"add_generation_prompt": generation, **template.variables}
    with tracing() as trace:
        try:
            with limits.time_limit(limits.limits().render_seconds, "the chat template"):
                parts = list(compiled.root_render_func(compiled.new_context(variables)))
        except Exception:  # noqa: BLE001 (a fatal use, the template's own error, a limit: the template renders it)
            return None, trace
    return parts, trace


@functools.lru_cache(maxsize=16)
def _compiled(source: str) -> Any:
    return probe_environment().from_string(source)


def _render_batch(
    tokenizer: Any,
    conversations: list[list[dict[str, Any]]],
    generation: bool,
    tools: list[Any] | None,
    kwargs: Mapping[str, Any],
) -> list[str] | None:
    """`conversations` rendered by one `apply_chat_template` call within the render limits, as TRL's trainers
    render a batch of prompts; None when the template raises or a limit is passed."""
    try:
        seconds = limits.limits().render_seconds * len(conversations)
        with limits.time_limit(seconds, "the chat template"), sandbox.bounded_chat_templates():
            texts = tokenizer.apply_chat_template(
                conversations, tools=tools, tokenize=False, add_generation_prompt=generation, **kwargs
            )
    except Exception:  # noqa: BLE001 (rendered again one by one, where the error names its record)
        return None
    return texts if isinstance(texts, list) else None
