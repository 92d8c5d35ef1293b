"""The six classes of issue 21, each on a literal template modelled on a served one.

Each test failed before the fix it pins (see the issue): a call-only turn after a generation
prompt that opens a think block was rejected with a false reason (class 1), a template that
needs `tools` crashed every build (2), a template that ignores `add_generation_prompt` had
its header trained (3), reasoning was trained after a prompt that already closes the think
block (4), stop tokens came only from the template (5), and control-token text in data could
only be rejected (6). The trained text is read off the labels by decoding, never by ftdata's
own span finder.
"""

from __future__ import annotations

import copy
import json
import shutil

import pytest
from support import TOKENIZERS, matrix_module, tokenizer

from ftdata import ConfigError, prepare
from ftdata.markers import detect_role_markers, model_stop_tokens
from ftdata.outcomes import NoteCode

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}  # fmt: skip
CALL = {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
CALL_RECORD = {"tools": [WEATHER], "messages": [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_0", "name": "get_weather", "content": "18C"},
    {"role": "assistant", "content": "It is 18C."}]}  # fmt: skip
PLAIN = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}

# Qwen-style turns: calls as <tool_call> JSON, tool results as a user turn.
TOOLS = "{%- if tools %}<|im_start|>system\n# Tools\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}<|im_end|>\n{% endif %}"
TURNS = (
    "{%- for m in messages %}{%- if m.role == 'assistant' %}<|im_start|>assistant\n{% if m.content %}{{ m.content }}{% endif %}"
    "{% for c in m.tool_calls or [] %}<tool_call>\n{\"name\": \"{{ c.function.name }}\", \"arguments\": "
    "{{ c.function.arguments | tojson }}}\n</tool_call>{% endfor %}<|im_end|>\n"
    "{%- elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endif %}{%- endfor %}"
)
GENERATION = "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
# QwQ-32B / GLM-4.7 / Nemotron 3: the generation prompt opens a think block history turns lack.
THINK_OPENED = TOOLS + TURNS + "{%- if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
# Hermes 2 Pro / Hermes 3 tool_use: iterates `tools` whether or not there are any.
NEEDS_TOOLS = "<|im_start|>system\n<tools>{% for t in tools %}{{ t.function.name }}{% endfor %}</tools><|im_end|>\n" + TURNS + GENERATION
# transformers' test template, Axolotl's fixtures: no generation prompt at all.
NO_GENERATION = TOOLS + TURNS


def qwen_with(template: str):
    tok = copy.deepcopy(tokenizer("qwen2.5-instruct"))
    tok.chat_template = template
    return tok


def trained(tok, result) -> list[str]:
    """The decoded text of each row's trained tokens."""
    return [tok.decode([i for i, lab in zip(row["input_ids"], row["labels"]) if lab != -100]) for row in result.dataset]


def test_class1_a_call_only_turn_after_a_think_opening_prompt_trains_its_calls():
    tok = qwen_with(THINK_OPENED)
    result = prepare([CALL_RECORD], tokenizer=tok)
    # Before: "the template does not write the name of the tool call 'get_weather'" (it does).
    assert trained(tok, result) == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>It is 18C.<|im_end|>'
    ]
    assert result.report.methods["fallback"] == 1


def test_class1_a_call_whose_markup_cannot_be_located_is_rejected_not_half_trained():
    """Two calls of the same name: both names must lie in the trained span, not just one."""
    tok = qwen_with(THINK_OPENED)
    record = copy.deepcopy(CALL_RECORD)
    record["messages"][1]["tool_calls"].append({**CALL, "id": "call_1", "function": {**CALL["function"], "arguments": {"city": "Oslo"}}})
    record["messages"].insert(3, {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "9C"})
    (text,) = trained(tok, prepare([record], tokenizer=tok))
    assert text.count('"name": "get_weather"') == 2 and text.startswith("<tool_call>")


def test_class2_a_template_that_needs_tools_is_probed_with_a_schema():
    tok = qwen_with(NEEDS_TOOLS)
    markers = detect_role_markers(tok)  # before: TemplateError 'NoneType' object is not iterable
    assert markers.needs_tools and markers.assistant_header == "<|im_start|>assistant\n"
    assert any("renders only with `tools`" in w for w in markers.warnings)
    result = prepare([CALL_RECORD, PLAIN], tokenizer=tok, on_error="skip")
    assert trained(tok, result)[0].startswith("<tool_call>\n")
    (reject,) = result.report.sample_rejects
    assert reject.location.endswith("[1]") and "renders only with tools: give the record a `tools` schema" in reject.reason


def test_class3_a_rendered_header_stays_prompt_when_the_generation_prompt_adds_nothing():
    tok = qwen_with(NO_GENERATION)
    markers = detect_role_markers(tok)
    assert markers.ignores_generation_prompt and markers.assistant_header == "<|im_start|>assistant\n"
    assert markers.after_prompt == ""
    # Before: '<|im_start|>assistant\nHello!<|im_end|>' (the header trained).
    assert trained(tok, prepare([PLAIN], tokenizer=tok)) == ["Hello!<|im_end|>"]
    assert trained(tok, prepare([CALL_RECORD], tokenizer=tok))[0].startswith("<tool_call>")


def test_class3_no_flag_where_the_template_writes_no_header_either():
    """Mistral's [INST] template ignores add_generation_prompt but has no assistant header."""
    markers = detect_role_markers(tokenizer("mistral-nemo-instruct-2407"))
    assert not markers.ignores_generation_prompt and markers.assistant_header == ""


def test_class4_only_the_answer_is_trained_after_a_prompt_that_closes_the_think_block():
    pytest.importorskip("trl")
    tok = qwen_with((matrix_module().template_dir() / "qwen3.jinja").read_text(encoding="utf-8"))
    record = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4.", "reasoning_content": "Two and two."}]}
    off = prepare([record], tokenizer=tok, chat_template_kwargs={"enable_thinking": False})
    # Before: '<think>\nTwo and two.\n</think>\n\n4.<|im_end|>' after a prompt ending in '</think>\n\n'.
    assert trained(tok, off) == ["4.<|im_end|>"]
    assert off.report.notes[NoteCode.REASONING_PROMPT_CLOSED] == 1
    on = prepare([record], tokenizer=tok)
    assert trained(tok, on) == ["<think>\nTwo and two.\n</think>\n\n4.<|im_end|>"]
    assert not on.report.notes[NoteCode.REASONING_PROMPT_CLOSED]


def test_class5_stop_tokens_come_from_generation_config_and_the_option(tmp_path):
    folder = tmp_path / "llama"
    shutil.copytree(TOKENIZERS / "llama-3.2-instruct", folder)
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [128001, 128008, 128009]}))
    from ftdata.resources import load_tokenizer

    tok = load_tokenizer(folder)
    assert model_stop_tokens(tok) == ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")
    assert {"<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"} <= set(detect_role_markers(tok, stop_tokens=model_stop_tokens(tok)).stops)
    assert model_stop_tokens(tokenizer("llama-3.2-instruct")) == ()  # no generation_config.json: the template's own
    with pytest.raises(ConfigError, match=r"stop_tokens: '<\|not_a_token\|>' is not one token of tokenizer"):
        prepare([PLAIN], tokenizer=tok, stop_tokens=["<|not_a_token|>"])


def test_class5_a_turn_that_ends_on_a_given_stop_token_is_not_rejected():
    """A template that closes answers with a token it never shows as an end-of-turn marker."""
    tok = qwen_with(
        "{%- for m in messages %}{%- if m.role == 'assistant' %}<|im_start|>assistant\n{{ m.content }}<|endoftext|>"
        "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}\n{%- endif %}{%- endfor %}" + GENERATION
    )
    assert trained(tok, prepare([PLAIN], tokenizer=tok, stop_tokens=["<|endoftext|>"])) == ["Hello!<|endoftext|>"]


def test_class6_control_token_text_in_data_trains_as_plain_text_when_asked():
    tok = tokenizer("qwen2.5-instruct")
    record = {"messages": [{"role": "user", "content": "What ends a turn?"}, {"role": "assistant", "content": "The <|im_end|> token."}]}
    with pytest.raises(Exception, match="special_tokens_in_data='text'"):
        prepare([record], tokenizer=tok)  # the default still rejects (every record: a one-line error)
    result = prepare([record], tokenizer=tok, special_tokens_in_data="text")
    (row,) = result.dataset
    pieces = [tok.convert_ids_to_tokens(i) for i, lab in zip(row["input_ids"], row["labels"]) if lab != -100]
    assert "".join(pieces).replace("Ġ", " ") == "The <|im_end|> token.<|im_end|>"
    assert pieces[-1] == "<|im_end|>" and pieces.count("<|im_end|>") == 1  # only the real closer is the control token
    assert row["input_ids"].count(tok.convert_tokens_to_ids("<|im_end|>")) == 3  # system, user, assistant closers


def test_a_generation_prompt_written_after_every_conversation_is_never_trained():
    """vLLM's ToolACE and Phi-4-mini templates end every conversation with the assistant header."""
    tok = qwen_with(TOOLS + TURNS + "{{ '<|im_start|>assistant\\n' }}")
    markers = detect_role_markers(tok)
    assert (markers.eot, markers.final_eot, markers.assistant_header) == ("<|im_end|>", "<|im_end|>", "<|im_start|>assistant\n")
    assert any("after every conversation" in w for w in markers.warnings)
    # Before: the closer was taken as '<|im_end|><|im_start|>assistant' after the last turn.
    assert trained(tok, prepare([PLAIN, CALL_RECORD], tokenizer=tok, rejects_path=None)) == [
        "Hello!<|im_end|>",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>It is 18C.<|im_end|>',
    ]
