"""Span-level and weighted supervision: Axolotl's `train_detail` and per-message loss weights.

Both narrow or scale what the masking rule already trains; neither trains anything the rule
does not (a user turn's weight or spans are ignored, with a note).

- `loss_weight` (LLaMA-Factory v1, also ShareGPT `weight`): every token the turn trains (its
  content, the markup the model writes, its end-of-turn marker) carries that weight. 0 is a
  train flag (the turn is masked), and so is 1 (the turn is trained as usual): only other
  weights reach the `loss_weights` column.
- `train_detail` (Axolotl): character spans of the message's content, end inclusive. Content
  characters inside a `train: true` span are trained; characters in a `train: false` span or in
  no span are not. The rest of the turn (reasoning, tool calls, the end-of-turn marker) is
  trained as usual, as Axolotl trains the turn's end-of-turn token (`train_on_eos: turn`). A
  turn with a train_detail and no `train` flag is trained when one of its spans is.

Where the content lies in the rendering is found by structure, never by searching its text:
the record is rendered again with that content replaced by a private-use sentinel, and the
changed span is where the template wrote it (`sentinels.changed_span`). It must hold the
content character for character (a template that rewrites it cannot take character offsets:
the record is rejected).

    content      I'm doing very well, thank you!
    train_detail [0..8] false  [9..18] true  [19..30] false
    holes        [~~~~~~~~]          [~~~~~~~~~~~~]           untrained characters
    tokens       I 'm  doing| very| well|, thank  you !<|im_end|>
    labels       -100 ...     very  well  -100 ...        <|im_end|>

A token wholly inside a hole carries no loss; a token across a hole's edge (BPE merged across
the span boundary) stays trained, as in Axolotl (which widens a trained span to whole tokens).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ftdata.chat.render import Renderer, trained_turns
from ftdata.chat.sentinels import changed_span
from ftdata.errors import RecordError, UnusableRecord
from ftdata.outcomes import Note, NoteCode, RejectCode
from ftdata.types import Example, MaskPolicy, Message, Rendered

SUPERVISION_IGNORED = Note(
    NoteCode.SUPERVISION_IGNORED,
    "loss_weight/train_detail on a non-assistant turn, or under mask=train_on_prompt, is ignored: only assistant "
    "turns carry loss",
)


def supervised(messages: tuple[Message, ...]) -> bool:
    """Whether any message carries a fractional loss weight or a train_detail."""
    return any(m.loss_weight is not None or m.train_detail is not None for m in messages)


class SupervisedRenderer:
    """A `Renderer` that also applies the messages' loss weights and train_detail spans.

    Records without either render exactly as before (one attribute check per message).
    Every other attribute is the wrapped renderer's.
    """

    def __init__(self, renderer: Renderer):
        self.inner = renderer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, example: Example, *, history: bool = True) -> Rendered:
        if not supervised(example.messages):
            return self.inner(example, history=history)
        ignored = any(
            m.role != "assistant" and (m.loss_weight is not None or m.train_detail is not None)
            for m in example.messages
        )
        if self.inner.mask is MaskPolicy.TRAIN_ON_PROMPT:
            out = self.inner(example)
            return replace(out, notes=(*out.notes, SUPERVISION_IGNORED))
        example = replace(example, messages=tuple(_trained_by_detail(m) for m in example.messages))
        out = self.inner(example)  # raises what trained_turns raises below, so that cannot fail here
        turns = [i for i, trained in enumerate(trained_turns(example.messages, self.inner.mask)) if trained]
        if len(turns) != len(out.spans):  # one span per trained assistant turn, in order
            raise UnusableRecord(
                f"loss_weight/train_detail: {len(out.spans)} trained spans for {len(turns)} trained turns; "
                "the turns cannot be matched",
                location=example.source,
                field="messages",
                code=RejectCode.UNMASKABLE,
            )
        msgs = example.messages
        weights = (
            tuple(msgs[i].loss_weight or 1.0 for i in turns)
            if any(msgs[i].loss_weight is not None for i in turns)
            else ()
        )
        holes: list[tuple[int, int]] = []
        for i, (s, e) in zip(turns, out.spans):
            if msgs[i].train_detail is None:
                continue
            base, cs, ce = self._content_start(example, i, out.text)
            for a, b in _untrained(msgs[i]):
                a, b = max(base + a, s, cs), min(base + b, e, ce)
                if a < b:
                    holes.append((a, b))
        notes = (*out.notes, SUPERVISION_IGNORED) if ignored else out.notes
        return replace(out, weights=weights, holes=tuple(holes), notes=notes)

    def _content_start(self, example: Example, i: int, text: str) -> tuple[int, int, int]:
        """Where message i's content starts in `text`, and the [start, end) the template wrote of it,
        from a render with that content replaced by a sentinel.

        Raises:
            UnusableRecord: the template does not write the content as given.
        """
        content = example.messages[i].content
        mark = next(chr(c) for c in range(0xE000, 0xF900) if chr(c) not in text)
        probe = replace(
            example,
            messages=tuple(
                replace(m, content=mark, train_detail=None) if j == i else m for j, m in enumerate(example.messages)
            ),
        )
        field = f"messages[{i}].train_detail"
        try:
            other = self.inner(probe).text
        except RecordError as exc:
            raise UnusableRecord(
                f"train_detail: the content cannot be located ({exc.reason})",
                location=example.source,
                field=field,
                code=RejectCode.UNMASKABLE,
            ) from None
        s, e = changed_span(text, other)
        if text[s:e] == content:
            return s, s, e
        core = content.strip()
        if core and text[s:e] == core:  # the template trims the content: offsets count from its first character
            return s - (len(content) - len(content.lstrip())), s, e
        shown = text[s:e] if e - s <= 60 else text[s : s + 57] + "..."
        raise UnusableRecord(
            f"train_detail: the chat template writes this content as {shown!r}, not as given, so its character offsets "
            "cannot be mapped; drop the train_detail or use a template that writes the content verbatim",
            location=example.source,
            field=field,
            code=RejectCode.UNMASKABLE,
        )


def describe(rendered: Rendered) -> list[Note]:
    """What `preview` says of a record's weights and train_detail (nothing for a plain record).

    loss weights of the trained turns: 1, 0.5; train_detail: 2 content ranges masked
    """
    parts = []
    if rendered.weights:
        parts.append("loss weights of the trained turns, in order: " + ", ".join(f"{w:g}" for w in rendered.weights))
    if rendered.holes:
        shown = ", ".join(repr(rendered.text[a:b][:30]) for a, b in rendered.holes[:3]) + (
            ", ..." if len(rendered.holes) > 3 else ""
        )
        parts.append(f"train_detail: {len(rendered.holes)} content range(s) masked inside trained turns ({shown})")
    return [Note(NoteCode.SUPERVISION, "; ".join(parts))] if parts else []


def flagged(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """`messages` with the train flags their train_detail implies:
    what `trained_turns` reads for a supervised record."""
    return tuple(_trained_by_detail(m) for m in messages) if supervised(messages) else messages


def _trained_by_detail(m: Message) -> Message:
    """An assistant turn with a train_detail and no train flag is trained when one of its spans is (Axolotl)."""
    if m.role != "assistant" or m.train is not None or m.train_detail is None:
        return m
    return replace(m, train=any(span.train for span in m.train_detail))


def _untrained(m: Message) -> list[tuple[int, int]]:
    """[start, end) runs of content characters that carry no loss: in a `train: false` span or in no span.

        content "abcdefgh", spans [2..4] true  ->  [(0, 2), (5, 8)]
    A character in both a trained and an untrained span is trained (Axolotl never unmarks one).
    """
    trained = bytearray(len(m.content))
    for span in m.train_detail or ():
        if span.train:
            trained[span.begin : span.end + 1] = b"\x01" * (span.end + 1 - span.begin)
    runs, start = [], None
    for k, flag in enumerate(trained):
        if not flag and start is None:
            start = k
        elif flag and start is not None:
            runs.append((start, k))
            start = None
    if start is not None:
        runs.append((start, len(trained)))
    return runs


__all__ = ["SUPERVISION_IGNORED", "SupervisedRenderer", "describe", "flagged", "supervised"]
