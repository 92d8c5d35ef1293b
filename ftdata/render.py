"""Render: `Example` -> `Rendered` (text + the character spans that carry loss).

Two renderers share one masking path. Prompt templates (prompts.py) know their spans by
construction. For the model's own chat template, spans are found from the template's own
renders, in characters (see docs/masking.md):

    P = render(messages[:i], add_generation_prompt=True)      # everything before turn i
    A = render(messages)                                       # the whole conversation
    A = P + [ws] content [ws] EOT + next turns ...             # when A starts with P
            ^^^^^^^^^^^^^^^^^^^^^ trained span of assistant turn i

When A does not start with P (templates that rewrite earlier turns), each content is
located in A in order instead ("fallback"), and the span is content + EOT.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ftdata.errors import UnusableRecord
from ftdata.markers import ChatRenderer, RoleMarkers, detect_role_markers
from ftdata.prompts import PromptTemplate, load_prompt_template, render_prompt_template
from ftdata.types import Example, MaskPolicy, Message, Rendered, SystemMode


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
        raise UnusableRecord("every assistant turn has train=false; nothing to train on", field="messages")
    return out


def apply_system(example: Example, prompt: str | None, mode: SystemMode) -> Example:
    """Add or override the system message, or fold it into the first user turn."""
    msgs = list(example.messages)
    has = bool(msgs) and msgs[0].role == "system"
    if prompt is not None and (mode is SystemMode.OVERRIDE or not has or mode is SystemMode.FOLD and not has):
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
    if not text.startswith(core, j):
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


def _locate(text: str, cursor: int, content: str, eot: str) -> tuple[int, int] | None:
    """Fallback: the first `content [ws] EOT` at or after `cursor`."""
    core = content.strip()
    candidates = [core]
    if "</think>" in core:  # templates drop the reasoning of earlier turns
        candidates.append(core.rsplit("</think>", 1)[1].strip())
    for candidate in candidates:
        at = text.find(candidate, cursor)
        while candidate and at >= 0:
            span = _span_after(text, at, candidate, eot)
            if span is not None:
                return span
            at = text.find(candidate, at + 1)
    return None


def render_chat(example: Example, render: ChatRenderer, markers: RoleMarkers, trained: list[bool]) -> Rendered:
    """Render with the model's chat template and find each trained assistant span.

    Raises:
        UnusableRecord: an assistant content (plus end-of-turn marker) cannot be found in
            the rendering, so its tokens cannot be masked safely.
        TemplateError: the template raised on this conversation.
    """
    msgs = example.chat_messages()
    text = render(msgs)
    spans, boundaries, method, cursor = [], [], "prefix", 0
    for i, msg in enumerate(msgs):
        if msg["role"] != "assistant":
            at = text.find(msg["content"].strip(), cursor) if msg["content"].strip() else -1
            cursor = at + len(msg["content"].strip()) if at >= 0 else cursor
            continue
        span = None
        if markers.prefix_stable or method == "prefix":
            prompt = render(msgs[:i], generation=True)
            if text.startswith(prompt) and len(prompt) >= cursor:
                span = _span_after(text, len(prompt), msg["content"], markers.eot)
        if span is None:
            method = "fallback"
            span = _locate(text, cursor, msg["content"], markers.eot)
        if span is None:
            raise UnusableRecord(
                f"assistant turn {i}: its content followed by {markers.eot!r} is not in the chat template's "
                "rendering (the template rewrites it), so it cannot be masked safely",
                location=example.source, field=f"messages[{i}]",
            )  # fmt: skip
        cursor = span[1]
        if trained[i]:
            spans.append(span)
        boundaries.append(span[1])
    return Rendered(text, tuple(spans), method, tuple(boundaries[:-1]))


class Renderer:
    """Renders examples with a prompt template or with the tokenizer's chat template.

    `template=None` uses the chat template when the tokenizer has one, else `alpaca`.
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

    def __call__(self, example: Example) -> Rendered:
        if self.system_prompt is not None or self.system_mode is SystemMode.FOLD:
            example = apply_system(example, self.system_prompt, self.system_mode)
        try:
            trained = trained_turns(example.messages, self.mask)
        except UnusableRecord as exc:
            raise UnusableRecord(exc.reason, location=example.source, field=exc.field) from None
        if self.prompt is not None:
            out = render_prompt_template(example, self.prompt, eos=self.eos, trained=trained)
        else:
            assert self.chat is not None and self.markers is not None
            out = render_chat(example, self.chat, self.markers, trained)
        if self.mask is MaskPolicy.TRAIN_ON_PROMPT:
            out = replace(out, spans=((0, len(out.text)),))
        if example.notes:
            out = replace(out, notes=out.notes + example.notes)
        return out
