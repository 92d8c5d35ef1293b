"""Every trained turn is trained in the context inference gives it: its inference prompt
`apply_chat_template(messages[:i], add_generation_prompt=True)`, as the template itself renders it.

Two kinds of template write that prompt where no render of the conversation writes it: Mistral-Nemo puts the
system prompt (and the tool schemas) into the last user turn only, so a render with a reply after it holds
neither; a generation prompt that closes the think block (`enable_thinking` off) meets a turn that carries
reasoning, which every render writes before the answer. Such a turn is trained in a row of its own: the prompt,
then what the model writes after it. Where the template has a thinking switch that opens the block, a record that
carries reasoning is rendered with it on instead (noted), so the reasoning is trained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, TOKENIZERS, tokenizer
from test_chat_tools import template_tokenizer
from test_think_tokens import served

from ftdata.chat.probes import thinking_switch
from ftdata.chat.render import Renderer
from ftdata.errors import Location
from ftdata.options import DataOptions
from ftdata.outcomes import NoteCode
from ftdata.run.sft import Measured
from ftdata.run.stage import Stage

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")

THINK = ("<think>", "</think>")
SYSTEM = {"role": "system", "content": "Answer in one word."}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str, reasoning: str | None = None) -> dict[str, Any]:
    return {"role": "assistant", "content": text, **({"reasoning_content": reasoning} if reasoning else {})}


def rows(tok: Any, messages: list[dict[str, Any]], **options: Any) -> list[Measured]:
    stage = Stage(tok, DataOptions(max_length=8192, **options))
    items = [item for _, item, _ in stage.run([(Location("t.jsonl", line=1), {"messages": messages})]).outcomes]
    assert all(isinstance(item, Measured) for item in items), [getattr(item, "reason", "") for item in items]
    return items  # type: ignore[return-value]


def turns_of(item: Measured, messages: list[dict[str, Any]]) -> tuple[int, ...]:
    """The message indices a row trains, in order."""
    if item.split_row is not None:
        return item.split_row.turns
    return tuple(i for i, m in enumerate(messages) if m["role"] == "assistant")


def trained_after_prompts(tok: Any, messages: list[dict[str, Any]], items: list[Measured],
                          kwargs: dict[str, Any] | None = None, tools: list[Any] | None = None) -> dict[int, str]:  # fmt: skip
    """Each trained turn's trained text, checked against the template's own inference prompt: the ids before the
    turn's trained run are `apply_chat_template(messages[:i], add_generation_prompt=True)` tokenized, and the row
    ends with the run (a turn trained after a prompt no render writes) or goes on with the rest of the record."""
    out: dict[int, str] = {}
    for item in items:
        ids, labels = list(item.tokenized.input_ids), list(item.tokenized.labels)
        starts = [k for k in range(len(ids)) if labels[k] != -100 and (k == 0 or labels[k - 1] == -100)]
        for i, start in zip(turns_of(item, messages), starts, strict=True):
            prompt = tok.apply_chat_template(messages[:i], tools=tools, tokenize=False, add_generation_prompt=True,
                                             **(kwargs or {}))  # fmt: skip
            assert ids[:start] == tok(prompt, add_special_tokens=False)["input_ids"], (
                f"turn {i}: trained after {tok.decode(ids[:start])[-120:]!r}, the inference prompt is {prompt[-120:]!r}")
            end = next((k for k in range(start, len(ids)) if labels[k] == -100), len(ids))
            assert labels[start:end] == ids[start:end]
            out[i] = tok.decode(ids[start:end])
    return out


# ---------------------------------------------------------------- truth 3: a system prompt the template moves


def test_on_mistral_nemo_every_trained_turn_has_the_system_prompt_where_inference_puts_it() -> None:
    """Mistral-Nemo writes the system prompt into the last user turn only: at inference the prompt ends with that
    turn, so every turn's prompt holds it; no render with a reply after it does. Each turn is trained after it."""
    tok = tokenizer("mistral-nemo-instruct-2407")
    messages = [SYSTEM, user("Capital of France?"), assistant("Paris."), user("Of Spain?"), assistant("Madrid.")]
    items = rows(tok, messages)
    assert trained_after_prompts(tok, messages, items) == {2: "Paris.</s>", 4: "Madrid.</s>"}
    contexts = [tok.decode(item.tokenized.input_ids) for item in items]
    assert contexts == ["<s>[INST]Capital of France?[/INST]Paris.</s>[INST]Answer in one word.\n\nOf Spain?[/INST]Madrid.</s>",
                        "<s>[INST]Answer in one word.\n\nCapital of France?[/INST]Paris.</s>"]  # fmt: skip
    for item in items:
        assert {n.code for n in item.tokenized.notes} == {NoteCode.PROMPT_ROW}  # no system_dropped: it is there


def test_a_one_exchange_record_on_mistral_nemo_keeps_its_system_prompt() -> None:
    """Before: `<s>[INST]Capital of France?[/INST]Paris.</s>` and a note suggesting system_mode='fold'."""
    tok = tokenizer("mistral-nemo-instruct-2407")
    messages = [SYSTEM, user("Capital of France?"), assistant("Paris.")]
    (item,) = rows(tok, messages)
    assert tok.decode(item.tokenized.input_ids) == "<s>[INST]Answer in one word.\n\nCapital of France?[/INST]Paris.</s>"
    assert trained_after_prompts(tok, messages, [item]) == {2: "Paris.</s>"}
    assert item.split_row is None


def test_mistral_nemos_tool_schemas_are_in_every_turns_context_as_inference_gives_them() -> None:
    """The tool schemas go before the last user turn too: a history turn's inference prompt holds them."""
    tok = tokenizer("mistral-nemo-instruct-2407")
    tools = [{"type": "function", "function": {"name": "lookup", "description": "Look up.",
                                               "parameters": {"type": "object", "properties": {}}}}]  # fmt: skip
    messages = [user("hi"), assistant("hello"), user("bye"), assistant("ciao")]
    stage = Stage(tok, DataOptions(max_length=8192))
    outcomes = stage.run([(Location("t.jsonl", line=1), {"messages": messages, "tools": tools})]).outcomes
    items = [item for _, item, _ in outcomes]
    assert trained_after_prompts(tok, messages, items, tools=tools) == {1: "hello</s>", 3: "ciao</s>"}  # type: ignore[arg-type]


def test_one_row_still_trains_the_full_render_and_says_the_system_prompt_was_dropped() -> None:
    """history=one_row is the explicit cheaper choice: history turns as the full render writes them."""
    tok = tokenizer("mistral-nemo-instruct-2407")
    (item,) = rows(tok, [SYSTEM, user("Capital of France?"), assistant("Paris.")], history="one_row")
    assert tok.decode(item.tokenized.input_ids) == "<s>[INST]Capital of France?[/INST]Paris.</s>"
    assert NoteCode.SYSTEM_DROPPED in {n.code for n in item.tokenized.notes}


def _trl_sources() -> dict[str, str]:
    trl = pytest.importorskip("trl")
    folder = Path(trl.__file__).parent / "chat_templates"
    vision = ("idefics", "llava", "smolvlm", "_vl", "glimmer")
    return {f"trl:{p.stem}": p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.jinja"))
            if not p.stem.endswith("_training") and not any(v in p.stem for v in vision)}  # fmt: skip


def _every_template() -> dict[str, tuple[Any, str | None]]:
    """Every template this suite holds: TRL's (text), the served corpus (on Qwen2.5's tokenizer), each shared
    tokenizer's own; (tokenizer, template source or None for its own)."""
    base = tokenizer("qwen2.5-instruct")
    out: dict[str, tuple[Any, str | None]] = {name: (base, source) for name, source in _trl_sources().items()}
    for path in sorted((ROOT / "tests" / "templates" / "served").glob("*.jinja")):
        out[f"served:{path.stem}"] = (base, path.read_text(encoding="utf-8"))
    for folder in sorted(p for p in TOKENIZERS.iterdir() if p.is_dir()):
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        if config.get("chat_template"):
            out[f"own:{folder.name}"] = (tokenizer(folder.name), None)
    return out


def test_the_templates_that_write_the_system_prompt_only_into_the_inference_prompt() -> None:
    """A two-exchange chat with a system prompt on every template: where the inference prompt of a turn holds the
    system text and the render through that turn does not write it before the turn, the turn is trained in a row
    of its inference prompt. Two templates do that, both Mistral's `[INST]` family (the system prompt goes into
    the last user turn); every other template that writes a system prompt writes it in every render."""
    messages = [{"role": "system", "content": "SYSQZ"}, user("U1QZ"), assistant("A1QZ"), user("U2QZ"), assistant("A2QZ")]
    moved = []
    for name, (tok, source) in _every_template().items():
        def render(msgs: list[dict[str, Any]], generation: bool = False) -> str:
            return tok.apply_chat_template(msgs, chat_template=source, tokenize=False, add_generation_prompt=generation,
                                           date_string="26 Jul 2024")  # fmt: skip
        try:
            lost = [i for i in (2, 4) if "SYSQZ" in render(messages[:i], True)
                    and "SYSQZ" not in (last := render(messages[: i + 1]))[: last.find(messages[i]["content"])]]  # fmt: skip
        except Exception:  # noqa: BLE001 (a template that takes no system turn, or needs tools or images)
            continue
        if lost:
            moved.append(name)
    assert moved == ["served:vllm-mistral-parallel", "own:mistral-nemo-instruct-2407"]


# ---------------------------------------------------------------- truth 1: a generation prompt that closes the think block


def test_the_templates_whose_generation_prompt_closes_the_think_block_and_the_switch_that_opens_it() -> None:
    """With the template's default kwargs; a record with reasoning is rendered with the switch on (noted). Every
    such template has one (TRL's Qwen3.5 "nothink" template too); where the build sets it off, or the template
    writes no reasoning even with it on (DeepSeek-V3.1 cuts the block out of every content), a turn trains its
    answer after the closed prompt."""
    found = {}
    for name, (tok, source) in _every_template().items():
        if source is not None:
            tok = template_tokenizer_from(tok, source)
        try:
            renderer = Renderer(tok)
            text = tok.apply_chat_template([user("U1QZ")], tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 (a template that needs tools or images: test_inference_rule covers it)
            continue
        if "</think>" in text[text.find("U1QZ") :]:
            found[name] = renderer.thinking_switch
    assert found == {
        "trl:qwen3_5_nothink": "enable_thinking",
        "served:deepseek-r1-distill-qwen": "enable_thinking",
        "served:deepseek-v3.1": "enable_thinking",
        "served:deepseek-v3.2": "enable_thinking",
        "served:qwq-32b": "enable_thinking",
    }


def template_tokenizer_from(tok: Any, source: str) -> Any:
    import copy

    out = copy.copy(tok)
    out.chat_template = source
    return out


CLOSED = [  # (tokenizer, kwargs, record, each turn's trained text): the thought left out, the answer after the prompt
    ("qwq-32b", {"enable_thinking": False},
     [user("2+2?"), assistant("<think>\nAdd two and two.\n</think>\n\n4"), user("3+3?"), assistant("<think>\nAdd.\n</think>\n\n6")],
     {1: "\n\n4<|im_end|>", 3: "\n\n6<|im_end|>"}),
    ("qwen3", {"enable_thinking": False},
     [user("2+2?"), assistant("4", "Add two and two."), user("3+3?"), assistant("6", "Add three.")],
     {1: "4<|im_end|>", 3: "6<|im_end|>"}),
    ("qwen3_5_nothink", {"enable_thinking": False},
     [user("2+2?"), assistant("4", "Add two and two.")],
     {1: "4<|im_end|>"}),
    ("deepseek-v3.1", {},  # its thinking switch opens the block, but the template writes no reasoning: not switched
     [user("2+2?"), assistant("<think>\nAdd two and two.\n</think>\n\n4")],
     {1: "\n\n4<｜end▁of▁sentence｜>"}),
]  # fmt: skip


def _closed_tokenizer(name: str) -> Any:
    return served(name) if name in ("qwq-32b", "deepseek-v3.1", "deepseek-v3.2") else template_tokenizer(name, THINK)


@pytest.mark.parametrize(("name", "kwargs", "messages", "expected"), CLOSED, ids=[c[0] for c in CLOSED])
def test_after_a_prompt_that_closes_the_think_block_the_answer_is_trained_in_that_prompts_context(
    name: str, kwargs: dict[str, Any], messages: list[dict[str, Any]], expected: dict[int, str]
) -> None:
    """Before: the answer was trained after the turn's own reasoning (`<think>\\nAdd.\\n</think>` then `\\n\\n6`), a
    context inference never gives: its prompt ends in the closed block."""
    tok = _closed_tokenizer(name)
    items = rows(tok, messages, chat_template_kwargs=kwargs or None)
    assert trained_after_prompts(tok, messages, items, kwargs) == expected
    for item in items:
        codes = {n.code for n in item.tokenized.notes}  # a note says the thought is left out (V3.1 cuts it itself)
        assert {NoteCode.REASONING_PROMPT_CLOSED, NoteCode.PROMPT_ROW} <= codes or NoteCode.REASONING_DROPPED in codes
        assert "Add" not in tok.decode(item.tokenized.input_ids)


SWITCHED = [  # (served template, switch, record with reasoning, each turn's trained text)
    ("qwq-32b", "enable_thinking", [user("2+2?"), assistant("<think>\nAdd two and two.\n</think>\n\n4")],
     {1: "Add two and two.\n</think>\n\n4<|im_end|>"}),
    ("deepseek-v3.2", "enable_thinking", [user("2+2?"), assistant("4", "Add two and two.")],
     {1: "Add two and two.</think>4<｜end▁of▁sentence｜>"}),
    ("qwen3_5_nothink", "enable_thinking", [user("2+2?"), assistant("4", "Add two and two.")],
     {1: "Add two and two.\n</think>\n\n4<|im_end|>"}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "switch", "messages", "expected"), SWITCHED, ids=[c[0] for c in SWITCHED])
def test_a_record_with_reasoning_is_rendered_with_the_thinking_switch_on_where_one_opens_the_block(
    name: str, switch: str, messages: list[dict[str, Any]], expected: dict[int, str]
) -> None:
    """The template's default closes the think block; the data carries reasoning: rendered as inference prompts
    a thinking model (the switch on, noted), the reasoning is trained after the prompt that opens the block."""
    tok = _closed_tokenizer(name)
    (item,) = rows(tok, messages)
    assert trained_after_prompts(tok, messages, [item], {switch: True}) == expected
    (note,) = [n for n in item.tokenized.notes if n.code is NoteCode.THINKING_ON]
    assert f"chat_template_kwargs {switch}=true" in note.text


def test_the_builds_own_choice_of_the_switch_stands_and_a_record_without_reasoning_is_not_switched() -> None:
    tok = served("qwq-32b")
    record = [user("2+2?"), assistant("<think>\nAdd two and two.\n</think>\n\n4")]
    (off,) = rows(tok, record, chat_template_kwargs={"enable_thinking": False})
    assert NoteCode.THINKING_ON not in {n.code for n in off.tokenized.notes}
    assert trained_after_prompts(tok, record, [off], {"enable_thinking": False}) == {1: "\n\n4<|im_end|>"}
    plain = [user("2+2?"), assistant("4")]
    (item,) = rows(tok, plain)
    assert NoteCode.THINKING_ON not in {n.code for n in item.tokenized.notes}
    assert thinking_switch(Renderer(tok, chat_template_kwargs={"enable_thinking": False}).chat) == ""  # type: ignore[arg-type]
