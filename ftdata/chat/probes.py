"""Probe conversations, and what a chat template does with tools, reasoning and thinking kwargs.

Each probe renders a conversation with unique contents (`PROBE`) and reads the template's
behaviour off the text: the `arguments` form it writes tool calls in, the token a call turn
ends on, what opens a tool result, whether it writes reasoning, and whether a thinking kwarg
moves boilerplate into the generation prompt. `ftdata.chat.markers` puts the answers together.
"""

from __future__ import annotations

import json
from typing import Any

from ftdata.errors import TemplateError
from ftdata.chat.sentinels import TemplateRender
from ftdata.chat.stops import common_token_prefix, units


PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "toolprobe",
        "description": "TOOLDESCPROBE",
        "parameters": {"type": "object", "properties": {"argprobe": {"type": "string"}}, "required": ["argprobe"]},
    },
}
_ARGS = {"argprobe": "ARGVALPROBE"}
PROBE = {"system": "SYSPROBE0q", "u1": "USERPROBE1q", "a1": "ASSTPROBE1q", "u2": "USERPROBE2q", "a2": "ASSTPROBE2q"}


def probe_messages(*names: str) -> list[dict[str, str]]:
    """Probe messages by name: `probe_messages("u1", "a1")` is a user and an assistant turn."""
    roles = {"system": "system", "u1": "user", "u2": "user", "a1": "assistant", "a2": "assistant"}
    return [{"role": roles[n], "content": PROBE[n]} for n in names]


def thinking_kwarg(render: TemplateRender, after_prompt: str) -> str:
    """`{"enable_thinking": false}` when that kwarg moves `after_prompt` into the generation prompt.

    Qwen3 writes an empty think block into the last trained turn when thinking is on; with
    `enable_thinking=False` its generation prompt holds the block, and nothing is trained before
    the answer. Derived by rendering with the kwarg, for any template that reads it.
    """
    if not after_prompt.strip() or "enable_thinking" in render.kwargs:
        return ""
    off = {"enable_thinking": False}
    try:
        full = render(probe_messages("u1", "a1", "u2", "a2"), kwargs=off)
        prompt = render(probe_messages("u1", "a1", "u2"), generation=True, kwargs=off)
    except TemplateError:
        return ""
    moved = full.startswith(prompt) and not full[len(prompt) : full.find(PROBE["a2"])].strip()
    return '{"enable_thinking": false}' if moved and after_prompt.strip() in prompt else ""


# The kwargs templates read to open a think block in the generation prompt (DeepSeek-V3.x reads `thinking`).
THINKING_SWITCHES = ("enable_thinking", "thinking")


def thinking_switch(render: TemplateRender) -> str:
    """The kwarg that, set true, opens the think block the generation prompt closes with the build's kwargs (QwQ's
    `enable_thinking`, off by default; DeepSeek-V3.2's `thinking`); '' where the prompt closes none, where the
    build sets a switch itself (its choice stands), or where no switch opens it (a "nothink" template)."""
    if any(name in render.kwargs for name in THINKING_SWITCHES):
        return ""

    def closes(kwargs: dict[str, Any] | None) -> bool:
        text = render(probe_messages("u1"), generation=True, kwargs=kwargs)
        return "</think>" in text[text.find(PROBE["u1"]) + len(PROBE["u1"]) :]

    try:
        if not closes(None):
            return ""
    except TemplateError:
        return ""
    for name in THINKING_SWITCHES:
        try:
            if not closes({name: True}):
                return name
        except TemplateError:
            continue
    return ""


def _call(arguments: Any, name: str = "toolprobe") -> dict[str, Any]:
    return {"type": "function", "id": "call00001", "function": {"name": name, "arguments": arguments}}


def _writes_call_names(render: TemplateRender, user: list[dict[str, str]]) -> bool:
    """Whether the template writes a call turn's function name (two renders that differ only in it differ)."""
    texts = []
    for name in ("toolprobe", "otherprobe"):
        try:
            texts.append(
                render(
                    [*user, {"role": "assistant", "content": "", "tool_calls": [_call(dict(_ARGS), name)]}],
                    tools=[PROBE_TOOL],
                )
            )
        except TemplateError:
            return False
    return texts[0] != texts[1]


def tool_probes(render: TemplateRender, tokenizer: Any, appended: str = "") -> dict[str, Any]:
    """How the template treats tools: schemas written, the `arguments` form, a call turn's closer.

    The `arguments` form is derived by rendering one call with a dict and with a JSON string:
    a form works when the value is written and the JSON is not written twice (an escaped
    `\\"argprobe`). When both work but render differently, the form is `dict` (string
    arguments are parsed); `either` means both render the same text. `stop` is the last
    token a conversation ending with a call turn closes with (gpt-oss: `<|call|>`; a generation
    prompt the template `appended` after every conversation left out); `header`
    is what opens the tool result after a call.
    """
    out: dict[str, Any] = {"schemas": False, "arguments": "", "stop": "", "header": "", "names": False}
    user, tool = (
        probe_messages("u1"),
        {"role": "tool", "content": "TOOLRESULTPROBE", "name": "toolprobe", "tool_call_id": "call00001"},
    )
    try:
        out["schemas"] = "toolprobe" in render([*user, *probe_messages("a1")], tools=[PROBE_TOOL])
    except TemplateError:
        pass
    out["arguments"] = form = _arguments_form(render, user)
    if not form:
        out["names"] = _writes_call_names(render, user)
        return out
    call = {
        "role": "assistant",
        "content": "",
        "tool_calls": [_call(dict(_ARGS) if form != "string" else json.dumps(_ARGS))],
    }
    try:
        alone = render([*user, call], tools=[PROBE_TOOL])
        answered = render([*user, call, tool, {"role": "assistant", "content": PROBE["a2"]}], tools=[PROBE_TOOL])
    except TemplateError:
        return out
    tail = alone[alone.rfind("ARGVALPROBE") + len("ARGVALPROBE") :]
    tail = (tail[: len(tail) - len(appended)] if appended and tail.endswith(appended) else tail).rstrip()
    # Its last unit: a token, or a marker the tokenizer spells as plain text (Gemma 4's `<|tool_response>` on a
    # base tokenizer), whole.
    spans = units(tail, tokenizer)
    out["stop"] = tail[spans[-1][0] :] if spans else ""
    at, result = answered.rfind("ARGVALPROBE") + len("ARGVALPROBE"), answered.find("TOOLRESULTPROBE")
    if 0 <= at <= result:
        gap = answered[at:result]
        out["header"] = gap[common_token_prefix(gap, tail, tokenizer) :].lstrip()
    return out


def _arguments_form(render: TemplateRender, user: list[dict[str, Any]]) -> str:
    """The `arguments` form of `tool_probes`: "dict", "string", "either" or "" (neither is written)."""
    works, texts = [], []
    for form, arguments in (("dict", dict(_ARGS)), ("string", json.dumps(_ARGS))):
        try:
            text = render(
                [*user, {"role": "assistant", "content": "", "tool_calls": [_call(arguments)]}], tools=[PROBE_TOOL]
            )
        except TemplateError:
            continue
        # Written, not JSON-escaped twice, and not printed as a Python dict (`{'argprobe': ...}`: no parser reads it).
        if "ARGVALPROBE" in text and '\\"argprobe' not in text and str(_ARGS) not in text:
            works.append(form)
            texts.append(text)
    if len(works) == 2 and texts[0] != texts[1]:
        # Both are written, differently (Gemma 4 formats a dict as its own call syntax and pastes
        # a string verbatim): the dict is the structure the template was written for.
        works = ["dict"]
    return "either" if len(works) == 2 else works[0] if works else ""


def writes_call_reasoning(render: TemplateRender, arguments: str) -> bool:
    """Whether the template writes the reasoning of a turn that calls a tool (Gemma 4 writes it
    there only); a record's own render is checked again, turn by turn."""
    if not arguments:
        return False
    args = json.dumps(_ARGS) if arguments == "string" else dict(_ARGS)
    turn = {
        "role": "assistant",
        "content": "",
        "tool_calls": [_call(args)],
        "reasoning_content": "REASONPROBE",
        "thinking": "REASONPROBE",
    }
    try:
        return "REASONPROBE" in render([*probe_messages("u1"), turn], tools=[PROBE_TOOL])
    except TemplateError:
        return False


def reasoning_probe(render: TemplateRender) -> str | None:
    """What the template writes between a last turn's reasoning and its answer; None if it drops reasoning."""
    turn = {"role": "assistant", "content": PROBE["a1"], "reasoning_content": "REASONPROBE", "thinking": "REASONPROBE"}
    try:
        text = render([*probe_messages("u1"), turn])
    except TemplateError:
        return None
    at, answer = text.find("REASONPROBE"), text.find(PROBE["a1"])
    if at < 0:
        return None
    return text[at + len("REASONPROBE") : answer] if answer > at else ""
