"""Truncation: fit a record into `max_length` tokens by shortening the record, then rendering it.

A record that fits is not touched. An over-long one is cut as a conversation (shorten.py)
and the shorter conversation goes through the same renderer and masker as any record, so
the kept sequence is exactly the template's rendering of it, masked and verified: BOS,
system prompt, tool schemas, role headers and closers always stay.

    keep_response (default)
    [BOS][system][ exchange 1 ][ exchange 2 ][ user 3 | response 3 ]   too long
    [BOS][system]              [ exchange 2 ][ user 3 | response 3 ]   1. drop the oldest exchanges
    [BOS][system]                            [ us.. | response 3 ]     2. shorten the longest prompt
                                                                          message (prompt_cut: its end,
                                                                          its middle or its start)
    responses + template alone > max_length  ->  rejected (response_too_long)

- keep_end: the same, but prompt messages lose their start, and when the responses alone do
  not fit the earliest trained response loses its start too (start_cut) instead of the record.
- split: consecutive exchanges grouped into as few conversations as fit, the system prompt in
  each; an exchange that alone does not fit is shortened as keep_response does, or dropped
  (its response tokens counted as lost) when even its response does not fit.
- keep_start stays token-level: it keeps the first max_length tokens, so BOS, the system
  prompt and the first headers are kept by nature; what it loses is the end of the last
  kept response (no end-of-turn marker is trained there: choose it knowingly).
- drop rejects the record, error raises.

Cost: only over-long records pay, a few renders each (binary search over how many
exchanges to drop; a prompt cut is sized from its tokens' offsets and re-checked, at most
`ROUNDS` renders, the last of which empties the prompt messages).
"""

from __future__ import annotations

import json

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ftdata.errors import RecordError, UnusableRecord
from ftdata.guard.limits import RecordOverLimit
from ftdata.tokens.masking import Masker, Tokenized, row_of
from ftdata.outcomes import RejectCode
from ftdata.chat.render import trained_turns
from ftdata.tokens.shorten import (
    MARKER,
    Piece,
    cut_text,
    exchange_starts,
    exchanges,
    prompt_pieces,
    response_pieces,
    text_of,
    with_text,
)
from ftdata.types import Example, MaskPolicy, PromptCut, TruncationPolicy, count_trained

if TYPE_CHECKING:
    from ftdata.chat.render import Renderer

ROUNDS = 4  # renders a prompt cut may take; the last one empties every prompt message
Row = tuple[list[int], list[int]]


@dataclass(frozen=True, slots=True)
class Truncated:
    """The kept token rows (several for `split`) and, when anything was cut, why.

    `conversations`: the shorter conversation each row is the rendering of, when the record
    was cut as a conversation (empty when it fits or for token-level policies).
    """

    rows: list[Row]
    reason: str = ""
    code: RejectCode | None = None  # set exactly when reason is
    conversations: tuple[Example, ...] = ()


@dataclass(frozen=True, slots=True)
class _Fit:
    """A shorter conversation that fits (`row` set) or why none does (`row` None, `reason`)."""

    row: Tokenized | None
    example: Example | None = None
    dropped: int = 0  # exchanges dropped from the front
    cut: str = ""  # what a text cut took, for the reason ("" when nothing)
    response_cut: bool = False
    reason: str = ""
    code: RejectCode = RejectCode.RESPONSE_TOO_LONG


class Truncator:
    """Applies a truncation policy to one masked record, re-rendering it with the build's renderer and masker."""

    def __init__(self, renderer: Renderer, masker: Masker, *, max_length: int, prompt_cut: PromptCut):
        self.renderer = renderer
        self.masker = masker
        self.max_length = max_length
        self.prompt_cut = prompt_cut
        self._backend = masker.backend
        self._marker = len(self._backend.encode(MARKER, add_special_tokens=False).ids)
        self._media: frozenset[int] = getattr(
            masker, "media_ids", frozenset()
        )  # image tokens: never cut (ftdata.media)

    def __call__(self, example: Example, row: Tokenized, *, policy: TruncationPolicy) -> Truncated:
        """Apply `policy` to `example`, whose masked row is `row`.

        Returns `Truncated` with no rows when the record is rejected (reason says why).

        Raises:
            RecordError: policy `error` and the record is too long.
        """
        n, limit = len(row.input_ids), self.max_length
        if n <= limit:
            return Truncated([_pair(row)])
        over = f"{n} tokens > max_length {limit}"
        if policy is TruncationPolicy.ERROR:
            raise RecordError(f"{over}; raise max_length or choose another truncation policy", field="max_length")
        if policy is TruncationPolicy.DROP:
            return Truncated([], f"too long: {over} (truncation=drop)", RejectCode.TOO_LONG)
        if policy is TruncationPolicy.KEEP_START:
            out = _pair(row, limit)
            kept, total = count_trained(out[1]), count_trained(row.labels)
            if not kept:
                return Truncated(
                    [], f"no response left: kept the first {limit} of {n} tokens", RejectCode.NO_RESPONSE_LEFT
                )
            return Truncated(
                [out],
                f"end cut: kept the first {limit} of {n} tokens ({total - kept} of {total} response tokens lost)",
                RejectCode.END_CUT,
            )
        starts = exchange_starts(example)
        keep_end = policy is TruncationPolicy.KEEP_END
        if policy is TruncationPolicy.SPLIT and len(starts) > 1:
            return self._split(example, len(starts), count_trained(row.labels), over)
        if not keep_end and (why := self._response_alone(row)):
            return Truncated(
                [], why, RejectCode.RESPONSE_TOO_LONG
            )  # before any render: most over-long records end here
        if self._media and (why := self._media_alone(row, keep_end=keep_end)):
            return Truncated([], f"{why} ({over})", RejectCode.MEDIA_TOO_LONG)  # before any render, as above
        total = count_trained(row.labels)
        fit = self._fit(example, 0, len(starts), keep_end=keep_end, known=row)
        if fit.row is None:  # a prompt_too_long reason names its own lengths: the uncut one is added as such
            uncut = f"(uncut: {n:,} tokens)" if fit.code is RejectCode.PROMPT_TOO_LONG else f"({over})"
            return Truncated([], f"{fit.reason} {uncut}", fit.code)
        lost = total - count_trained(fit.row.labels)
        dropped = f"{fit.dropped} exchange(s) ({lost} response tokens)" if fit.dropped else ""
        after = f" after dropping the oldest {dropped}" if dropped else ""
        shorter = (fit.example,) if fit.example is not None else ()  # a fit with a row has its conversation
        if fit.response_cut:
            why = f"start cut: {fit.cut}{after}, {lost} of {total} response tokens lost, to fit {over}"
            return Truncated([_pair(fit.row)], why, RejectCode.START_CUT, shorter)
        if fit.cut:
            return Truncated(
                [_pair(fit.row)],
                f"prompt shortened: {fit.cut}{after} to fit {over}",
                RejectCode.PROMPT_SHORTENED,
                shorter,
            )
        return Truncated(
            [_pair(fit.row)], f"oldest turns dropped: {dropped} to fit {over}", RejectCode.TURNS_DROPPED, shorter
        )

    # --- one conversation ------------------------------------------------------------------

    def _response_alone(self, row: Tokenized) -> str:
        """Why the last exchange's trained tokens cannot fit however the prompt is cut ('' when they may)."""
        if self.renderer.mask is MaskPolicy.TRAIN_ON_PROMPT:  # every token is trained: a prompt cut can still help
            return ""
        alone = count_trained(row.labels[row.cuts[-1] if row.cuts else row.prefix :])
        if row.prefix + alone <= self.max_length:
            return ""
        return f"response too long: the response alone is {alone} tokens > max_length {self.max_length}"

    def _media_alone(self, row: Tokenized, *, keep_end: bool) -> str:
        """Why the last exchange cannot fit with its images however its text is cut ('' when it may).

        Every shortening keeps the last exchange's images whole, so its image tokens plus its
        response (one token where the response or the prompt may be cut instead) are a floor on
        the length of any fit: a record above it would be rejected (`media_too_long`) only after
        every trial render, each costing a tokenization of the images' thousands of tokens.
        """
        start = row.cuts[-1] if row.cuts else row.prefix
        tail = row.input_ids[start:]
        media = sum(tail.count(i) for i in self._media)  # list.count: a photo's run is thousands of tokens
        cuttable = keep_end or self.renderer.mask is MaskPolicy.TRAIN_ON_PROMPT
        response = 1 if cuttable else count_trained(row.labels[start:])
        if row.prefix + media + response <= self.max_length:
            return ""
        what = "one response token" if cuttable else f"the response's {response} tokens"
        return (
            f"media too long: the last exchange's media items take {media} tokens, which are never cut, and with "
            f"{what} "
            f"they do not fit max_length {self.max_length}; raise max_length, lower the processor's max_pixels or "
            "shorten the clips"
        )

    def _row(self, example: Example) -> Tokenized | RecordError:
        """`example` rendered and masked like any record, or why it cannot be.

        Raises:
            RecordOverLimit: the render passed a time or size limit. That says nothing of whether the
                shorter record fits; taking it for "does not fit" would make what is trained depend on
                how busy the machine is.
        """
        try:
            return self.masker([self.renderer(example)])[0]
        except RecordOverLimit:
            raise
        except RecordError as exc:
            return exc

    def _trains(self, example: Example) -> bool:
        """Whether `example` has a turn to train (its assistant turns' train flags and the mask)."""
        try:
            return any(trained_turns(example.messages, self.renderer.mask))
        except UnusableRecord:
            return False

    def _fits(self, row: Tokenized | RecordError) -> bool:
        return isinstance(row, Tokenized) and len(row.input_ids) <= self.max_length and count_trained(row.labels) > 0

    def _fit(self, example: Example, start: int, stop: int, *, keep_end: bool, known: Tokenized | None = None) -> _Fit:
        """Exchanges [start, stop) of `example` made to fit: the fewest oldest ones dropped, then a text cut.

        `known`: the row of all of them, when already rendered (it does not fit).
        """
        rows: dict[int, Tokenized | RecordError] = {} if known is None else {start: known}

        def row_from(k: int) -> Tokenized | RecordError:
            if k not in rows:
                rows[k] = self._row(exchanges(example, k, stop))
            return rows[k]

        k = _first(start, stop - 1, lambda k: self._fits(row_from(k)))
        if k is not None and isinstance(fits := row_from(k), Tokenized):  # a row that fits is one
            return _Fit(fits, exchanges(example, k, stop), dropped=k - start)
        k = stop - 1
        last, row = exchanges(example, k, stop), row_from(k)
        trained = trained_turns(last.messages, self.renderer.mask)
        tiers = [(prompt_pieces(last), False)]
        if keep_end:
            tiers.append((response_pieces(last, trained), True))
        side = PromptCut.START if keep_end else self.prompt_cut
        current = last
        for round in range(ROUNDS + 1):
            if not isinstance(row, Tokenized):
                return _Fit(None, reason=f"the shortened conversation cannot be used: {row.reason}", code=row.code)
            if self._fits(row):
                return _Fit(row, current, dropped=k - start, **_what_was_cut(last, current, tiers, side))
            cut = None
            if round < ROUNDS:
                over = len(row.input_ids) - self.max_length
                cut = self._cut(current, tiers, over, side, everything=round == ROUNDS - 1)
            if cut is None:
                break
            current, row = cut, self._row(cut)
        if not keep_end and isinstance(row, Tokenized) and (why := self._prompt_floor(current, row)):
            return _Fit(None, reason=why, code=RejectCode.PROMPT_TOO_LONG)
        what = "the responses" if not keep_end else "one token of each response"
        return _Fit(
            None,
            reason=f"response too long: {what} with the template alone do not fit max_length {self.max_length}",
            code=RejectCode.RESPONSE_TOO_LONG if not keep_end else RejectCode.NO_RESPONSE_LEFT,
        )

    def _prompt_floor(self, example: Example, row: Tokenized) -> str:
        """Why the shortest cut of `example` (`row`) still does not fit when its responses would: what a cut never
        shortens (system prompts, tool schemas, the template's own text) passes max_length with them ('' when the
        responses are what is too long)."""
        response = count_trained(row.labels)
        prompt = len(row.input_ids) - response
        systems = [m.content for m in example.messages if m.role == "system" and m.content]
        schemas = [json.dumps(t, ensure_ascii=False) for t in example.tools]
        sizes = [len(e.ids) for e in self._backend.encode_batch([*systems, *schemas], add_special_tokens=False)]
        if response >= self.max_length or len(row.input_ids) - sum(sizes) > self.max_length or 2 * sum(sizes) < prompt:
            return ""  # the responses, or the template's own text around them, are what does not fit
        system = sum(sizes[: len(systems)])
        parts = [f"the system prompt ({system:,} tokens)"] if system else []
        parts += [f"the tool schemas (about {sum(sizes[len(systems) :]):,} tokens)"] if schemas else []
        uncut = " and ".join(parts) or "the template's own text"
        return (
            f"prompt too long: {uncut} {'are' if len(parts) > 1 else 'is'} never cut, and cut as far as it goes the "
            f"record is still {len(row.input_ids):,} tokens ({prompt:,} prompt, {response:,} response) > max_length "
            f"{self.max_length:,}; raise --max-length or shorten the system prompt"
        )

    def _cut(
        self, example: Example, tiers: list[tuple[list[Piece], bool]], over: int, side: PromptCut, *, everything: bool
    ) -> Example | None:
        """`example` with about `over` tokens cut from its longest
        pieces (tier by tier), or None when none can give more.

        `everything`: cut every piece of the first tier with text as far as it goes (the last round).
        """
        for pieces, keep_some in tiers:
            texts = [text_of(example, p) for p in pieces]
            encodings = self._backend.encode_batch(texts, add_special_tokens=False) if texts else []
            rooms = [max(0, len(e.ids) - keep_some) for e in encodings]
            if not any(rooms):
                continue
            drops = rooms if everything else _level(rooms, over)
            if side is PromptCut.MIDDLE and not everything:  # each piece cut in the middle gets a marker to pay for
                drops = _level(rooms, over + self._marker * sum(0 < d < r for d, r in zip(drops, rooms)))
            for piece, text, enc, drop in zip(pieces, texts, encodings, drops):
                if drop:
                    example = with_text(
                        example, piece, cut_text(text, enc.offsets, drop=drop, side=side, keep_some=keep_some)
                    )
            return example
        return None

    # --- split -----------------------------------------------------------------------------

    def _split(self, example: Example, count: int, total: int, over: str) -> Truncated:
        """Consecutive exchanges grouped into as few conversations as fit, each rendered with the system prompt."""
        kept: list[Row] = []
        conversations: list[Example] = []
        shortened = lost_exchanges = 0
        i = 0
        while i < count:
            first = i

            def fits(j: int, i: int = first) -> bool:
                return self._fits(self._row(exchanges(example, i, j)))

            j = _last(i + 1, count - 1 if i == 0 else count, fits)
            if j is None and not self._trains(exchanges(example, i, i + 1)):
                i += 1  # an exchange whose turns have train=false, alone: nothing of it to keep, no response lost
                continue
            if j is None:  # exchange i alone does not fit: shortened as keep_response does, or dropped
                fit = self._fit(example, i, i + 1, keep_end=False)
                if fit.row is None:
                    lost_exchanges += 1
                else:
                    shortened += 1
                    kept.append(_pair(fit.row))
                    conversations.append(fit.example)  # type: ignore[arg-type]  # a fit with a row has its conversation
                i += 1
                continue
            conversations.append(exchanges(example, i, j))
            row = self._row(conversations[-1])
            assert isinstance(row, Tokenized)  # it fit a moment ago
            kept.append(_pair(row))
            i = j
        lost = total - sum(count_trained(labels) for _, labels in kept)
        if not kept:
            return Truncated(
                [],
                f"response too long: no exchange's response fits max_length {self.max_length} ({over})",
                RejectCode.RESPONSE_TOO_LONG,
            )
        detail = [f"{shortened} exchange(s) with the prompt shortened"] if shortened else []
        detail += [f"{lost_exchanges} exchange(s) whose response does not fit dropped"] if lost_exchanges else []
        extra = f"; {', '.join(detail)}" if detail else ""
        return Truncated(
            kept,
            f"split: {over} into {len(kept)} conversations at exchange boundaries{extra} ({lost} response tokens lost)",
            RejectCode.SPLIT,
            tuple(conversations),
        )


def _pair(row: Tokenized, limit: int | None = None) -> Row:
    return row_of(row, limit)  # a `WeightedRow` when the record has loss weights (`ftdata.chat.supervision`)


def _level(rooms: list[int], over: int) -> list[int]:
    """Tokens to cut from each piece so that `over` go, the longest first: each is cut down to a common level.

    _level([10, 4, 3], 5) -> [5, 0, 0]      _level([10, 4, 3], 8) -> [7, 1, 0]  (all cut down to 3 tokens)
    """
    if over >= sum(rooms):
        return list(rooms)
    lo, hi = 0, max(rooms)  # the highest level that still frees `over` tokens
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(max(0, r - mid) for r in rooms) >= over:
            lo = mid
        else:
            hi = mid - 1
    drops = [max(0, r - lo) for r in rooms]
    excess = sum(drops) - over  # pieces at the level each gave one token too many
    for i in sorted(range(len(rooms)), key=lambda i: rooms[i]):
        if excess and drops[i] and rooms[i] - drops[i] == lo:
            drops[i] -= 1
            excess -= 1
    return drops


def _first(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """The smallest k in [lo, hi] with ok(k), for ok false then true (None when ok(hi) is false)."""
    if hi < lo or not ok(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def _last(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """The largest j in [lo, hi] with ok(j), for ok true then false (None when ok(lo) is false)."""
    if hi < lo or not ok(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _what_was_cut(
    before: Example, after: Example, tiers: list[tuple[list[Piece], bool]], side: PromptCut
) -> dict[str, Any]:
    """The reason's words for a text cut (which messages, how much was kept) and whether a response was cut."""
    parts, response_cut = [], False
    for pieces, is_response in tiers:
        for piece in pieces:
            old, new = text_of(before, piece), text_of(after, piece)
            if old != new:
                role = "input" if piece == "context" else before.messages[piece].role
                name = {"input": "the input", "assistant": "an assistant message"}.get(role, f"a {role} message")
                kept = len(new) - (len(MARKER) if side is PromptCut.MIDDLE and MARKER in new else 0)
                parts.append(f"kept {kept} of {len(old)} characters of {name}")
                response_cut |= is_response
    return {
        "cut": f"cut the {side.value} of the text ({', '.join(parts)})" if parts else "",
        "response_cut": response_cut,
    }


__all__ = ["ROUNDS", "Truncated", "Truncator"]
