"""Where each assistant turn of a record lies in its chat rendering, and which characters carry loss.

`ChatSpans` renders the record's messages once (A) and locates each assistant turn in it by the
inference-consistency rule (`ftdata.chat.locator`, docs/masking.md). A long record's turns are
located in a bounded number of renders (`ftdata.chat.long_records`); with history=inference each
trained history turn is also checked against its render as the last turn (`_unheld`), for the
record to be split into rows (`ftdata.chat.trajectory`), and every trained turn against its inference
prompt: where no render writes that prompt before the turn, the turn is trained in a row of that prompt
and the turn (`_prompt_row`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from ftdata.chat.locator import Hint, Turn, TurnLocator, writes_last_reasoning
from ftdata.chat.long_records import Tail, groups, locate, picks, prompt_ends, prompt_tails
from ftdata.chat.markers import RoleMarkers
from ftdata.chat.renderer import ChatRenderer
from ftdata.chat.sentinels import Chat, Found, Render, content_spans, sentinel
from ftdata.errors import TemplateError, UnusableRecord
from ftdata.outcomes import Note, NoteCode, RejectCode, has_note
from ftdata.types import Example, Rendered, SplitReason

__all__ = ["SYSTEM_DROPPED", "ChatSpans", "tool_name"]

SYSTEM_DROPPED = Note(
    NoteCode.SYSTEM_DROPPED, "the chat template dropped the system message; use system_mode='fold' to keep it"
)
PROMPT_ROW = Note(
    NoteCode.PROMPT_ROW,
    "an assistant turn is trained after its inference prompt, which no render of the record writes before it (the "
    "template puts the system prompt, or a closed think block, only into the generation prompt): the row is that "
    "prompt and the turn",
)
_SPACE = re.compile(r"\s+")
# From this many assistant turns of a kind on (plain; with reasoning or tool calls), a conversation's
# inference prompts are located in a bounded number of renders (`prompt_ends` where the template is
# prefix-stable, else `prompt_tails`), plain turns' contents from one skeleton render and the data of
# turns with reasoning or calls from two (`long_records.locate`), rather than rendered one by one.
LONG = 4


@dataclass(frozen=True, slots=True)
class LongRecord:
    """What a long record's skeletons know of its turns, by turn (`Hint`): P_i (`prompts`: its length where
    A starts with it, else a `Tail`), the data of turns with reasoning or calls (`found`), and whether the
    template writes a turn's dropped reasoning when the turn is last (`writes_last`)."""

    prompts: dict[int, int | Tail] = field(default_factory=dict)
    found: dict[int, Found] = field(default_factory=dict)
    writes_last: dict[int, bool] = field(default_factory=dict)

    def hint(self, i: int) -> Hint:
        return Hint(self.prompts.get(i), self.found.get(i), self.writes_last.get(i))


def _starts_with_render(text: str, messages: list[dict[str, Any]], render: Render) -> bool:
    """Whether `text` begins with the render of `messages` (False where the template raises on them)."""
    try:
        return text.startswith(render(messages))
    except TemplateError:
        return False


def _foreign_prompt(chat: Chat, i: int, context: str, known: int | Tail | None = None) -> str | None:
    """Turn i's inference prompt P_i where it conflicts with `context`, the text a render writes before the turn
    (neither begins with the other: Mistral-Nemo's P_i holds the system prompt its history lacks; a prompt that
    closes the think block, a context that holds the turn's reasoning in it); else None. A P_i that only goes on
    past the context (a think block the prompt opens, `<think>\n`), or differs from it in whitespace alone
    (Hermes 3 writes `</tool_response>\n<|im_end|>` in history, `</tool_response><|im_end|>` in its prompt), is
    the rule's edge case, not a conflict. `known`: P_i as a `Tail` (not rewritten: P_i itself), else rendered."""
    try:
        if isinstance(known, Tail) and not known.rewritten:
            prompt = known.prompt(chat.text)
        else:
            prompt = chat.render(chat.msgs[:i], generation=True)
    except TemplateError:
        return None
    if context.startswith(prompt) or prompt.startswith(context):
        return None
    bare, given = _SPACE.sub("", prompt), _SPACE.sub("", context)
    return None if given.startswith(bare) or bare.startswith(given) else prompt


def _prompt_row(chat: Chat, text: str, turn: Turn, notes: list[Note]) -> Rendered:
    """The last turn of `chat` trained after its inference prompt: P_i, then the turn as the template writes it
    (from where the model starts writing through its stop token; `text`: A with what the turn appends)."""
    i = len(chat.msgs) - 1
    prompt = chat.render(chat.msgs[:i], generation=True)
    row = prompt + text[turn.start : turn.end]
    system = chat.msgs[0]["content"].strip() if chat.msgs[0]["role"] == "system" else None
    kept = [n for n in notes if not (n is SYSTEM_DROPPED and system is not None and system in row)]
    return Rendered(row, ((len(prompt), len(row)),), "prefix", (), tuple(dict.fromkeys([*kept, PROMPT_ROW])))


def tool_name(tool: dict[str, Any]) -> str:
    """The function name of a tool schema (OpenAI `{"type": "function", "function": {...}}` or bare)."""
    inner = tool.get("function", tool)
    return str(inner.get("name", "")) if isinstance(inner, dict) else ""


class ChatSpans:
    """Finds the trained span of every assistant turn of an example, by the rule (`ftdata.chat.locator`)."""

    def __init__(self, tokenizer: Any, render: ChatRenderer, markers: RoleMarkers, *, mask_reasoning: bool = False):
        self.render = render
        self.markers = markers
        self.turn = TurnLocator(tokenizer, markers, mask_reasoning=mask_reasoning)

    def __call__(
        self,
        example: Example,
        msgs: list[dict[str, Any]],
        trained: list[bool],
        *,
        history: bool = True,
        exact: bool = False,
    ) -> Rendered:
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

        render = self.render.bind(msgs, tools=tools, kwargs=kwargs, location=example.source)
        text = self._whole(example, msgs, render)
        notes = self._record_notes(example, msgs, text)
        if not history and (last := self._final(Chat(text, msgs, render, example.source), trained)) is not None:
            return Rendered(
                text + last.appended,
                ((last.start, last.end),),
                "prefix",
                (),
                tuple(dict.fromkeys([*notes, *last.notes])),
            )
        contents = cache(lambda: content_spans(text, render, msgs))  # every content's span, one render, when asked
        proven = cache(lambda: render.prefixes(text))  # the prefix renders one watched render proves, when asked
        chat = Chat(text, msgs, render, example.source, contents, proven)
        return self._every_turn(chat, trained, notes, exact=exact)

    def _whole(self, example: Example, msgs: list[dict[str, Any]], render: Render) -> str:
        """A: the record rendered. Raises UnusableRecord where the template raises (with the fix, where known)."""
        try:
            return render(msgs)
        except TemplateError as exc:
            hint = ""
            if msgs[0]["role"] == "system" and self.markers.system_support == "raises":
                hint = "; this template has no system role: use system_mode='fold'"
            elif self.markers.needs_tools and not example.tools:
                hint = "; this template renders only with tools: give the record a `tools` schema"
            raise UnusableRecord(
                f"{exc}{hint}", location=example.source, field="messages", code=RejectCode.TEMPLATE_ERROR
            ) from None

    @staticmethod
    def _record_notes(example: Example, msgs: list[dict[str, Any]], text: str) -> list[Note]:
        """The notes of the record as a whole. Raises UnusableRecord where A lacks a tool schema."""
        notes = [SYSTEM_DROPPED] if msgs[0]["role"] == "system" and msgs[0]["content"].strip() not in text else []
        for tool in example.tools:
            if tool_name(tool) not in text:
                raise UnusableRecord(
                    f"the chat template does not write the tool schema {tool_name(tool)!r}: the model would be "
                    "trained to "
                    "call a tool it was never shown; use a template that renders `tools`",
                    location=example.source,
                    field="tools",
                    code=RejectCode.NOT_RENDERED,
                )
        return notes

    def _every_turn(self, chat: Chat, trained: list[bool], notes: list[Note], *, exact: bool) -> Rendered:
        """Every assistant turn of `chat` located in order, each after the one before it."""
        spans, boundaries, method, done, text, notes = [], [], "prefix", 0, chat.text, list(notes)
        long = self._long(chat)
        held = self._held(chat, trained) if exact else set()
        unheld: list[tuple[int, SplitReason]] = []
        last = len(chat.msgs) - 1
        for i, msg in enumerate(chat.msgs):
            if msg["role"] != "assistant":
                continue
            turn = self.turn(chat, i, done=done, trained=trained[i], hint=long.hint(i))
            if turn.method == "fallback":
                method = "fallback"
            if trained[i]:  # a turn nothing trains says nothing of what is trained (its dropped reasoning)
                notes.extend(turn.notes)
            if exact and trained[i] and (why := self._why(chat, i, turn, held, long.hint(i).prompt)):
                unheld.append((i, why))
            text += turn.appended
            if trained[i]:
                spans.append((turn.start, turn.end))
            done = turn.end
            boundaries.append(turn.boundary)
        if unheld and unheld[-1] == (last, SplitReason.PROMPT) and sum(trained) == 1:
            return _prompt_row(chat, text, turn, notes)
        return Rendered(
            text, tuple(spans), method, tuple(boundaries[:-1]), tuple(dict.fromkeys(notes)), unheld=tuple(unheld)
        )

    def _why(self, chat: Chat, i: int, turn: Turn, held: set[int], known: int | Tail | None) -> SplitReason | None:
        """Why trained turn i, as A writes it (located as `turn`), is not trained as inference sees it; None where
        it is. A history turn: `_unheld`; the last turn, or a history turn A writes as its own render does
        (`held`): PROMPT where the context A writes before it conflicts with its inference prompt (`known`: P_i
        as a long record's skeletons hold it, read without a render where it is P_i itself)."""
        if i < len(chat.msgs) - 1 and i not in held:
            return self._unheld(chat, i, turn)
        if turn.method == "fallback" and _foreign_prompt(chat, i, chat.text[: turn.start], known) is not None:
            return SplitReason.PROMPT
        return None

    @staticmethod
    def _held(chat: Chat, trained: list[bool]) -> set[int]:
        """A long conversation's trained history turns that A writes as inference sees them: where one watched
        render proves the turn's render as the last one (`ftdata.chat.prefixes`), A begins with it, checked turn
        by turn; else in a bounded number of renders: in each group of at least `LONG` such turns of one kind
        (plain; with reasoning or calls) after a message of one role, up to `SAMPLES` turns are rendered as the
        last one (`picks`); where A begins with each of those renders, the group holds, as `_long` takes P_i.
        Elsewhere (a short conversation, a group where one render differs: Qwen3's turns before and after the
        last user query) each turn is checked by `_unheld`."""
        msgs = chat.msgs
        turns = [i for i, m in enumerate(msgs) if m["role"] == "assistant" and trained[i] and 0 < i < len(msgs) - 1]
        if len(turns) < LONG:
            return set()
        proven = chat.prefixes()
        cuts = proven.cuts if proven is not None else {}
        out = {i for i in turns if proven is not None and proven.starts(i + 1)}
        rest = [i for i in turns if i + 1 not in cuts]
        plain = [i for i in rest if not msgs[i].get("tool_calls") and msgs[i].get("reasoning_content") is None]
        other = sorted(set(rest) - set(plain))
        for kind in (plain, other):
            for group in groups(msgs, kind).values():
                if len(group) >= LONG and all(
                    _starts_with_render(chat.text, msgs[: i + 1], chat.render) for i in picks(group)
                ):
                    out.update(group)
        return out

    def _unheld(self, chat: Chat, i: int, turn: Turn) -> SplitReason | None:
        """Why history turn i, as A writes it (located as `turn`), is not what the model writes at inference;
        None where it is.

        The inference target is turn i as the last turn of its own conversation: `render(msgs[:i+1])`,
        located by the rule (after P_i, through its stop token). It holds in A when A begins with
        that whole render (prefix-stable templates: nothing more to locate; a template that closes a last
        turn with nothing, Apriel, is closed by the marker A writes next), or else writes the same
        characters up to the target's stop token (the context and the turn), locates the turn at the same
        place, and has a stop token there (GLM's next header where the target has the appended EOS).

        Raises:
            UnusableRecord: the template raises on the turn as the last one, or writes it there where the rule
                cannot locate it (the record is rejected naming the turn).
        """
        text, last = chat.text, self._as_last(chat, i)
        if text.startswith(last):  # the full render writes the turn's whole render first: same context, same turn
            foreign = turn.method == "fallback" and _foreign_prompt(chat, i, text[: turn.start]) is not None
            return SplitReason.PROMPT if foreign else None
        target = self._target(chat, i, last)
        if target.method == "fallback" and _foreign_prompt(chat, i, last[: target.start]) is not None:
            return SplitReason.PROMPT  # not even as the last turn is it written after its inference prompt
        stop = (last + target.appended)[target.stop : target.end]
        # Through its first stop token: Phi-3 closes a last turn with `<|end|>\n<|endoftext|>`, and generation has
        # ended at `<|end|>`, which its history turns write too.
        stop = min((s for s in self.markers.stops if s and stop.startswith(s)), key=len, default=stop)
        # The same stop token; where the target's was appended (an EOS after a last turn that has no end-of-turn
        # marker), the stop token A writes there (the next turn's header, which also ends generation).
        stops = text.startswith(stop, turn.stop) or (target.stop == len(last) and bool(target.appended))
        if stops and text.startswith(last[: target.stop]) and (turn.start, turn.stop) == (target.start, target.stop):
            return None
        if not text.startswith(last[: target.start]):
            return SplitReason.CONTEXT
        if has_note(turn.notes, NoteCode.REASONING_DROPPED):
            return SplitReason.REASONING
        return SplitReason.TARGET

    @staticmethod
    def _as_last(chat: Chat, i: int) -> str:
        """Turn i rendered as the last turn of its own conversation. Raises UnusableRecord where the template raises."""
        try:
            return chat.render(chat.msgs[: i + 1])
        except TemplateError as exc:
            raise UnusableRecord(
                f"assistant turn {i} cannot be trained as inference sees it: as the last turn the chat template "
                f"raises ({exc})",
                location=chat.source,
                field=f"messages[{i}]",
                code=RejectCode.UNMASKABLE,
            ) from None

    def _target(self, chat: Chat, i: int, last: str) -> Turn:
        """Turn i located in `last` (its render as the last turn). Raises UnusableRecord where it cannot be."""
        try:
            return self.turn(Chat(last, chat.msgs[: i + 1], chat.render, chat.source), i, done=0, trained=True)
        except UnusableRecord as exc:
            # The turn as the last one cannot be located (Apriel writes a call's id in history only and closes a
            # last call turn with nothing): what the model writes for it at inference is unknown, so it is not
            # trained as the full render writes it (history=one_row does that, by the user's choice).
            raise UnusableRecord(
                f"assistant turn {i} cannot be trained as inference sees it: as the last turn "
                + exc.reason.removeprefix(f"assistant turn {i} cannot be masked safely: "),
                location=chat.source,
                field=f"messages[{i}]",
                code=RejectCode.UNMASKABLE,
            ) from None

    def _final(self, chat: Chat, trained: list[bool]) -> Turn | None:
        """The final turn, when it alone is trained and follows its inference prompt as rendered; else None
        (the template writes the history otherwise, as Mistral does: every turn is located)."""
        i = len(chat.msgs) - 1
        if chat.msgs[i]["role"] != "assistant" or trained.index(True) != i:
            return None
        try:
            prompt = chat.render(chat.msgs[:i], generation=True)
        except TemplateError:
            return None
        # P_i is text[:len(prompt)]: the turn is located from there, as `_long` hands a known P_i on
        return (
            self.turn(chat, i, done=0, trained=True, hint=Hint(prompt=len(prompt)))
            if chat.text.startswith(prompt)
            else None
        )

    def _long(self, chat: Chat) -> LongRecord:
        """A long conversation's turns without rendering each prefix; nothing for a kind of turn with fewer
        than `LONG` turns (they are rendered one by one).

        P_i: len(P_i) where the template is prefix-stable and writes a generation prompt
        (`prompt_ends`), else P_i as A's text plus a tail (`prompt_tails`); each kind of turn (plain,
        with reasoning or calls) checked apart. The data of turns with reasoning or calls: from two
        skeleton renders (`long_records.locate`); a plain turn's content: from `content_spans`.
        """
        m, msgs = self.markers, chat.msgs
        turns = [i for i, msg in enumerate(msgs) if msg["role"] == "assistant" and i > 0]
        plain = [i for i in turns if not msgs[i].get("tool_calls") and msgs[i].get("reasoning_content") is None]
        other = [i for i in turns if msgs[i].get("tool_calls") or msgs[i].get("reasoning_content") is not None]
        if len(plain) < LONG and len(other) < LONG:
            return LongRecord()  # a short conversation: every turn rendered
        found = locate(chat.text, chat.render, msgs, other) if len(other) >= LONG else {}
        spans = chat.contents()
        if spans is not None and found:  # a turn's own span begins where its data does (its reasoning, its calls)
            spans = [(found[i].start, found[i].end) if i in found else span for i, span in enumerate(spans)]
        prompts: dict[int, int | Tail] = {}
        for kind in (plain, [i for i in other if i in found]):
            if len(kind) < LONG:
                continue
            if m.prefix_stable and not m.ignores_generation_prompt and m.assistant_header.strip():
                prompts.update(
                    prompt_ends(chat.text, chat.render, msgs, m.assistant_header, kind, spans, chat.prefixes())
                )
            rest = [i for i in kind if i not in prompts]
            if len(rest) >= LONG:
                prompts.update(prompt_tails(chat.text, chat.render, msgs, rest, spans))
        return LongRecord(prompts, found, self._lasts(chat, found))

    @staticmethod
    def _lasts(chat: Chat, found: dict[int, Found]) -> dict[int, bool]:
        """Whether the template writes a turn's reasoning when the turn ends the conversation, for the
        turns whose reasoning it drops (history turns of Qwen3): rendered for up to `SAMPLES` of
        them per role before them; where those agree, the verdict holds for the group."""
        dropped = [
            i
            for i, f in found.items()
            if "reasoning" in f.pieces and "reasoning" not in f.written and i < len(chat.msgs) - 1
        ]
        mark = sentinel(chat.text)
        out: dict[int, bool] = {}
        for group in groups(chat.msgs, dropped).values():
            verdicts = {writes_last_reasoning(chat, i, mark) for i in picks(group)}
            if len(verdicts) == 1:
                out.update(dict.fromkeys(group, verdicts.pop()))
        return out
