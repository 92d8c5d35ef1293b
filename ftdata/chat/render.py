"""Render: `Example` -> `Rendered` (text + the character spans that carry loss).

Two renderers share one masking path. Prompt templates (prompt_templates.py) know their spans by
construction. For the model's own chat template, the spans follow the inference-consistency
rule, found from the template's own renders in characters (turns.py, docs/masking.md):

    P_i = render(messages[:i], add_generation_prompt=True)   the inference prompt of turn i
    A   = render(messages)                                    the training sequence
    trained(i) = A[len(P_i) : end of turn i's stop token]

Every render gets the record's `tools` and the build's `chat_template_kwargs` merged under
the record's own `template_kwargs`. Tool-call arguments are normalised to the form the
template writes as JSON once (a dict or a JSON string, probed by `detect_role_markers`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ftdata.errors import ConfigError, TemplateError, UnusableRecord
from ftdata.guard.bounds import MAX_MESSAGES
from ftdata.guard.inputs import Input
from ftdata.guard.limits import LimitExceeded, RecordOverLimit, pinned

if TYPE_CHECKING:
    from ftdata.options import DataOptions
from ftdata.chat import think
from ftdata.chat.locator import REASONING_DROPPED
from ftdata.chat.markers import (
    RoleMarkers,
    control_tokens,
    detect_role_markers,
    model_stop_tokens,
    one_token,
)
from ftdata.chat.probes import THINKING_SWITCHES, reasoning_probe, thinking_switch
from ftdata.chat.renderer import ChatRenderer
from ftdata.chat.prompt_templates import (
    PromptTemplate,
    chat_template_alias,
    load_prompt_template,
    render_prompt_template,
)
from ftdata.chat.late_system import writes_late_system
from ftdata.chat.turns import SYSTEM_DROPPED, ChatSpans
from ftdata.outcomes import Note, NoteCode, RejectCode
from ftdata.records.formats import SEGMENTS, TEXT_RECORD
from ftdata.types import Example, HistoryMode, MaskPolicy, Message, Rendered, SystemMode

__all__ = ["REASONING_DROPPED", "SYSTEM_DROPPED", "USER_TRAIN_IGNORED", "Renderer", "apply_system", "trained_turns"]

USER_TRAIN_IGNORED = Note(
    NoteCode.USER_TRAIN_IGNORED,
    "train=true on a non-assistant turn is ignored: only assistant turns carry loss (mask='train_on_prompt' trains "
    "all)",
)


def thinking_on(switch: str) -> Note:
    """The note of a record rendered with the template's thinking switch on (`Renderer._thinking_on`)."""
    return Note(
        NoteCode.THINKING_ON,
        f"the record carries reasoning and the generation prompt closes the think block: rendered with "
        f"chat_template_kwargs {switch}=true, which opens it, so the reasoning is trained as a thinking model writes "
        f"it (set {switch} in chat_template_kwargs to choose: false trains the answers only)",
    )


def trained_turns(messages: tuple[Message, ...], policy: MaskPolicy) -> list[bool]:
    """Which messages carry loss. A message's own `train` flag wins over the policy.

    Raises:
        UnusableRecord: no assistant turn is left to train on.
    """
    last = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    if last < 0:  # truncation can drop every exchange that had one (a conversation ending on a user turn)
        raise UnusableRecord("no assistant turn is left to train on", field="messages", code=RejectCode.NO_ASSISTANT)
    out = []
    for i, m in enumerate(messages):
        if m.role != "assistant":
            out.append(False)
        elif m.train is not None:
            out.append(m.train)
        else:
            out.append(policy is not MaskPolicy.LAST_ASSISTANT or i == last)
    if not any(out):
        why = (
            "every assistant turn has train=false"
            if policy is not MaskPolicy.LAST_ASSISTANT
            else ("mask=last_assistant and the last assistant turn has train=false")
        )
        raise UnusableRecord(f"{why}; nothing to train on", field="messages", code=RejectCode.NOTHING_TO_TRAIN)
    return out


def apply_system(example: Example, prompt: str | None, mode: SystemMode) -> Example:
    """Add or override the system message, or fold it into the first user turn."""
    msgs = list(example.messages)
    has = bool(msgs) and msgs[0].role == "system"
    if prompt is not None and (mode is SystemMode.OVERRIDE or not has):
        msgs = [Message("system", prompt), *msgs[1 if has else 0 :]]
        has = True
    if mode is SystemMode.FOLD and has:
        system, rest = msgs[0], msgs[1:]
        first = next(i for i, m in enumerate(rest) if m.role == "user")
        rest[first] = replace(rest[first], content=f"{system.content}\n\n{rest[first].content}")
        msgs = rest
    return replace(example, messages=tuple(msgs))


def _control_checked(example: Example) -> Iterator[tuple[str, int | None, str]]:
    """(field kind, message index or None, text) of every field that must hold no control token,
    in the order a hit is reported. The field's name is written out only for a hit: on every
    record, formatting the names cost more than the search."""
    for i, m in enumerate(example.messages):
        yield "content", i, m.content
    yield "input", None, example.context
    for i, m in enumerate(example.messages):
        if m.reasoning:
            yield "reasoning", i, m.reasoning
        for c in m.tool_calls:
            yield "tool_calls", i, json.dumps([c.name, c.arguments], ensure_ascii=False, default=str)
    for t in example.tools:
        yield "tools", None, json.dumps(t, ensure_ascii=False, default=str)


def role_markers(tokenizer: Any, kwargs: Mapping[str, Any] | None, stop_tokens: Sequence[str] = ()) -> RoleMarkers:
    """The markers a build renders with: probes with the build's kwargs, and the stop tokens of
    `generation_config.json` (next to the tokenizer) and of the `stop_tokens` option.

    Raises:
        ConfigError: a stop token the tokenizer does not read as a single token.
        TemplateError: the template cannot render a plain conversation.
    """
    for token in stop_tokens:
        if not one_token(token, tokenizer):
            raise ConfigError(
                f"stop_tokens: {token!r} is not one token of tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} "
                "(inference stops on a token id); give an added or special token of the tokenizer"
            )
    return detect_role_markers(tokenizer, kwargs, stop_tokens=(*model_stop_tokens(tokenizer), *stop_tokens))


@dataclass(frozen=True, slots=True)
class _Escapes:
    """Control-token text of a record's data stood in for by runs of private-use characters.

    Each token becomes a run of one private character as long as the token, so the template
    renders the record with nothing it reads as markup and every offset stays put; after
    rendering the runs are the token's text again and are marked `literal` (plain text to the
    tokenizer). `special_tokens_in_data="text"`, as LLaMA-Factory encodes such data.
    """

    runs: dict[str, str]  # control token -> its stand-in run

    @staticmethod
    def of(example: Example, tokens: list[str]) -> _Escapes | None:
        if not tokens:
            return None
        seen = json.dumps(list(_control_checked(example)), ensure_ascii=False, default=str)  # every field, `input` too
        chars = (chr(c) for c in range(0xF0000, 0xFFFFE) if chr(c) not in seen)
        return _Escapes({token: next(chars) * len(token) for token in tokens})

    def apply(self, example: Example) -> Example:
        def esc(value: Any) -> Any:
            if isinstance(value, str):
                for token, run in self.runs.items():
                    value = value.replace(token, run)
                return value
            if isinstance(value, dict):
                return {k: esc(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return type(value)(esc(v) for v in value)
            return value

        messages = tuple(
            replace(
                m,
                content=esc(m.content),
                reasoning=esc(m.reasoning),
                tool_calls=tuple(replace(c, name=esc(c.name), arguments=esc(c.arguments)) for c in m.tool_calls),
            )
            for m in example.messages
        )
        return replace(example, messages=messages, context=esc(example.context), tools=esc(example.tools))

    def restore(self, out: Rendered, source: Any) -> Rendered:
        """The rendering with each run back to its token, the runs marked literal.

        Raises:
            UnusableRecord: the template cut or escaped a stand-in (the text could not be restored).
        """
        text, literal = out.text, list[tuple[int, int]]()
        for token, run in self.runs.items():
            literal.extend((m.start(), m.end()) for m in re.finditer(re.escape(run), text))
            text = text.replace(run, token)
        for run in self.runs.values():
            char = run[0]
            if char in text or json.dumps(char)[1:-1] in text:  # cut, or written as a JSON escape
                raise UnusableRecord(
                    "the chat template cut or escaped control-token text of the record, so it cannot be trained as "
                    "plain text; remove the control tokens from the data",
                    location=source,
                    field="messages",
                    code=RejectCode.CONTROL_TOKEN,
                )
        return replace(out, text=text, literal=tuple(sorted(literal)))


def _r1_style(message: Message) -> bool:
    """An assistant turn whose reasoning, if any, is in its content (a reasoning field and a block: not its syntax)."""
    return message.role == "assistant" and not message.reasoning


def _controls(
    tokenizer: Any, markers: RoleMarkers | None, chat: ChatRenderer | None
) -> tuple[tuple[str, ...], frozenset[str], bool]:
    """(the control tokens of the tokenizer and template, the think tags the template writes itself: its syntax in
    a leading think block, not control text, whether the template writes the reasoning of a turn with no tool
    calls: Gemma 4 writes it only where the turn calls tools)."""
    controls = control_tokens(tokenizer, markers.markup if markers else "")
    if chat is None:
        return controls, frozenset(), False
    return controls, think.template_tags(tokenizer.chat_template or "", controls), reasoning_probe(chat) is not None


def _chat_markers(
    tokenizer: Any,
    chat: ChatRenderer,
    kwargs: Mapping[str, Any] | None,
    stop_tokens: Sequence[str],
    *,
    name: str | None,
) -> RoleMarkers:
    """`role_markers` of the tokenizer's chat template (`name`: the chat_template option that put it there).

    Raises:
        TemplateError: the template fails as strings; the message says that lists of parts failed too, and
            which template it was.
    """
    try:
        return role_markers(tokenizer, kwargs, stop_tokens)
    except TemplateError as exc:
        if not chat.contents.why and not name:
            raise
        why = f"{exc}; as lists of text parts neither: {chat.contents.why}" if chat.contents.why else str(exc)
        raise TemplateError(f"chat template {name}: {why}" if name else why) from None


class Renderer:
    """Renders examples with a prompt template or with the tokenizer's chat template.

    `template=None` uses the chat template when the tokenizer has one, else `alpaca`.
    Every record is checked for control-token text (`<|im_end|>`, `[INST]`, `</s>` where the
    tokenizer reads them as one special token): such a record is rejected, because the
    tokens would not say what the text says (a literal `<|im_end|>` in a response would teach
    the model to end its turn there).
    """

    def __init__(
        self,
        tokenizer: Any,
        template: str | None = None,
        *,
        mask: MaskPolicy = MaskPolicy.ALL_ASSISTANT,
        system_prompt: str | None = None,
        system_mode: SystemMode = SystemMode.ADD,
        mask_reasoning: bool = False,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        stop_tokens: Sequence[str] = (),
        special_tokens_in_data: str = "reject",
        max_messages: int = MAX_MESSAGES,
        chat_template: str | None = None,
        history: HistoryMode = HistoryMode.ONE_ROW,
    ):
        """`chat_template`: the name of the chat template the tokenizer holds in place of its own (the
        `chat_template` option; the Stage applies it), shown in the renderer's name. `history=inference`:
        a rendering says which trained turns it does not write as inference sees them (`Rendered.unheld`)."""
        self.tokenizer = tokenizer
        # What a renderer with the template's thinking switch on is made with (`_thinking_on`).
        self._settings: dict[str, Any] = {
            "mask": mask,
            "system_prompt": system_prompt,
            "system_mode": system_mode,
            "mask_reasoning": mask_reasoning,
            "chat_template_kwargs": dict(chat_template_kwargs or {}),
            "stop_tokens": stop_tokens,
            "special_tokens_in_data": special_tokens_in_data,
            "max_messages": max_messages,
            "chat_template": chat_template,
            "history": history,
        }
        self.max_messages = max_messages
        self.mask = mask
        self.system_prompt = system_prompt
        self.system_mode = system_mode
        # Prompt templates write every turn alike; train_on_prompt trains the whole text as written.
        self.exact = history.exact and mask is not MaskPolicy.TRAIN_ON_PROMPT
        self.prompt: PromptTemplate | None = None
        self.chat: ChatRenderer | None = None
        self.markers: RoleMarkers | None = None
        self.spans: ChatSpans | None = None
        self._choose(chat_template_alias(template, tokenizer))  # "chatml": the tokenizer's own, when ChatML
        self.eos = tokenizer.eos_token or ""
        self.controls, self.think_tags, self.plain_reasoning = _controls(tokenizer, self.markers, self.chat)
        self.literal = special_tokens_in_data == "text"
        # One search per field finds whether any control token occurs (15x faster than one `in` per token).
        self._any_control = re.compile("|".join(map(re.escape, self.controls))) if self.controls else None

    def _choose(self, template: str | None) -> None:
        """The tokenizer's chat template (with its markers and spans) where no prompt template is named, else the
        prompt template (alpaca by default)."""
        settings, tokenizer = self._settings, self.tokenizer
        if template is None and getattr(tokenizer, "chat_template", None):
            kwargs, name = settings["chat_template_kwargs"], settings["chat_template"]
            self.chat = ChatRenderer(tokenizer, kwargs)
            self.markers = _chat_markers(tokenizer, self.chat, kwargs, settings["stop_tokens"], name=name)
            self.spans = ChatSpans(tokenizer, self.chat, self.markers, mask_reasoning=settings["mask_reasoning"])
            self.name = f"chat template {name}" if name else "chat template"
        else:
            self.prompt = load_prompt_template(template or "alpaca")
            self.name = self.prompt.name

    _late_system: bool | None = None  # `writes_late_system`, probed on first use
    _switch: str | None = None  # `thinking_switch`, probed on first use
    _thinking: Renderer | None = None  # this renderer with the thinking switch on, made on first use

    @property
    def thinking_switch(self) -> str:
        """The chat template's kwarg that opens the think block its generation prompt closes with the build's
        kwargs ('' where it closes none, the build sets one, or none opens it: `probes.thinking_switch`)."""
        if self._switch is None:
            self._switch = thinking_switch(self.chat) if self.chat is not None else ""
        return self._switch

    def _thinking_on(self, example: Example) -> Renderer | None:
        """The renderer for a record that carries reasoning where the generation prompt closes the think block and
        a thinking switch opens it (the record and the build set none): the build's, with the switch on. A model
        prompted with the block closed cannot write the reasoning, so the data that has it is rendered as inference
        prompts a thinking model (noted). None: the build's renderer renders it (a turn after a closed prompt then
        trains its answer after that prompt, the reasoning left out: `turns.ChatSpans._prompt_row`)."""
        if self.chat is None or any(name in example.template_kwargs for name in THINKING_SWITCHES):
            return None
        if not think.carries(example) or not (switch := self.thinking_switch):
            return None
        if self._thinking is None:
            kwargs = {**self._settings["chat_template_kwargs"], switch: True}
            self._thinking = Renderer(self.tokenizer, None, **{**self._settings, "chat_template_kwargs": kwargs})
        return self._thinking

    @property
    def writes_late_system(self) -> bool:
        """Whether this renderer writes a system turn after the first where it stands (a chat template that
        does, probed once); else such a turn is joined to a user turn (`ftdata.chat.late_system`)."""
        if self._late_system is None:
            self._late_system = self.chat is not None and writes_late_system(self.chat)
        return self._late_system

    @property
    def inputs(self) -> tuple[Input, ...]:
        """The template file this renderer read (a prompt template's bytes); a chat template comes with the
        tokenizer (or the `chat_template` file the stage declares)."""
        return (self.prompt.input,) if self.prompt is not None else ()

    @classmethod
    def from_options(cls, tokenizer: Any, options: DataOptions, **overrides: Any) -> Renderer:
        """The renderer a build with `options` uses (`overrides` replace single settings, e.g. `mask`)."""
        settings = {
            "mask": options.mask,
            "system_prompt": options.system_prompt,
            "system_mode": options.system_mode,
            "mask_reasoning": options.mask_reasoning,
            "chat_template_kwargs": options.chat_template_kwargs,
            "stop_tokens": options.stop_tokens or (),
            "special_tokens_in_data": options.special_tokens_in_data,
            "max_messages": options.max_messages,
            "chat_template": options.chat_template,
            "history": options.history,
        }
        return cls(tokenizer, options.template, **{**settings, **overrides})

    def _controls_in(self, example: Example) -> list[str]:
        """The control tokens a record's text holds (special_tokens_in_data="text"), or [].

        Raises:
            UnusableRecord: the record holds one and special_tokens_in_data="reject".
        """
        if self._any_control is None:
            return []
        found: list[str] = []
        for kind, i, text in _control_checked(example):
            if kind == "content" and i is not None and _r1_style(example.messages[i]):
                text = think.syntax_free(text, self.think_tags)
            if self._any_control.search(text) is None:
                continue
            if self.literal:
                found.extend(c for c in self.controls if c in text and c not in found)
                continue
            hit = next(c for c in self.controls if c in text)  # the message names the same token as ever
            raise UnusableRecord(
                f"contains {hit!r}, which the tokenizer reads as a control token, not as text; the tokens "
                "would not say what the data says (remove or escape it, or special_tokens_in_data='text' to "
                "train it as plain text)",
                location=example.source,
                field=kind if i is None else f"messages[{i}].{kind}",
                code=RejectCode.CONTROL_TOKEN,
            )
        return found

    def _unsupported(self, example: Example) -> tuple[str, str] | None:
        """(field, what) of tool/reasoning data this renderer cannot write, or None."""
        for i, m in enumerate(example.messages):
            if m.tool_calls and (self.markers is None or not self.markers.tool_arguments):
                names_only = self.markers is not None and self.markers.writes_call_names
                return (
                    f"messages[{i}].tool_calls",
                    "the arguments of tool calls (only their names)" if names_only else "tool calls",
                )
            if m.reasoning and (self.markers is None or not self.markers.renders_reasoning):
                return f"messages[{i}].reasoning", "reasoning (reasoning_content/thinking)"
        if example.tools and (self.markers is None or not self.markers.renders_tools):
            return "tools", "tool schemas (tools)"
        return None

    def chat_messages(self, example: Example) -> list[dict[str, Any]]:
        """The example's messages as the chat template gets them: tool-call arguments in the
        form the template writes as JSON once (`markers.tool_arguments`).

        Raises:
            UnusableRecord: string arguments that are not a JSON object, for a template that
                needs a dict.
        """
        msgs = example.chat_messages()
        form = self.markers.tool_arguments if self.markers else ""
        for i, msg in enumerate(msgs):
            for call in msg.get("tool_calls", ()):
                args = call["function"]["arguments"]
                if form == "string" and not isinstance(args, str):
                    call["function"]["arguments"] = json.dumps(args, ensure_ascii=False)
                elif form == "dict" and isinstance(args, str):
                    try:
                        parsed = json.loads(args) if args.strip() else {}
                    except json.JSONDecodeError as exc:
                        parsed = exc
                    if not isinstance(parsed, dict):
                        raise UnusableRecord(
                            "tool call arguments must be a JSON object for this chat template (it writes a dict as "
                            "JSON); "
                            f"got {args[:60]!r}",
                            location=example.source,
                            field=f"messages[{i}].tool_calls",
                            code=RejectCode.TOOL_ARGUMENTS,
                        )
                    call["function"]["arguments"] = parsed
        return msgs

    def __call__(self, example: Example, *, history: bool = True) -> Rendered:
        """The example rendered, with the spans that carry loss. `history=False`: a conversation that trains only
        its final turn leaves the turns before it unlocated where it can (`ChatSpans`: a preference pair's side).

        Raises:
            UnusableRecord: the record cannot be trained as it is (rejected with a code).
            RecordError: a RecordOverLimit when a render passes a time or size limit (rejected
                under on_error="skip"), or the template failed on the record.
        """
        if len(example.messages) > self.max_messages:
            raise UnusableRecord(
                f"has {len(example.messages):,} messages, more than max_messages={self.max_messages:,}; split the "
                "conversation, or raise max_messages (--max-messages) if it is real",
                location=example.source,
                field="messages",
                code=RejectCode.TOO_MANY_MESSAGES,
            )
        try:
            with pinned():  # the record's renders read the limits once (a long record renders tens of times)
                return self._render(example, history)
        except RecordOverLimit:
            raise
        except LimitExceeded as exc:  # a record's render, not the build: a reject under on_error="skip"
            raise RecordOverLimit(str(exc)) from None

    def _lift(self, example: Example) -> tuple[Example, tuple[int, ...]]:
        """Think blocks in assistant contents moved into reasoning, where the chat template writes reasoning
        (`ftdata.chat.think`), and the turns moved."""
        if self.markers is None or not self.markers.renders_reasoning:
            return example, ()
        return think.lift(example, writes=lambda m: bool(m.tool_calls) or self.plain_reasoning)

    def _with_thinking(self, example: Example, history: bool) -> Rendered | None:
        """`example` rendered with the template's thinking switch on, where the record's reasoning needs it and the
        template then writes it (noted); None otherwise."""
        if (thinking := self._thinking_on(example)) is None:
            return None
        try:
            out = thinking._render(example, history)
        except UnusableRecord:
            return None  # the build's renderer says why, as without the switch
        if think.written(example, out.text):
            return replace(out, notes=(*out.notes, thinking_on(self.thinking_switch)))
        # The switch opens the block, yet the template writes none of the record's reasoning (DeepSeek-V3.1 cuts
        # it out of every content): the answers are trained after the build's prompt.
        return None

    def _not_written(self, example: Example, unsupported: tuple[str, str]) -> UnusableRecord:
        field, what = unsupported
        by = f"prompt template {self.name!r}" if self.prompt is not None else "the chat template"
        fix = (
            "use the tokenizer's chat template (template=None)"
            if self.prompt is not None
            else "use a template that renders them"
        )
        return UnusableRecord(
            f"{by} does not write {what}; the record would be trained without them: {fix}",
            location=example.source,
            field=field,
            code=RejectCode.NOT_RENDERED,
        )

    def _render(self, example: Example, history: bool = True) -> Rendered:
        if (switched := self._with_thinking(example, history)) is not None:
            return switched
        example, lifted = self._lift(example)
        given = len(example.messages)
        if self.system_prompt is not None or self.system_mode is SystemMode.FOLD:
            example = apply_system(example, self.system_prompt, self.system_mode)
        try:
            trained = trained_turns(example.messages, self.mask)
        except UnusableRecord as exc:
            raise UnusableRecord(exc.reason, location=example.source, field=exc.field, code=exc.code) from None
        escapes = _Escapes.of(example, self._controls_in(example))
        if escapes is not None:
            example = escapes.apply(example)
        if unsupported := self._unsupported(example):
            raise self._not_written(example, unsupported)
        if example.format in (TEXT_RECORD, SEGMENTS):  # a document: no template; it (and its end-of-text) trained
            text = example.messages[0].content + (self.eos if example.format == TEXT_RECORD else "")
            out = Rendered(text, ((0, len(text)),), example.format)  # segments: their train_detail masks them
        elif self.prompt is not None:
            out = render_prompt_template(example, self.prompt, eos=self.eos, trained=trained)
        else:
            assert self.spans is not None
            out = self.spans(example, self.chat_messages(example), trained, history=history, exact=self.exact)
            if out.unheld and (shift := given - len(example.messages)):  # a system message added or folded away
                out = replace(out, unheld=tuple((i + shift, why) for i, why in out.unheld))
        if escapes is not None:
            out = escapes.restore(out, example.source)
        if self.mask is MaskPolicy.TRAIN_ON_PROMPT:
            out = replace(out, spans=((0, len(out.text)),))
        notes = example.notes
        if lifted and (moved := [i for i in lifted if trained[i + len(example.messages) - given]]):
            notes = (*notes, *think.notes(moved))
        if self.mask is not MaskPolicy.TRAIN_ON_PROMPT and any(
            m.train and m.role != "assistant" for m in example.messages
        ):
            notes = (*notes, USER_TRAIN_IGNORED)
        if notes:
            out = replace(out, notes=out.notes + notes)
        return out

    def generation_prompt(self, example: Example) -> Rendered:
        """The inference prompt after `example`, a conversation that ends before the model's turn: the chat
        template rendered with add_generation_prompt=True (a prompt template: its prompt), no span trained.

        Preference rows' prompt where the template writes the history differently from this prompt
        (Mistral moves the system prompt into the last user turn: `ftdata.run.preference`).

        Raises:
            UnusableRecord: control-token text, tool data the template does not write, a template error.
            RecordError: a render past a time or size limit (RecordOverLimit).
        """
        try:
            with pinned():
                return self._generation_prompt(example)
        except RecordOverLimit:
            raise
        except LimitExceeded as exc:
            raise RecordOverLimit(str(exc)) from None

    def prompt_example(self, example: Example) -> Example:
        """`example` as the generation prompt renders it: a leading think block lifted into reasoning, the
        build's system prompt applied (or folded). A prompt set stores these messages."""
        example, _ = self._lift(example)
        if self.system_prompt is not None or self.system_mode is SystemMode.FOLD:
            example = apply_system(example, self.system_prompt, self.system_mode)
        return example

    def plain_prompt(self, example: Example) -> Example | None:
        """`example` as the generation prompt renders it (`prompt_example`) when the chat template alone renders
        it: no control token to escape, no tools, tool calls, reasoning or template kwargs of its own; else None
        (`generation_prompt` renders it, with its checks). Then `chat(chat_messages(example), generation=True)`
        is its generation prompt.

        Raises:
            UnusableRecord: a control token in its text with special_tokens_in_data="reject", as `generation_prompt`.
        """
        if self.chat is None:
            return None
        example = self.prompt_example(example)
        if example.tools or example.template_kwargs or self._unsupported(example) is not None:
            return None
        if self._controls_in(example):
            return None
        if any(m.tool_calls or m.reasoning for m in example.messages):
            return None
        return example

    def _generation_prompt(self, example: Example) -> Rendered:
        example = self.prompt_example(example)
        escapes = _Escapes.of(example, self._controls_in(example))
        if escapes is not None:
            example = escapes.apply(example)
        if (unsupported := self._unsupported(example)) is not None:
            raise UnusableRecord(
                f"the template does not write {unsupported[1]}",
                location=example.source,
                field=unsupported[0],
                code=RejectCode.NOT_RENDERED,
            )
        if self.prompt is not None:
            text = render_prompt_template(
                example, self.prompt, eos=self.eos, trained=[False] * len(example.messages)
            ).text
        else:
            assert self.chat is not None
            try:
                text = self.chat(
                    self.chat_messages(example),
                    generation=True,
                    tools=list(example.tools) or None,
                    kwargs=example.template_kwargs,
                    location=example.source,
                )
            except TemplateError as exc:
                raise UnusableRecord(
                    str(exc), location=example.source, field="messages", code=RejectCode.TEMPLATE_ERROR
                ) from None
        out = Rendered(text, (), "generation prompt")
        return escapes.restore(out, example.source) if escapes is not None else out
