"""An independent oracle for the inference-consistency rule (test-only).

It computes, straight from `tokenizer.apply_chat_template`, which characters of the
training sequence must carry loss, and never uses ftdata's span finder, markers or masker:

    P_i = render(messages[:i], add_generation_prompt=True)   # the inference prompt of turn i
    A   = render(messages)                                    # the training sequence
    trained(i) = A[len(P_i) : end of turn i's stop token]     # when A starts with P_i

Stop tokens are derived from probe renders with sentinel contents, per template and kwargs:
the first tag after a final assistant content, the first tag after a middle one (only when
the template closes a final turn at all), and the tag that closes a tool call (the first one
of those, or the tag right before the next header). A template that closes no turn (GLM)
has no stop token: a middle turn trains up to and including the next message's first
header tag, the last turn gets the tokenizer's EOS appended.

In a record, turn i's stop token is the first stop token at or after the end of the last
piece of text that turn owns (its content, reasoning, function names, string argument
values) and before the next message's content. Where the rule cannot decide, the turn gets
a weaker check (see `Turn.status`):

- `nonprefix`: A does not start with P_i (the template rewrites history: Qwen3 drops old
  reasoning, thinking-off prompts that end in an empty think block, Mistral moves the
  system prompt). Checked: what ftdata trains for the turn ends in a stop token.
- `undecided`: the template writes no stop token before the next message (Gemma 4 writes
  a tool's response inline in the model turn). Checked: nothing of another message trained.

For every record: the contents of user, system and tool turns and the tool schemas are
never trained; a record whose tool calls or reasoning the template never writes (not even
for the turn as the last one: history dropping is allowed) must be rejected, and so must a
record whose assistant content A lacks (history may drop reasoning, not the answer) and a
record whose text holds a special token of the tokenizer (`<|im_start|>` in a user turn).

With `edge_cases=True` (the served-template corpus, tests/templates/served) the rule also
decides the edge cases that real served templates raise (see `Turn.case`):

- `header`: the generation prompt adds nothing (the template ignores
  `add_generation_prompt` and writes no prompt after every conversation either): the
  assistant header the template writes before a sentinel content is prompt; the turn trains
  from after it.
- `think-opened`: the generation prompt opens a think block (or writes other text) that the
  history rendering lacks, so A does not start with P_i: the turn trains as A writes it,
  from where A leaves the text P_i writes after the previous message, through its stop token
  (a call-only turn is found by its calls: the start does not depend on content). Where the
  two differ only in the whitespace before a tag both write next, the tag is P_i's.
- `history`: as `think-opened`, but A closes the previous message differently than P_i does
  (vLLM's Hermes template): the turn starts after the header A writes before a sentinel content.
- `think-closed`: the generation prompt already closes the think block but the turn carries
  reasoning: only what follows the closing tag in A (the answer, the calls) is trained, less
  what P_i itself writes after its closing tag (Qwen3's `\n\n`; GLM-4.6 writes none, so the
  `\n` before the answer is the model's).
- `call-stop` / `model-stop`: the turn ends on the closer only tool calls get (`<|call|>`,
  `<|tools_suffix|>`), or on a stop token of the model's `generation_config.json`
  (`model_stops`) that the probe renders do not find.

With `edge_cases`, a record with tools whose schemas the template never writes (no tool's
description in A) must be rejected too.

Stop tokens are the template's own plus `model_stops`. A template that raises without
`tools` (Hermes `tool_use`) is probed with a schema (`StopTokens.needs_tools`).
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

IGNORE_INDEX = -100
# A markup tag: <|im_end|>, <end_of_turn>, <turn|>, <｜end▁of▁sentence｜>, </s>, [INST].
TAG = re.compile(r"<[^<>\s]{1,40}>|\[[A-Za-z_/]{2,20}\]")
PROBE_TOOL = {"type": "function", "function": {
    "name": "probe_fn", "description": "Probe.",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}  # fmt: skip


class RenderFailed(Exception):
    """The template raised for these messages (the record cannot be rendered as it is)."""


# ---------------------------------------------------------------- rendering the record as given


def reasoning(message: dict[str, Any]) -> str:
    """An assistant message's reasoning, under either name the data may use."""
    return message.get("reasoning_content") or message.get("thinking") or ""


def call_arguments(call: dict[str, Any]) -> dict[str, Any]:
    """A tool call's arguments as a dict, whether the data gave a dict or a JSON string."""
    args = call["function"]["arguments"]
    return json.loads(args) if isinstance(args, str) else args


def as_template_messages(messages: Sequence[dict[str, Any]], *, string_arguments: bool,
                         empty_content: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """OpenAI messages as chat templates read them: arguments as a dict (or a JSON string when
    `string_arguments`; the data's own string is kept), reasoning under both names templates use,
    a null content as "" when `empty_content` (templates that read `message.content` raise on null)."""
    out = []
    for m in messages:
        m = copy.deepcopy(dict(m))
        if empty_content and m.get("content") is None:
            m["content"] = ""
        for call in m.get("tool_calls") or ():
            args = call["function"]["arguments"]
            if string_arguments and not isinstance(args, str):
                call["function"]["arguments"] = json.dumps(args, ensure_ascii=False)
            elif not string_arguments:
                call["function"]["arguments"] = call_arguments(call)
        if reasoning(m):  # templates read one name or the other (gpt-oss: `thinking`)
            m["reasoning_content"] = m["thinking"] = reasoning(m)
        out.append(m)
    return out


@dataclass
class Renderer:
    """`apply_chat_template` with the record's tools and kwargs; the arguments form is the first
    that renders (dict, else JSON string), chosen once per record."""

    tokenizer: Any
    tools: list[dict[str, Any]] | None
    kwargs: dict[str, Any]
    string_arguments: bool = False
    empty_content: bool = False

    def __call__(self, messages: Sequence[dict[str, Any]], *, generation: bool = False) -> str:
        msgs = as_template_messages(messages, string_arguments=self.string_arguments, empty_content=self.empty_content)
        try:
            return self.tokenizer.apply_chat_template(
                msgs, tools=self.tools or None, tokenize=False, add_generation_prompt=generation, **self.kwargs
            )
        except Exception as exc:  # noqa: BLE001 - templates raise anything
            raise RenderFailed(f"{type(exc).__name__}: {exc}") from None

    def choose_arguments(self, messages: Sequence[dict[str, Any]]) -> str:
        """Render the whole record, trying dict arguments then string ones (then both again with
        a null content as ""); returns A.

        A dict the template prints as a Python dict (`{'city': 'Paris'}`) is skipped while another
        form renders: no parser reads it as the call's arguments. vLLM's Phi-4-mini template pastes
        `{{ call.function.arguments }}` (tool_chat_template_phi4_mini.jinja line 41), and its system
        prompt asks for `"arguments": [function arguments as JSON]` (line 20): a JSON string."""
        calls, null = any(m.get("tool_calls") for m in messages), any(m.get("content", "") is None for m in messages)
        forms = [(sa, ec) for ec in (False, True) if null or not ec for sa in (False, True) if calls or not sa]
        printed: tuple[tuple[bool, bool], str] | None = None
        failure: RenderFailed | None = None
        for self.string_arguments, self.empty_content in forms:
            try:
                text = self(messages)
            except RenderFailed as exc:
                failure = exc
                continue
            if self.string_arguments or not _python_dict_written(messages, text):
                return text
            printed = printed or ((self.string_arguments, self.empty_content), text)
        if printed is None:
            raise failure or AssertionError("unreachable")
        (self.string_arguments, self.empty_content), text = printed
        return text


def _python_dict_written(messages: Sequence[dict[str, Any]], text: str) -> bool:
    """Whether `text` holds a call's arguments printed as a Python dict (`{'city': 'Paris'}`)."""
    args = [call_arguments(c) for m in messages for c in m.get("tool_calls") or ()]
    return any(a and str(a) in text for a in args)


# ---------------------------------------------------------------- stop tokens from probe renders


@dataclass(frozen=True, eq=False)
class StopTokens:
    """What closes an assistant turn in a template (derived from sentinel probes)."""

    final: str | None  # after the last assistant turn (gpt-oss: <|return|>)
    middle: str | None  # after an assistant turn that another message follows (gpt-oss: <|end|>)
    call: str | None  # after a tool call (gpt-oss: <|call|>), None where the template renders none
    headers: frozenset[str]  # tags of the generation prompt (the assistant header)
    headers_before: dict[str, str] = field(default_factory=dict)  # no stop token: role -> text before its content
    model: tuple[str, ...] = ()  # generation_config.json's eos_token_id set (and other stops the case names)
    needs_tools: bool = False  # the template raises unless it gets tools (probed with PROBE_TOOL)
    # The template ignores add_generation_prompt and writes no prompt after every conversation either
    # (Mistral's [INST] templates, transformers' test template): the `header` edge case.
    no_generation_prompt: bool = False

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(t for t in dict.fromkeys((self.final, self.middle, self.call, *self.model)) if t)

    def describe(self) -> str:
        if not self.final:
            return "none: next header / EOS"
        parts = [self.middle or "?"]
        if self.final != self.middle:
            parts.append(f"last {self.final}")
        if self.call and self.call not in (self.final, self.middle):
            parts.append(f"call {self.call}")
        return " / ".join(parts)


def _first_tag(text: str) -> str | None:
    m = TAG.search(text)
    return m.group(0) if m else None


def stop_tokens(tokenizer: Any, kwargs: dict[str, Any], model_stops: Sequence[str] = ()) -> StopTokens:
    """Derive a template's stop tokens from renders of sentinel conversations; `model_stops`
    (generation_config's eos set) are stop tokens too."""
    render = Renderer(tokenizer, None, kwargs)
    u1, a1, u2, a2 = "Qzu1", "Qza1", "Qzu2", "Qza2"
    try:
        final = render([{"role": "user", "content": u1}, {"role": "assistant", "content": a1}])
    except RenderFailed:  # Hermes tool_use iterates over `tools` unconditionally
        render.tools = [PROBE_TOOL]
        final = render([{"role": "user", "content": u1}, {"role": "assistant", "content": a1}])
    closer = final[final.rindex(a1) + len(a1) :]
    prompt = render([{"role": "user", "content": u1}], generation=True)
    plain = render([{"role": "user", "content": u1}])
    # A template that writes the generation prompt after every conversation whatever add_generation_prompt
    # says (Command R7B's tool_use template ends with `<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>` outside any
    # `if add_generation_prompt`, line 156): what a conversation ending with the assistant, one ending
    # with the user and the generation prompt share at their ends, past the first tag (the turn's
    # closer). It is the next turn's prompt, no part of the closer, and the template does write a
    # generation prompt. (Phi-3's `<|endoftext|>` after every conversation is not: the prompt lacks it.)
    common = os.path.commonprefix([closer[::-1], plain[plain.rindex(u1) + len(u1) :][::-1]])[::-1]
    first = TAG.search(common)
    appended = common[first.end() :] if first and common[first.end() :].strip() else ""
    appended = appended if prompt.endswith(appended) else ""
    closer = closer[: len(closer) - len(appended)]
    # The assistant header's tags (after the tag that closes the user turn): a template that opens
    # the next assistant turn after the last one (ToolACE) does not stop there.
    header_tags = set(TAG.findall(final[final.index(u1) + len(u1) : final.rindex(a1)])[1:])
    closing = TAG.findall(closer)
    while len(closing) > 1 and closing[-1] in header_tags:
        closing.pop()
    t_final = (closing or [None])[-1]  # Cohere2 <|END_RESPONSE|><|END_OF_TURN_TOKEN|>: the last
    t_middle = None
    headers = frozenset(TAG.findall(prompt[len(plain) :] if prompt.startswith(plain) else ""))
    try:
        middle = render([{"role": "user", "content": u1}, {"role": "assistant", "content": a1},
                         {"role": "user", "content": u2}, {"role": "assistant", "content": a2}])  # fmt: skip
        between = middle[middle.index(a1) + len(a1) : middle.index(u2)]
        # What a middle turn shares with the last one's closing; gpt-oss shares nothing (<|end|> vs <|return|>).
        shared = TAG.findall(os.path.commonprefix([closer, between]))
        t_middle = (shared[-1] if shared else _first_tag(between)) if t_final else None
    except (RenderFailed, ValueError):
        pass
    before = {} if t_final else _headers_after_assistant(render, (u1, a1))
    call = _call_stop(tokenizer, kwargs, (t_final, t_middle), headers)
    return StopTokens(t_final, t_middle, call, headers, before, tuple(model_stops), bool(render.tools),
                      no_generation_prompt=prompt == plain and not appended)


def _headers_after_assistant(render: Renderer, opening: tuple[str, str]) -> dict[str, str]:
    """For a template without stop tokens: the text it writes between an assistant content and
    the next user / tool content (that message's header)."""
    out = {}
    for role in ("user", "tool"):
        nxt = {"role": role, "content": "Qznext", **({"tool_call_id": "call_0", "name": "probe_fn"} if role == "tool" else {})}
        try:
            text = render([{"role": "user", "content": opening[0]}, {"role": "assistant", "content": opening[1]}, nxt,
                           {"role": "assistant", "content": "Qza2"}])  # fmt: skip
        except RenderFailed:
            continue
        a, b = text.find(opening[1]), text.find("Qznext")
        if 0 <= a < b:
            out[role] = text[a + len(opening[1]) : b]
    return out


def _call_stop(tokenizer: Any, kwargs: dict[str, Any], plain: tuple[str | None, ...], headers: frozenset[str]) -> str | None:
    """The tag that ends a tool-call turn: a plain stop token if one comes first after the
    arguments, else the tag right before the next header (gpt-oss `<|call|><|start|>`)."""
    arg, result = "Qzarg", "Qzres"
    call = {"id": "call_0", "type": "function", "function": {"name": "probe_fn", "arguments": {"q": arg}}}
    msgs = [{"role": "user", "content": "Qzu1"}, {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_0", "name": "probe_fn", "content": result},
            {"role": "assistant", "content": "Qza2"}]  # fmt: skip
    render = Renderer(tokenizer, [PROBE_TOOL], kwargs)
    try:
        text = render.choose_arguments(msgs)
    except RenderFailed:
        return None
    at, end = text.find(arg), text.find(result)
    if at < 0 or end < at:
        return None  # the template does not write the call (or writes the result first)
    stretch = text[at + len(arg) : end]
    tags = [(m.group(0), m.start(), m.end()) for m in TAG.finditer(stretch)]
    written_before = set(TAG.findall(text[text.find("Qzu1") : at]))
    for k, (tag, _, end_at) in enumerate(tags):
        if tag in plain:
            return tag
        following = tags[k + 1][0] if k + 1 < len(tags) and tags[k + 1][1] == end_at else None
        if following in headers and tag not in written_before:
            return tag
    return None


# ---------------------------------------------------------------- the expectation for one record


@dataclass
class Turn:
    index: int  # message index of the assistant turn
    status: str  # "rule" | "nonprefix" | "undecided"
    span: tuple[int, int] | None = None  # characters of `Expectation.text` that must carry loss
    why: str = ""
    case: tuple[str, ...] = ()  # edge cases met: header, think-opened, history, think-closed, call-stop, model-stop


@dataclass
class Expectation:
    """What the rule says about one record."""

    text: str = ""  # A, plus the EOS the rule appends after a last turn that has no stop token
    eos_appended: bool = False
    turns: list[Turn] = field(default_factory=list)
    forbidden: list[tuple[int, int]] = field(default_factory=list)  # other messages' text and schemas
    must_reject: str = ""  # why the record cannot be trained as the rule asks
    string_arguments: bool = False
    stops: StopTokens | None = None

    @property
    def decidable(self) -> bool:
        return not self.must_reject and all(t.status == "rule" for t in self.turns)


def _value_pieces(value: str) -> list[str]:
    """A string argument value as templates may write it escaped (JSON, Python repr): the pieces
    between quotes, backslashes and newlines."""
    return [p.strip() for p in re.split(r"[\\'\"\n\t]", value) if p.strip()]


def _owned(message: dict[str, Any]) -> list[str]:
    """Text an assistant turn owns: content, reasoning, function names, string argument values."""
    out = [message.get("content") or "", reasoning(message)]
    for call in message.get("tool_calls") or ():
        out.append(call["function"]["name"])
        out += [p for v in call_arguments(call).values() if isinstance(v, str) for p in _value_pieces(v)]
    return [s.strip() for s in out if s and s.strip()]


def _calls_written(message: dict[str, Any], text: str) -> bool:
    return all(call["function"]["name"] in text and all(
        p in text for v in call_arguments(call).values() if isinstance(v, str) for p in _value_pieces(v)
    ) for call in message.get("tool_calls") or ())  # fmt: skip


def expect(tokenizer: Any, messages: Sequence[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
           kwargs: dict[str, Any] | None = None, stops: StopTokens | None = None, model_stops: Sequence[str] = (),
           edge_cases: bool = False) -> Expectation:  # fmt: skip
    """Apply the rule to one OpenAI-format record (every assistant turn trained).

    `edge_cases` decides the served templates' edge cases (module docstring); without it a
    turn whose P_i is not a prefix of A gets the weak `nonprefix` check.
    """
    kwargs = kwargs or {}
    out = Expectation(stops=stops or stop_tokens(tokenizer, kwargs, model_stops))
    if edge_cases and (hit := _special_text(tokenizer, messages)):
        out.must_reject = f"the record's text holds the special token {hit!r}"
        return out
    render = Renderer(tokenizer, tools, kwargs)
    try:
        A = render.choose_arguments(messages)
    except RenderFailed as exc:
        out.must_reject = f"the template raises: {exc}"
        return out
    out.string_arguments = render.string_arguments
    out.text = A
    stops = out.stops
    # Where each message's own text sits in A (first occurrence in order), for anchors and forbidden text.
    cursor = 0
    starts: list[int] = []
    for m in messages:
        pieces = _owned(m) if m["role"] == "assistant" else [(m.get("content") or "").strip()]
        found = [A.find(p, cursor) for p in pieces if p]
        found = [f for f in found if f >= 0]
        starts.append(min(found) if found else -1)
        if m["role"] != "assistant":
            p = (m.get("content") or "").strip()
            if p and (at := A.find(p, cursor)) >= 0:
                out.forbidden.append((at, at + len(p)))
                cursor = at + len(p)
    for tool in tools or ():
        desc = _description(tool)
        if desc and (at := A.find(desc)) >= 0:
            out.forbidden.append((at, at + len(desc)))
    if edge_cases and tools and not any(_description(t) in A for t in tools if _description(t)):
        out.must_reject = "the template does not write the tool schemas"
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        out.must_reject = out.must_reject or _not_written(render, messages, i, A, starts)
        out.turns.append(_turn(render, messages, i, A, starts, stops, out, edge_cases=edge_cases))
    return out


def _description(tool: dict[str, Any]) -> str:
    return str(tool.get("function", tool).get("description", ""))


def _special_text(tokenizer: Any, messages: Sequence[dict[str, Any]]) -> str:
    """A special added token of the tokenizer that a message's text holds, or ""."""
    specials = [a.content for a in tokenizer.backend_tokenizer.get_added_tokens_decoder().values() if a.special and a.content.strip()]
    texts = [str(m.get(k) or "") for m in messages for k in ("content", "reasoning_content", "thinking")]
    texts += [json.dumps(c["function"], ensure_ascii=False) for m in messages for c in m.get("tool_calls") or ()]
    return next((t for t in specials for text in texts if t in text), "")


def _not_written(render: Renderer, messages: Sequence[dict[str, Any]], i: int, A: str, starts: list[int]) -> str:
    """What of turn i the template never writes (calls, content, reasoning), or "".

    Looked for in the turn itself: after the previous message's text, before the next's (a user
    asking about "Oslo" does not make a dropped "Oslo" call written). Missing there but written
    when the turn is the last one is history rewriting, which the rule allows, except for the
    content: a content A does not write at all is never trained, so the record is rejected.
    """
    m = messages[i]
    prev = (messages[i - 1].get("content") or "").strip() if i else ""
    lo = starts[i - 1] + len(prev) if i and starts[i - 1] >= 0 else 0
    hi = next((starts[j] for j in range(i + 1, len(messages)) if starts[j] >= lo), len(A))
    own = A[lo:hi]
    alone: str | None = None

    def as_last() -> str:
        try:
            text = render(messages[: i + 1])
        except RenderFailed:
            return ""
        at = text.rfind(prev) if prev else -1
        return text[at + len(prev) :] if at >= 0 else text

    content, thought = (m.get("content") or "").strip(), reasoning(m).strip()
    checks = [("tool calls", lambda text: _calls_written(m, text)), ("content", lambda text: content in text),
              ("reasoning", lambda text: thought in text)]  # fmt: skip
    wanted = {"tool calls": bool(m.get("tool_calls")), "content": bool(content), "reasoning": bool(thought)}
    for what, written in checks:
        if wanted[what] and not written(own):
            if what == "content" and not written(A[lo:]):
                # History may drop reasoning (Qwen3), never the answer: the content is the response text
                # the promise trains. gpt-oss writes a call turn's content (as analysis) only when no final
                # answer follows it (gpt-oss.jinja line 291), so A lacks it and the record is rejected.
                return f"the template does not write the content of turn {i}"
            alone = as_last() if alone is None else alone
            if not written(alone):
                return f"the template does not write the {what} of turn {i}"
    return ""


def _handover(render: Renderer, messages: Sequence[dict[str, Any]], A: str) -> str:
    """What follows A up to the first header tag when a tool answers the last turn (GLM's `<|observation|>`), or ''."""
    try:
        T = render([*messages, {"role": "tool", "content": "\ue000"}])
    except RenderFailed:
        return ""
    header = TAG.search(T, len(A)) if T.startswith(A) else None
    return T[len(A) : header.end()] if header is not None and not T[len(A) : header.start()].strip() else ""


def _turn(render: Renderer, messages: Sequence[dict[str, Any]], i: int, A: str, starts: list[int],
          stops: StopTokens, out: Expectation, *, edge_cases: bool = False) -> Turn:  # fmt: skip
    last = i == len(messages) - 1
    if last and not stops.final and not stops.model:  # no stop token in the template: the rule appends EOS,
        out.text, out.eos_appended = A + render.tokenizer.eos_token, True
        if messages[i].get("tool_calls") and (handover := _handover(render, messages, A)):  # or a call's tool header
            out.text, out.eos_appended = A + handover, False
    try:
        P = render(messages[:i], generation=True)
    except RenderFailed as exc:
        return Turn(i, "undecided", why=f"the generation prompt does not render: {exc}")
    case: tuple[str, ...] = ()
    if A.startswith(P):
        s = len(P)
        adds_nothing = edge_cases and stops.no_generation_prompt
        header = _header_if_prompt_adds_nothing(render, messages, i, P, A) if adds_nothing else ""
        if header:
            s, case = s + len(header), ("header",)
    elif edge_cases and (located := _diverged(render, P, messages, i, A, starts, stops)):
        s, case = located
    else:
        return Turn(i, "nonprefix", why="A does not start with P_i")
    nxt = next((starts[j] for j in range(i + 1, len(messages)) if starts[j] >= s), -1)
    end = len(A) if last or nxt < 0 else nxt
    region = A[s:end]
    owned_end = 0
    for piece in _owned(messages[i]):  # first occurrences: a tool's name comes back in its result's header
        if (at := region.find(piece)) >= 0:
            owned_end = max(owned_end, at + len(piece))
    if stops.final or stops.model:
        hits = [(at, t) for t in stops.all if (at := region.find(t, owned_end)) >= 0]
        if hits:
            at, tag = min(hits)
            if last and stops.final and (at := region.rfind(stops.final)) >= owned_end:  # Phi-3 closes the last turn with <|end|>\n<|endoftext|>
                tag = stops.final
            if stops.final and tag not in (stops.final, stops.middle):  # a closer only calls or the model stop on
                case += ("call-stop",) if tag == stops.call else ("model-stop",)
            return Turn(i, "rule", (s, s + at + len(tag)), case=case)
    if last:
        if stops.final:
            return Turn(i, "undecided", why="no stop token after the last turn", case=case)
        if out.text == A:  # nothing appended yet (a template with stop tokens, none after the last turn)
            out.text, out.eos_appended = A + render.tokenizer.eos_token, True
        return Turn(i, "rule", (s, len(out.text)), case=case)
    # No stop token before the next message (GLM everywhere; Gemma 4 writes a tool's response
    # inside the model turn): the next message's first header tag stops generation. It is where
    # A leaves the rendering that ends with this turn (R), or the header a no-stop template writes.
    try:
        R = render(messages[: i + 1])
    except RenderFailed as exc:
        return Turn(i, "undecided", why=f"the turn alone does not render: {exc}", case=case)
    cut = len(os.path.commonprefix([A, R]))
    inside = next((m for m in TAG.finditer(A, max(cut - 40, 0)) if m.start() < cut < m.end()), None)
    header = TAG.match(A, inside.start() if inside else cut) if cut < len(A) else None
    if header is None and not inside and A[cut : cut + 1].isspace():  # Apriel 1.6: `\n<|end|>\n` closes a turn
        header = TAG.match(A, cut + len(A[cut:]) - len(A[cut:].lstrip()))  # only when another message follows
    if header is None and (closing := [m for m in TAG.finditer(A, s, cut) if m.end() == cut]):
        header = closing[-1]  # R ends with the tag too (Gemma 4 closes a last call with <|tool_response>)
    if header is None and nxt >= 0 and not stops.final:  # R differs (GLM renders a last turn's reasoning)
        lead = stops.headers_before.get(messages[i + 1]["role"], "")
        if lead and A.startswith(lead, nxt - len(lead)):
            header = TAG.match(A, nxt - len(lead.lstrip()))  # past the whitespace before a closer (Apriel `\n<|end|>`)
    if header is None or header.start() < s + owned_end or header.end() > end:
        return Turn(i, "undecided", why="no stop token and no header tag right after the turn", case=case)
    return Turn(i, "rule", (s, header.end()), case=case)


def _tag_start(text: str, at: int) -> int:
    """`at`, moved back to the start of a markup tag it falls inside of."""
    inside = next((m for m in TAG.finditer(text, max(at - 40, 0)) if m.start() < at < m.end()), None)
    return inside.start() if inside else at


def _header_if_prompt_adds_nothing(render: Renderer, messages: Sequence[dict[str, Any]], i: int, P: str, A: str) -> str:
    """The assistant header A writes for turn i when the generation prompt adds nothing, else "".

    The header is what the template writes between the conversation so far and a sentinel
    content (as far as A writes the same). Only for templates that write no generation prompt
    anywhere (`StopTokens.no_generation_prompt`): a template whose prompt adds nothing after a
    tool result on purpose (diffusion_gemma continues the model turn there, `<|turn>model\n` only
    after other messages) leaves what A writes next to the model, as on every prefix turn."""
    sentinel = "Qzheader"
    try:
        if render(messages[:i]) != P:
            return ""
        S = render([*messages[:i], {"role": "assistant", "content": sentinel}])
    except RenderFailed:
        return ""
    if not S.startswith(P) or sentinel not in S[len(P) :]:
        return ""
    header = os.path.commonprefix([S[len(P) : S.index(sentinel, len(P))], A[len(P) :]])
    header = header[: _tag_start(A, len(P) + len(header)) - len(P)]
    # Whitespace alone is no header: the model writes it, in its first token (vLLM's Mistral template,
    # `[/TOOL_RESULTS] It`: inference prompts with `[/TOOL_RESULTS]`, the model writes ` It`).
    return header if header.strip() else ""


def _diverged(render: Renderer, P: str, messages: Sequence[dict[str, Any]], i: int, A: str, starts: list[int],
              stops: StopTokens) -> tuple[int, tuple[str, ...]] | None:  # fmt: skip
    """Where turn i starts in A when A does not start with P_i, and which edge case it is.

    After the previous message's text, P_i writes the assistant header and whatever the
    generation prompt adds (`<think>\n`); A writes the header and the turn. The turn starts
    where they part (a tag they part inside belongs to the turn). Where they part before A's
    assistant header (the template closes the previous message differently when it is the
    last), the turn starts after the header A writes before a sentinel content. When the part
    of P_i that A lacks closes the think block that A writes the turn's reasoning in, the
    reasoning cannot follow that prompt: the turn starts after A's closing tag."""
    prev = (messages[i - 1].get("content") or "").strip() if i else ""
    if not prev or starts[i - 1] < 0 or prev not in P:
        return None
    lo_A, lo_P = starts[i - 1] + len(prev), P.rindex(prev) + len(prev)
    tail = P[lo_P:]
    s = _tag_start(A, lo_A + len(os.path.commonprefix([tail, A[lo_A:]])))
    first_owned = min((at for piece in _owned(messages[i]) if (at := A.find(piece, lo_A)) >= 0), default=len(A))
    header_at = max((m.start() for m in TAG.finditer(A, lo_A, first_owned) if m.group(0) in stops.headers), default=-1)
    if s < header_at:
        sentinel = "Qzheader"
        try:
            S = render([*messages[:i], {"role": "assistant", "content": sentinel}])
        except RenderFailed:
            return None
        at = S.rfind(prev, 0, S.find(sentinel))
        if at < 0:
            return None
        s = _tag_start(A, lo_A + len(os.path.commonprefix([S[at + len(prev) : S.find(sentinel)], A[lo_A:]])))
        return s, ("history",)
    rest = tail[s - lo_A :]
    # Where P_i and A part only in the whitespace before a tag both write next, that tag is P_i's: vLLM's
    # DeepSeek-V3 template closes the tool results with `<｜tool▁outputs▁end｜>` in the generation prompt
    # (tool_chat_template_deepseekv3.jinja line 91) and again, after other whitespace, before the answer
    # in history (line 70): one closer, which the prompt holds, so the model never writes it.
    nxt = next((starts[j] for j in range(i + 1, len(messages)) if starts[j] > s), len(A))
    while (tag := TAG.match(rest.lstrip())) and A[s:nxt].lstrip().startswith(tag.group(0)):
        s += len(A[s:]) - len(A[s:].lstrip()) + len(tag.group(0))
        rest = rest.lstrip()[len(tag.group(0)) :]
        given = os.path.commonprefix([rest, A[s:]])
        s, rest = s + len(given), rest[len(given) :]
    # Where P_i goes on in the previous message's turn and A opens a new turn there before writing the same
    # opener (TRL's diffusion_gemma with thinking on, after a tool response: P_i ends
    # `<tool_response|><|channel>thought\n`, A writes `<tool_response|><|turn>model\n<|channel>thought\n`), the
    # header and the opener are prompt: at inference the prompt ends with the opener and the model writes neither.
    opened = TAG.match(A, s)
    if rest.strip() and opened and opened.group(0) in stops.headers and s < (r := A.find(rest, s, nxt)) < first_owned:
        s = r + len(rest)
    # A tag P_i ends with, where A's turn opens with it, is P_i's too: DeepSeek-V3.2 with thinking off
    # prompts `<｜Assistant｜><think></think>` and writes history turns `<｜Assistant｜></think>answer`; the
    # model never writes that `</think>`. (Where P_i ends by opening the block, `<think>\n`, A's `</think>`
    # is the model's.)
    last = next(reversed(list(TAG.finditer(P))), None)
    if last and not P[last.end() :].strip() and last.group(0) in rest and A.startswith(last.group(0), s):
        s += len(last.group(0))
        s += len(os.path.commonprefix([P[last.end() :], A[s:nxt]]))
    # Reasoning as a field, or R1-style as the content's leading think block (a template that writes no reasoning
    # field writes the content as given, block and all: QwQ's thinking-off prompt has closed that block already).
    block = re.match(r"\s*<think>(.*?)</think>", messages[i].get("content") or "", re.DOTALL)
    thought = reasoning(messages[i]).strip() or (block[1].strip() if block else "")
    if thought and (r := A.find(thought, s, nxt)) >= 0:
        after = r + len(thought)
        for tag in TAG.finditer(rest):
            at = A.find(tag.group(0), after, nxt)
            if at >= 0 and not A[after:at].strip():
                s = at + len(tag.group(0))
                # What P_i writes after its closing tag is prompt (Qwen3: `</think>\n\n`); whitespace A
                # writes beyond it is the model's, as on the prefix path: GLM-4.6 and Nemotron 3 end the
                # prompt at `</think>` and write `\n` before the answer, which a prefix turn trains.
                given = os.path.commonprefix([rest[tag.end() :], A[s:nxt]])
                return s + len(given), ("think-closed",)
    return s, ("think-opened",)


# ---------------------------------------------------------------- what ftdata trained, and the comparison


def trained_runs(tokenizer: Any, text: str, input_ids: list[int], labels: list[int]) -> list[list[tuple[int, int]]] | str:
    """Per run of trained tokens, each token's char range in `text`; or why they cannot be placed.

    When ftdata kept the plain tokenization of `text` (after a BOS it may add), the offsets of
    an independent encoding place every token; otherwise each token's text is recovered by
    decoding growing prefixes of the ids, which must spell `text`.
    """
    enc = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
    lead = len(input_ids) - len(enc.ids)
    runs: list[list[int]] = []
    for k, label in enumerate(labels):
        if label == IGNORE_INDEX:
            continue
        if label != input_ids[k]:
            return f"label {label} at {k} is not its input id {input_ids[k]}"
        if runs and runs[-1][-1] == k - 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    if lead >= 0 and input_ids[lead:] == enc.ids:
        if any(labels[k] != IGNORE_INDEX for k in range(lead)):
            return "a token ftdata added in front (BOS) is trained"
        offsets = enc.offsets  # each read of it makes the whole list anew: read once, not per trained token
        return [[offsets[k - lead] for k in run] for run in runs]

    def decoded(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    full = decoded(input_ids)
    shift = full.find(text) if text else 0
    if shift < 0 or full[shift:] != text:
        at = len(os.path.commonprefix([full, text]))
        return f"ftdata's tokens spell ...{full[max(at - 60, 0):at + 80]!r}, the rule's training sequence ...{text[max(at - 60, 0):at + 80]!r}"
    ends = [len(decoded(input_ids[: k + 1])) - shift for k in range(len(input_ids))]
    return [[(max(ends[k - 1] if k else 0, 0), ends[k]) for k in run] for run in runs]


def _core(text: str, span: tuple[int, int]) -> tuple[int, int]:
    """The span without the whitespace at its ends (tokenizers differ in where they put it)."""
    a, b = span
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def _fits(text: str, tokens: list[tuple[int, int]], span: tuple[int, int]) -> bool:
    """A run trains a span when they cover the same text up to whitespace at the ends, and no
    whitespace-only token lies outside the span (whitespace may only come with a trained token)."""
    run = (tokens[0][0], tokens[-1][1])
    if _core(text, run) != _core(text, span):
        return False
    return all(text[a:b].strip() or (span[0] <= a and b <= span[1]) for a, b in tokens)


def compare(exp: Expectation, tokenizer: Any, input_ids: list[int], labels: list[int]) -> list[str]:
    """Every way ftdata's labels break the rule for this record ([] when they follow it)."""
    text = exp.text
    runs = trained_runs(tokenizer, text, input_ids, labels)
    if isinstance(runs, str):
        return [runs]
    problems = []
    shown = [text[run[0][0] : run[-1][1]] for run in runs]
    for run in runs:
        a, b = run[0][0], run[-1][1]
        for fa, fb in exp.forbidden:
            if a < fb and fa < b:
                problems.append(f"trains another message's text {text[max(a, fa):min(b, fb)]!r} (in run {text[a:b]!r})")
    spans = [t.span for t in exp.turns if t.status == "rule"]
    if exp.decidable:
        if len(runs) != len(spans) or not all(_fits(text, run, span) for run, span in zip(runs, spans)):
            problems.append(f"trained {shown!r}, the rule trains {[text[a:b] for a, b in spans]!r}")
        return problems or border_problems(exp, tokenizer, input_ids, labels)
    # Weak checks: every decided turn is one of the runs, and every run ends in a stop token.
    for t in exp.turns:
        if t.status == "rule" and not any(_fits(text, run, t.span) for run in runs):
            problems.append(f"turn {t.index}: the rule trains {text[t.span[0]:t.span[1]]!r}, not among {shown!r}")
    # A stop token, or what ends a decided turn (a header tag: Gemma 4's inline <|tool_response>).
    ends_of_turns = [tags[-1] for t in exp.turns if t.span and (tags := TAG.findall(text[t.span[0] : t.span[1]]))]
    eos = [tokenizer.eos_token] if exp.eos_appended else []
    headers = [tags[0] for h in (exp.stops.headers_before.values() if exp.stops else ()) if (tags := TAG.findall(h))]
    enders = tuple({*(exp.stops.all if exp.stops else ()), *ends_of_turns, *eos, *headers})
    for run in shown:
        if enders and not run.rstrip().endswith(enders):
            problems.append(f"trained run {run!r} does not end in a stop token {enders}")
    return problems


# ---------------------------------------------------------------- tokens at the prompt/response border

_FRESH: dict[int, tuple[int, Any]] = {}


def _fresh_backend(tokenizer: Any) -> Any:
    """The tokenizer as generation continues a text: no word-start marker in front.

    A SentencePiece-style Metaspace pre-tokenizer (`prepend_scheme="first"`: Phi-3, Llama 2) puts
    `▁` before the first word of a sequence; a reply generated after a prompt is no sequence start,
    so it is tokenized with `prepend_scheme="never"` (a copy, made once per tokenizer and size).
    Other tokenizers here add nothing in front, and are used as they are."""
    backend = tokenizer.backend_tokenizer
    pre = json.loads(backend.pre_tokenizer.__getstate__()) if backend.pre_tokenizer is not None else {}
    if pre.get("type") != "Metaspace" or pre.get("prepend_scheme") == "never":
        return backend
    size = backend.get_vocab_size(with_added_tokens=True)
    cached = _FRESH.get(id(backend))
    if cached is None or cached[0] != size:
        from tokenizers import pre_tokenizers

        fresh = copy.deepcopy(backend)
        fresh.pre_tokenizer = pre_tokenizers.Metaspace(replacement=pre["replacement"], prepend_scheme="never",
                                                       split=pre.get("split", True))  # fmt: skip
        _FRESH[id(backend)] = cached = (size, fresh)
    return cached[1]


@dataclass(frozen=True)
class Inference:
    """How inference tokenizes: the prompt alone, from the sequence's start (the tokenizer's BOS in
    front unless the text writes it), and what the model generates after it as fresh tokens."""

    tokenizer: Any

    def prompt(self, text: str) -> Any:
        return self.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)

    def fresh(self, text: str) -> list[int]:
        return _fresh_backend(self.tokenizer).encode(text, add_special_tokens=False).ids if text else []

    def bos(self, ids: list[int]) -> list[int]:
        """The BOS the tokenizer adds (what `tokenizer(text)` puts in front), unless `ids` start with it."""
        plain = self.tokenizer("x", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("x", add_special_tokens=True)["input_ids"]
        lead = full[: len(full) - len(plain)] if full[len(full) - len(plain) :] == plain else []
        return [] if ids[: len(lead)] == lead else lead

    def context(self, text: str, done: int, s: int) -> list[int]:
        """The row's tokens for text[done:s]: the prompt text[:s] as inference tokenizes it.

        From the sequence's start (`done` 0) that is tok(text[:s]) alone, BOS included. After an
        earlier trained turn (`done`: where its trained tokens end) it is tok(text[:s])'s tokens from
        the first boundary at or after `done`; text before that boundary (a token tok(text[:s]) merges
        across the earlier turn's end) is a fresh start, as the model wrote that turn."""
        enc = self.prompt(text[:s])
        if done == 0:
            return self.bos(enc.ids) + enc.ids
        k = next((k for k, (a, _) in enumerate(enc.offsets) if a >= done), len(enc.ids))
        return self.fresh(text[done : enc.offsets[k][0] if k < len(enc.ids) else s]) + enc.ids[k:]

    def swallowed(self, text: str, s: int) -> int:
        """Whitespace at text[s:] that the prompt's last token takes in when the prompt is tokenized
        with it (an added token with rstrip: Phi-3's `<|assistant|>`): the prompt's, not the reply's."""
        n = len(text[s:]) - len(text[s:].lstrip())
        return n if n and self.prompt(text[: s + n]).ids == self.prompt(text[:s]).ids else 0


def _shown(tokenizer: Any, ids: Sequence[int]) -> str:
    return "[" + ", ".join(f"{i} {tokenizer.decode([i])!r}" for i in ids) + "]"


def border_problems(exp: Expectation, tokenizer: Any, input_ids: list[int], labels: list[int]) -> list[str]:
    """Where a decided record's tokens at a prompt/response border are not what inference has there.

    Inference tokenizes turn i's prompt alone and the model generates from a fresh token. For each
    trained turn, in order, with [s, e) its trained characters of A (`exp.text`):

    - the row's tokens before its first trained token are the prompt as inference tokenizes it,
      tok(A[:s]) alone (`Inference.context`): A[:s] is P_i where A starts with it, and the history the
      row holds where the template rewrites it (the row can hold nothing else);
    - its trained tokens are A[s:e] tokenized alone, without a word-start marker (`Inference.fresh`),
      as the model writes it after that prompt. Two allowances, where inference agrees: whitespace an
      added token at the prompt's end takes in (Phi-3's `<|assistant|>`, rstrip) is the prompt's, and
      whitespace after the stop token that the tokenizer glues to its last token (`|>\\n` on Llama 3,
      where the template writes `<|im_end|>\\n`) may be trained with it (a stop string still matches);
    - after the last trained turn, the rest of the row is the rest of A the same way.

    One row holds every turn, so a later turn's context holds the earlier turns as the model wrote
    them: where inference's tok(P_i) merges a token across an earlier turn's end, the row starts a
    fresh token there (the only place the row may differ from tok(P_i)).
    """
    if not exp.decidable:
        return []
    text, inference = exp.text, Inference(tokenizer)
    p = done = 0
    for s, e in sorted(t.span for t in exp.turns if t.span):
        want = inference.context(text, done, s)
        got = input_ids[p : p + len(want)]
        if got != want or any(x != IGNORE_INDEX for x in labels[p : p + len(want)]):
            at = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            got, want = (_shown(tokenizer, x[max(at - 2, 0) : at + 3]) for x in (got, want))
            return [f"the prompt before {text[s:e][:30]!r} is not tokenized as inference tokenizes it alone: the row has {got}, inference {want}"]
        p += len(want)
        n = next((k for k, x in enumerate(labels[p:]) if x == IGNORE_INDEX), len(labels) - p)
        run = input_ids[p : p + n]
        start = s + inference.swallowed(text, s)
        glue = len(text[e:]) - len(text[e:].lstrip())
        fresh = [inference.fresh(text[start : e + w]) for w in range(glue + 1)]
        if run not in fresh or labels[p : p + n] != run:
            row, writes = _shown(tokenizer, input_ids[p : p + 6]), _shown(tokenizer, fresh[0][:6])
            return [f"turn {text[s:e][:30]!r}: after its prompt the row has {row}... ({n} trained), the model writes {writes}..."]
        # The most whitespace the run spells: an rstrip stop token (Phi-3's `<|end|>`) takes in the `\n` after it.
        p, done = p + n, e + max(w for w, ids in enumerate(fresh) if ids == run)
    rest = inference.context(text, done, len(text)) if done < len(text) else []
    if input_ids[p:] != rest or any(x != IGNORE_INDEX for x in labels[p:]):
        return [f"after the last trained turn the row has {_shown(tokenizer, input_ids[p : p + 4])}, the text tokenized {_shown(tokenizer, rest[:4])}"]
    return []


# ---------------------------------------------------------------- rows of a record (history=inference)


def _lifted(messages: Sequence[dict[str, Any]], writes_reasoning: bool) -> list[dict[str, Any]]:
    """Leading `<think>…</think>` blocks of assistant contents as the turns' reasoning, where the template
    writes reasoning (tested by rendering a sentinel reasoning): inference writes the model's reasoning in
    the template's own syntax."""
    out = []
    for m in messages:
        found = re.match(r"\s*<think>(.*?)</think>", m.get("content") or "", re.DOTALL) if m["role"] == "assistant" else None
        if writes_reasoning and found and not reasoning(m):
            m = {**m, "reasoning_content": found[1].strip(), "content": m["content"][found.end() :].lstrip()}
        out.append(m)
    return out


def writes_reasoning(tokenizer: Any, kwargs: dict[str, Any] | None = None) -> bool:
    """Whether the template writes an assistant turn's reasoning when the turn is the last one: a plain answer's,
    or a tool call's (Gemma 4 writes reasoning only before calls)."""
    thought = {"reasoning_content": "Qzthought", "thinking": "Qzthought"}
    call = {"type": "function", "id": "call_1", "function": {"name": "probe_fn", "arguments": {"q": "Qzarg"}}}
    for turn, tools in (({"role": "assistant", "content": "Qzans", **thought}, None),
                        ({"role": "assistant", "content": "", "tool_calls": [call], **thought}, [PROBE_TOOL])):  # fmt: skip
        try:
            if "Qzthought" in Renderer(tokenizer, tools, kwargs or {})([{"role": "user", "content": "Qzq"}, turn]):
                return True
        except RenderFailed:
            continue
    return False


def inference_target(tokenizer: Any, messages: Sequence[dict[str, Any]], i: int, *, tools: list[dict[str, Any]] | None = None,
                     kwargs: dict[str, Any] | None = None, stops: StopTokens | None = None,
                     edge_cases: bool = False) -> tuple[str, str] | None:  # fmt: skip
    """(context, trained text) of assistant turn i as inference sees it: the rule on `messages[:i+1]`, the turn as
    the last one, after its inference prompt P_i. Where that render writes a context that conflicts with P_i
    (neither begins with the other: Mistral-Nemo writes the system prompt into P_i's last user turn only, a
    thinking-off P_i closes the think block that render writes the turn's reasoning in), the context is P_i.
    None where the rule cannot decide it (or the turn cannot be trained)."""
    exp = expect(tokenizer, messages[: i + 1], tools=tools, kwargs=kwargs, stops=stops, edge_cases=edge_cases)
    if exp.must_reject or not exp.turns or exp.turns[-1].status != "rule" or exp.turns[-1].span is None:
        return None
    a, b = exp.turns[-1].span
    if not _calls_written(messages[i], exp.text[a:b]):  # a call turn whose end the rule cannot place
        return None
    return inference_prompt(tokenizer, messages, i, exp.text[:a], tools=tools, kwargs=kwargs), exp.text[a:b]


def inference_prompt(tokenizer: Any, messages: Sequence[dict[str, Any]], i: int, context: str, *,
                     tools: list[dict[str, Any]] | None = None, kwargs: dict[str, Any] | None = None) -> str:  # fmt: skip
    """Turn i's context at inference: P_i where `context` (what a render writes before the turn) conflicts with it,
    else `context` (P_i that only goes on past it, `<think>\n`, is the rule's think-opened edge case; one that
    differs from it in whitespace alone, its `history` edge case)."""
    try:
        P = _generation_prompt(tokenizer, messages, i, tools, kwargs or {})
    except RenderFailed:
        return context
    if context.startswith(P) or P.startswith(context):
        return context
    bare, given = re.sub(r"\s+", "", P), re.sub(r"\s+", "", context)  # whitespace alone: the `history` edge case
    return context if given.startswith(bare) or bare.startswith(given) else P


def as_prompt_row(tokenizer: Any, messages: Sequence[dict[str, Any]], exp: Expectation, *,
                  tools: list[dict[str, Any]] | None = None, kwargs: dict[str, Any] | None = None) -> Expectation:  # fmt: skip
    """`exp` as the row inference trains where the record's one trained turn is its last and the context A writes
    before it conflicts with its inference prompt P_i (`inference_prompt`): P_i, then the turn as A writes it;
    nothing of P_i trained. Else `exp` as it is."""
    turns = [t for t in exp.turns if t.status == "rule" and t.span is not None]
    if exp.must_reject or len(exp.turns) != 1 or len(turns) != 1 or turns[0].index != len(messages) - 1:
        return exp
    (turn,) = turns
    a, b = turn.span  # type: ignore[misc]
    prompt = inference_prompt(tokenizer, messages, turn.index, exp.text[:a], tools=tools, kwargs=kwargs)
    if prompt == exp.text[:a]:
        return exp
    text = prompt + exp.text[a:b]
    return Expectation(text, exp.eos_appended, [Turn(turn.index, "rule", (len(prompt), len(text)), case=turn.case)],
                       [(0, len(prompt))], "", exp.string_arguments, exp.stops)  # fmt: skip


def _generation_prompt(tokenizer: Any, messages: Sequence[dict[str, Any]], i: int, tools: list[dict[str, Any]] | None,
                       kwargs: dict[str, Any]) -> str:  # fmt: skip
    """P_i, with the arguments form that renders the conversation through turn i."""
    render = Renderer(tokenizer, tools, kwargs)
    render.choose_arguments(messages[: i + 1])
    return render(messages[:i], generation=True)


def row_runs(tokenizer: Any, input_ids: Sequence[int], labels: Sequence[int]) -> list[tuple[str, str]]:
    """(context, trained text) of each run of trained tokens of a row, decoded."""
    def decoded(ids: Sequence[int]) -> str:
        return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    out, k = [], 0
    while k < len(input_ids):
        if labels[k] == IGNORE_INDEX:
            k += 1
            continue
        end = k
        while end < len(input_ids) and labels[end] != IGNORE_INDEX:
            end += 1
        out.append((decoded(input_ids[:k]), decoded(input_ids[k:end])))
        k = end
    return out


def _body(text: str, tokenizer: Any, stops: StopTokens) -> str:
    """A trained text through its first stop token, without edge whitespace: a last turn's closer of two stops
    (Phi-3's `<|end|>\\n<|endoftext|>`) ends at the first, where generation ends. Where the template closes no
    turn (GLM), without the token generation stops on (a history turn: the next header; the same turn as the
    last: the appended EOS)."""
    text = text.strip()
    if stops.call and (at := text.find(stops.call)) >= 0:  # a call turn stops on its calls' closer (Apertus' `<|tools_suffix|>`)
        return text[: at + len(stops.call)]
    if stops.final:
        if stops.middle and (two := re.search(re.escape(stops.middle) + r"\s*" + re.escape(stops.final) + r"$", text)):
            return text[: two.start() + len(stops.middle)]
        return text
    # the next message's first header tag, where a middle turn's training ends (Apriel's `<|end|>`, GLM's `<|user|>`)
    firsts = [found[0] for found in map(TAG.search, stops.headers_before.values()) if found]
    for stop in (tokenizer.eos_token, *stops.model, *stops.headers_before.values(), *firsts):
        if stop and text.endswith(stop.strip()):
            return text[: -len(stop.strip())].strip()
    return text


def _flat(text: str) -> str:
    """`text` without the whitespace around markup tags: tokenizers that strip it at their markers (Phi-3's
    `<|assistant|>`) decode without it."""
    return re.sub(r"\s*(" + TAG.pattern + r")\s*", r"\1", text).strip()


def undecided(tokenizer: Any, messages: Sequence[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
              kwargs: dict[str, Any] | None = None, stops: StopTokens | None = None, edge_cases: bool = False) -> list[int]:
    """The assistant turns whose inference target the rule cannot decide (`inference_target` is None): a record
    holding one cannot be trained as inference sees it."""
    kwargs = kwargs or {}
    stops = stops or stop_tokens(tokenizer, kwargs)
    messages = _lifted(messages, writes_reasoning(tokenizer, kwargs))
    return [i for i, m in enumerate(messages) if m["role"] == "assistant" and inference_target(
        tokenizer, messages, i, tools=tools, kwargs=kwargs, stops=stops, edge_cases=edge_cases) is None]


def trajectory(tokenizer: Any, messages: Sequence[dict[str, Any]], rows: Sequence[tuple[Sequence[int], Sequence[int]]], *,
               tools: list[dict[str, Any]] | None = None, kwargs: dict[str, Any] | None = None, stops: StopTokens | None = None,
               edge_cases: bool = False) -> tuple[list[str], int | None]:  # fmt: skip
    """Every way the rows of one record (every assistant turn trained) break the rule of history=inference, and
    the fewest rows an exhaustive search finds (None where the rule cannot decide a turn, or no turn closes).

    Each trained turn must be trained in exactly one run of one row, on its inference target after its inference
    context (`inference_target`, decoded text compared up to edge whitespace); no run may train anything else.
    The fewest rows: the least number of renders `messages[:j+1]` that, together, write every turn's target as
    a prefix (context + text) of theirs.
    """
    kwargs = kwargs or {}
    stops = stops or stop_tokens(tokenizer, kwargs)
    messages = _lifted(messages, writes_reasoning(tokenizer, kwargs))
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    targets = {i: inference_target(tokenizer, messages, i, tools=tools, kwargs=kwargs, stops=stops, edge_cases=edge_cases)
               for i in turns}  # fmt: skip
    got = [run for ids, labels in rows for run in row_runs(tokenizer, ids, labels)]
    problems = [] if len(got) == len(turns) else [f"{len(got)} trained runs for {len(turns)} trained turns"]
    for i, target in targets.items():
        if target is None:
            continue
        context, text = target
        hits = [g for g in got if _flat(g[0]) == _flat(context) and _flat(_body(g[1], tokenizer, stops)) == _flat(_body(text, tokenizer, stops))]
        if len(hits) != 1:
            problems.append(f"turn {i}: at inference {text!r} after ...{context[-120:]!r}; trained {len(hits)} times in {got!r:.600}")
    if None in targets.values() or not stops.final:
        return problems, None
    renders = {}
    for j in turns:
        try:
            renders[j] = Renderer(tokenizer, tools, kwargs).choose_arguments(messages[: j + 1])
        except RenderFailed:
            return problems, None
    def written(j: int, i: int) -> bool:  # render j writes turn i's context and its target through its first stop
        context, text = targets[i]  # type: ignore[misc]
        return renders[j].startswith(context) and _body(renders[j][len(context) :], tokenizer, stops).startswith(_body(text, tokenizer, stops))

    # A turn whose context at inference no render writes (its P_i: a prompt row) is a row of its own; the others
    # are covered by renders through the turns that have a render.
    alone = [i for i in turns if not written(i, i)]
    rest = [i for i in turns if i not in alone]
    holds = {j: {i for i in rest if i <= j and written(j, i)} for j in rest}
    for n in range(len(rest) + 1):
        if any(set().union(set(), *(holds[j] for j in pick)) >= set(rest) for pick in _combinations(rest, n)):
            return problems, n + len(alone)
    return problems, None


def _combinations(items: list[int], n: int) -> Any:
    from itertools import combinations

    return combinations(items, n)
