"""Where a template writes one piece of one message, found by structure, never by searching its text.

A message's text may occur anywhere in a rendering: inside the template's own markup (a user
who writes "ink" is inside `<think>`, "TEXT" inside `<|START_TEXT|>`) or in other messages.
So a piece is located by rendering once more with only that piece replaced by a private-use
sentinel: the two renders differ exactly where the template wrote it.

    A = ...<|im_start|>user\\nink<|im_end|>\\n<|im_start|>assistant\\n<think></think>4...
    B = ...<|im_start|>user\\n\\ue000<|im_end|>\\n<|im_start|>assistant\\n<think></think>4...
                             ^^^ changed_span(A, B): the user's text, and nothing else

An assistant turn's pieces (content, reasoning, each call's arguments) are found the same way, in
one render with each replaced by its own sentinel (`find_pieces`, for a `Chat`: the rendering whose
turns are located).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ftdata.chat.prefixes import Prefixes
from ftdata.errors import Location, TemplateError, UnusableRecord
from ftdata.outcomes import RejectCode
from ftdata.records.tools import writes

Render = Callable[..., str]


class TemplateRender(Protocol):
    """A chat template bound to its tokenizer and kwargs (`renderer.ChatRenderer`), as the probes see it."""

    tokenizer: Any
    kwargs: dict[str, Any]
    tools: list[Any] | None

    def __call__(
        self,
        messages: list[dict[str, Any]],
        *,
        generation: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        location: Location | None = None,
    ) -> str: ...


Spans = list[tuple[int, int] | None]  # [start, end) of every message's content, by message (None: not located)
LazySpans = Callable[[], "Spans | None"]  # every content's span in A (`content_spans`), computed once when asked


def no_spans() -> Spans | None:
    """`LazySpans` where no content's span is known."""
    return None


def no_prefixes() -> Prefixes | None:
    """`Chat.prefixes` where no prefix render is proven."""
    return None


def sentinel(*texts: str) -> str:
    """A private-use character that occurs in none of `texts`."""
    return next(chr(c) for c in range(0xE000, 0xF900) if not any(chr(c) in t for t in texts))


def common_prefix(a: str, b: str) -> int:
    """len of the longest common prefix of `a` and `b`, compared in growing slices (a character
    loop over a long record's text, once per turn, was quadratic work in Python)."""
    limit, at, step = min(len(a), len(b)), 0, 64
    while at < limit:
        end = min(at + step, limit)
        if a[at:end] != b[at:end]:
            while end - at > 16:  # halve the stretch that differs
                mid = (at + end) // 2
                if a[at:mid] == b[at:mid]:
                    at = mid
                else:
                    end = mid
            while a[at] == b[at]:
                at += 1
            return at
        at, step = end, step * 2
    return limit


def changed_span(a: str, b: str) -> tuple[int, int]:
    """[start, end) in `a` of the stretch that differs from `b` (common prefix and suffix removed)."""
    start = common_prefix(a, b)
    limit = min(len(a), len(b)) - start
    tail = common_prefix(a[::-1][:limit], b[::-1][:limit])
    return start, len(a) - tail


def written_span(
    text: str,
    render: Render,
    msgs: list[dict[str, Any]],
    j: int,
    change: Callable[[dict[str, Any], str], dict[str, Any]],
    *,
    generation: bool = False,
) -> tuple[int, int] | None:
    """[start, end) in `text` (= render(msgs, generation=...)) where the template writes the piece of
    message j that `change(message, mark)` replaces by `mark`; None when it does not write it or
    the render raises. Where the template writes the piece twice, the span covers both."""
    mark = sentinel(text)
    try:
        other = render([*msgs[:j], change(msgs[j], mark), *msgs[j + 1 :]], generation=generation)
    except TemplateError:
        return None
    if mark not in other:
        return None
    return changed_span(text, other)


def content_span(
    text: str, render: Render, msgs: list[dict[str, Any]], j: int, *, generation: bool = False
) -> tuple[int, int] | None:
    """Where message j's content is written in `text`, or None (empty, not written, the render raises)."""
    if not (msgs[j].get("content") or "").strip():
        return None
    return written_span(text, render, msgs, j, lambda m, mark: {**m, "content": mark}, generation=generation)


# The private-use characters marks are drawn from: the BMP's area and the two planes'.
_PLANES = ((0xE000, 0xF900), (0xF0000, 0xFFFFE), (0x100000, 0x10FFFE))
_PRIVATE = re.compile("[" + "".join(f"{chr(a)}-{chr(b - 1)}" for a, b in _PLANES) + "]")


def free_marks(text: str) -> Iterator[str]:
    """Private-use characters that do not occur in `text`, one after another (the planes' too: a
    long record may need thousands)."""
    # The code points from the first private-use one up that `text` holds, read as an array: `set(text)` took
    # 1.9 ms of a 110 KB render, this 0.1 ms (a lone surrogate is below them, and passes the encoder).
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    used = set(codes[codes >= _PLANES[0][0]].tolist())
    planes = itertools.chain.from_iterable(range(a, b) for a, b in _PLANES)  # lazily: ~1M code points
    return (chr(c) for c in planes if c not in used)


def marks_in(text: str, marks: Collection[str]) -> list[tuple[int, str]]:
    """(position, mark) of each of `marks` (single characters; a longer one is never found) in `text`, in order: one
    regular-expression scan, not a Python step per character of a 110 KB render. Marks `free_marks` gave are found
    by one compiled pattern (private use), others by a pattern of their own."""
    chars = "".join(m for m in marks if len(m) == 1)
    if not chars:
        return []
    pattern = _PRIVATE if not _PRIVATE.sub("", chars) else re.compile("[" + re.escape(chars) + "]")
    return [(found.start(), ch) for found in pattern.finditer(text) if (ch := found.group()) in marks]


# How a template may write a piece of text: as given, or trimmed (one form for every piece of a kind).
FORMS: tuple[Callable[[str], str], ...] = (str, str.strip)


def put_back(
    text: str,
    skeleton: str,
    at: list[tuple[int, str]],
    values: dict[str, tuple[str, str]],
    forms: dict[str, tuple[Callable[[str], str], ...]],
) -> dict[str, tuple[int, int]] | None:
    """{mark: [start, end) in `text`} when `text` is `skeleton` with each mark (at its position, in
    the order of `at`) replaced by its value (`values`: mark -> (kind, value)) in one of its kind's
    `forms`, the same for every piece of a kind; None when no forms give `text`."""
    kinds = sorted({kind for kind, _ in values.values()})
    for choice in itertools.product(*(forms[kind] for kind in kinds)):
        form = dict(zip(kinds, choice))
        parts, out, pos, size = [], {}, 0, 0
        for k, mark in at:
            kind, value = values[mark]
            written = form[kind](value)
            parts += [skeleton[pos:k], written]
            size += k - pos
            out[mark] = (size, size + len(written))
            size += len(written)
            pos = k + 1
        if "".join([*parts, skeleton[pos:]]) == text:
            return out
    return None


def content_spans(text: str, render: Render, msgs: list[dict[str, Any]]) -> Spans | None:
    """Where each message's content lies in `text` (= render(msgs)), from one render with every
    non-empty content replaced by its own sentinel: `text` must be that skeleton with each sentinel
    replaced by its content (as given, or trimmed: every content alike), so the template writes
    contents as opaque text and every offset follows. None when it does not (or the render raises).
    """
    free = free_marks(text)
    marks: dict[str, int] = {}
    changed = list(msgs)
    for j, m in enumerate(msgs):
        if (m.get("content") or "").strip():
            marks[mark := next(free)] = j
            changed[j] = {**m, "content": mark}
    try:
        skeleton = render(changed)
    except TemplateError:
        return None
    at = marks_in(skeleton, marks)
    if len(at) != len(marks) or len({ch for _, ch in at}) != len(marks):  # each written once
        return None
    spans = put_back(
        text, skeleton, at, {ch: ("content", msgs[j]["content"]) for ch, j in marks.items()}, {"content": FORMS}
    )
    if spans is None:
        return None
    out: Spans = [None] * len(msgs)
    for ch, j in marks.items():
        out[j] = spans[ch]
    return out


def has_reasoning(msg: dict[str, Any]) -> bool:
    """Whether an assistant message has reasoning to write (not empty, not only whitespace)."""
    return bool((msg.get("reasoning_content") or "").strip())


def marked_call(call: dict[str, Any], mark: str) -> dict[str, Any]:
    """`call` with its arguments replaced by `{"argument": mark}`, in the form (dict or JSON string) it had."""
    args: Any = {"argument": mark}
    args = json.dumps(args, ensure_ascii=False) if isinstance(call["function"]["arguments"], str) else args
    return {**call, "function": {**call["function"], "arguments": args}}


def first_named(msg: dict[str, Any], mark: str) -> dict[str, Any]:
    """`msg` with its first tool call's name replaced by `mark`: where a call-only turn's answer begins."""
    first, *rest = msg["tool_calls"]
    return {**msg, "tool_calls": [{**first, "function": {**first["function"], "name": mark}}, *rest]}


@dataclass(frozen=True, slots=True)
class Chat:
    """A rendering whose turns are located: A (`text`) of `msgs`, `render` (the record's tools and kwargs
    bound; `generation=True` for an inference prompt), the record's location, every content's span
    in A from one skeleton render (`contents()`, computed once when asked; None where not used), and the
    prefix renders one watched render of A proves (`prefixes()`, likewise)."""

    text: str
    msgs: list[dict[str, Any]]
    render: Render
    source: Location
    contents: LazySpans = no_spans
    prefixes: Callable[[], Prefixes | None] = no_prefixes  # its proven prefix renders (`ftdata.chat.prefixes`)

    def with_message(self, i: int, message: dict[str, Any]) -> list[dict[str, Any]]:
        """The messages with message i replaced by `message`."""
        return [*self.msgs[:i], message, *self.msgs[i + 1 :]]

    def reject(self, i: int, why: str) -> UnusableRecord:
        return UnusableRecord(
            f"assistant turn {i} cannot be masked safely: {why}",
            location=self.source,
            field=f"messages[{i}]",
            code=RejectCode.UNMASKABLE,
        )


@dataclass(frozen=True, slots=True)
class Found:
    """Assistant turn i's data in A, as one render of A with the turn's pieces replaced finds it.

    `start`, `end`: the span where that render differs from A (the written pieces' union);
    `pieces`: the pieces the turn has ("content", "reasoning", "call 0"...); `written`: those the
    template writes; `calls_end`: where the calls' span ends (None: no calls located);
    `reasoning_end`: where the written reasoning ends (None: none); `answer`: where its content is
    written, else its first call's name (None: not located).
    """

    start: int
    end: int
    pieces: tuple[str, ...]
    written: frozenset[str]
    calls_end: int | None = None
    reasoning_end: int | None = None
    answer: tuple[int, int] | None = None  # its content, else its first call's name (`FallbackStart`'s answer)


def find_pieces(chat: Chat, i: int) -> Found:
    """Turn i's data located by one render with its pieces (content, reasoning, each call's arguments)
    replaced by sentinels. Raises UnusableRecord: the turn is empty, or that render raises."""
    msg, taken = chat.msgs[i], [chat.text]

    def fresh() -> str:
        taken.append(sentinel(*taken))
        return taken[-1]

    pieces: dict[str, str] = {}
    changed = dict(msg)
    if msg["content"].strip():
        pieces["content"] = changed["content"] = fresh()
    if has_reasoning(msg):
        pieces["reasoning"] = changed["reasoning_content"] = changed["thinking"] = fresh()
    if msg.get("tool_calls"):
        calls = []
        for j, call in enumerate(msg["tool_calls"]):
            pieces[f"call {j}"] = fresh()
            calls.append(marked_call(call, pieces[f"call {j}"]))
        changed["tool_calls"] = calls
    if not pieces:
        raise chat.reject(i, "it is empty (no content, reasoning or tool calls)")
    try:
        other = chat.render(chat.with_message(i, changed))
    except TemplateError as exc:
        raise chat.reject(i, str(exc)) from None
    start, end = changed_span(chat.text, other)
    written = frozenset(
        name for name, s in pieces.items() if writes(s, other, chat.text)
    )  # also escaped (tojson(ensure_ascii=True))
    return Found(start, end, tuple(pieces), written)


def end_of_calls(chat: Chat, i: int) -> int:
    """Where the template ends turn i's tool calls in A (their arguments replaced by a sentinel)."""
    mark = sentinel(chat.text)
    calls = [marked_call(call, mark) for call in chat.msgs[i]["tool_calls"]]
    try:
        other = chat.render(chat.with_message(i, {**chat.msgs[i], "tool_calls": calls}))
    except TemplateError:
        return len(chat.text)
    return changed_span(chat.text, other)[1]
