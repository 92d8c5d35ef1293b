"""Where each assistant turn lies in a chat rendering, and which of its characters carry loss.

The inference-consistency rule (docs/masking.md): the trained text of assistant turn i is
exactly what the model must generate there, given the prompt it gets at inference.

    P_i = render(messages[:i], add_generation_prompt=True)   the inference prompt of turn i
    A   = render(messages)                                    the training sequence
    A   = P_i + [what the template writes] data [markup] STOP + next turns ...
                ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ trained (when A starts with P_i)

`data` is the turn's reasoning, content and tool calls. Where they lie is found in characters:
render once more with each piece replaced by a private-use sentinel; the region where the two
renders differ is where the template wrote them, and a sentinel missing from the second
render is a piece the template does not write (a rejection, or a note for reasoning a
template drops from history). STOP is the first stop token after the data: the template's
end-of-turn marker (or a call turn's own, gpt-oss `<|call|>`); a template without one (GLM)
is stopped by the next turn's header, so that header's first token is trained, and after
the last turn the tokenizer's EOS is appended and trained.

When A does not start with P_i (the template rewrites history: Qwen3 drops old reasoning,
Mistral moves the system prompt), the turn is trained as it appears in A, from where the
model starts writing (`ftdata.chat.fallback`) to its stop token ("fallback"). Stop tokens come
from `ftdata.chat.stops`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cache
from typing import Any

from ftdata.errors import Location, TemplateError, UnusableRecord
from ftdata.chat.fallback import FallbackStart
from ftdata.chat.pieces import Found, has_reasoning, locate, marked_call
from ftdata.chat.regions import Regions, Render, Tail, changed_region, content_regions, groups, picks, prompt_ends, prompt_tails, sentinel as _sentinel
from ftdata.chat.markers import ChatRenderer, RoleMarkers
from ftdata.outcomes import Note, NoteCode, RejectCode, has_note
from ftdata.chat.stops import common_token_prefix, first_stop
from ftdata.records.tools import writes
from ftdata.types import Example, Rendered, SplitReason

REASONING_DROPPED = Note(
    NoteCode.REASONING_DROPPED,
    "the chat template drops the reasoning (<think>...</think>) of an assistant turn; only its answer is trained",
)
REASONING_PROMPT_CLOSED = Note(
    NoteCode.REASONING_PROMPT_CLOSED,
    "the generation prompt already closes the think block (e.g. enable_thinking=false), so the model cannot write the "
    "reasoning after it: only the answer is trained; build with thinking on to train the reasoning, or mask_reasoning=True",
)
SYSTEM_DROPPED = Note(NoteCode.SYSTEM_DROPPED, "the chat template dropped the system message; use system_mode='fold' to keep it")
EOS_APPENDED = Note(
    NoteCode.EOS_APPENDED,
    "the chat template writes no end-of-turn marker: EOS was appended after the last turn and trained",
)
# Boilerplate the rule trains (Qwen3's empty think block when thinking is on), and the kwarg that moves it.
# From this many assistant turns of a kind on (plain; with reasoning or tool calls), a conversation's
# inference prompts are located in a bounded number of renders (`prompt_ends` where the template is
# prefix-stable, else `prompt_tails`), plain turns' contents from one skeleton render and the data of
# turns with reasoning or calls from two (`pieces.locate`), rather than rendered one by one.
LONG = 4
THINK_BOILERPLATE = "trains {text!r}, which the template writes into this turn after the generation prompt; chat_template_kwargs {kwarg} moves it into the prompt"



@dataclass(frozen=True, slots=True)
class Turn:
    """Assistant turn i in A: [start, end) is trained; `boundary` is where the next exchange begins."""

    start: int
    end: int
    boundary: int
    method: str  # "prefix" (A starts with P_i) or "fallback"
    notes: tuple[Note, ...] = ()
    appended: str = ""  # text A lacks after this (last) turn, trained with it: the EOS, or a call turn's hand-over to the tool
    stop: int = -1  # where its stop token begins (`end` is where it ends)


def _content_end(text: str, start: int, content: str) -> int | None:
    """End of `content` when text[start:] is `[ws] content`, else None (the plain-turn fast path)."""
    core = content.strip()
    j = start
    while j < len(text) and text[j].isspace() and not text.startswith(core, j):
        j += 1
    return j + len(core) if core and text.startswith(core, j) else None


def _starts_with_render(text: str, messages: list[dict[str, Any]], render: Render) -> bool:
    """Whether `text` begins with the render of `messages` (False where the template raises on them)."""
    try:
        return text.startswith(render(messages))
    except TemplateError:
        return False


def tool_name(tool: dict[str, Any]) -> str:
    """The function name of a tool schema (OpenAI `{"type": "function", "function": {...}}` or bare)."""
    inner = tool.get("function", tool)
    return str(inner.get("name", "")) if isinstance(inner, dict) else ""


class ChatSpans:
    """Finds the trained span of every assistant turn of an example, by the rule above."""

    def __init__(self, tokenizer: Any, render: ChatRenderer, markers: RoleMarkers, *, mask_reasoning: bool = False):
        self.tokenizer = tokenizer
        self.render = render
        self.markers = markers
        self.mask_reasoning = mask_reasoning
        self.eos = tokenizer.eos_token or ""
        self.fallback = FallbackStart(tokenizer, markers)
        # Text that opens another turn: a stop search never runs across it.
        self.openers = tuple(h.strip() for h in (markers.user_header, markers.system_header) if h.strip())

    def __call__(
        self, example: Example, msgs: list[dict[str, Any]], trained: list[bool], *, history: bool = True, exact: bool = False
    ) -> Rendered:  # fmt: skip
        """Render `msgs` (the example's chat messages, arguments normalised) and find each span.

        `exact` (history=inference): each trained turn before the last message is also rendered as the last
        turn of its own conversation (`_unheld`); the turns this rendering does not write as inference sees
        them are `Rendered.unheld`, for the record to be split into rows (`ftdata.chat.trajectory`).

        `history=False`, for a conversation that trains only its final turn (a preference pair's side):
        where the template writes that turn after its inference prompt as rendered (`prefix`), the turns
        before it are left as the prompt: not located, so no boundaries and no checks of their own (the
        model reads them as the template writes them at inference). Elsewhere every turn is located.

        Raises:
            UnusableRecord: the template raises, drops or rewrites a piece of a turn, or a
                trained turn would end without a token that stops generation.
        """
        tools, kwargs = list(example.tools) or None, example.template_kwargs

        def render(messages: list[dict[str, Any]], *, generation: bool = False) -> str:
            return self.render(messages, generation=generation, tools=tools, kwargs=kwargs, location=example.source)

        try:
            text = render(msgs)
        except TemplateError as exc:
            hint = ""
            if msgs[0]["role"] == "system" and self.markers.system_support == "raises":
                hint = "; this template has no system role: use system_mode='fold'"
            elif self.markers.needs_tools and not tools:
                hint = "; this template renders only with tools: give the record a `tools` schema"
            raise UnusableRecord(f"{exc}{hint}", location=example.source, field="messages", code=RejectCode.TEMPLATE_ERROR) from None
        notes: list[Note] = []
        if msgs[0]["role"] == "system" and msgs[0]["content"].strip() not in text:
            notes.append(SYSTEM_DROPPED)
        for tool in example.tools:
            if tool_name(tool) not in text:
                raise UnusableRecord(
                    f"the chat template does not write the tool schema {tool_name(tool)!r}: the model would be trained to "
                    "call a tool it was never shown; use a template that renders `tools`",
                    location=example.source, field="tools", code=RejectCode.NOT_RENDERED,
                )  # fmt: skip
        if not history and (last := self._final(text, msgs, trained, render, example.source)) is not None:
            return Rendered(text + last.appended, ((last.start, last.end),), "prefix", (), tuple(dict.fromkeys([*notes, *last.notes])))
        spans, boundaries, method, done = [], [], "prefix", 0
        regions = cache(lambda: content_regions(text, render, msgs))  # every content's place, one render, when asked
        known, found, lasts = self._long(msgs, regions, render, text)
        held = self._held(text, msgs, trained, render) if exact else set()
        unheld: list[tuple[int, SplitReason]] = []
        for i, msg in enumerate(msgs):
            if msg["role"] != "assistant":
                continue
            turn = self._turn(text, msgs, i, render, done, trained[i], example.source, known.get(i), regions, found.get(i), lasts.get(i))
            if turn.method == "fallback":
                method = "fallback"
            if trained[i]:  # a turn nothing trains says nothing of what is trained (its dropped reasoning)
                notes.extend(turn.notes)
            if exact and trained[i] and i < len(msgs) - 1 and i not in held and (why := self._unheld(text, msgs, i, turn, render, example.source)):
                unheld.append((i, why))
            text += turn.appended
            if trained[i]:
                spans.append((turn.start, turn.end))
            done = turn.end
            boundaries.append(turn.boundary)
        return Rendered(text, tuple(spans), method, tuple(boundaries[:-1]), tuple(dict.fromkeys(notes)), unheld=tuple(unheld))

    @staticmethod
    def _held(text: str, msgs: list[dict[str, Any]], trained: list[bool], render: Render) -> set[int]:
        """A long conversation's trained history turns that `text` writes as inference sees them, in a bounded
        number of renders: in each group of at least `LONG` turns of one kind (plain; with reasoning or calls)
        after a message of one role, up to `SAMPLES` turns are rendered as the last one (`picks`); where `text`
        begins with each of those renders, the group holds, as `_long` takes P_i. Elsewhere (a short
        conversation, a group where one render differs: Qwen3's turns before and after the last user query)
        each turn is checked by `_unheld`."""
        turns = [i for i, m in enumerate(msgs) if m["role"] == "assistant" and trained[i] and 0 < i < len(msgs) - 1]
        if len(turns) < LONG:
            return set()
        plain = [i for i in turns if not msgs[i].get("tool_calls") and msgs[i].get("reasoning_content") is None]
        other = sorted(set(turns) - set(plain))
        out: set[int] = set()
        for kind in (plain, other):
            for group in groups(msgs, kind).values():
                if len(group) >= LONG and all(_starts_with_render(text, msgs[: i + 1], render) for i in picks(group)):
                    out.update(group)
        return out

    def _unheld(self, text: str, msgs: list[dict[str, Any]], i: int, turn: Turn, render: Render, source: Location) -> SplitReason | None:
        """Why history turn i, as `text` writes it (located as `turn`), is not what the model writes at inference;
        None where it is.

        The inference target is turn i as the last turn of its own conversation: `render(msgs[:i+1])`,
        located by the rule (after P_i, through its stop token). It holds in `text` when `text` begins with
        that whole render (prefix-stable templates: nothing more to locate; a template that closes a last
        turn with nothing, Apriel, is closed by the marker `text` writes next), or else writes the same
        characters up to the target's stop token (the context and the turn), locates the turn at the same
        place, and has a stop token there (GLM's next header where the target has the appended EOS).

        Raises:
            UnusableRecord: the template raises on the turn as the last one, or writes it there where the rule
                cannot locate it (the record is rejected naming the turn).
        """
        head = msgs[: i + 1]
        try:
            last = render(head)
        except TemplateError as exc:
            raise UnusableRecord(
                f"assistant turn {i} cannot be trained as inference sees it: as the last turn the chat template raises ({exc})",
                location=source, field=f"messages[{i}]", code=RejectCode.UNMASKABLE,
            ) from None  # fmt: skip
        if text.startswith(last):  # the full render writes the turn's whole render first: same context, same turn
            return None
        try:
            target = self._turn(last, head, i, render, 0, True, source)
        except UnusableRecord as exc:
            # The turn as the last one cannot be located (Apriel writes a call's id in history only and closes a
            # last call turn with nothing): what the model writes for it at inference is unknown, so it is not
            # trained as the full render writes it (history=one_row does that, by the user's choice).
            raise UnusableRecord(
                f"assistant turn {i} cannot be trained as inference sees it: as the last turn "
                + exc.reason.removeprefix(f"assistant turn {i} cannot be masked safely: "),
                location=source, field=f"messages[{i}]", code=RejectCode.UNMASKABLE,
            ) from None  # fmt: skip
        stop = (last + target.appended)[target.stop : target.end]
        # Through its first stop token: Phi-3 closes a last turn with `<|end|>\n<|endoftext|>`, and generation has
        # ended at `<|end|>`, which its history turns write too.
        stop = min((s for s in self.markers.stops if s and stop.startswith(s)), key=len, default=stop)
        # The same stop token; where the target's was appended (an EOS after a last turn that has no end-of-turn
        # marker), the stop token `text` writes there (the next turn's header, which also ends generation).
        stops = text.startswith(stop, turn.stop) or (target.stop == len(last) and bool(target.appended))
        if stops and text.startswith(last[: target.stop]) and (turn.start, turn.stop) == (target.start, target.stop):
            return None
        if not text.startswith(last[: target.start]):
            return SplitReason.CONTEXT
        if has_note(turn.notes, NoteCode.REASONING_DROPPED):
            return SplitReason.REASONING
        return SplitReason.TARGET

    def _final(self, text: str, msgs: list[dict[str, Any]], trained: list[bool], render: Render, source: Location) -> Turn | None:
        """The final turn, when it alone is trained and follows its inference prompt as rendered; else None
        (the template writes the history otherwise, as Mistral does: every turn is located)."""
        i = len(msgs) - 1
        if msgs[i]["role"] != "assistant" or trained.index(True) != i:
            return None
        try:
            prompt = render(msgs[:i], generation=True)
        except TemplateError:
            return None
        # P_i is text[:len(prompt)]: the turn is located from there, as `_long` hands a known P_i on
        return self._turn(text, msgs, i, render, 0, True, source, len(prompt)) if text.startswith(prompt) else None

    def _long(
        self, msgs: list[dict[str, Any]], regions: Regions, render: Render, text: str
    ) -> tuple[dict[int, int | Tail], dict[int, Found], dict[int, bool]]:  # fmt: skip
        """A long conversation's turns without rendering each prefix: (P_i by turn, the data of turns
        with reasoning or calls by turn, whether the template writes a turn's dropped reasoning when
        the turn is last, by turn); each {} for a kind of turn with fewer than `LONG` turns (they are
        rendered one by one).

        P_i: len(P_i) where the template is prefix-stable and writes a generation prompt
        (`prompt_ends`), else P_i as A's text plus a tail (`prompt_tails`); each kind of turn (plain,
        with reasoning or calls) checked apart. The data of turns with reasoning or calls: from two
        skeleton renders (`pieces.locate`); a plain turn's content: from `content_regions`.
        """
        m = self.markers
        turns = [i for i, msg in enumerate(msgs) if msg["role"] == "assistant" and i > 0]
        plain = [i for i in turns if not msgs[i].get("tool_calls") and msgs[i].get("reasoning_content") is None]
        other = [i for i in turns if msgs[i].get("tool_calls") or msgs[i].get("reasoning_content") is not None]
        if len(plain) < LONG and len(other) < LONG:
            return {}, {}, {}  # a short conversation: every turn rendered
        found = locate(text, render, msgs, other) if len(other) >= LONG else {}
        places = regions()
        if places is not None and found:  # a turn's own place begins where its data does (its reasoning, its calls)
            places = [(found[i].start, found[i].end) if i in found else place for i, place in enumerate(places)]
        ends: dict[int, int | Tail] = {}
        for kind in (plain, [i for i in other if i in found]):
            if len(kind) < LONG:
                continue
            if m.prefix_stable and not m.ignores_generation_prompt and m.assistant_header.strip():
                ends.update(prompt_ends(text, render, msgs, m.assistant_header, kind, places))
            rest = [i for i in kind if i not in ends]
            if len(rest) >= LONG:
                ends.update(prompt_tails(text, render, msgs, rest, places))
        return ends, found, self._lasts(msgs, found, render, text)

    def _lasts(self, msgs: list[dict[str, Any]], found: dict[int, Found], render: Render, text: str) -> dict[int, bool]:
        """Whether the template writes a turn's reasoning when the turn ends the conversation, for the
        turns whose reasoning it drops (history turns of Qwen3): rendered for up to `SAMPLES` of
        them per role before them; where those agree, the verdict holds for the group."""
        dropped = [i for i, f in found.items() if "reasoning" in f.pieces and "reasoning" not in f.written and i < len(msgs) - 1]
        mark = _sentinel(text)
        out: dict[int, bool] = {}
        for group in groups(msgs, dropped).values():
            verdicts = {self._writes_last_reasoning(msgs, i, mark, render) for i in picks(group)}
            if len(verdicts) == 1:
                out.update(dict.fromkeys(group, verdicts.pop()))
        return out

    def _turn(
        self, text: str, msgs: list[dict[str, Any]], i: int, render: Render, done: int, trained: bool, source: Location,
        known: int | Tail | None = None, regions: Regions = lambda: None, found: Found | None = None,
        writes_last: bool | None = None,
    ) -> Turn:  # fmt: skip
        def reject(why: str) -> UnusableRecord:
            return UnusableRecord(
                f"assistant turn {i} cannot be masked safely: {why}", location=source, field=f"messages[{i}]",
                code=RejectCode.UNMASKABLE,
            )  # fmt: skip

        msg = msgs[i]
        prompt: str | None = None
        aligned = isinstance(known, Tail) and known.rewritten  # P_i as the fallback aligns it to A: not a prefix
        if isinstance(known, int) and known >= done:  # P_i is text[:known] (`_prompt_ends`)
            prefix, opened = True, known
        else:
            try:
                prompt = known.prompt(text) if isinstance(known, Tail) else render(msgs[:i], generation=True)
            except TemplateError:
                prompt = None
            prefix = prompt is not None and not aligned and text.startswith(prompt) and len(prompt) >= done
            opened = len(prompt) if prefix and prompt is not None else -1  # where the model starts writing
        header = self.markers.assistant_header
        if prefix and self.markers.ignores_generation_prompt and header and text.startswith(header, opened):
            opened += len(header)  # no generation prompt: the rendered header is what a server adds
        plain = not msg.get("tool_calls") and msg.get("reasoning_content") is None
        notes: list[Note] = []
        data_end = _content_end(text, opened, msg["content"]) if prefix and plain else None
        data_start, reasoning_end, block = -1, -1, False
        places = regions() if known is not None and plain and data_end is None else None
        place = places[i] if places is not None else None
        if place is not None:  # a long record's plain turn: its content's place from the skeleton render
            data_start, data_end = place
            block = "</think>" in msg["content"]
        elif data_end is None:
            data_start, data_end, reasoning_end, notes, why = self._data(text, msgs, i, render, found, writes_last)
            if why:
                raise reject(why)
            # Markup the model writes before its data: the think block it opens when its reasoning
            # is written, the call markup before a call's name (`<tool_call>\n{"name": `).
            block = bool(msg.get("tool_calls")) or (
                not has_note(notes, NoteCode.REASONING_DROPPED) and (msg.get("reasoning_content") is not None or "</think>" in msg["content"])
            )  # fmt: skip
        if prefix:
            start, method = opened, "prefix"
        else:
            # As it appears in A: from its data, or from the end of its role header when the model
            # writes markup before the data (a call-only turn has no content to anchor on).
            if aligned and not self._aligns(regions, i, done, data_start):
                try:  # the fallback would not align P_i to A here: it needs P_i as rendered
                    prompt = render(msgs[:i], generation=True)
                except TemplateError:
                    prompt = None
            start, closed = self.fallback(
                text, msgs, i, prompt, done=done, data=(data_start, data_end), block=block, render=render,
                regions=regions, answer=found.answer if found is not None else None,
            )
            method = "fallback"
            if closed and msg.get("reasoning_content"):
                notes.append(REASONING_PROMPT_CLOSED)
        if start < done:
            raise reject("it overlaps the previous turn")
        # A call turn stops at the first stop token after its calls: where a template writes the
        # tool results and then the turn's text inside the same model turn (Gemma 4), those come
        # after `<|tool_response>`, which ends generation, so they belong to the next prompt.
        if not msg.get("tool_calls"):
            calls_end = data_end
        else:
            calls_end = found.calls_end if found is not None else self._calls_end(text, msgs, i, render)
        stop_at, end = first_stop(text, min(calls_end, data_end), self.markers.stops, self.openers)
        appended = ""
        if end < 0 and i == len(msgs) - 1 and msg.get("tool_calls"):
            # No end-of-turn marker (GLM): a call turn hands over to the tool, so the model writes the header
            # of the tool's turn, which stops generation; as the template writes it after this turn.
            found_stop = self._handover(text, msgs, render, min(calls_end, data_end))
            if found_stop is not None:
                stop_at, end, appended = found_stop
        if end < 0:
            # After the last turn's data the render may hold only the closing markup of its calls (Apriel's
            # `}]</tool_calls>`, where no handover is found because the template writes a call's id in history
            # only): the model writes that markup, then the EOS.
            rest = text[max(data_end, calls_end) :]
            if msg.get("tool_calls") and not any(opener in rest for opener in self.openers):
                rest = ""
            if not self.markers.eos_appended or not self.eos or i != len(msgs) - 1 or rest.strip():
                stops = ", ".join(map(repr, self.markers.stops)) or "none"
                raise reject(f"it does not end with a token that stops generation (stop tokens: {stops}); the model would not learn to stop")
            stop_at, end, appended = len(text), len(text) + len(self.eos), self.eos
            if trained:
                notes.append(EOS_APPENDED)
        names = Counter(call["function"]["name"] for call in msg.get("tool_calls", ()))
        for name, n in names.items():
            if text.count(name, start, end) < n:
                raise reject(
                    f"the template does not write the name of the tool call {name!r}" if name not in text else
                    f"its tool call {name!r} begins before where the turn can be located, so it cannot be trained whole"
                )  # fmt: skip
        if self.markers.eot:
            sep = self.markers.separator
            boundary = end + len(sep) if sep and text.startswith(sep, end) else end
        else:
            boundary = stop_at  # the trained header token opens the next exchange
        if self.mask_reasoning and reasoning_end >= 0:
            close = self.markers.reasoning_close
            start = max(start, reasoning_end + common_token_prefix(text[reasoning_end:end], close, self.tokenizer))
        after = self.markers.after_prompt
        if self.markers.thinking_kwarg and after.strip() and text.startswith(after, start) and msg.get("reasoning_content") is None:
            notes.append(Note(NoteCode.THINK_BOILERPLATE, THINK_BOILERPLATE.format(text=after, kwarg=self.markers.thinking_kwarg)))
        return Turn(start, end, boundary, method, tuple(notes), appended, stop_at)

    def _handover(self, text: str, msgs: list[dict[str, Any]], render: Render, after: int) -> tuple[int, int, str] | None:
        """(start, end) of the stop token that hands a final call turn over to the tool, and the text A
        (`text`) lacks up to its end: the template rendered with a tool result after the turn writes A,
        then (whitespace and) that stop before anything else of the result; None where it does not."""
        mark = _sentinel(text)
        try:
            probe = render([*msgs, {"role": "tool", "content": mark}])
        except TemplateError:
            return None
        if not probe.startswith(text):
            return None
        stop_at, end = first_stop(probe, after, self.markers.stops, self.openers)
        if end < 0 or mark in probe[:end] or probe[len(text) : stop_at].strip():
            return None
        return stop_at, end, probe[len(text) : end]

    @staticmethod
    def _aligns(regions: Regions, i: int, done: int, data_start: int) -> bool:
        """Whether `FallbackStart` aligns P_i to A at message i-1's content (it lies between the previous
        turn and turn i's data), as a rewritten `Tail` is."""
        place = (regions() or [None] * i)[i - 1]
        return place is not None and done <= place[0] and place[1] <= data_start

    def _data(
        self, text: str, msgs: list[dict[str, Any]], i: int, render: Render, found: Found | None = None,
        writes_last: bool | None = None,
    ) -> tuple[int, int, int, list[Note], str]:  # fmt: skip
        """Where the template writes turn i's data: (start, end, end of reasoning or -1, notes, why-not).

        `found`: the data as the long-record skeletons located it (else one render with the turn's
        pieces replaced); `writes_last`: whether the template writes the turn's reasoning when the
        turn is last (else rendered here, where it drops the reasoning).
        """
        msg = msgs[i]
        if found is None:
            found = self._find(text, msgs, i, render)
            if isinstance(found, str):
                return -1, -1, -1, [], found
        written, notes = found.written, []
        calls = [name for name in found.pieces if name.startswith("call") and name not in written]
        if calls:
            names = ", ".join(repr(c["function"]["name"]) for c in msg["tool_calls"])
            return -1, -1, -1, [], f"the chat template does not write its tool calls ({names}); use a template that renders tool_calls"
        if "reasoning" in found.pieces and "reasoning" not in written:
            if writes_last is None and i < len(msgs) - 1:
                writes_last = self._writes_last_reasoning(msgs, i, _sentinel(text), render)
            if i == len(msgs) - 1 or not writes_last:
                return -1, -1, -1, [], (
                    "the chat template does not write its reasoning (reasoning_content/thinking); the model would be trained "
                    "to answer without it: drop the reasoning or use a template that renders it"
                )  # fmt: skip
            notes.append(REASONING_DROPPED)  # history reasoning: the template keeps it only in the last turn
        if "content" in found.pieces:
            if "content" not in written:
                return -1, -1, -1, [], "the chat template drops its content"
            region = text[found.start : found.end]
            if why := self._rewritten(region, msg["content"].strip(), strict=len(found.pieces) == 1, notes=notes):
                return -1, -1, -1, [], why
        reasoning_end = found.reasoning_end
        if "reasoning" in written and self.mask_reasoning and reasoning_end < 0:
            mark = _sentinel(text)
            only = {**msg, "reasoning_content": mark, "thinking": mark}
            reasoning_end = changed_region(text, render([*msgs[:i], only, *msgs[i + 1 :]]))[1]
        return found.start, found.end, reasoning_end, notes, ""

    def _find(self, text: str, msgs: list[dict[str, Any]], i: int, render: Render) -> Found | str:
        """Turn i's data located by one render with its pieces (content, reasoning, each call's
        arguments) replaced by sentinels; or why it cannot be (empty, the render raises)."""
        msg = msgs[i]
        taken = [text]

        def fresh() -> str:
            taken.append(_sentinel(*taken))
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
            return "it is empty (no content, reasoning or tool calls)"
        try:
            other = render([*msgs[:i], changed, *msgs[i + 1 :]])
        except TemplateError as exc:
            return str(exc)
        start, end = changed_region(text, other)
        written = frozenset(name for name, s in pieces.items() if writes(s, other, text))  # also escaped (tojson(ensure_ascii=True))
        return Found(start, end, tuple(pieces), written)

    @staticmethod
    def _calls_end(text: str, msgs: list[dict[str, Any]], i: int, render: Render) -> int:
        """Where the template ends turn i's tool calls in `text` (their arguments replaced by a sentinel)."""
        mark = _sentinel(text)
        calls = [marked_call(call, mark) for call in msgs[i]["tool_calls"]]
        try:
            other = render([*msgs[:i], {**msgs[i], "tool_calls": calls}, *msgs[i + 1 :]])
        except TemplateError:
            return len(text)
        return changed_region(text, other)[1]

    @staticmethod
    def _rewritten(region: str, core: str, *, strict: bool, notes: list[Note]) -> str:
        """Why the written region does not hold the content as given ('' when it does).

        A content written as `<think>...</think>answer` may come back with its reasoning
        dropped (history turns of Qwen3: noted) or re-rendered as the template's own block.
        """
        if (region.strip() == core) if strict else (core in region):
            return ""
        answer = core.rsplit("</think>", 1)[1].strip() if "</think>" in core else ""
        if answer and region.rstrip().endswith(answer):
            if "</think>" not in region:
                notes.append(REASONING_DROPPED)
            return ""
        shown = region if len(region) <= 60 else region[:57] + "..."
        return f"the template renders it as {shown!r} (it rewrites the content)"

    @staticmethod
    def _writes_last_reasoning(msgs: list[dict[str, Any]], i: int, sentinel: str, render: Render) -> bool:
        """Whether the template writes turn i's reasoning when turn i ends the conversation."""
        try:
            return sentinel in render([*msgs[:i], {**msgs[i], "reasoning_content": sentinel, "thinking": sentinel}])
        except TemplateError:
            return False
