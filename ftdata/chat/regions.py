"""Where a template writes one piece of one message, found by structure, never by searching its text.

A message's text may occur anywhere in a rendering: inside the template's own markup (a user
who writes "ink" is inside `<think>`, "TEXT" inside `<|START_TEXT|>`) or in other messages.
So a piece is located by rendering once more with only that piece replaced by a private-use
sentinel: the two renders differ exactly where the template wrote it.

    A = ...<|im_start|>user\\nink<|im_end|>\\n<|im_start|>assistant\\n<think></think>4...
    B = ...<|im_start|>user\\n\\ue000<|im_end|>\\n<|im_start|>assistant\\n<think></think>4...
                             ^^^ changed_region(A, B): the user's text, and nothing else
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ftdata.errors import TemplateError

Render = Callable[..., str]


class TemplateRender(Protocol):
    """A chat template bound to its tokenizer and kwargs (`markers.ChatRenderer`), as the probes see it."""

    tokenizer: Any
    kwargs: dict[str, Any]
    tools: list[Any] | None

    def __call__(self, messages: list[dict[str, Any]], **options: Any) -> str: ...


Places = list[tuple[int, int] | None]
Regions = Callable[[], "Places | None"]  # every content's place in A (`content_regions`), computed once when asked


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


def changed_region(a: str, b: str) -> tuple[int, int]:
    """[start, end) in `a` of the part that differs from `b` (common prefix and suffix removed)."""
    start = common_prefix(a, b)
    limit = min(len(a), len(b)) - start
    tail = common_prefix(a[::-1][:limit], b[::-1][:limit])
    return start, len(a) - tail


def written_at(
    text: str, render: Render, msgs: list[dict[str, Any]], j: int, change: Callable[[dict[str, Any], str], dict[str, Any]],
    *, generation: bool = False,
) -> tuple[int, int] | None:  # fmt: skip
    """[start, end) in `text` (= render(msgs, generation=...)) where the template writes the piece of
    message j that `change(message, mark)` replaces by `mark`; None when it does not write it or
    the render raises. Where the template writes the piece twice, the region spans both."""
    mark = sentinel(text)
    try:
        other = render([*msgs[:j], change(msgs[j], mark), *msgs[j + 1 :]], generation=generation)
    except TemplateError:
        return None
    if mark not in other:
        return None
    return changed_region(text, other)


def content_at(text: str, render: Render, msgs: list[dict[str, Any]], j: int, *, generation: bool = False) -> tuple[int, int] | None:
    """Where message j's content is written in `text`, or None (empty, not written, the render raises)."""
    if not (msgs[j].get("content") or "").strip():
        return None
    return written_at(text, render, msgs, j, lambda m, mark: {**m, "content": mark}, generation=generation)


def free_marks(text: str) -> Iterator[str]:
    """Private-use characters that do not occur in `text`, one after another (the planes' too: a
    long record may need thousands)."""
    used = set(text)
    planes = itertools.chain(range(0xE000, 0xF900), range(0xF0000, 0xFFFFE), range(0x100000, 0x10FFFE))  # lazily: ~1M code points
    return (chr(c) for c in planes if chr(c) not in used)


# How a template may write a piece of text: as given, or trimmed (one form for every piece of a kind).
FORMS: tuple[Callable[[str], str], ...] = (str, str.strip)


def put_back(
    text: str, skeleton: str, at: list[tuple[int, str]], values: dict[str, tuple[str, str]],
    forms: dict[str, tuple[Callable[[str], str], ...]],
) -> dict[str, tuple[int, int]] | None:  # fmt: skip
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


def content_regions(text: str, render: Render, msgs: list[dict[str, Any]]) -> Places | None:
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
    at = sorted((k, ch) for k, ch in enumerate(skeleton) if ch in marks)
    if len(at) != len(marks) or len({ch for _, ch in at}) != len(marks):  # each written once
        return None
    spans = put_back(text, skeleton, at, {ch: ("content", msgs[j]["content"]) for ch, j in marks.items()}, {"content": FORMS})
    if spans is None:
        return None
    out: Places = [None] * len(msgs)
    for ch, j in marks.items():
        out[j] = spans[ch]
    return out


# Inference prompts rendered per kind of turn to check a long record's prompts (`prompt_ends`, `prompt_tails`): every
# one in a group of up to this many turns (so nearly every real conversation is checked turn by turn), else the first,
# the last and evenly spaced ones between. A constant: 16 renders of a 1,000-message record, not 500.
SAMPLES = 16


def prompt_ends(
    text: str, render: Render, msgs: list[dict[str, Any]], header: str, turns: list[int], regions: Places | None
) -> dict[int, int]:
    """len(P_i) for assistant turns `turns` (plain: content only) of a prefix-stable template, in a
    bounded number of renders instead of one conversation prefix per turn (quadratic in a long record).

    P_i is A up to the generation prompt (`header`) the template writes between the content of
    message i-1 and turn i's own content, both located by `content_regions`: that stretch holds
    markup only (`regions`: from `content_regions`). In each group of turns that follow a message
    of one role (a tool result may end without the header: diffusion_gemma), up to `SAMPLES`
    prompts are rendered as they are (`picks`) and must agree; a group where one does not is left
    out (its turns are then rendered).
    """
    if regions is None:
        return {}
    out = {}
    for i in turns:
        before, own = regions[i - 1] if i else None, regions[i]
        if before is None or own is None:
            continue
        at = text.rfind(header, before[1], own[0])
        if at >= 0:
            out[i] = at + len(header)
    def agrees(i: int) -> bool:
        try:
            prompt = render(msgs[:i], generation=True)
        except TemplateError:
            return False
        return len(prompt) == out[i] and text.startswith(prompt)

    kept: dict[int, int] = {}
    for group in groups(msgs, list(out)).values():
        if all(agrees(i) for i in picks(group)):
            kept.update((i, out[i]) for i in group)
    return kept


def groups(msgs: list[dict[str, Any]], turns: list[int]) -> dict[str, list[int]]:
    """`turns` by the role of the message before each (templates close a user and a tool turn apart)."""
    groups: dict[str, list[int]] = {}
    for i in turns:
        groups.setdefault(msgs[i - 1]["role"], []).append(i)
    return groups


def picks(group: list[int]) -> list[int]:
    """The turns of `group` whose prompts are rendered to check it: the first, the last, and evenly
    spaced ones between (`SAMPLES` in all, at most)."""
    return sorted({group[round(k * (len(group) - 1) / (SAMPLES - 1))] for k in range(SAMPLES)})


@dataclass(frozen=True, slots=True)
class Tail:
    """P_i as A writes the conversation up to the end of message i-1's content (`before`), then
    what the generation prompt writes after that content (`text`: a user footer, the assistant
    header, an opened think block).

    `rewritten`: P_i itself writes the history before that point otherwise than A (Qwen3.5 writes
    an empty think block into the last exchange's call turn, A's history does not), so P_i is
    not a prefix of A, and `prompt` is P_i aligned to A as `ftdata.chat.fallback` aligns it.
    """

    before: int
    text: str
    rewritten: bool = False

    def prompt(self, a: str) -> str:
        return a[: self.before] + self.text


def _tail(text: str, render: Render, msgs: list[dict[str, Any]], i: int, before: int) -> tuple[bool, str] | None:
    """(rewritten, tail) of P_i rendered, as `Tail` holds them; None when it does not render or
    message i-1's content cannot be located in it."""
    try:
        prompt = render(msgs[:i], generation=True)
    except TemplateError:
        return None
    if common_prefix(prompt, text) >= before:
        return False, prompt[before:]
    where = content_at(prompt, render, msgs[:i], i - 1, generation=True)
    return (True, prompt[where[1] :]) if where is not None else None


def prompt_tails(text: str, render: Render, msgs: list[dict[str, Any]], turns: list[int], regions: Places | None) -> dict[int, Tail]:
    """P_i for assistant turns `turns` in a bounded number of renders, where a template is not
    prefix-stable (it writes the generation prompt otherwise than the history: Nemotron 3 opens
    `<think>`, the history writes `<think></think>`).

    Turns are grouped by the role of the message before them (a user or a tool turn: templates
    close the two differently). In each group, up to `SAMPLES` prompts are rendered (the first,
    the last, evenly spaced between): each must be A up to the end of message i-1's content
    (located by `content_regions`, and in P_i by a sentinel render, never by its text) followed
    by one and the same tail; the group's other prompts are taken to be built alike. A group
    where any sample differs, or a render raises, is left out (its turns are rendered one by one).
    """
    if regions is None:
        return {}
    out: dict[int, Tail] = {}
    for group in groups(msgs, [i for i in turns if i > 0 and regions[i - 1] is not None]).values():
        tails = {_tail(text, render, msgs, i, regions[i - 1][1]) for i in picks(group)}  # type: ignore[index]
        if len(tails) == 1 and None not in tails:
            ((rewritten, tail),) = tails
            out.update((i, Tail(regions[i - 1][1], tail, rewritten)) for i in group)  # type: ignore[index]
    return out
