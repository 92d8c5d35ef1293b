"""Where one assistant turn lies in a chat rendering, and which of its characters carry loss.

The inference-consistency rule (docs/masking.md): the trained text of assistant turn i is
exactly what the model must generate there, given the prompt it gets at inference.

    P_i = render(messages[:i], add_generation_prompt=True)   the inference prompt of turn i
    A   = render(messages)                                    the training sequence
    A   = P_i + [what the template writes] data [markup] STOP + next turns ...
                ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ trained (when A starts with P_i)

`data` is the turn's reasoning, content and tool calls (its pieces). Where they lie is found in
characters: render once more with each piece replaced by a private-use sentinel; the span where
the two renders differ is where the template wrote them, and a sentinel missing from the second
render is a piece the template does not write (a rejection, or a note for reasoning a
template drops from history). STOP is the first stop token after the data: the template's
end-of-turn marker (or a call turn's own, gpt-oss `<|call|>`); a template without one (GLM)
is stopped by the next turn's header, so that header's first token is trained, and after
the last turn the tokenizer's EOS is appended and trained.

When A does not start with P_i (the template rewrites history: Qwen3 drops old reasoning,
Mistral moves the system prompt), the turn is trained as it appears in A, from where the
model starts writing (`ftdata.chat.fallback`) to its stop token ("fallback"). Stop tokens come
from `ftdata.chat.stops`; the turns of a whole record are located by `ftdata.chat.turns`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from ftdata.chat.fallback import FallbackStart
from ftdata.chat.long_records import Tail
from ftdata.chat.markers import RoleMarkers
from ftdata.chat.sentinels import Chat, Found, LazySpans, changed_span, end_of_calls, find_pieces, sentinel
from ftdata.chat.stops import Stop, common_token_prefix, first_stop
from ftdata.errors import TemplateError
from ftdata.outcomes import Note, NoteCode, has_note

REASONING_DROPPED = Note(
    NoteCode.REASONING_DROPPED,
    "the chat template drops the reasoning (<think>...</think>) of an assistant turn; only its answer is trained",
)
REASONING_PROMPT_CLOSED = Note(
    NoteCode.REASONING_PROMPT_CLOSED,
    "the generation prompt already closes the think block (e.g. enable_thinking=false), so the model cannot write the "
    "reasoning after it: only the answer is trained; build with thinking on to train the reasoning, or "
    "mask_reasoning=True",
)
EOS_APPENDED = Note(
    NoteCode.EOS_APPENDED,
    "the chat template writes no end-of-turn marker: EOS was appended after the last turn and trained",
)
# Boilerplate the rule trains (Qwen3's empty think block when thinking is on), and the kwarg that moves it.
THINK_BOILERPLATE = (
    "trains {text!r}, which the template writes into this turn after the generation prompt; "
    "chat_template_kwargs {kwarg} moves it into the prompt"
)


@dataclass(frozen=True, slots=True)
class Turn:
    """Assistant turn i in A: [start, end) is trained; `boundary` is where the next exchange begins."""

    start: int
    end: int
    boundary: int
    method: str  # "prefix" (A starts with P_i) or "fallback"
    stop: int  # where its stop token begins (`end` is where it ends)
    notes: tuple[Note, ...] = ()
    appended: str = (
        ""  # text A lacks after this (last) turn, trained with it: the EOS, or a call turn's hand-over to the tool
    )


@dataclass(frozen=True, slots=True)
class Hint:
    """What is already known of turn i (a long record's skeletons, `turns.LongRecord`): P_i (its length where
    A starts with it, else a `Tail`), the turn's data (`Found`), and whether the template writes the turn's
    reasoning, which it drops from history, when the turn is last."""

    prompt: int | Tail | None = None
    found: Found | None = None
    writes_last: bool | None = None


NO_HINT = Hint()


@dataclass(frozen=True, slots=True)
class Opening:
    """Where the model starts writing turn i when A starts with P_i (`at`; None where it does not), P_i
    (None where it does not render), and whether that P_i is a `Tail` aligned to A (`aligned`)."""

    at: int | None
    prompt: str | None
    aligned: bool = False


@dataclass(frozen=True, slots=True)
class Data:
    """Where the template writes turn i's data in A: [start, end); where its written reasoning ends (None:
    not asked for); the notes locating it gave; whether the model writes markup before it (`block`: the
    think block it opens when its reasoning is written, the call markup before a call's name)."""

    start: int
    end: int
    reasoning_end: int | None = None
    notes: tuple[Note, ...] = ()
    block: bool = False


def _content_span(text: str, start: int, content: str) -> tuple[int, int] | None:
    """Where `content` is written when text[start:] is `[ws] content`, else None (the plain-turn fast path)."""
    core = content.strip()
    j = start
    while j < len(text) and text[j].isspace() and not text.startswith(core, j):
        j += 1
    return (j, j + len(core)) if core and text.startswith(core, j) else None


def writes_last_reasoning(chat: Chat, i: int, mark: str) -> bool:
    """Whether the template writes turn i's reasoning when turn i ends the conversation (`mark`: a sentinel)."""
    try:
        return mark in chat.render([*chat.msgs[:i], {**chat.msgs[i], "reasoning_content": mark, "thinking": mark}])
    except TemplateError:
        return False


class TurnLocator:
    """Finds the trained span of one assistant turn, by the rule above, for one tokenizer and template."""

    def __init__(self, tokenizer: Any, markers: RoleMarkers, *, mask_reasoning: bool = False):
        self.tokenizer = tokenizer
        self.markers = markers
        self.mask_reasoning = mask_reasoning
        self.eos = tokenizer.eos_token or ""
        self.fallback = FallbackStart(tokenizer, markers)
        # Text that opens another turn: a stop search never runs across it.
        self.openers = tuple(h.strip() for h in (markers.user_header, markers.system_header) if h.strip())

    def __call__(self, chat: Chat, i: int, *, done: int, trained: bool, hint: Hint = NO_HINT) -> Turn:
        """Assistant turn i of `chat`; `done`: where the previous located turn ends.

        Raises:
            UnusableRecord: the template raises on, drops or rewrites a piece of the turn, the turn overlaps
                the previous one, or it would end without a token that stops generation.
        """
        msg = chat.msgs[i]
        opening = self._opening(chat, i, done, hint.prompt)
        data = self._data(chat, i, opening, hint)
        notes = list(data.notes)
        if opening.at is not None:
            start, method = opening.at, "prefix"
        else:
            start, closed = self._fallback_start(chat, i, done, opening, data, hint.found)
            method = "fallback"
            if closed and (
                msg.get("reasoning_content") or "</think>" in (msg.get("content") or "")
            ):  # R1-style content too
                notes.append(REASONING_PROMPT_CLOSED)
        if start < done:
            raise chat.reject(i, "it overlaps the previous turn")
        stop = self._stop(chat, i, data, hint.found)
        if stop.eos and trained:
            notes.append(EOS_APPENDED)
        self._check_call_names(chat, i, start, stop.end)
        boundary = self._boundary(chat.text, stop)
        if self.mask_reasoning and data.reasoning_end is not None:
            close, end = self.markers.reasoning_close, data.reasoning_end
            start = max(start, end + common_token_prefix(chat.text[end : stop.end], close, self.tokenizer))
        if (note := self._boilerplate(chat.text, start, msg)) is not None:
            notes.append(note)
        return Turn(start, stop.end, boundary, method, stop.start, tuple(notes), stop.appended)

    def _opening(self, chat: Chat, i: int, done: int, known: int | Tail | None) -> Opening:
        """Where the model starts writing turn i when A starts with P_i: after P_i (`known`: its length, or
        P_i as a `Tail`; else rendered), past the header a template that ignores the generation prompt writes."""
        prompt: str | None = None
        aligned = isinstance(known, Tail) and known.rewritten  # P_i as the fallback aligns it to A: not a prefix
        if isinstance(known, int) and known >= done:  # P_i is text[:known] (`prompt_ends`)
            at: int | None = known
        else:
            try:
                prompt = (
                    known.prompt(chat.text) if isinstance(known, Tail) else chat.render(chat.msgs[:i], generation=True)
                )
            except TemplateError:
                prompt = None
            prefix = prompt is not None and not aligned and chat.text.startswith(prompt) and len(prompt) >= done
            at = len(prompt) if prefix and prompt is not None else None
        header = self.markers.assistant_header
        if at is not None and self.markers.ignores_generation_prompt and header and chat.text.startswith(header, at):
            at += len(header)  # no generation prompt: the rendered header is what a server adds
        return Opening(at, prompt, aligned)

    def _data(self, chat: Chat, i: int, opening: Opening, hint: Hint) -> Data:
        """Where turn i's data lies: a plain turn's content right after P_i (the fast path), a long record's
        plain turn's content from the skeleton render, else by a render with its pieces replaced."""
        msg = chat.msgs[i]
        plain = not msg.get("tool_calls") and msg.get("reasoning_content") is None
        if opening.at is not None and plain and (span := _content_span(chat.text, opening.at, msg["content"])):
            return Data(*span)
        spans = chat.contents() if hint.prompt is not None and plain else None
        if spans is not None and (span := spans[i]) is not None:
            return Data(*span, block="</think>" in msg["content"])
        data = self._written(chat, i, hint)
        block = bool(msg.get("tool_calls")) or (
            not has_note(data.notes, NoteCode.REASONING_DROPPED)
            and (msg.get("reasoning_content") is not None or "</think>" in msg["content"])
        )
        return replace(data, block=block)

    def _written(self, chat: Chat, i: int, hint: Hint) -> Data:
        """Where the template writes turn i's pieces: as `hint.found` holds them (a long record's skeletons),
        else found by one render with them replaced. `hint.writes_last`: whether the template writes the
        turn's reasoning when the turn is last (else rendered here, where it drops the reasoning).

        Raises:
            UnusableRecord: the template does not write a call, the reasoning (but in history turns whose
                reasoning it writes when they are last: noted) or the content, or rewrites the content.
        """
        msg = chat.msgs[i]
        found = hint.found if hint.found is not None else find_pieces(chat, i)
        if any(name.startswith("call") and name not in found.written for name in found.pieces):
            names = ", ".join(repr(c["function"]["name"]) for c in msg["tool_calls"])
            raise chat.reject(
                i, f"the chat template does not write its tool calls ({names}); use a template that renders tool_calls"
            )
        notes: list[Note] = []
        if "reasoning" in found.pieces and "reasoning" not in found.written:
            last = i == len(chat.msgs) - 1
            if last or not (
                hint.writes_last
                if hint.writes_last is not None
                else writes_last_reasoning(chat, i, sentinel(chat.text))
            ):
                raise chat.reject(
                    i,
                    (
                        "the chat template does not write its reasoning (reasoning_content/thinking); the model "
                        "would be trained "
                        "to answer without it: drop the reasoning or use a template that renders it"
                    ),
                )
            notes.append(REASONING_DROPPED)  # history reasoning: the template keeps it only in the last turn
        if "content" in found.pieces:
            if "content" not in found.written:
                raise chat.reject(i, "the chat template drops its content")
            written = chat.text[found.start : found.end]
            notes += _rewritten(chat, i, written, msg["content"].strip(), strict=len(found.pieces) == 1)
        reasoning_end = found.reasoning_end
        if "reasoning" in found.written and self.mask_reasoning and reasoning_end is None:
            mark = sentinel(chat.text)
            only = {**msg, "reasoning_content": mark, "thinking": mark}
            reasoning_end = changed_span(chat.text, chat.render(chat.with_message(i, only)))[1]
        return Data(found.start, found.end, reasoning_end, tuple(notes))

    def _fallback_start(
        self, chat: Chat, i: int, done: int, opening: Opening, data: Data, found: Found | None
    ) -> tuple[int, bool]:
        """(where turn i begins in A, whether A writes again the prompt's close of a think block), as it
        appears in A (`FallbackStart`): from its data, or from the end of its role header when the model
        writes markup before the data (a call-only turn has no content to anchor on)."""
        prompt = opening.prompt
        if opening.aligned and not _aligns(chat.contents, i, done, data.start):
            try:  # the fallback would not align P_i to A here: it needs P_i as rendered
                prompt = chat.render(chat.msgs[:i], generation=True)
            except TemplateError:
                prompt = None
        return self.fallback(
            chat.text,
            chat.msgs,
            i,
            prompt,
            done=done,
            data=(data.start, data.end),
            block=data.block,
            render=chat.render,
            contents=chat.contents,
            answer=found.answer if found is not None else None,
        )

    def _stop(self, chat: Chat, i: int, data: Data, found: Found | None) -> Stop:
        """The stop token that ends turn i: the first after its data and calls; for a final call turn of a
        template with no end-of-turn marker, the hand-over to the tool; else the appended EOS.

        A call turn stops at the first stop token after its calls: where a template writes the tool
        results and then the turn's text inside the same model turn (Gemma 4), those come after
        `<|tool_response>`, which ends generation, so they belong to the next prompt.
        """
        msg = chat.msgs[i]
        if not msg.get("tool_calls"):
            calls_end = data.end
        elif found is not None and found.calls_end is not None:
            calls_end = found.calls_end
        else:
            calls_end = end_of_calls(chat, i)
        stop = first_stop(chat.text, min(calls_end, data.end), self.markers.stops, self.openers)
        if stop is None and i == len(chat.msgs) - 1 and msg.get("tool_calls"):
            # No end-of-turn marker (GLM): a call turn hands over to the tool, so the model writes the header
            # of the tool's turn, which stops generation; as the template writes it after this turn.
            stop = self._handover(chat, min(calls_end, data.end))
        return stop if stop is not None else self._eos(chat, i, max(data.end, calls_end))

    def _eos(self, chat: Chat, i: int, after: int) -> Stop:
        """The EOS appended after the last turn of a template that writes no end-of-turn marker.

        After the last turn's data (which ends at `after`) the render may hold only the closing markup
        of its calls (Apriel's `}]</tool_calls>`, where no handover is found because the template writes a
        call's id in history only): the model writes that markup, then the EOS.

        Raises:
            UnusableRecord: the turn would end without a token that stops generation.
        """
        rest = chat.text[after:]
        if chat.msgs[i].get("tool_calls") and not any(opener in rest for opener in self.openers):
            rest = ""
        if not self.markers.eos_appended or not self.eos or i != len(chat.msgs) - 1 or rest.strip():
            stops = ", ".join(map(repr, self.markers.stops)) or "none"
            raise chat.reject(
                i,
                f"it does not end with a token that stops generation (stop tokens: {stops}); the model would not "
                "learn to stop",
            )
        return Stop(len(chat.text), len(chat.text) + len(self.eos), self.eos, eos=True)

    def _handover(self, chat: Chat, after: int) -> Stop | None:
        """The stop token that hands a final call turn over to the tool, with the text A lacks up to its
        end (`appended`): the template rendered with a tool result after the turn writes A, then
        (whitespace and) that stop before anything else of the result; None where it does not."""
        mark = sentinel(chat.text)
        try:
            probe = chat.render([*chat.msgs, {"role": "tool", "content": mark}])
        except TemplateError:
            return None
        if not probe.startswith(chat.text):
            return None
        stop = first_stop(probe, after, self.markers.stops, self.openers)
        if stop is None or mark in probe[: stop.end] or probe[len(chat.text) : stop.start].strip():
            return None
        return Stop(stop.start, stop.end, probe[len(chat.text) : stop.end])

    @staticmethod
    def _check_call_names(chat: Chat, i: int, start: int, end: int) -> None:
        """Raises UnusableRecord where the trained span [start, end) lacks the name of one of turn i's calls."""
        text = chat.text
        for name, n in Counter(call["function"]["name"] for call in chat.msgs[i].get("tool_calls", ())).items():
            if text.count(name, start, end) < n:
                raise chat.reject(
                    i,
                    f"the template does not write the name of the tool call {name!r}"
                    if name not in text
                    else f"its tool call {name!r} begins before where the turn can be located, so it cannot be "
                    "trained whole",
                )

    def _boundary(self, text: str, stop: Stop) -> int:
        """Where the next exchange begins: after the end-of-turn marker (and the separator the template
        writes after it), or, with no end-of-turn marker, at the trained header token that opens it."""
        if not self.markers.eot:
            return stop.start
        sep = self.markers.separator
        return stop.end + len(sep) if sep and text.startswith(sep, stop.end) else stop.end

    def _boilerplate(self, text: str, start: int, msg: dict[str, Any]) -> Note | None:
        """The note for an empty think block the turn trains, which a thinking kwarg moves into the prompt."""
        after, kwarg = self.markers.after_prompt, self.markers.thinking_kwarg
        if kwarg and after.strip() and text.startswith(after, start) and msg.get("reasoning_content") is None:
            return Note(NoteCode.THINK_BOILERPLATE, THINK_BOILERPLATE.format(text=after, kwarg=kwarg))
        return None


def _aligns(contents: LazySpans, i: int, done: int, data_start: int) -> bool:
    """Whether `FallbackStart` aligns P_i to A at message i-1's content (it lies between the previous
    turn and turn i's data), as a rewritten `Tail` is."""
    span = (contents() or [None] * i)[i - 1]
    return span is not None and done <= span[0] and span[1] <= data_start


def _rewritten(chat: Chat, i: int, written: str, core: str, *, strict: bool) -> list[Note]:
    """The notes of content `core` as the template `written` it: none where it holds it as given.

    A content written as `<think>...</think>answer` may come back with its reasoning dropped (history
    turns of Qwen3: noted) or re-rendered as the template's own block.

    Raises:
        UnusableRecord: the template rewrites the content.
    """
    if (written.strip() == core) if strict else (core in written):
        return []
    answer = core.rsplit("</think>", 1)[1].strip() if "</think>" in core else ""
    if answer and written.rstrip().endswith(answer):
        return [] if "</think>" in written else [REASONING_DROPPED]
    shown = written if len(written) <= 60 else written[:57] + "..."
    raise chat.reject(i, f"the template renders it as {shown!r} (it rewrites the content)")
