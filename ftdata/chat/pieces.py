"""Where a long record's assistant turns write their reasoning and tool calls, from two skeleton
renders instead of one render per turn.

`ChatSpans` finds a turn's data by rendering A once more with the turn's pieces (content,
reasoning, each call's arguments) replaced by sentinels: the region where the two renders differ
(`changed_region`). That is one render of the whole conversation per turn: quadratic in a long
record. Here, for every turn at once:

    S2 = render(msgs) with every content and every reasoning replaced by its own sentinel
    S  = S2 with every tool call's arguments replaced by {"argument": sentinel}

A must be S2 with each sentinel replaced by its text (as given or trimmed; `regions.put_back`), which
places every content and every written reasoning in A (a reasoning the template drops is not in
S2). Between two consecutive of those sentinels S2 and S differ only where calls' arguments are
written: that stretch of S2 is A's text, and the part of it that differs from S is where the
calls lie, as rendering their turn alone with its calls marked finds them. A stretch that holds
the calls of two turns leaves both to the per-turn renders; one that differs where no call's
sentinel is, or a sentinel written other than once, leaves every turn to them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ftdata.chat.regions import FORMS, Render, changed_region, free_marks, put_back
from ftdata.records.tools import writes
from ftdata.errors import TemplateError

# A reasoning may also be stripped of its line ends (Qwen3: `reasoning_content.strip('\n')`).
_FORMS = {"content": FORMS, "reasoning": (*FORMS, lambda s: s.strip("\n"))}


@dataclass(frozen=True, slots=True)
class Found:
    """Assistant turn i's data in A, as one render of A with the turn's pieces replaced finds it.

    `start`, `end`: the region where that render differs from A (the written pieces' union);
    `pieces`: the pieces the turn has ("content", "reasoning", "call 0"...); `written`: those the
    template writes; `calls_end`: where the calls' region ends (-1: no calls); `reasoning_end`:
    where the written reasoning ends (-1: none); `answer`: where its content is written, else its
    first call's name (None: not located).
    """

    start: int
    end: int
    pieces: tuple[str, ...]
    written: frozenset[str]
    calls_end: int = -1
    reasoning_end: int = -1
    answer: tuple[int, int] | None = None  # its content, else its first call's name (`FallbackStart`'s answer)


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


def _positions(rendered: str, marks: dict[str, Any]) -> dict[str, list[int]]:
    """Where each of `marks` occurs in `rendered` (a mark it does not hold is not a key)."""
    at: dict[str, list[int]] = {}
    for k, ch in enumerate(rendered):
        if ch in marks:
            at.setdefault(ch, []).append(k)
    return at


def locate(text: str, render: Render, msgs: list[dict[str, Any]], turns: list[int]) -> dict[int, Found]:
    """`Found` for each of `turns` (assistant turns with reasoning or tool calls) located by the
    skeletons; a turn left out is located by its own renders. Two renders in all, three where a
    call turn says nothing (its first call's name is where its answer begins)."""
    free = free_marks(text)
    values: dict[str, tuple[str, str]] = {}  # mark -> (kind, text): the anchors
    owner: dict[str, tuple[int, str]] = {}  # mark -> (turn, piece)
    changed = list(msgs)
    for j, m in enumerate(msgs):
        new = dict(m)
        if (m.get("content") or "").strip():
            values[mark := next(free)] = ("content", m["content"])
            owner[mark], new["content"] = (j, "content"), mark
        if m["role"] == "assistant" and has_reasoning(m):
            values[mark := next(free)] = ("reasoning", m["reasoning_content"])
            owner[mark], new["reasoning_content"], new["thinking"] = (j, "reasoning"), mark, mark
        changed[j] = new
    calls, names = list(changed), list(changed)
    for i in turns:
        marked = []
        for c, call in enumerate(msgs[i].get("tool_calls") or ()):
            owner[mark := next(free)] = (i, f"call {c}")
            marked.append(marked_call(call, mark))
        if marked:
            calls[i] = {**calls[i], "tool_calls": marked}
            if not (msgs[i].get("content") or "").strip():  # `FallbackStart` begins its answer at the first call's name
                owner[mark := next(free)] = (i, "name")
                names[i] = first_named(names[i], mark)
    try:
        s2 = render(changed)
    except TemplateError:
        return {}
    at2 = _positions(s2, owner)
    anchors = sorted((ks[0], ch) for ch, ks in at2.items() if len(ks) == 1)
    if any(len(ks) > 1 for ks in at2.values()) or any(owner[ch][1] == "content" and ch not in at2 for ch in values):
        return {}  # a piece written twice, a content dropped: as `content_regions`, no skeleton
    spans = put_back(text, s2, anchors, values, _FORMS)
    if spans is None:
        return {}
    skeleton = _Skeleton(s2, anchors, spans, owner)
    call_regions = skeleton.regions(render, calls, "call")
    name_regions = skeleton.regions(render, names, "name") if names != changed else ({}, set(), {}, "")
    if call_regions is None or name_regions is None:
        return {}
    regions, unknown, at, s = call_regions
    unknown |= name_regions[1]
    by_turn: dict[int, dict[str, str]] = {}  # turn -> {piece: its sentinel}
    for ch, (j, piece) in owner.items():
        if piece != "name":
            by_turn.setdefault(j, {})[piece] = ch
    escaped_in_s, escaped_in_s2 = _escapes(s), _escapes(s2)
    found: dict[int, Found] = {}
    for i in turns:
        pieces, written = [], set()
        marks = by_turn.get(i, {})
        ends: list[tuple[int, int]] = []
        for piece, ch in marks.items():
            pieces.append(piece)
            if piece.startswith("call"):
                if len(at.get(ch, ())) == 1:
                    written.add(piece)
                elif ch in at or escaped_in_s(ch):
                    unknown.add(i)  # written twice, or escaped: its own renders judge it
            elif ch in spans:
                written.add(piece)
                ends.append(spans[ch])
            elif escaped_in_s2(ch):
                unknown.add(i)  # escaped: its own renders judge it
        call = regions.get(i)
        if i in unknown or not pieces or (call is None and any(p.startswith("call") for p in written)):
            continue
        if call is not None:
            ends.append(call)
        if not ends:  # nothing written: the turn is rejected by its own renders, with the reason
            continue
        answer = spans.get(marks.get("content", ""), name_regions[0].get(i))
        reasoning = spans[marks["reasoning"]][1] if "reasoning" in written else -1
        found[i] = Found(min(a for a, _ in ends), max(b for _, b in ends), tuple(pieces), frozenset(written),
                         call[1] if call is not None else -1, reasoning, answer)  # fmt: skip
    return found


def _escapes(rendered: str) -> Callable[[str], bool]:
    """`writes(mark, rendered)` for a mark not in `rendered` as given: whether it holds it escaped
    (`tools.escaped_forms`); looked for only where `rendered` holds an escape at all (one scan, not one per mark)."""
    if not any(e in rendered for e in ("\\u", "\\U", "&#")):
        return lambda mark: False
    return lambda mark: writes(mark, rendered)


@dataclass(frozen=True, slots=True)
class _Skeleton:
    """S2 (`skeleton`) and where its anchors (every content's and written reasoning's sentinel, in
    order: `anchors`) lie in it and in A (`spans`); `owner`: every sentinel's (turn, piece)."""

    skeleton: str
    anchors: list[tuple[int, str]]
    spans: dict[str, tuple[int, int]]
    owner: dict[str, tuple[int, str]]

    def regions(
        self, render: Render, msgs: list[dict[str, Any]], piece: str
    ) -> tuple[dict[int, tuple[int, int]], set[int], dict[str, list[int]], str] | None:  # fmt: skip
        """`msgs` (S2's messages with more pieces, named `piece...`, replaced) rendered and compared
        with S2 stretch by stretch: ({turn: [start, end) in A where its pieces differ}, turns whose
        pieces share a stretch with another turn's, where each sentinel is in the render, the render);
        None when it does not render, its anchors differ from S2's, or it differs where no such piece is."""
        try:
            other = render(msgs)
        except TemplateError:
            return None
        at = _positions(other, self.owner)
        anchors = sorted((ks[0], ch) for ch, ks in at.items() if self.owner[ch][1] in ("content", "reasoning"))
        if [ch for _, ch in anchors] != [ch for _, ch in self.anchors] or any(len(at[ch]) > 1 for _, ch in anchors):
            return None
        marks = sorted((k, ch) for ch, ks in at.items() if self.owner[ch][1].startswith(piece) for k in ks)
        regions: dict[int, tuple[int, int]] = {}
        unknown: set[int] = set()
        bounds2 = [-1, *(k for k, _ in self.anchors), len(self.skeleton)]
        bounds = [-1, *(k for k, _ in anchors), len(other)]
        offsets = [0, *(self.spans[ch][1] for _, ch in self.anchors)]  # where each stretch begins in A
        c = 0
        for k in range(len(bounds) - 1):
            x, y = self.skeleton[bounds2[k] + 1 : bounds2[k + 1]], other[bounds[k] + 1 : bounds[k + 1]]
            turns = set()
            while c < len(marks) and marks[c][0] < bounds[k + 1]:
                turns.add(self.owner[marks[c][1]][0])
                c += 1
            if x == y:
                continue
            if not turns:
                return None
            if len(turns) > 1:
                unknown |= turns
                continue
            (turn,) = turns
            a, b = changed_region(x, y)
            lo, hi = offsets[k] + a, offsets[k] + b
            prev = regions.get(turn)
            regions[turn] = (lo, hi) if prev is None else (min(prev[0], lo), max(prev[1], hi))
        return regions, unknown, at, other
