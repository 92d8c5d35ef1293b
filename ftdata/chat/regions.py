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

from collections.abc import Callable
from typing import Any

from ftdata.errors import TemplateError

Render = Callable[..., str]
Places = list[tuple[int, int] | None]
Regions = Callable[[], "Places | None"]  # every content's place in A (`content_regions`), computed once when asked


def sentinel(*texts: str) -> str:
    """A private-use character that occurs in none of `texts`."""
    return next(chr(c) for c in range(0xE000, 0xF900) if not any(chr(c) in t for t in texts))


def changed_region(a: str, b: str) -> tuple[int, int]:
    """[start, end) in `a` of the part that differs from `b` (common prefix and suffix removed)."""
    start = 0
    limit = min(len(a), len(b))
    while start < limit and a[start] == b[start]:
        start += 1
    tail = 0
    while tail < limit - start and a[-1 - tail] == b[-1 - tail]:
        tail += 1
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


def content_regions(text: str, render: Render, msgs: list[dict[str, Any]]) -> Places | None:
    """Where each message's content lies in `text` (= render(msgs)), from one render with every
    non-empty content replaced by its own sentinel: `text` must be that skeleton with each sentinel
    replaced by its content (as given, or trimmed: every content alike), so the template writes
    contents as opaque text and every offset follows. None when it does not (or the render raises).
    """
    used = set(text)
    free = (chr(c) for c in (*range(0xE000, 0xF900), *range(0xF0000, 0xFFFFE), *range(0x100000, 0x10FFFE)) if chr(c) not in used)
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
    for form in (str, str.strip):
        out: list[tuple[int, int] | None] = [None] * len(msgs)
        parts, pos, size = [], 0, 0
        for k, mark in at:
            value = form(msgs[marks[mark]]["content"])
            parts += [skeleton[pos:k], value]
            size += k - pos
            out[marks[mark]] = (size, size + len(value))
            size += len(value)
            pos = k + 1
        if "".join([*parts, skeleton[pos:]]) == text:
            return out
    return None


def prompt_ends(
    text: str, render: Render, msgs: list[dict[str, Any]], header: str, turns: list[int], regions: Places | None
) -> dict[int, int]:
    """len(P_i) for assistant turns `turns` (plain: content only) of a prefix-stable template, in a
    bounded number of renders instead of one conversation prefix per turn (quadratic in a long record).

    P_i is A up to the generation prompt (`header`) the template writes between the content of
    message i-1 and turn i's own content, both located by `content_regions`: that stretch holds
    markup only (`regions`: from `content_regions`). The first and the last turn are rendered as
    they are, and must agree; else {} (every turn is then rendered).
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
    for i in {min(out), max(out)} if out else ():
        try:
            prompt = render(msgs[:i], generation=True)
        except TemplateError:
            return {}
        if len(prompt) != out[i] or not text.startswith(prompt):
            return {}
    return out
