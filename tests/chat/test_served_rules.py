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
from ftdata.chat.chat_template import with_template
from ftdata.chat.chat_tokens import copy_tokenizer
from ftdata.chat.markers import detect_role_markers, model_stop_tokens
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
    """Qwen2.5's tokenizer rendering with `template` (shared: `qwen_own` for one to add tokens to)."""
    return with_template(tokenizer("qwen2.5-instruct"), template)


def qwen_own(template: str):
    """`qwen_with`, a copy of its own to add tokens to."""
    tok = copy_tokenizer(tokenizer("qwen2.5-instruct"))
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
    from ftdata.io.resources import load_tokenizer

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


# ---------------------------------------------------------------- the last disagreements with the oracle


def qwen_with_think_tokens(template: str):
    """`qwen_own`, plus `<think>` / `</think>` as added tokens (as Qwen3, DeepSeek and GLM have them)."""
    tok = qwen_own(template)
    tok.add_tokens(["<think>", "</think>"])
    return tok


# DeepSeek-V3.2: turns after the last user message open with `<think></think>`, earlier ones with `</think>`;
# tool results are written with no role header, and the generation prompt after one is `<think>`.
AFTER_LAST_USER = (
    "{%- set ns = namespace(last=-1) %}{%- for m in messages %}{%- if m.role == 'user' %}{%- set ns.last = loop.index0 %}"
    "{%- endif %}{%- endfor %}" + TOOLS
    + "{%- for m in messages %}{%- if m.role == 'user' %}<|im_start|>user\n{{ m.content }}<|im_end|>\n<|im_start|>assistant\n"
    "{% elif m.role == 'tool' %}<tool_response>{{ m.content }}</tool_response>\n"
    "{%- else %}{% if loop.index0 > ns.last %}<think>{% endif %}</think>{{ m.content or '' }}"
    "{% for c in m.tool_calls or [] %}<tool_call>{{ c.function.name }} {{ c.function.arguments | tojson }}</tool_call>{% endfor %}"
    "<|im_end|>\n{%- endif %}{%- endfor %}{%- if add_generation_prompt %}<think>{% endif %}"
)
CALL_TEXT_RECORD = {"tools": [WEATHER], "messages": [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "Let me look.", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_0", "name": "get_weather", "content": "18C"},
    {"role": "assistant", "content": "It is 18C."},
    {"role": "user", "content": "Thanks."}, {"role": "assistant", "content": "Glad to help."}]}  # fmt: skip


def test_class1_the_closer_before_an_answer_after_a_tool_result_is_trained():
    """P_3 renders turn 1 as the last exchange (`<think></think>`), A as history (`</think>`): P_3 and
    A part inside turn 1. What P_3 writes after the tool result (`<think>`) is what counts: the
    model writes `</think>` there, as in every other turn."""
    tok = qwen_with_think_tokens(AFTER_LAST_USER)
    # Before: '...It is 18C.<|im_end|>' (the `</think>` after the tool result left untrained). The full render
    # writes the loop's turns as history (after a later user query): history=inference trains them in a row
    # that ends with them, the last turn in the full one; one_row trains them as the full render writes them.
    assert trained(tok, prepare([CALL_TEXT_RECORD], tokenizer=tok)) == [
        "</think>Glad to help.<|im_end|>",
        '</think>Let me look.<tool_call>get_weather {"city": "Paris"}</tool_call><|im_end|></think>It is 18C.<|im_end|>',
    ]
    assert trained(tok, prepare([CALL_TEXT_RECORD], tokenizer=tok, history="one_row")) == [
        '</think>Let me look.<tool_call>get_weather {"city": "Paris"}</tool_call><|im_end|>'
        "</think>It is 18C.<|im_end|></think>Glad to help.<|im_end|>"
    ]


# diffusion_gemma: after a tool result the generation prompt continues the model's turn (`<think>\n`, no
# header); the history rendering opens a new assistant turn there.
CONTINUED = TOOLS + (
    "{%- for m in messages %}{%- if m.role == 'tool' %}<tool_response>{{ m.content }}</tool_response>"
    "{%- elif m.role == 'assistant' %}<|im_start|>assistant\n{{ m.content or '' }}"
    "{% for c in m.tool_calls or [] %}<tool_call>{{ c.function.name }} {{ c.function.arguments | tojson }}</tool_call>{% endfor %}"
    "<|im_end|>\n{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{% if messages[-1].role == 'tool' %}<think>\n{% else %}<|im_start|>assistant\n{% endif %}{% endif %}"
)


def test_class1_a_header_the_prompt_after_a_tool_result_does_not_give_is_trained():
    tok = qwen_with_think_tokens(CONTINUED)
    # Before: '...It is 18C.<|im_end|>': the header A writes after the result, which no prompt gives, untrained.
    assert trained(tok, prepare([CALL_RECORD], tokenizer=tok)) == [
        '<tool_call>get_weather {"city": "Paris"}</tool_call><|im_end|><|im_start|>assistant\nIt is 18C.<|im_end|>'
    ]


# Nemotron 3: the generation prompt opens a think block, history turns open and close an empty one.
EMPTY_THINK = TOOLS + TURNS.replace("<|im_start|>assistant\\n{% if", "<|im_start|>assistant\\n<think></think>{% if").replace(
    "<|im_start|>assistant\n{% if", "<|im_start|>assistant\n<think></think>{% if"
) + "{%- if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"


@pytest.mark.parametrize("think_tokens", [True, False], ids=["think-tokens", "think-as-text"])
def test_class1_the_think_closer_of_a_history_turn_is_trained_in_any_tokenizer(think_tokens):
    """The model writes `</think>` after a prompt that ends in `<think>\\n`, whether the tokenizer
    has it as one token or spells it as text (a Qwen2.5 tokenizer with a reasoning template)."""
    tok = (qwen_with_think_tokens if think_tokens else qwen_with)(EMPTY_THINK)
    assert "<think></think>" in tok.apply_chat_template(PLAIN["messages"], tokenize=False)
    record = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " Hello!"}]}
    # Before, with `</think>` as text: ' Hello!<|im_end|>' (only markup tokens were taken in).
    assert trained(tok, prepare([PLAIN, record], tokenizer=tok)) == ["</think>Hello!<|im_end|>", "</think> Hello!<|im_end|>"]


# ---------------------------------------------------------------- issue 30: invariance, the prompt's own closer

SERVED = matrix_module().SERVED


def trl_or_served(name: str) -> str:
    """A template of either corpus: `trl:<stem>` (TRL's chat_templates) or a served file name."""
    if name.startswith("trl:"):
        return (matrix_module().template_dir() / f"{name[4:]}.jinja").read_text(encoding="utf-8")
    return (SERVED / name).read_text(encoding="utf-8")


def asked(user: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": "4"}]}


@pytest.mark.parametrize(
    ("template", "expected"),
    [("trl:nemotron_3_nano", "</think>4<|im_end|>"), ("nemotron-3-nano.jinja", "</think>4<|im_end|>"),
     ("glm-4.7-flash.jinja", "</think>4<|endoftext|>")],
)  # fmt: skip
def test_the_think_closer_is_trained_whatever_the_user_wrote(template, expected):
    """The prompt opens `<think>`, the history writes `</think>4`: the closer is the model's. Before, a
    user who wrote "hi" or "ink" (inside `<think>`) had it masked; "What is 2+2?" had it trained."""
    tok = qwen_with_think_tokens(trl_or_served(template))
    tok.add_tokens(["[gMASK]", "<sop>", "<|user|>", "<|assistant|>"], special_tokens=True)
    tok.eos_token = "<|endoftext|>"  # GLM's: its template writes no end-of-turn marker, so EOS is appended
    users = ["What is 2+2?", "hi", "ink", "think", "assistant", "<", ">\n"]
    assert trained(tok, prepare([asked(u) for u in users], tokenizer=tok, chat_template_kwargs={"enable_thinking": True})) == [
        expected
    ] * len(users)


COHERE = ["<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>", "<|SYSTEM_TOKEN|>",
          "<|START_RESPONSE|>", "<|END_RESPONSE|>", "<|START_THINKING|>", "<|END_THINKING|>", "<|START_TEXT|>", "<|END_TEXT|>"]  # fmt: skip


def test_a_user_who_writes_start_keeps_the_response_opener_trained():
    """Command R7B with thinking off: `<|START_RESPONSE|>` is the model's. Before, a user who wrote
    "START" (inside `<|START_RESPONSE|>`) had it masked in the first turn."""
    tok = qwen_own(trl_or_served("command-r7b-tool-use.jinja"))
    tok.add_tokens(COHERE, special_tokens=True)
    record = {"messages": [{"role": "system", "content": "START"}, {"role": "user", "content": "\nSTART"},
                           {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "STARTSTART"},
                           {"role": "assistant", "content": "Green."}]}  # fmt: skip
    got = trained(tok, prepare([record], tokenizer=tok, chat_template_kwargs={"enable_thinking": False}))
    assert got == ["<|START_RESPONSE|>Blue.<|END_RESPONSE|><|END_OF_TURN_TOKEN|>"
                   "<|START_RESPONSE|>Green.<|END_RESPONSE|><|END_OF_TURN_TOKEN|>"]  # fmt: skip


TWO_TURNS = {"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
                          {"role": "user", "content": "hi"}, {"role": "assistant", "content": "5"}]}  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    # Thinking off, the template's default: every render writes a turn after `<｜Assistant｜></think>`, inference
    # prompts `<｜Assistant｜><think></think>`: each turn is trained in a row of its own, after its inference prompt.
    [(None, ["5<｜end▁of▁sentence｜>", "4<｜end▁of▁sentence｜>"]),
     ({"thinking": False}, ["5<｜end▁of▁sentence｜>", "4<｜end▁of▁sentence｜>"]),
     # Thinking on, the history turn's `</think>4` follows `<｜Assistant｜>` in the full render but `<think>` at
     # inference: history=inference trains it in a row of its own, after its inference prompt.
     ({"thinking": True}, ["</think>5<｜end▁of▁sentence｜>", "</think>4<｜end▁of▁sentence｜>"])],
)  # fmt: skip
def test_a_closer_the_generation_prompt_already_ends_with_is_never_trained(kwargs, expected):
    """DeepSeek-V3.2 on its own tokenizer (`<think>` is text there). Thinking off: the prompt ends in
    `<｜Assistant｜><think></think>`, the history writes `<｜Assistant｜></think>4`: that `</think>` is the
    prompt's, and the turn is trained after the prompt itself (a prompt row). Before: `</think>4<｜end▁of▁sentence｜>`
    on every turn. Thinking on: the prompt ends in
    `<think>`, and the `</think>` the history writes is the model's."""
    tok = with_template(tokenizer("deepseek-v3"), trl_or_served("deepseek-v3.2.jinja"))
    assert tok.apply_chat_template(TWO_TURNS["messages"][:1], tokenize=False, add_generation_prompt=True, **(kwargs or {})).endswith(
        "<｜Assistant｜><think></think>" if not (kwargs or {}).get("thinking") else "<｜Assistant｜><think>"
    )
    assert trained(tok, prepare([TWO_TURNS], tokenizer=tok, chat_template_kwargs=kwargs)) == expected
