"""Role markers and template warnings, derived from each real template's own renders."""

from __future__ import annotations

import pytest
from support import TOKENIZER_NAMES, TOKENIZERS, tokenizer
from test_chat_masking import RAISES_ON_SYSTEM, chat, chat_template, one, trained_texts, trl_template

from ftdata.errors import TemplateError
from ftdata.chat.markers import common_token_prefix, control_tokens, detect_role_markers
from ftdata.chat.stops import Stop, first_stop

# name -> (bos, user_header, user_footer, assistant_header, eot, separator, final_eot, system_support)
MARKERS = {
    None: ("", "<|im_start|>user\n", "<|im_end|>\n", "<|im_start|>assistant\n", "<|im_end|>", "\n", "<|im_end|>", "native"),
    "qwen2.5-instruct": ("", "<|im_start|>user\n", "<|im_end|>\n", "<|im_start|>assistant\n", "<|im_end|>", "\n", "<|im_end|>", "native"),
    "llama-3-8b-instruct": ("<|begin_of_text|>", "<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>",
                            "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>", "", "<|eot_id|>", "native"),
    "llama-3.2-instruct": ("<|begin_of_text|>", "<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>",
                           "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>", "", "<|eot_id|>", "native"),
    "gemma-3-it": ("<bos>", "<start_of_turn>user\n", "<end_of_turn>\n", "<start_of_turn>model\n", "<end_of_turn>", "\n",
                   "<end_of_turn>", "folded"),
    "mistral-nemo-instruct-2407": ("<s>", "[INST]", "[/INST]", "", "</s>", "", "</s>", "ignored"),
    "phi-3-mini-4k-instruct": ("", "<|user|>\n", "<|end|>\n", "<|assistant|>\n", "<|end|>", "\n", "<|end|>\n<|endoftext|>", "native"),
    "deepseek-v3": ("<｜begin▁of▁sentence｜>", "<｜User｜>", "", "<｜Assistant｜>", "<｜end▁of▁sentence｜>", "",
                    "<｜end▁of▁sentence｜>", "native"),
}  # fmt: skip
pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")
FIELDS = ("bos", "user_header", "user_footer", "assistant_header", "eot", "separator", "final_eot", "system_support")


@pytest.mark.parametrize("name", [None, *TOKENIZER_NAMES], ids=lambda n: n or "smollm2")
def test_role_markers_of_real_templates(name):
    m = detect_role_markers(tokenizer(name))
    assert tuple(getattr(m, f) for f in FIELDS) == MARKERS[name]
    assert m.prefix_stable
    assert m.markup.startswith(m.bos) and m.eot in m.markup


def test_native_system_header_and_footer():
    m = detect_role_markers(tokenizer("llama-3-8b-instruct"))
    assert (m.system_header, m.system_footer) == ("<|start_header_id|>system<|end_header_id|>\n\n", "<|eot_id|>")
    m = detect_role_markers(tokenizer("deepseek-v3"))  # right after BOS, no role marker
    assert (m.system_header, m.system_footer) == ("", "")
    assert m.warnings == ("writes its own BOS '<｜begin▁of▁sentence｜>': ftdata adds no second one",)


def test_warns_about_a_default_system_prompt():
    m = detect_role_markers(tokenizer("qwen2.5-instruct"))
    assert m.default_system == "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    assert m.warnings == (
        "injects a default system prompt when none is given: "
        "'<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful ass'",
    )


def test_warns_about_a_date_line():
    m = detect_role_markers(tokenizer("llama-3.2-instruct"))
    assert m.date_line and m.date_line in m.default_system
    assert f"injects a date ({m.date_line}): renders change from day to day" in m.warnings
    assert "Cutting Knowledge Date: December 2023\nToday Date: " in m.default_system
    m = detect_role_markers(tokenizer("llama-3-8b-instruct"))  # the 3.0 template is deterministic
    assert (m.date_line, m.default_system) == ("", "")
    assert m.warnings == ("writes its own BOS '<|begin_of_text|>': ftdata adds no second one",)


def test_warns_about_a_folded_system_role():
    m = detect_role_markers(tokenizer("gemma-3-it"))
    assert m.warnings == (
        "has no system role: a system message is folded into the first user turn",
        "writes its own BOS '<bos>': ftdata adds no second one",
    )


def test_warns_about_a_system_prompt_dropped_from_training_records():
    m = detect_role_markers(tokenizer("mistral-nemo-instruct-2407"))
    assert m.warnings[0] == "drops system messages from conversations that end with an assistant turn: use system_mode='fold'"


def test_warns_about_a_template_that_raises_on_system(smol):
    with chat_template(smol, RAISES_ON_SYSTEM):
        m = detect_role_markers(smol)
    assert m.system_support == "raises"
    assert "raises on system turns: use system_mode='fold' to fold them into the first user turn" in m.warnings


def test_warns_about_an_empty_think_block_qwen3():
    tok = tokenizer("qwen2.5-instruct")
    with chat_template(tok, trl_template("qwen3")):
        m = detect_role_markers(tok)
        rendered, result = one(tok, chat("q", "a"))
    assert m.empty_think and m.after_prompt == "<think>\n\n</think>\n\n"
    # The rule: the model writes the empty block after the generation prompt, so it is trained;
    # enable_thinking=false moves it into the prompt (see test_chat_tools.py).
    assert (
        "writes '<think>\\n\\n</think>\\n\\n' after the generation prompt: the model writes it, so it is trained; "
        'chat_template_kwargs {"enable_thinking": false} moves it into the prompt'
    ) in m.warnings
    assert rendered.text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\na<|im_end|>\n")
    assert trained_texts(tok, rendered, result) == ["<think>\n\n</think>\n\na<|im_end|>"]


def test_warns_about_a_generation_prompt_that_opens_a_think_block():
    tok = tokenizer("deepseek-v3")
    with chat_template(tok, trl_template("deepseekv3")):
        m = detect_role_markers(tok)
    assert m.assistant_header == "<｜Assistant｜><think>\n"
    assert not m.prefix_stable
    assert any(w.startswith("its generation prompt ends with '<｜Assistant｜><think>\\n'") for w in m.warnings)


def test_final_turn_closer_differs_from_the_middle_one(smol):
    """gpt-oss style: <|im_end|> closes middle assistant turns, <|endoftext|> the last one."""
    source = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
        "{% if m.role == 'assistant' and loop.last %}<|endoftext|>{% else %}<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with chat_template(smol, source):
        m = detect_role_markers(smol)
        rendered, result = one(smol, chat("q1", "a1", "q2", "a2"))
    assert (m.eot, m.final_eot) == ("<|im_end|>", "<|endoftext|>")
    assert "ends the last assistant turn with '<|endoftext|>' instead of '<|im_end|>'; both are trained where they occur" in m.warnings
    assert trained_texts(smol, rendered, result) == ["a1<|im_end|>", "a2<|endoftext|>"]


def test_template_without_end_of_turn_marker_appends_eos_or_rejects(smol):
    source = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
    with chat_template(smol, source):
        m = detect_role_markers(smol)
        rendered, result = one(smol, chat("q", "a"))
        middle = one(smol, chat("q1", "a1", "q2", "a2"))
    assert (m.eot, m.stops, m.eos_appended) == ("", (), "<|im_end|>")
    assert m.warnings[0] == (
        "writes no end-of-turn marker: no single token opens the next turn, so a middle assistant turn cannot be stopped "
        "(rejected), and EOS '<|im_end|>' is appended (trained) after the last turn"
    )
    # The space is the template's, after 'assistant:'; the EOS is appended so the model learns to stop.
    assert trained_texts(smol, rendered, result) == [" a\n<|im_end|>"]
    assert middle == (
        "assistant turn 1 cannot be masked safely: it does not end with a token that stops generation (stop tokens: "
        "none); the model would not learn to stop"
    )


def test_no_chat_template_is_a_template_error(smol):
    with chat_template(smol, ""), pytest.raises(TemplateError, match="has no chat template; pass template='alpaca'"):
        detect_role_markers(smol)


def test_common_token_prefix_never_ends_inside_a_special_token():
    tok = tokenizer("phi-3-mini-4k-instruct")
    assert common_token_prefix("<|end|>\n<|user|>", "<|endoftext|>", tok) == 0  # chars share '<|end'
    assert common_token_prefix("<|end|>\n<|user|>", "<|end|>\n<|endoftext|>", tok) == len("<|end|>\n")


def test_control_tokens_are_special_or_template_markup():
    qwen = control_tokens(tokenizer("qwen2.5-instruct"))
    assert "<|im_end|>" in qwen and "<|endoftext|>" in qwen
    assert "<tool_call>" not in qwen  # an added token meant for content
    deepseek = tokenizer("deepseek-v3")
    assert "<｜User｜>" not in control_tokens(deepseek)  # not flagged special...
    assert "<｜User｜>" in control_tokens(deepseek, detect_role_markers(deepseek).markup)  # ...but the template's markup


def test_stops_are_longest_first_with_ties_in_text_order():
    """Two model stops of one length used to come out in a set's order, which changes per process."""
    markers = detect_role_markers(tokenizer("qwen2.5-instruct"), stop_tokens=["<|fim_pad|>", "<|box_end|>"])
    assert markers.stops == ("<|box_end|>", "<|fim_pad|>", "<|im_end|>")


def test_first_stop_is_the_earliest_and_longest_and_never_past_another_turn():
    stops, openers = ("<|end|>", "<|end|>\n<|endoftext|>", "<|call|>"), ("<|user|>",)
    text = "yo<|end|>\n<|endoftext|><|user|>hi<|call|>"
    assert first_stop(text, 2, stops, openers) == Stop(2, 23)  # both start at 2: the longer wins
    assert first_stop(text, 23, stops, openers) is None  # `<|call|>` lies past the next user header
    assert first_stop("a<|call|>b<|end|>", 0, stops, openers) == Stop(1, 9)
