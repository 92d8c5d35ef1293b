"""Role markers: what a chat template writes around each role, derived from its own renders.

No model names and no template strings are hard-coded: probe conversations with unique
contents are rendered, and the text around each content is read off. This is for display,
diagnostics and one fact the masker needs: the end-of-turn marker after an assistant turn.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, NamedTuple

from ftdata.errors import TemplateError
from ftdata.chat.renderer import ChatRenderer
from ftdata.chat.probes import (
    PROBE,
    PROBE_TOOL,
    probe_messages,
    reasoning_probe,
    thinking_kwarg,
    tool_probes,
    writes_call_reasoning,
)
from ftdata.chat.stops import (
    common_token_prefix,
    first_token,
    model_stop_tokens,
    one_token,
    spelled_as_text,
    turn_stops,
    units,
)

__all__ = [  # the token and stop-token helpers live in ftdata.chat.stops; they stay importable from here
    "RoleMarkers",
    "SystemSupport",
    "common_token_prefix",
    "control_tokens",
    "detect_role_markers",
    "first_token",
    "model_stop_tokens",
    "one_token",
]

SystemSupport = Literal["native", "folded", "ignored", "raises"]

# "26 Jul 2024", "2024-07-26", "July 26, 2024": a date line makes renders depend on the day.
_DATE = re.compile(r"\b\d{1,2} [A-Z][a-z]{2,8} \d{4}\b|\b\d{4}-\d{2}-\d{2}\b|\b[A-Z][a-z]{2,8} \d{1,2}, \d{4}\b")


def control_tokens(tokenizer: Any, markup: str = "") -> tuple[str, ...]:
    """Strings the tokenizer reads as one control token instead of as text.

    Every special added token, plus any added token that `markup` (the template's role
    headers and footers) tokenizes to: DeepSeek's `<｜User｜>` is an added token not flagged
    special.
    Added tokens meant for content (Qwen's `<tool_call>`) stay text.
    """
    backend = tokenizer.backend_tokenizer
    used = set(backend.encode(markup, add_special_tokens=False).ids) if markup else set()
    added = backend.get_added_tokens_decoder().items()
    found = {a.content for i, a in added if a.content.strip() and (a.special or i in used)}
    return tuple(sorted(found, key=lambda t: (-len(t), t)))


@dataclass(frozen=True)
class RoleMarkers:
    """What a chat template writes around each role."""

    bos: str
    system_header: str
    system_footer: str
    user_header: str
    user_footer: str
    assistant_header: str
    eot: str  # the end-of-turn marker after assistant content; trained with the content
    separator: str  # whitespace after `eot` that belongs to the next turn; not trained
    final_eot: str  # what closes the conversation's last assistant turn (`eot`, `<|return|>`, `eot + EOS`)
    prefix_stable: bool
    system_support: SystemSupport
    default_system: str  # text the template injects when a conversation has no system turn
    date_line: str
    empty_think: bool
    after_prompt: str  # what a turn writes after the generation prompt before its content: trained
    stops: tuple[str, ...]  # what ends a trained turn (end-of-turn markers; without one, next-turn headers)
    eos_appended: str  # without an end-of-turn marker: the EOS appended (and trained) after the last turn
    tool_arguments: (
        str  # the tool-call `arguments` form the template writes as JSON once: dict, string, either; '' = no calls
    )
    renders_tools: bool  # writes the `tools` schemas
    renders_reasoning: bool  # writes an assistant turn's reasoning (`reasoning_content` / `thinking`)
    reasoning_close: str  # what it writes between a turn's reasoning and its answer
    thinking_kwarg: str  # a chat_template_kwargs entry that moves `after_prompt` into the prompt
    warnings: tuple[str, ...]
    # The generation prompt adds nothing (the template ignores add_generation_prompt): `assistant_header`
    # is then the header rendered turns carry, read off a full render, and it stays prompt (untrained).
    ignores_generation_prompt: bool = False
    needs_tools: bool = False  # the template raises without `tools` (Hermes tool_use): probes carry a schema
    # Stops that are plain text to this tokenizer, not one token (a ChatML template on a base model's
    # tokenizer): trained as the text they are; inference must stop on them as stop strings.
    text_stops: tuple[str, ...] = ()
    # No `tool_arguments` form, yet a call turn's function name is written: the template writes calls but
    # drops (or rewrites beyond tracing) their arguments, which is what a reject then says.
    writes_call_names: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def markup(self) -> str:
        """All the text the template writes around contents (for control-token lookups)."""
        return "".join(
            (
                self.bos,
                self.system_header,
                self.system_footer,
                self.user_header,
                self.user_footer,
                self.assistant_header,
                self.eot,
                self.final_eot,
            )
        )


class _GenerationPrompt(NamedTuple):
    """What closes a user turn and what the generation prompt adds after it."""

    user_footer: str
    assistant_header: str  # the generation prompt (or, where it adds nothing, the header rendered turns carry)
    appended: str  # a generation prompt the template writes after every conversation, else ''
    ignored: bool  # the template ignores add_generation_prompt; `assistant_header` is read off a full render


class _Closers(NamedTuple):
    """What closes assistant turns, read off the gap between a1 and u2 and the end of the render."""

    eot: str
    separator: str
    final_eot: str
    user_header: str


def detect_role_markers(
    tokenizer: Any, kwargs: Mapping[str, Any] | None = None, *, stop_tokens: Sequence[str] = ()
) -> RoleMarkers:
    """Derive role markers and template properties from probe renders.

    `kwargs` are the build's `chat_template_kwargs` (`{"enable_thinking": False}`): every
    probe is rendered with them, as every record is. `stop_tokens` are tokens inference
    stops on besides the template's own closers (`generation_config.json`'s `eos_token_id`,
    the build's `stop_tokens` option): a turn that ends on one of them is stopped.

    Raises:
        TemplateError: the tokenizer has no chat template, or the template cannot render a
            plain user/assistant conversation (with a tool schema, for templates that need one).
    """
    render, full, needs_tools = _probe(tokenizer, kwargs)
    pos = _positions(full)
    only_user = render(probe_messages("u1"))
    prompt = _generation_prompt(render, tokenizer, full, only_user, pos)
    closers = _closers(full, pos, prompt, tokenizer, lead=only_user[: only_user.find(PROBE["u1"])])
    system = _system_facts(render, tokenizer, full=full, only_user=only_user, closers=closers, prompt=prompt)
    lead_in = full[pos["u2"] + len(PROBE["u2"]) : pos["a2"]]
    probed = _Probed(full, pos, prompt, closers, system, lead_in, needs_tools)
    markers = _role_markers(render, tokenizer, probed=probed, stop_tokens=stop_tokens)
    return replace(markers, warnings=_warnings(markers, appended=prompt.appended, lead_in=lead_in, kwargs=kwargs))


class _System(NamedTuple):
    """The BOS a render opens with ('' where it opens every turn), and what the template writes for a system turn."""

    bos: str
    default_system: str  # what a render without a system message writes before the first user header
    support: SystemSupport
    header: str
    footer: str
    date_line: str  # a date the template writes into the system turn, else ''


class _Probed(NamedTuple):
    """What the probe renders showed: the u1 a1 u2 a2 render and its content positions, the generation
    prompt, the closers, the system turn, what A writes between u2 and a2, whether it needs tools."""

    full: str
    pos: dict[str, int]
    prompt: _GenerationPrompt
    closers: _Closers
    system: _System
    lead_in: str
    needs_tools: bool


def _system_facts(
    render: ChatRenderer, tokenizer: Any, *, full: str, only_user: str, closers: _Closers, prompt: _GenerationPrompt
) -> _System:
    """The BOS, the default system text and the system turn's markers, from the probe renders."""
    bos = tokenizer.bos_token if tokenizer.bos_token and full.startswith(tokenizer.bos_token) else ""
    if bos and (closers.user_header.startswith(bos) or prompt.assistant_header.startswith(bos)):
        bos = ""  # ChatML tokenizers name <|im_start|> their BOS: it opens every turn, not the text
    head = only_user[len(bos) : only_user.find(PROBE["u1"])]
    default_system = head[: len(head) - len(closers.user_header)] if head.endswith(closers.user_header) else head
    support, header, footer = _system(render, closers.user_header, bos)
    date_match = _DATE.search(default_system) or _DATE.search(header + footer)
    return _System(bos, default_system, support, header, footer, date_match.group(0) if date_match else "")


def _role_markers(render: ChatRenderer, tokenizer: Any, *, probed: _Probed, stop_tokens: Sequence[str]) -> RoleMarkers:
    """The markers, from the probes and what tools, reasoning and stops render (the caller adds the warnings)."""
    full, prompt, closers, system = probed.full, probed.prompt, probed.closers, probed.system
    after_prompt = _after_prompt(render, full, probed.pos, prompt)
    tools = tool_probes(render, tokenizer, prompt.appended)
    reasoning = reasoning_probe(render)
    stops, eos_appended = turn_stops(
        tokenizer,
        eot=closers.eot,
        final_eot=closers.final_eot,
        user_header=closers.user_header,
        call_closer=tools["stop"],
        tool_header=tools["header"],
        stop_tokens=stop_tokens,
    )
    return RoleMarkers(
        bos=system.bos,
        system_header=system.header,
        system_footer=system.footer,
        user_header=closers.user_header,
        user_footer=prompt.user_footer,
        assistant_header=prompt.assistant_header,
        eot=closers.eot,
        separator=closers.separator,
        final_eot=closers.final_eot,
        prefix_stable=_prefix_stable(render, full),
        system_support=system.support,
        default_system=system.default_system,
        date_line=system.date_line,
        empty_think="<think>" in prompt.assistant_header or "<think>" in probed.lead_in,
        after_prompt=after_prompt,
        stops=stops,
        eos_appended=eos_appended,
        tool_arguments=tools["arguments"],
        renders_tools=tools["schemas"],
        renders_reasoning=reasoning is not None or writes_call_reasoning(render, tools["arguments"]),
        reasoning_close=reasoning or "",
        thinking_kwarg=thinking_kwarg(render, after_prompt),
        warnings=(),
        ignores_generation_prompt=prompt.ignored,
        needs_tools=probed.needs_tools,
        text_stops=tuple(stop for stop in stops if spelled_as_text(stop, tokenizer)),
        writes_call_names=tools["names"],
    )


def _probe(tokenizer: Any, kwargs: Mapping[str, Any] | None) -> tuple[ChatRenderer, str, bool]:
    """The renderer every probe goes through, its render of u1 a1 u2 a2, and whether it needs tools."""
    render = ChatRenderer(tokenizer, kwargs)
    try:
        return render, render(probe_messages("u1", "a1", "u2", "a2")), False
    except TemplateError:
        # Hermes tool_use templates iterate `tools` unconditionally: probe them with a schema.
        render = ChatRenderer(tokenizer, kwargs, tools=[PROBE_TOOL])
        return render, render(probe_messages("u1", "a1", "u2", "a2")), True


def _positions(full: str) -> dict[str, int]:
    """Where the probe render writes each content; raises when one is missing or out of order."""
    pos = {n: full.find(PROBE[n]) for n in ("u1", "a1", "u2", "a2")}
    turns = {"u1": "first user", "a1": "first assistant", "u2": "second user", "a2": "second assistant"}
    missing = [turns[n] for n, at in pos.items() if at < 0]
    if missing or sorted(pos.values()) != list(pos.values()):
        what = (
            f"drops or rewrites the content of the {', '.join(missing)} turn"
            if missing
            else "reorders message contents"
        )
        raise TemplateError(
            f"chat template {what} (probe render: {full[:160]!r}); response spans cannot be found in its "
            "renders: use a template that writes message contents as given"
        )
    return pos


def _generation_prompt(
    render: ChatRenderer, tokenizer: Any, full: str, only_user: str, pos: dict[str, int]
) -> _GenerationPrompt:
    """The user footer and the assistant header the generation prompt adds after a user turn."""
    gen = render(probe_messages("u1"), generation=True)
    u_end = gen.find(PROBE["u1"]) + len(PROBE["u1"])
    cut = u_end + common_token_prefix(only_user[u_end:], gen[u_end:], tokenizer)
    user_footer, assistant_header = gen[u_end:cut], gen[cut:]
    if gen != only_user:
        return _GenerationPrompt(user_footer, assistant_header, "", False)
    # A template that writes the generation prompt after every conversation, the last assistant
    # turn's included (vLLM's ToolACE and Phi-4-mini templates): what a conversation ending with
    # the assistant and one ending with the user share at their ends, past its first token (the
    # closer), is that prompt. It is never trained and is no part of a closer.
    a2_end = pos["a2"] + len(PROBE["a2"])
    appended = _appended_prompt(full[a2_end:], only_user[only_user.find(PROBE["u1"]) + len(PROBE["u1"]) :], tokenizer)
    if appended:
        return _GenerationPrompt(user_footer[: len(user_footer) - len(appended)], appended, appended, False)
    u1_end = pos["u1"] + len(PROBE["u1"])
    rendered_header = full[u1_end + len(user_footer) : pos["a1"]] if full.startswith(user_footer, u1_end) else ""
    if rendered_header.strip():
        # No generation prompt to follow (Mistral's [INST] templates write none and need none):
        # a header rendered turns carry is what an inference server adds itself, so it is
        # prompt, not trained (TRL, transformers and Axolotl mask it too).
        return _GenerationPrompt(user_footer, rendered_header, "", True)
    return _GenerationPrompt(user_footer, assistant_header, "", False)


def _closers(full: str, pos: dict[str, int], prompt: _GenerationPrompt, tokenizer: Any, *, lead: str) -> _Closers:
    """The closer of an assistant turn in the middle of a conversation: the part of the a1 -> u2
    gap that also closes the conversation (`tail`) or a user turn (the user footer). The rest of
    the gap is the next turn's header. gpt-oss closes middle turns with <|end|> and the last one
    with <|return|>, so both are derived.

    A template that closes an assistant turn only when another message follows (Apriel 1.6 writes
    `\n<|end|>\n` between turns and nothing after the last) shares nothing with either: there the
    header is what the gap shares at its end with `lead`, the text before a conversation's first
    user content, and what comes before it is the closer. GLM's gap (`<|user|>`) is all header."""
    gap = full[pos["a1"] + len(PROBE["a1"]) : pos["u2"]]
    tail = full[pos["a2"] + len(PROBE["a2"]) : len(full) - len(prompt.appended)]
    shared = (common_token_prefix(gap, tail, tokenizer), common_token_prefix(gap, prompt.user_footer, tokenizer))
    footer = gap[: max(shared)]
    if not footer.strip():
        footer = gap[: _header_start(gap, lead, tokenizer)]
    eot = footer.strip()
    return _Closers(eot, footer[len(footer.rstrip()) :], tail.rstrip(), gap[len(footer) :])


def _header_start(gap: str, lead: str, tokenizer: Any) -> int:
    """Where in `gap` the longest end it shares with `lead` starts, at a unit boundary of `gap`."""
    suffix = len(os.path.commonprefix([gap[::-1], lead[::-1]]))
    cut = len(gap) - suffix
    return next((a for a, _ in units(gap, tokenizer) if a >= cut), len(gap))


def _prefix_stable(render: ChatRenderer, full: str) -> bool:
    """Whether the full render starts with every generation prompt along it."""
    prompts = (render(probe_messages(*names), generation=True) for names in (("u1",), ("u1", "a1", "u2")))
    return all(full.startswith(prompt) for prompt in prompts)


def _after_prompt(render: ChatRenderer, full: str, pos: dict[str, int], prompt: _GenerationPrompt) -> str:
    """What the template writes between the generation prompt and the content of the last turn
    (an empty think block, a gpt-oss channel header): the model writes it, so it is trained."""
    prompt2 = render(probe_messages("u1", "a1", "u2"), generation=True)
    if prompt.ignored and full.startswith(prompt.assistant_header, len(prompt2)):
        prompt2 += prompt.assistant_header
    return full[len(prompt2) : pos["a2"]] if full.startswith(prompt2) else ""


def _warnings(m: RoleMarkers, *, appended: str, lead_in: str, kwargs: Mapping[str, Any] | None) -> tuple[str, ...]:
    """What `ftdata markers` and previews say about the template, one line each."""
    warnings = []
    if appended:
        warnings.append(
            f"writes the generation prompt {appended!r} after every conversation, the last assistant turn's too: it "
            "is prompt, never trained"
        )
    if m.needs_tools:
        warnings.append(
            "renders only with `tools` (it iterates them unconditionally): a record without a tool schema is rejected"
        )
    if m.ignores_generation_prompt:
        warnings.append(
            f"ignores add_generation_prompt: the assistant header {m.assistant_header!r} is treated as prompt (not "
            "trained), "
            "as an inference server that adds it itself expects"
        )
    if not m.eot:
        middle = (
            "a middle assistant turn is trained through the next turn's first header token "
            f"({', '.join(map(repr, m.stops))})"
            if m.stops
            else "no single token opens the next turn, so a middle assistant turn cannot be stopped (rejected)"
        )
        warnings.append(
            f"writes no end-of-turn marker: {middle}, and EOS {m.eos_appended!r} is appended (trained) after the "
            "last turn"
        )
    if m.default_system.strip():
        warnings.append(f"injects a default system prompt when none is given: {m.default_system.strip()[:80]!r}")
    if m.date_line and not any(
        isinstance(v, str) and m.date_line in v for v in (kwargs or {}).values()
    ):  # date_string pins it
        warnings.append(f"injects a date ({m.date_line}): renders change from day to day")
    warnings += _think_warnings(m, lead_in)
    if m.text_stops:
        shown = ", ".join(map(repr, m.text_stops))
        warnings.append(
            f"writes markers that are not tokens of this tokenizer: {shown} is plain text, trained as the text it is; "
            f"inference needs it as a stop string (e.g. stop=[{shown}]), or add the markers as special tokens "
            "(add_chat_tokens)"
        )
    warnings += _last_turn_warnings(m)
    warnings += _SYSTEM_WARNINGS.get(m.system_support, [])
    if m.bos:
        warnings.append(f"writes its own BOS {m.bos!r}: ftdata adds no second one")
    if not m.prefix_stable:
        warnings.append("not prefix-stable: spans are located in the full rendering (fallback path)")
    return tuple(warnings)


def _think_warnings(m: RoleMarkers, lead_in: str) -> list[str]:
    """What `_warnings` says about a think block the template writes around the generation prompt."""
    if m.after_prompt.strip():
        fix = f"; chat_template_kwargs {m.thinking_kwarg} moves it into the prompt" if m.thinking_kwarg else ""
        return [f"writes {m.after_prompt!r} after the generation prompt: the model writes it, so it is trained{fix}"]
    if "<think>" in lead_in:
        return [
            "injects an empty <think></think> block before assistant contents (in the generation prompt: context, "
            "not trained)"
        ]
    if "<think>" in m.assistant_header:
        return [
            (
                f"its generation prompt ends with {m.assistant_header!r}, which rendered assistant turns do not have: "
                "the model is prompted to think first but trained on turns without reasoning"
            )
        ]
    return []


def _last_turn_warnings(m: RoleMarkers) -> list[str]:
    """What `_warnings` says where the template closes the last assistant turn otherwise than the others."""
    warnings = []
    if m.eot and not m.final_eot:
        warnings.append(
            f"closes an assistant turn with {m.eot!r} only when another message follows: middle turns train through "
            "it, "
            f"and EOS {m.eos_appended!r} is appended (trained) after the last turn"
        )
    if m.final_eot != m.eot and m.eot and m.final_eot:
        warnings.append(
            f"ends the last assistant turn with {m.final_eot!r} instead of {m.eot!r}; both are trained where they occur"
        )
    return warnings


_SYSTEM_WARNINGS = {
    "raises": ["raises on system turns: use system_mode='fold' to fold them into the first user turn"],
    "folded": ["has no system role: a system message is folded into the first user turn"],
    "ignored": ["drops system messages from conversations that end with an assistant turn: use system_mode='fold'"],
}


def _system(render: ChatRenderer, user_header: str, bos: str) -> tuple[SystemSupport, str, str]:
    """How the template treats a system turn, and its header/footer when it has one."""
    try:
        text = render(probe_messages("system", "u1"))
        # Mistral's [INST] templates put the system prompt into the *last* user turn only,
        # so a conversation that ends with the assistant (every training record) loses it.
        trained = render(probe_messages("system", "u1", "a1"))
    except TemplateError:
        return "raises", "", ""
    s, u = text.find(PROBE["system"]), text.find(PROBE["u1"])
    if s < 0 or PROBE["system"] not in trained:
        return "ignored", "", ""
    first_user = text.find(user_header) if user_header else -1
    if 0 <= first_user < s:
        return "folded", "", ""
    footer_end = u - len(user_header) if text[:u].endswith(user_header) else u
    return "native", text[len(bos) : s], text[s + len(PROBE["system"]) : footer_end]


def _appended_prompt(tail: str, trailer: str, tokenizer: Any) -> str:
    """The generation prompt a template writes after every conversation, or ''.

    `tail` is what follows the last assistant content, `trailer` what follows a lone user
    content (both rendered without a generation prompt). Their common end, less its first
    token (the turn's closer, `<|eot_id|>`), is that prompt when anything but whitespace is left.
    """
    common = os.path.commonprefix([tail[::-1], trailer[::-1]])[::-1]
    rest = common[len(first_token(common, tokenizer)) :]
    return rest if rest.strip() else ""
