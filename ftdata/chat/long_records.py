"""A long record's assistant turns located in a bounded number of renders instead of a few per turn.

Where they write their reasoning and tool calls, from two skeleton renders (`locate`). The turn
locator finds a turn's data by rendering A once more with the turn's pieces (content, reasoning,
each call's arguments) replaced by sentinels: the span where the two renders differ
(`changed_span`). That is one render of the whole conversation per turn: quadratic in a long
record. Here, for every turn at once:

    S2 = render(msgs) with every content and every reasoning replaced by its own sentinel
    S  = S2 with every tool call's arguments replaced by {"argument": sentinel}

A must be S2 with each sentinel replaced by its text (as given or trimmed; `sentinels.put_back`), which
places every content and every written reasoning in A (a reasoning the template drops is not in
S2). Between two consecutive of those sentinels S2 and S differ only where calls' arguments are
written: that stretch of S2 is A's text, and the part of it that differs from S is where the
calls lie, as rendering their turn alone with its calls marked finds them. A stretch that holds
the calls of two turns leaves both to the per-turn renders; one that differs where no call's
sentinel is, or a sentinel written other than once, leaves every turn to them.

Their inference prompts P_i, from a bounded number of prompt renders: `prompt_ends` where the
template is prefix-stable, `prompt_tails` where it is not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ftdata.chat.prefixes import Prefixes
from ftdata.chat.sentinels import (
    FORMS,
    Found,
    Render,
    Spans,
    changed_span,
    common_prefix,
    content_span,
    first_named,
    free_marks,
    has_reasoning,
    marked_call,
    marks_in,
    put_back,
)
from ftdata.errors import TemplateError
from ftdata.records.tools import writes

# A reasoning may also be stripped of its line ends (Qwen3: `reasoning_content.strip('\n')`).
_FORMS = {"content": FORMS, "reasoning": (*FORMS, lambda s: s.strip("\n"))}


def _positions(rendered: str, marks: dict[str, Any]) -> dict[str, list[int]]:
    """Where each of `marks` (`free_marks`') occurs in `rendered` (a mark it does not hold is not a key)."""
    at: dict[str, list[int]] = {}
    for k, ch in marks_in(rendered, marks):
        at.setdefault(ch, []).append(k)
    return at


def locate(text: str, render: Render, msgs: list[dict[str, Any]], turns: list[int]) -> dict[int, Found]:
    """`Found` for each of `turns` (assistant turns with reasoning or tool calls) located by the
    skeletons; a turn left out is located by its own renders. Two renders in all, three where a
    call turn says nothing (its first call's name is where its answer begins)."""
    marked = _Marked.of(text, msgs, turns)
    skeleton = _Skeleton.of(text, render, marked)
    if skeleton is None:
        return {}
    calls = skeleton.compare(render, marked.calls, "call")
    names = (
        skeleton.compare(render, marked.names, "name")
        if marked.names != marked.skeleton
        else _Compared({}, set(), {}, "")
    )
    if calls is None or names is None:
        return {}
    written = _Written(
        skeleton, calls, names, calls.unknown | names.unknown, _escapes(calls.rendered), _escapes(skeleton.skeleton)
    )
    by_turn: dict[int, dict[str, str]] = {}  # turn -> {piece: its sentinel}
    for ch, (j, piece) in marked.owner.items():
        if piece != "name":
            by_turn.setdefault(j, {})[piece] = ch
    found = {i: written.found(i, by_turn.get(i, {})) for i in turns}
    return {i: f for i, f in found.items() if f is not None}


def _escapes(rendered: str) -> Callable[[str], bool]:
    """`writes(mark, rendered)` for a mark not in `rendered` as given: whether it holds it escaped
    (`tools.escaped_forms`); looked for only where `rendered` holds an escape at all (one scan, not one per mark)."""
    if not any(e in rendered for e in ("\\u", "\\U", "&#")):
        return lambda mark: False
    return lambda mark: writes(mark, rendered)


@dataclass(frozen=True, slots=True)
class _Marked:
    """Every sentinel of the skeletons and the messages that hold them: `values` (mark -> (kind, text):
    every content's and reasoning's, the anchors), `owner` (mark -> (turn, piece)), `skeleton` (S2's
    messages: contents and reasonings replaced), `calls` (S's: also the calls' arguments of the turns),
    `names` (also the first call's name of a call turn that says nothing)."""

    values: dict[str, tuple[str, str]]
    owner: dict[str, tuple[int, str]]
    skeleton: list[dict[str, Any]]
    calls: list[dict[str, Any]]
    names: list[dict[str, Any]]

    @staticmethod
    def of(text: str, msgs: list[dict[str, Any]], turns: list[int]) -> _Marked:
        free = free_marks(text)
        values: dict[str, tuple[str, str]] = {}
        owner: dict[str, tuple[int, str]] = {}
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
                if not (
                    msgs[i].get("content") or ""
                ).strip():  # `FallbackStart` begins its answer at the first call's name
                    owner[mark := next(free)] = (i, "name")
                    names[i] = first_named(names[i], mark)
        return _Marked(values, owner, changed, calls, names)


@dataclass(frozen=True, slots=True)
class _Compared:
    """S2's messages with more pieces replaced, rendered (`rendered`) and compared with S2 stretch by
    stretch: where each turn's pieces differ, in A (`spans`, by turn), the turns whose pieces share a
    stretch with another turn's (`unknown`), and where each sentinel is in the render (`at`)."""

    spans: dict[int, tuple[int, int]]
    unknown: set[int]
    at: dict[str, list[int]]
    rendered: str


@dataclass(frozen=True, slots=True)
class _Skeleton:
    """S2 (`skeleton`) and where its anchors (every content's and written reasoning's sentinel, in
    order: `anchors`) lie in it and in A (`spans`); `owner`: every sentinel's (turn, piece)."""

    skeleton: str
    anchors: list[tuple[int, str]]
    spans: dict[str, tuple[int, int]]
    owner: dict[str, tuple[int, str]]

    @staticmethod
    def of(text: str, render: Render, marked: _Marked) -> _Skeleton | None:
        """S2 rendered, its anchors placed in A (`put_back`); None where it does not render, writes a piece
        twice or drops a content (as `content_spans`), or A is not S2 with the texts put back."""
        try:
            s2 = render(marked.skeleton)
        except TemplateError:
            return None
        at2 = _positions(s2, marked.owner)
        anchors = sorted((ks[0], ch) for ch, ks in at2.items() if len(ks) == 1)
        if any(len(ks) > 1 for ks in at2.values()) or any(
            marked.owner[ch][1] == "content" and ch not in at2 for ch in marked.values
        ):
            return None
        spans = put_back(text, s2, anchors, marked.values, _FORMS)
        return _Skeleton(s2, anchors, spans, marked.owner) if spans is not None else None

    def compare(self, render: Render, msgs: list[dict[str, Any]], piece: str) -> _Compared | None:
        """`msgs` (S2's messages with more pieces, named `piece...`, replaced) rendered and compared with S2
        stretch by stretch; None when it does not render, its anchors differ from S2's, or it differs where
        no such piece is."""
        try:
            other = render(msgs)
        except TemplateError:
            return None
        at = _positions(other, self.owner)
        anchors = sorted((ks[0], ch) for ch, ks in at.items() if self.owner[ch][1] in ("content", "reasoning"))
        if [ch for _, ch in anchors] != [ch for _, ch in self.anchors] or any(len(at[ch]) > 1 for _, ch in anchors):
            return None
        marks = sorted((k, ch) for ch, ks in at.items() if self.owner[ch][1].startswith(piece) for k in ks)
        spans: dict[int, tuple[int, int]] = {}
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
            a, b = changed_span(x, y)
            lo, hi = offsets[k] + a, offsets[k] + b
            prev = spans.get(turn)
            spans[turn] = (lo, hi) if prev is None else (min(prev[0], lo), max(prev[1], hi))
        return _Compared(spans, unknown, at, other)


@dataclass(frozen=True, slots=True)
class _Written:
    """What the skeletons tell of the turns: S2, S compared with it (`calls`), the names' render compared
    with it (`names`), the turns left to their own renders (`unknown`), and whether S or S2 holds a mark
    escaped."""

    skeleton: _Skeleton
    calls: _Compared
    names: _Compared
    unknown: set[int]
    escaped_in_calls: Callable[[str], bool]
    escaped_in_skeleton: Callable[[str], bool]

    def found(self, i: int, marks: dict[str, str]) -> Found | None:
        """Turn i (its pieces' sentinels: `marks`) as the skeletons locate it; None where its own renders judge it."""
        spans, at = self.skeleton.spans, self.calls.at
        pieces, written, unknown = [], set(), i in self.unknown
        ends: list[tuple[int, int]] = []
        for piece, ch in marks.items():
            pieces.append(piece)
            if piece.startswith("call"):
                if len(at.get(ch, ())) == 1:
                    written.add(piece)
                elif ch in at or self.escaped_in_calls(ch):
                    unknown = True  # written twice, or escaped: its own renders judge it
            elif ch in spans:
                written.add(piece)
                ends.append(spans[ch])
            elif self.escaped_in_skeleton(ch):
                unknown = True  # escaped: its own renders judge it
        call = self.calls.spans.get(i)
        if unknown or not pieces or (call is None and any(p.startswith("call") for p in written)):
            return None
        if call is not None:
            ends.append(call)
        if not ends:  # nothing written: the turn is rejected by its own renders, with the reason
            return None
        answer = spans.get(marks.get("content", ""), self.names.spans.get(i))
        reasoning = spans[marks["reasoning"]][1] if "reasoning" in written else None
        return Found(
            min(a for a, _ in ends),
            max(b for _, b in ends),
            tuple(pieces),
            frozenset(written),
            call[1] if call is not None else None,
            reasoning,
            answer,
        )


# Inference prompts rendered per kind of turn to check a long record's prompts (`prompt_ends`, `prompt_tails`): every
# one in a group of up to this many turns (so nearly every real conversation is checked turn by turn), else the first,
# the last and evenly spaced ones between. A constant: 16 renders of a 1,000-message record, not 500.
SAMPLES = 16


def prompt_ends(
    text: str,
    render: Render,
    msgs: list[dict[str, Any]],
    header: str,
    turns: list[int],
    contents: Spans | None,
    proven: Prefixes | None = None,
) -> dict[int, int]:
    """len(P_i) for assistant turns `turns` (plain: content only) of a prefix-stable template, in a
    bounded number of renders instead of one conversation prefix per turn (quadratic in a long record).

    P_i is A up to the generation prompt (`header`) the template writes between the content of
    message i-1 and turn i's own content, both located by `content_spans`: that stretch holds
    markup only (`contents`: from `content_spans`). Where one watched render proves P_i (`proven`:
    `ftdata.chat.prefixes`), that is checked turn by turn, without a render. In each group of the
    other turns that follow a message of one role (a tool result may end without the header:
    diffusion_gemma), up to `SAMPLES` prompts are rendered as they are (`picks`) and must agree; a
    group where one does not is left out (its turns are then rendered).
    """
    if contents is None:
        return {}
    out = {}
    for i in turns:
        before, own = contents[i - 1] if i else None, contents[i]
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
        known = [i for i in group if proven is not None and i in proven.cuts]
        kept.update((i, out[i]) for i in known if proven is not None and proven.prompt_end(i) == out[i])
        rest = [i for i in group if i not in known]
        if rest and all(agrees(i) for i in picks(rest)):
            kept.update((i, out[i]) for i in rest)
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
    where = content_span(prompt, render, msgs[:i], i - 1, generation=True)
    return (True, prompt[where[1] :]) if where is not None else None


def prompt_tails(
    text: str, render: Render, msgs: list[dict[str, Any]], turns: list[int], contents: Spans | None
) -> dict[int, Tail]:
    """P_i for assistant turns `turns` in a bounded number of renders, where a template is not
    prefix-stable (it writes the generation prompt otherwise than the history: Nemotron 3 opens
    `<think>`, the history writes `<think></think>`).

    Turns are grouped by the role of the message before them (a user or a tool turn: templates
    close the two differently). In each group, up to `SAMPLES` prompts are rendered (the first,
    the last, evenly spaced between): each must be A up to the end of message i-1's content
    (located by `content_spans`, and in P_i by a sentinel render, never by its text) followed
    by one and the same tail; the group's other prompts are taken to be built alike. A group
    where any sample differs, or a render raises, is left out (its turns are rendered one by one).
    """
    if contents is None:
        return {}
    out: dict[int, Tail] = {}
    for group in groups(msgs, [i for i in turns if i > 0 and contents[i - 1] is not None]).values():
        tails = {_tail(text, render, msgs, i, contents[i - 1][1]) for i in picks(group)}  # type: ignore[index]  # contents[i - 1] is not None: filtered in the comprehension above
        if len(tails) == 1 and (only := next(iter(tails))) is not None:
            rewritten, tail = only
            out.update((i, Tail(contents[i - 1][1], tail, rewritten)) for i in group)  # type: ignore[index]  # as above
    return out
