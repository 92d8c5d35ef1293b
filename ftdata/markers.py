"""Role markers: what a chat template writes around each role, derived from its own renders.

No model names and no template strings are hard-coded: probe conversations with unique
contents are rendered, and the text around each content is read off. This is for display,
diagnostics and one fact the masker needs: the end-of-turn marker after an assistant turn.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ftdata import limits
from ftdata.errors import Location, TemplateError

SystemSupport = Literal["native", "folded", "ignored", "raises"]

_TOOL = {"type": "function", "function": {"name": "toolprobe", "description": "TOOLDESCPROBE", "parameters": {
    "type": "object", "properties": {"argprobe": {"type": "string"}}, "required": ["argprobe"]}}}  # fmt: skip
_ARGS = {"argprobe": "ARGVALPROBE"}
_P = {"system": "SYSPROBE0q", "u1": "USERPROBE1q", "a1": "ASSTPROBE1q", "u2": "USERPROBE2q", "a2": "ASSTPROBE2q"}
# "26 Jul 2024", "2024-07-26", "July 26, 2024": a date line makes renders depend on the day.
_DATE = re.compile(r"\b\d{1,2} [A-Z][a-z]{2,8} \d{4}\b|\b\d{4}-\d{2}-\d{2}\b|\b[A-Z][a-z]{2,8} \d{1,2}, \d{4}\b")


class ChatRenderer:
    """The tokenizer's own chat template, called as `render(messages, generation=..., tools=...)`.

    `kwargs` (the build's `chat_template_kwargs`) go to every render; a call's own `kwargs`
    (a record's `template_kwargs`) are merged over them: the record wins.
    """

    def __init__(
        self, tokenizer: Any, kwargs: Mapping[str, Any] | None = None, *, tools: Sequence[Mapping[str, Any]] | None = None
    ):
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; "
                "pass template='alpaca' (or another prompt template)"
            )
        self.tokenizer = tokenizer
        self.kwargs = dict(kwargs or {})
        self.tools = list(tools) if tools else None  # probes only: a render's own `tools` win

    def __call__(
        self,
        messages: list[dict[str, Any]],
        *,
        generation: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        location: Location | None = None,
    ) -> str:
        """The rendered text, within the time and size limits of `ftdata.limits`.

        Raises:
            TemplateError: the template raised.
            LimitExceeded: the render ran too long or built too much; names `location`.
        """
        what = "the chat template" + (f" on record {location}" if location is not None else "")
        try:
            with limits.time_limit(limits.limits().render_seconds, what), limits.bounded_chat_templates():
                text = self.tokenizer.apply_chat_template(
                    messages, tools=list(tools) if tools else self.tools, tokenize=False, add_generation_prompt=generation,
                    **{**self.kwargs, **(kwargs or {})},
                )  # fmt: skip
        except limits.LimitExceeded as exc:
            raise exc if str(exc).startswith(what) else limits.LimitExceeded(f"{what}: {exc}") from None
        except Exception as exc:  # templates raise jinja2 errors, TypeErrors, KeyErrors...
            roles = ",".join(m["role"] for m in messages)
            raise TemplateError(f"chat template raised for roles [{roles}]: {exc}") from None
        return limits.check_size(text if isinstance(text, str) else "".join(text), what)


def model_stop_tokens(tokenizer: Any) -> tuple[str, ...]:
    """The tokens `generation_config.json` in the tokenizer's folder stops on (its `eos_token_id`,
    an id or a list: Llama 3 `<|eot_id|>`, `<|end_of_text|>`, `<|eom_id|>`); () without one.

    Only a local folder is read: nothing is looked up on the model hub.
    """
    path = Path(str(getattr(tokenizer, "name_or_path", "") or "")) / "generation_config.json"
    try:
        ids = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        return ()  # unreadable or not an object: the template's own closers still apply
    ids = [ids] if isinstance(ids, int) else ids if isinstance(ids, list) else []
    size = len(tokenizer)
    return tuple(tokenizer.convert_ids_to_tokens(i) for i in ids if isinstance(i, int) and 0 <= i < size)


def common_token_prefix(a: str, b: str, tokenizer: Any) -> int:
    """Length in chars of the longest common prefix of `a` and `b` made of whole tokens.

    A plain character prefix can end inside a special token (`<|end|>` vs `<|endoftext|>`
    share `<|end`); comparing tokens cannot.
    """
    ea = tokenizer.backend_tokenizer.encode(a, add_special_tokens=False)
    eb = tokenizer.backend_tokenizer.encode(b, add_special_tokens=False)
    end = 0
    for ia, ib, oa, ob in zip(ea.ids, eb.ids, ea.offsets, eb.offsets):
        if ia != ib or oa != ob:
            break
        end = oa[1]
    return end


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
    tool_arguments: str  # the tool-call `arguments` form the template writes as JSON once: dict, string, either; '' = no calls
    renders_tools: bool  # writes the `tools` schemas
    renders_reasoning: bool  # writes an assistant turn's reasoning (`reasoning_content` / `thinking`)
    reasoning_close: str  # what it writes between a turn's reasoning and its answer
    thinking_kwarg: str  # a chat_template_kwargs entry that moves `after_prompt` into the prompt
    warnings: tuple[str, ...]
    # The generation prompt adds nothing (the template ignores add_generation_prompt): `assistant_header`
    # is then the header rendered turns carry, read off a full render, and it stays prompt (untrained).
    ignores_generation_prompt: bool = False
    needs_tools: bool = False  # the template raises without `tools` (Hermes tool_use): probes carry a schema

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def markup(self) -> str:
        """All the text the template writes around contents (for control-token lookups)."""
        return "".join((self.bos, self.system_header, self.system_footer, self.user_header, self.user_footer,
                        self.assistant_header, self.eot, self.final_eot))  # fmt: skip


def _msgs(*names: str) -> list[dict[str, str]]:
    roles = {"system": "system", "u1": "user", "u2": "user", "a1": "assistant", "a2": "assistant"}
    return [{"role": roles[n], "content": _P[n]} for n in names]


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
    render = ChatRenderer(tokenizer, kwargs)
    needs_tools = False
    try:
        full = render(_msgs("u1", "a1", "u2", "a2"))
    except TemplateError:
        # Hermes tool_use templates iterate `tools` unconditionally: probe them with a schema.
        render = ChatRenderer(tokenizer, kwargs, tools=[_TOOL])
        full = render(_msgs("u1", "a1", "u2", "a2"))
        needs_tools = True
    only_user = render(_msgs("u1"))
    gen = render(_msgs("u1"), generation=True)
    pos = {n: full.find(_P[n]) for n in ("u1", "a1", "u2", "a2")}
    turns = {"u1": "first user", "a1": "first assistant", "u2": "second user", "a2": "second assistant"}
    missing = [turns[n] for n, at in pos.items() if at < 0]
    if missing or sorted(pos.values()) != list(pos.values()):
        what = f"drops or rewrites the content of the {', '.join(missing)} turn" if missing else "reorders message contents"
        raise TemplateError(
            f"chat template {what} (probe render: {full[:160]!r}); response spans cannot be found in its "
            "renders: use a template that writes message contents as given"
        )
    end = {n: pos[n] + len(_P[n]) for n in pos}
    bos = tokenizer.bos_token if tokenizer.bos_token and full.startswith(tokenizer.bos_token) else ""

    u_end = gen.find(_P["u1"]) + len(_P["u1"])
    cut = u_end + common_token_prefix(only_user[u_end:], gen[u_end:], tokenizer)
    user_footer, assistant_header = gen[u_end:cut], gen[cut:]
    ignores_generation = False
    # A template that writes the generation prompt after every conversation, the last assistant
    # turn's included (vLLM's ToolACE and Phi-4-mini templates): what a conversation ending with
    # the assistant and one ending with the user share at their ends, past its first token (the
    # closer), is that prompt. It is never trained and is no part of a closer.
    appended = _appended_prompt(full[end["a2"] :], only_user[only_user.find(_P["u1"]) + len(_P["u1"]) :], tokenizer) if gen == only_user else ""
    if appended:
        user_footer, assistant_header = user_footer[: len(user_footer) - len(appended)], appended
    elif gen == only_user and full.startswith(user_footer, end["u1"]):
        # No generation prompt to follow (Mistral's [INST] templates write none and need none):
        # a header rendered turns carry is what an inference server adds itself, so it is
        # prompt, not trained (TRL, transformers and Axolotl mask it too).
        rendered_header = full[end["u1"] + len(user_footer) : pos["a1"]]
        ignores_generation = bool(rendered_header.strip())
        assistant_header = rendered_header if ignores_generation else assistant_header

    # The closer of an assistant turn in the middle of a conversation: the part of the
    # a1 -> u2 gap that also closes the conversation (`tail`) or a user turn (`user_footer`).
    # The rest of the gap is the next turn's header. gpt-oss closes middle turns with <|end|>
    # and the last one with <|return|>, so both are derived.
    gap = full[end["a1"] : pos["u2"]]
    tail = full[end["a2"] : len(full) - len(appended)]
    footer = max(gap[: common_token_prefix(gap, tail, tokenizer)], gap[: common_token_prefix(gap, user_footer, tokenizer)], key=len)
    eot = footer.rstrip()
    separator = footer[len(eot) :]
    final_eot = tail.rstrip()
    user_header = gap[len(footer) :]
    if bos and (user_header.startswith(bos) or assistant_header.startswith(bos)):
        bos = ""  # ChatML tokenizers name <|im_start|> their BOS: it opens every turn, not the text

    head = only_user[len(bos) : only_user.find(_P["u1"])]
    default_system = head[: len(head) - len(user_header)] if head.endswith(user_header) else head
    prefix_stable = all(
        full.startswith(render(_msgs(*names), generation=True)) for names in (("u1",), ("u1", "a1", "u2"))
    )
    system_support, system_header, system_footer = _system(render, user_header, bos)
    date_match = _DATE.search(default_system) or _DATE.search(system_header + system_footer)
    date_line = date_match.group(0) if date_match else ""
    # What the template writes between the generation prompt and the content of the last turn
    # (an empty think block, a gpt-oss channel header): the model writes it, so it is trained.
    lead_in = full[end["u2"] : pos["a2"]]
    prompt2 = render(_msgs("u1", "a1", "u2"), generation=True)
    if ignores_generation and full.startswith(assistant_header, len(prompt2)):
        prompt2 += assistant_header
    after_prompt = full[len(prompt2) : pos["a2"]] if full.startswith(prompt2) else ""
    empty_think = "<think>" in assistant_header or "<think>" in lead_in
    thinking_kwarg = _thinking_kwarg(render, after_prompt)
    tools = _tool_probes(render, tokenizer, appended)
    reasoning = _reasoning_probe(render)
    added = {a.content for a in tokenizer.backend_tokenizer.get_added_tokens_decoder().values()}
    model_stops = {t for t in stop_tokens if one_token(t, tokenizer)}  # a stop is one token id, never plain text
    # The token a call turn ends on, where it is not the end-of-turn marker (gpt-oss `<|call|>`,
    # Apertus `<|tools_suffix|>`, Gemma 4 `<|tool_response>`): generation stops there for the call.
    tool_stop = tools["stop"] if tools["stop"] in added and tools["stop"] not in (eot, final_eot) else ""
    if eot:
        stops = tuple(sorted({eot, final_eot, tool_stop, *model_stops} - {""}, key=len, reverse=True))
        eos_appended = ""
    else:
        # No end-of-turn marker (GLM-4-MoE, Apertus' last turn): the next turn's header is what stops generation.
        # A tool result opened by a header (GLM `<|observation|>`) stops a call turn there; one written
        # inline without a header (Apertus `]<|tools_suffix|>[result]`) leaves the call's own closer.
        user_head, tool_head = first_token(user_header, tokenizer), first_token(tools["header"], tokenizer)
        call_stop = tool_head if tool_head in added else tool_stop
        stops = tuple(dict.fromkeys(h for h in (user_head, call_stop, *sorted(model_stops)) if h in added))
        eos_appended = tokenizer.eos_token or ""

    warnings = []
    if appended:
        warnings.append(f"writes the generation prompt {appended!r} after every conversation, the last assistant turn's too: it is prompt, never trained")
    if needs_tools:
        warnings.append("renders only with `tools` (it iterates them unconditionally): a record without a tool schema is rejected")
    if ignores_generation:
        warnings.append(
            f"ignores add_generation_prompt: the assistant header {assistant_header!r} is treated as prompt (not trained), "
            "as an inference server that adds it itself expects"
        )  # fmt: skip
    if not eot:
        middle = (
            f"a middle assistant turn is trained through the next turn's first header token ({', '.join(map(repr, stops))})"
            if stops else "no single token opens the next turn, so a middle assistant turn cannot be stopped (rejected)"
        )  # fmt: skip
        warnings.append(f"writes no end-of-turn marker: {middle}, and EOS {eos_appended!r} is appended (trained) after the last turn")
    if default_system.strip():
        warnings.append(f"injects a default system prompt when none is given: {default_system.strip()[:80]!r}")
    if date_line and not any(isinstance(v, str) and date_line in v for v in (kwargs or {}).values()):  # date_string pins it
        warnings.append(f"injects a date ({date_line}): renders change from day to day")
    if after_prompt.strip():
        fix = f"; chat_template_kwargs {thinking_kwarg} moves it into the prompt" if thinking_kwarg else ""
        warnings.append(f"writes {after_prompt!r} after the generation prompt: the model writes it, so it is trained{fix}")
    elif "<think>" in lead_in:
        warnings.append("injects an empty <think></think> block before assistant contents (in the generation prompt: context, not trained)")
    elif "<think>" in assistant_header:
        warnings.append(
            f"its generation prompt ends with {assistant_header!r}, which rendered assistant turns do not have: "
            "the model is prompted to think first but trained on turns without reasoning"
        )
    if final_eot != eot and eot:
        warnings.append(f"ends the last assistant turn with {final_eot!r} instead of {eot!r}; both are trained where they occur")
    if system_support == "raises":
        warnings.append("raises on system turns: use system_mode='fold' to fold them into the first user turn")
    elif system_support == "folded":
        warnings.append("has no system role: a system message is folded into the first user turn")
    elif system_support == "ignored":
        warnings.append("drops system messages from conversations that end with an assistant turn: use system_mode='fold'")
    if bos:
        warnings.append(f"writes its own BOS {bos!r}: ftdata adds no second one")
    if not prefix_stable:
        warnings.append("not prefix-stable: spans are located in the full rendering (fallback path)")
    return RoleMarkers(
        bos=bos, system_header=system_header, system_footer=system_footer, user_header=user_header,
        user_footer=user_footer, assistant_header=assistant_header, eot=eot, separator=separator, final_eot=final_eot,
        prefix_stable=prefix_stable, system_support=system_support, default_system=default_system,
        date_line=date_line, empty_think=empty_think, after_prompt=after_prompt, stops=stops, eos_appended=eos_appended,
        tool_arguments=tools["arguments"], renders_tools=tools["schemas"],
        renders_reasoning=reasoning is not None or _writes_call_reasoning(render, tools["arguments"]),
        reasoning_close=reasoning or "", thinking_kwarg=thinking_kwarg, warnings=tuple(warnings),
        ignores_generation_prompt=ignores_generation, needs_tools=needs_tools,
    )  # fmt: skip


def _system(render: ChatRenderer, user_header: str, bos: str) -> tuple[SystemSupport, str, str]:
    """How the template treats a system turn, and its header/footer when it has one."""
    try:
        text = render(_msgs("system", "u1"))
        # Mistral's [INST] templates put the system prompt into the *last* user turn only,
        # so a conversation that ends with the assistant (every training record) loses it.
        trained = render(_msgs("system", "u1", "a1"))
    except TemplateError:
        return "raises", "", ""
    s, u = text.find(_P["system"]), text.find(_P["u1"])
    if s < 0 or _P["system"] not in trained:
        return "ignored", "", ""
    first_user = text.find(user_header) if user_header else -1
    if 0 <= first_user < s:
        return "folded", "", ""
    footer_end = u - len(user_header) if text[:u].endswith(user_header) else u
    return "native", text[len(bos) : s], text[s + len(_P["system"]) : footer_end]


def one_token(text: str, tokenizer: Any) -> bool:
    """Whether `text` is exactly one token of `tokenizer` (an added token, or one vocabulary entry)."""
    enc = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False) if text else None
    return enc is not None and len(enc.ids) == 1 and enc.offsets[0] == (0, len(text))


def _appended_prompt(tail: str, trailer: str, tokenizer: Any) -> str:
    """The generation prompt a template writes after every conversation, or ''.

    `tail` is what follows the last assistant content, `trailer` what follows a lone user
    content (both rendered without a generation prompt). Their common end, less its first
    token (the turn's closer, `<|eot_id|>`), is that prompt when anything but whitespace is left.
    """
    common = os.path.commonprefix([tail[::-1], trailer[::-1]])[::-1]
    rest = common[len(first_token(common, tokenizer)) :]
    return rest if rest.strip() else ""


def first_token(text: str, tokenizer: Any) -> str:
    """The text of the first token of `text` ('' for empty text)."""
    offsets = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).offsets if text else []
    return text[: offsets[0][1]] if offsets else ""


def _thinking_kwarg(render: ChatRenderer, after_prompt: str) -> str:
    """`{"enable_thinking": false}` when that kwarg moves `after_prompt` into the generation prompt.

    Qwen3 writes an empty think block into the last trained turn when thinking is on; with
    `enable_thinking=False` its generation prompt holds the block, and nothing is trained before
    the answer. Derived by rendering with the kwarg, for any template that reads it.
    """
    if not after_prompt.strip() or "enable_thinking" in render.kwargs:
        return ""
    off = {"enable_thinking": False}
    try:
        full = render(_msgs("u1", "a1", "u2", "a2"), kwargs=off)
        prompt = render(_msgs("u1", "a1", "u2"), generation=True, kwargs=off)
    except TemplateError:
        return ""
    moved = full.startswith(prompt) and not full[len(prompt) : full.find(_P["a2"])].strip()
    return '{"enable_thinking": false}' if moved and after_prompt.strip() in prompt else ""


def _call(arguments: Any) -> dict[str, Any]:
    return {"type": "function", "id": "call00001", "function": {"name": "toolprobe", "arguments": arguments}}


def _tool_probes(render: ChatRenderer, tokenizer: Any, appended: str = "") -> dict[str, Any]:
    """How the template treats tools: schemas written, the `arguments` form, a call turn's closer.

    The `arguments` form is derived by rendering one call with a dict and with a JSON string:
    a form works when the value is written and the JSON is not written twice (an escaped
    `\\"argprobe`). When both work but render differently, the form is `dict` (string
    arguments are parsed); `either` means both render the same text. `stop` is the last
    token a conversation ending with a call turn closes with (gpt-oss: `<|call|>`; a generation
    prompt the template `appended` after every conversation left out); `header`
    is what opens the tool result after a call.
    """
    out: dict[str, Any] = {"schemas": False, "arguments": "", "stop": "", "header": ""}
    user, tool = _msgs("u1"), {"role": "tool", "content": "TOOLRESULTPROBE", "name": "toolprobe", "tool_call_id": "call00001"}
    try:
        out["schemas"] = "toolprobe" in render([*user, *_msgs("a1")], tools=[_TOOL])
    except TemplateError:
        pass
    works, texts = [], []
    for form, arguments in (("dict", dict(_ARGS)), ("string", json.dumps(_ARGS))):
        try:
            text = render([*user, {"role": "assistant", "content": "", "tool_calls": [_call(arguments)]}], tools=[_TOOL])
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
    out["arguments"] = "either" if len(works) == 2 else works[0] if works else ""
    if not works:
        return out
    call = {"role": "assistant", "content": "", "tool_calls": [_call(dict(_ARGS) if works[0] == "dict" else json.dumps(_ARGS))]}
    try:
        alone = render([*user, call], tools=[_TOOL])
        answered = render([*user, call, tool, {"role": "assistant", "content": _P["a2"]}], tools=[_TOOL])
    except TemplateError:
        return out
    tail = alone[alone.rfind("ARGVALPROBE") + len("ARGVALPROBE") :]
    tail = (tail[: len(tail) - len(appended)] if appended and tail.endswith(appended) else tail).rstrip()
    offsets = tokenizer.backend_tokenizer.encode(tail, add_special_tokens=False).offsets if tail else []
    out["stop"] = tail[offsets[-1][0] :] if offsets else ""
    at, result = answered.rfind("ARGVALPROBE") + len("ARGVALPROBE"), answered.find("TOOLRESULTPROBE")
    if 0 <= at <= result:
        gap = answered[at:result]
        out["header"] = gap[common_token_prefix(gap, tail, tokenizer) :].lstrip()
    return out


def _writes_call_reasoning(render: ChatRenderer, arguments: str) -> bool:
    """Whether the template writes the reasoning of a turn that calls a tool (Gemma 4 writes it
    there only); a record's own render is checked again, turn by turn."""
    if not arguments:
        return False
    args = json.dumps(_ARGS) if arguments == "string" else dict(_ARGS)
    turn = {"role": "assistant", "content": "", "tool_calls": [_call(args)], "reasoning_content": "REASONPROBE", "thinking": "REASONPROBE"}
    try:
        return "REASONPROBE" in render([*_msgs("u1"), turn], tools=[_TOOL])
    except TemplateError:
        return False


def _reasoning_probe(render: ChatRenderer) -> str | None:
    """What the template writes between a last turn's reasoning and its answer; None if it drops reasoning."""
    turn = {"role": "assistant", "content": _P["a1"], "reasoning_content": "REASONPROBE", "thinking": "REASONPROBE"}
    try:
        text = render([*_msgs("u1"), turn])
    except TemplateError:
        return None
    at, answer = text.find("REASONPROBE"), text.find(_P["a1"])
    if at < 0:
        return None
    return text[at + len("REASONPROBE") : answer] if answer > at else ""
