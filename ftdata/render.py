"""Render: `Example` -> `Rendered` (text + the character spans that carry loss).

Two renderers share one masking path. Prompt templates (prompts.py) know their spans by
construction. For the model's own chat template, spans are found from the template's own
renders, in characters (see docs/masking.md):

    P = render(messages[:i], add_generation_prompt=True)      # everything before turn i
    A = render(messages)                                       # the whole conversation
    A = P + [ws] content [ws] EOT + next turns ...             # when A starts with P
            ^^^^^^^^^^^^^^^^^^^^^ trained span of assistant turn i

When that fails (the template rewrites earlier turns, moves the system prompt, injects a think
block), turn i is found by rendering the conversation once more with only its content
replaced by a sentinel: where the two renders differ is exactly where the template put the
content ("fallback"). The span is that content + EOT; anything else is a rejection.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ftdata.errors import TemplateError, UnusableRecord
from ftdata.markers import ChatRenderer, RoleMarkers, control_tokens, detect_role_markers
from ftdata.prompts import PromptTemplate, load_prompt_template, render_prompt_template
from ftdata.types import Example, MaskPolicy, Message, Rendered, SystemMode

REASONING_DROPPED = "the chat template drops the reasoning (<think>...</think>) of an assistant turn; only its answer is trained"
SYSTEM_DROPPED = "the chat template dropped the system message; use system_mode='fold' to keep it"
USER_TRAIN_IGNORED = "train=true on a non-assistant turn is ignored: only assistant turns carry loss (mask='train_on_prompt' trains all)"


def trained_turns(messages: tuple[Message, ...], policy: MaskPolicy) -> list[bool]:
    """Which messages carry loss. A message's own `train` flag wins over the policy.

    Raises:
        UnusableRecord: no assistant turn is left to train on.
    """
    last = max(i for i, m in enumerate(messages) if m.role == "assistant")
    out = []
    for i, m in enumerate(messages):
        if m.role != "assistant":
            out.append(False)
        elif m.train is not None:
            out.append(m.train)
        else:
            out.append(policy is not MaskPolicy.LAST_ASSISTANT or i == last)
    if not any(out):
        why = "every assistant turn has train=false" if policy is not MaskPolicy.LAST_ASSISTANT else (
            "mask=last_assistant and the last assistant turn has train=false"
        )  # fmt: skip
        raise UnusableRecord(f"{why}; nothing to train on", field="messages")
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


def _span_after(text: str, start: int, content: str, eot: str) -> tuple[int, int] | None:
    """[start, end of EOT) when text[start:] is `[ws] content [ws] EOT`, else None."""
    core = content.strip()
    j = start
    while j < len(text) and text[j].isspace() and not text.startswith(core, j):
        j += 1
    if not core or not text.startswith(core, j):
        return None
    k = j + len(core)
    if eot:
        m = k
        while m < len(text) and text[m].isspace() and not text.startswith(eot, m):
            m += 1
        if not text.startswith(eot, m):
            return None
        k = m + len(eot)
    return start, k


def _sentinel(*texts: str) -> str:
    """A private-use character that occurs in none of `texts`."""
    return next(chr(c) for c in range(0xE000, 0xF900) if not any(chr(c) in t for t in texts))


def _changed_region(a: str, b: str) -> tuple[int, int]:
    """[start, end) in `a` of the part that differs from `b` (common prefix and suffix removed)."""
    start = 0
    limit = min(len(a), len(b))
    while start < limit and a[start] == b[start]:
        start += 1
    tail = 0
    while tail < limit - start and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    return start, len(a) - tail


def _diff_span(
    text: str, msgs: list[dict[str, str]], i: int, render: ChatRenderer, eot: str
) -> tuple[tuple[int, int] | None, str, str]:
    """Fallback: locate turn i where the render changes when only its content changes.

    Returns (span or None, why-not, note).
    """
    content = msgs[i]["content"]
    sentinel = _sentinel(text, content)
    try:
        other = render([*msgs[:i], {**msgs[i], "content": sentinel}, *msgs[i + 1 :]])
    except TemplateError as exc:
        return None, str(exc), ""
    start, end = _changed_region(text, other)
    region = text[start:end]
    core = content.strip()
    if region.strip() == core:
        span = _span_after(text, start, content, eot)
        return span, "" if span else f"it is not followed by the end-of-turn marker {eot!r}", ""
    answer = core.rsplit("</think>", 1)[1].strip() if "</think>" in core else ""
    if answer and region.rstrip().endswith(answer):
        if "</think>" not in region:  # the template drops the reasoning of this turn
            at = start + len(region.rstrip()) - len(answer)
            span = _span_after(text, at, answer, eot)
            return span, "" if span else f"it is not followed by {eot!r}", REASONING_DROPPED
        # The template re-renders the reasoning as its own think block: train the block as
        # written (its opening tag sits just before the changed region).
        opening = text[:start].rstrip()
        at = len(opening) - len("<think>") if opening.endswith("<think>") else start
        span = _span_after(text, start + len(region.rstrip()) - len(answer), answer, eot)
        return ((at, span[1]) if span else None), "" if span else f"it is not followed by {eot!r}", ""
    shown = region if len(region) <= 60 else region[:57] + "..."
    return None, f"the template renders it as {shown!r} (it rewrites the content)", ""


def render_chat(example: Example, render: ChatRenderer, markers: RoleMarkers, trained: list[bool]) -> Rendered:
    """Render with the model's chat template and find each assistant span.

    Raises:
        UnusableRecord: the template raises on this conversation, or an assistant content
            (plus end-of-turn marker) cannot be located exactly, so it cannot be masked safely.
    """
    msgs = example.chat_messages()
    try:
        text = render(msgs)
    except TemplateError as exc:
        hint = ""
        if msgs[0]["role"] == "system" and markers.system_support == "raises":
            hint = "; this template has no system role: use system_mode='fold'"
        raise UnusableRecord(f"{exc}{hint}", location=example.source, field="messages") from None
    spans, boundaries, notes, method, done = [], [], [], "prefix", 0
    if msgs[0]["role"] == "system" and msgs[0]["content"].strip() not in text:
        notes.append(SYSTEM_DROPPED)
    for i, msg in enumerate(msgs):
        if msg["role"] != "assistant":
            continue
        eot = markers.final_eot if i == len(msgs) - 1 else markers.eot
        span, why = None, ""
        try:
            prompt = render(msgs[:i], generation=True)
        except TemplateError:
            prompt = None
        if prompt is not None and text.startswith(prompt) and len(prompt) >= done:
            span = _span_after(text, len(prompt), msg["content"], eot)
        if span is None:
            method = "fallback"
            span, why, note = _diff_span(text, msgs, i, render, eot)
            if note:
                notes.append(note)
        if span is None or span[0] < done:
            why = why or "it overlaps the previous turn"
            raise UnusableRecord(
                f"assistant turn {i} cannot be masked safely: {why}",
                location=example.source, field=f"messages[{i}]",
            )  # fmt: skip
        done = span[1]
        if trained[i]:
            spans.append(span)
        # The next exchange starts after the separator (ChatML's "\n"), which is neither trained
        # nor worth keeping at the head of a truncated row.
        sep = markers.separator
        boundaries.append(span[1] + len(sep) if sep and text.startswith(sep, span[1]) else span[1])
    return Rendered(text, tuple(spans), method, tuple(boundaries[:-1]), tuple(dict.fromkeys(notes)))


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
    ):
        self.tokenizer = tokenizer
        self.mask = mask
        self.system_prompt = system_prompt
        self.system_mode = system_mode
        self.prompt: PromptTemplate | None = None
        self.chat: ChatRenderer | None = None
        self.markers: RoleMarkers | None = None
        if template is None and getattr(tokenizer, "chat_template", None):
            self.chat = ChatRenderer(tokenizer)
            self.markers = detect_role_markers(tokenizer)
            self.name = "chat template"
        else:
            self.prompt = load_prompt_template(template or "alpaca")
            self.name = self.prompt.name
        self.eos = tokenizer.eos_token or ""
        self.controls = control_tokens(tokenizer, self.markers.markup if self.markers else "")

    def _check_controls(self, example: Example) -> None:
        texts = [(f"messages[{i}].content", m.content) for i, m in enumerate(example.messages)]
        texts.append(("input", example.context))
        for field, text in texts:
            hit = next((c for c in self.controls if c in text), None)
            if hit is not None:
                raise UnusableRecord(
                    f"contains {hit!r}, which the tokenizer reads as a control token, not as text; the tokens "
                    "would not say what the data says (remove or escape it)",
                    location=example.source, field=field,
                )  # fmt: skip

    def __call__(self, example: Example) -> Rendered:
        if self.system_prompt is not None or self.system_mode is SystemMode.FOLD:
            example = apply_system(example, self.system_prompt, self.system_mode)
        try:
            trained = trained_turns(example.messages, self.mask)
        except UnusableRecord as exc:
            raise UnusableRecord(exc.reason, location=example.source, field=exc.field) from None
        self._check_controls(example)
        if self.prompt is not None:
            out = render_prompt_template(example, self.prompt, eos=self.eos, trained=trained)
        else:
            assert self.chat is not None and self.markers is not None
            out = render_chat(example, self.chat, self.markers, trained)
        if self.mask is MaskPolicy.TRAIN_ON_PROMPT:
            out = replace(out, spans=((0, len(out.text)),))
        notes = example.notes
        if self.mask is not MaskPolicy.TRAIN_ON_PROMPT and any(m.train and m.role != "assistant" for m in example.messages):
            notes = (*notes, USER_TRAIN_IGNORED)
        if notes:
            out = replace(out, notes=out.notes + notes)
        return out
