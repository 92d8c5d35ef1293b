"""Shorter versions of one conversation that are still valid conversations.

Truncation (truncation.py) works on the record, not on its tokens: it picks one of these
and renders it like any record. An *exchange* starts at a user turn and runs to the next
one, so a tool result stays with the call it answers and no conversation starts with an
assistant or tool turn:

    [system][user][assistant][user][assistant: call][tool][assistant]
            ^ exchange 0     ^ exchange 1
    exchanges(example, 1, 2) -> [system][user][assistant: call][tool][assistant]

A *piece* is a message's text that may be shortened: the contents of user and tool turns
and the record's `input` (`context`, which belongs to the first user turn), or, as a last
resort of keep_end, a trained assistant turn's content. The system prompt is never cut.

    cut_text("one two three four", offsets, drop=2, side=END)     -> "one two"
    cut_text("one two three four", offsets, drop=2, side=MIDDLE)  -> "one [...] four"
    (the caller counts the marker's tokens)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from ftdata.records.media import MEDIA
from ftdata.types import Example, PromptCut

MARKER = " [...] "  # where prompt_cut=middle took text out

Piece = int | Literal["context"]  # a message index, or the record's `input`


def head(example: Example) -> int:
    """Messages before exchange 0: the system message, when there is one."""
    return 1 if example.messages and example.messages[0].role == "system" else 0


def exchange_starts(example: Example) -> tuple[int, ...]:
    """Index of the first message of every exchange (the first one starts right after the system message)."""
    msgs, first = example.messages, head(example)
    return (first, *(i for i in range(first + 1, len(msgs)) if msgs[i].role == "user"))


def exchanges(example: Example, start: int, stop: int) -> Example:
    """The example with only exchanges [start, stop) after its system message.

    The record's `input` belongs to the first user turn, so it goes with exchange 0.
    """
    starts = (*exchange_starts(example), len(example.messages))
    msgs = example.messages
    kept = (*msgs[: head(example)], *msgs[starts[start] : starts[stop]])
    return replace(example, messages=kept, context=example.context if start == 0 else "")


def prompt_pieces(example: Example) -> list[Piece]:
    """The texts a prompt cut may shorten: user and tool contents and the record's `input`."""
    pieces: list[Piece] = [i for i, m in enumerate(example.messages) if m.role in ("user", "tool") and m.content]
    return [*pieces, "context"] if example.context else pieces


def response_pieces(example: Example, trained: Sequence[bool]) -> list[Piece]:
    """Trained assistant turns with content, earliest first (keep_end cuts their start last)."""
    return [i for i, m in enumerate(example.messages) if trained[i] and m.content]


def text_of(example: Example, piece: Piece) -> str:
    return example.context if piece == "context" else example.messages[piece].content


def with_text(example: Example, piece: Piece, text: str) -> Example:
    """The example with `piece` replaced by `text` (a new Example; `example` is not changed)."""
    if piece == "context":
        return replace(example, context=text)
    msgs = list(example.messages)
    msgs[piece] = replace(msgs[piece], content=text)
    return replace(example, messages=tuple(msgs))


def cut_text(
    text: str, offsets: Sequence[tuple[int, int]], *, drop: int, side: PromptCut, keep_some: bool = False
) -> str:
    """`text` without `drop` of its tokens (`offsets`: the char span of each of its tokens, tokenized alone).

    Cuts fall on token edges, so the kept text is `len(offsets) - drop` tokens as the text
    tokenizes alone (in context a token or two may merge differently: the caller re-renders
    and checks). `keep_some`: keep at least one token (a response is never emptied).
    """
    cut = _cut(text, offsets, drop=drop, side=side, keep_some=keep_some)
    return keep_media(text, cut, side) if MEDIA in text else cut


def _cut(text: str, offsets: Sequence[tuple[int, int]], *, drop: int, side: PromptCut, keep_some: bool) -> str:
    n = len(offsets)
    keep = max(n - drop, 1 if keep_some else 0)
    if keep >= n:
        return text
    if keep <= 0:
        return ""
    if side is PromptCut.END:
        return text[: offsets[keep - 1][1]]
    if side is PromptCut.START:
        return text[offsets[n - keep][0] :]
    first = (keep + 1) // 2
    tail = text[offsets[n - (keep - first)][0] :] if keep > first else ""
    return text[: offsets[first - 1][1]].rstrip() + MARKER + tail.lstrip()


def keep_media(text: str, cut: str, side: PromptCut) -> str:
    """`cut` with the image placeholders the cut took put back, in order: text is shortened, an image never.

    END: after the kept head; START: before the kept tail; MIDDLE: where the marker is.
    """
    lost = MEDIA * (text.count(MEDIA) - cut.count(MEDIA))
    if not lost:
        return cut
    if side is PromptCut.END:
        return cut + lost
    if side is PromptCut.START:
        return lost + cut
    at = cut.find(MARKER)
    return cut[:at] + lost + cut[at:] if at >= 0 else cut + lost


__all__ = [
    "MARKER",
    "Piece",
    "cut_text",
    "exchange_starts",
    "exchanges",
    "head",
    "prompt_pieces",
    "response_pieces",
    "text_of",
    "with_text",
]
