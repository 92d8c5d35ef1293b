"""The inference-consistency rule on tool calls, reasoning and template kwargs, with literal masks.

Each expected value is the trained text, decoded from the labels (one string per run of
trained tokens): what the model is taught to write after each inference prompt.

    P_i = render(messages[:i], tools=..., add_generation_prompt=True, **kwargs)
    A   = render(messages, tools=..., **kwargs)
    trained(i) = A[len(P_i) : end of turn i's stop token]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: support.py, also when run as a script
from support import TOKENIZERS, tokenizer  # noqa: E402

from ftdata.errors import ConfigError, Location, UnusableRecord
from ftdata.chat.markers import detect_role_markers
from ftdata.tokens.masking import Masker
from ftdata.options import BuildOptions, DataOptions
from ftdata.build.fingerprint import build_key
from ftdata.chat.render import REASONING_DROPPED, Renderer
from ftdata.types import IGNORE_INDEX, Example, Message, ToolCall
from ftdata.outcomes import Note, NoteCode

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")

GPTOSS_TAGS = ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>")
GLM_TAGS = ("[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>", "<think>", "</think>",
            "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>")  # fmt: skip
TOOLS = ({"type": "function", "function": {"name": "get_weather", "description": "Get the weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},)  # fmt: skip
DATE = {"date_string": "26 Jul 2024"}  # Llama-3.x templates write today's date otherwise
_PRIVATE: dict[tuple, object] = {}


def template_tokenizer(template: str, tags: tuple[str, ...] = (), eos: str | None = None):
    """A private Qwen2.5 copy with one of TRL's templates and its markup tags as special tokens
    (as benchmarks/template_matrix.py builds them), so the real tokenizer stays untouched."""
    from ftdata.io.resources import load_tokenizer

    key = (template, tags, eos)
    if key not in _PRIVATE:
        pytest.importorskip("trl")
        from pathlib import Path

        import trl

        tok = load_tokenizer(TOKENIZERS / "qwen2.5-instruct")
        tok.add_tokens([t for t in tags if tok.backend_tokenizer.token_to_id(t) is None], special_tokens=True)
        tok.chat_template = (Path(trl.__file__).parent / "chat_templates" / f"{template}.jinja").read_text(encoding="utf-8")
        if eos:
            tok.eos_token = eos
        _PRIVATE[key] = tok
    return _PRIVATE[key]


def gptoss():
    return template_tokenizer("gptoss", GPTOSS_TAGS)


def glm():
    return template_tokenizer("glm4moe", GLM_TAGS, eos="<|endoftext|>")


def qwen3():
    return template_tokenizer("qwen3", ("<think>", "</think>"))


def example(*messages: Message, tools=(), kwargs=None) -> Example:
    return Example(tuple(messages), Location("t", index=0), tools=tuple(tools), template_kwargs=dict(kwargs or {}))


def weather(arguments, content: str = "") -> Example:
    """User asks, assistant calls get_weather, the tool answers, the assistant answers."""
    return example(
        Message("user", "Weather in Paris?"),
        Message("assistant", content, tool_calls=(ToolCall("get_weather", arguments, "call00001"),)),
        Message("tool", "22C", name="get_weather", tool_call_id="call00001"),
        Message("assistant", "It is 22C."),
        tools=TOOLS,
    )


def thinking(reasoning: str | None = "add them", **kw) -> Example:
    return example(Message("user", "hi"), Message("assistant", "yo"), Message("user", "2+2?"),
                   Message("assistant", "4", reasoning=reasoning), **kw)  # fmt: skip


def masked(tok, ex: Example, **options):
    """(rendered text, [trained text per run, decoded from the labels], notes), or the rejection reason."""
    try:
        rendered = Renderer(tok, **options)(ex)
    except UnusableRecord as exc:
        return exc.reason
    row = Masker(tok)([rendered])[0]
    if isinstance(row, UnusableRecord):
        return row.reason
    runs, current = [], []
    for token, label in zip(row.input_ids, row.labels):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    runs += [current] if current else []
    decoded = [tok.decode(r, skip_special_tokens=False, clean_up_tokenization_spaces=False) for r in runs]
    return rendered.text, decoded, row.notes


# ---------------------------------------------------------------- tool calls


@pytest.mark.parametrize("arguments", [{"city": "Paris"}, '{"city": "Paris"}'], ids=["dict", "string"])
def test_qwen25_trains_the_call_markup_and_arguments_never_the_schema_or_result(arguments):
    tok = tokenizer("qwen2.5-instruct")
    text, trained, notes = masked(tok, weather(arguments))
    assert trained == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
        "It is 22C.<|im_end|>",
    ]
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather", "description": "Get the weather"' in text
    assert "<|im_start|>user\n<tool_response>\n22C\n</tool_response><|im_end|>\n" in text  # masked
    assert notes == ()


def test_qwen25_trains_text_before_a_call_with_the_call():
    tok = tokenizer("qwen2.5-instruct")
    _, trained, _ = masked(tok, weather({"city": "Paris"}, content="Let me check."))
    assert trained[0] == 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'


@pytest.mark.parametrize("arguments", [{"city": "Paris"}, '{"city": "Paris"}'], ids=["dict", "string"])
def test_llama32_writes_tools_into_the_first_user_turn_and_trains_the_call(arguments):
    tok = tokenizer("llama-3.2-instruct")
    text, trained, _ = masked(tok, weather(arguments), chat_template_kwargs=DATE)
    assert trained == ['{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>', "It is 22C.<|eot_id|>"]
    assert text.startswith(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions"
    )
    assert '<|start_header_id|>ipython<|end_header_id|>\n\n"22C"<|eot_id|>' in text


def test_llama32_drops_text_next_to_a_call_so_the_record_is_rejected():
    reason = masked(tokenizer("llama-3.2-instruct"), weather({"city": "Paris"}, content="Let me check."), chat_template_kwargs=DATE)
    assert reason == "assistant turn 1 cannot be masked safely: the chat template drops its content"


def test_gptoss_trains_the_recipient_channel_and_call_token():
    text, trained, _ = masked(gptoss(), weather({"city": "Paris"}))
    assert trained == [
        ' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}<|call|>',
        "<|channel|>final<|message|>It is 22C.<|return|>",
    ]
    assert "// Get the weather\ntype get_weather = (_: {\ncity: string,\n}) => any;" in text  # schema, masked
    # A JSON string would be written twice-encoded ("{\"city\"...): it is parsed to the dict the template needs.
    assert masked(gptoss(), weather('{"city": "Paris"}'))[1] == trained


def test_gptoss_drops_the_analysis_of_a_call_turn_before_a_final_answer():
    reason = masked(gptoss(), weather({"city": "Paris"}, content="Let me check."))
    assert reason == "assistant turn 1 cannot be masked safely: the chat template drops its content"


def test_glm_trains_the_observation_header_that_stops_a_call_turn():
    text, trained, notes = masked(glm(), weather({"city": "Paris"}))
    assert trained == [
        "\n<think></think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call><|observation|>",
        "\n<think></think>\nIt is 22C.<|endoftext|>",
    ]
    assert text.endswith("<|assistant|>\n<think></think>\nIt is 22C.<|endoftext|>")  # EOS appended: GLM writes none
    eos = "the chat template writes no end-of-turn marker: EOS was appended after the last turn and trained"
    assert Note(NoteCode.EOS_APPENDED, eos) in notes


def test_glm_a_conversation_that_ends_with_a_call_trains_the_header_that_hands_over_to_the_tool():
    """No end-of-turn marker and no next turn: the call is trained through `<|observation|>`, the header the
    template writes for the tool's answer and a stop token of the model; not the EOS, which the model never
    writes after a call (before: rejected, no stop token after the last turn)."""
    call = weather({"city": "Paris"})
    ex = Example(call.messages[:2], call.source, tools=call.tools)
    text, trained, notes = masked(glm(), ex)
    assert trained == ["\n<think></think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call><|observation|>"]
    assert text.endswith("</tool_call><|observation|>") and not any(n.code is NoteCode.EOS_APPENDED for n in notes)


def test_template_without_tool_support_rejects_the_record():
    tok = tokenizer("llama-3-8b-instruct")  # the 3.0 template has no tools
    assert detect_role_markers(tok).tool_arguments == ""
    assert masked(tok, weather({"city": "Paris"})) == (
        "the chat template does not write tool calls; the record would be trained without them: use a template that renders them"
    )
    assert masked(tok, example(Message("user", "q"), Message("assistant", "a"), tools=TOOLS)) == (
        "the chat template does not write tool schemas (tools); the record would be trained without them: "
        "use a template that renders them"
    )


def test_prompt_template_rejects_tool_calls_and_reasoning():
    tok = tokenizer(None)
    reason = "prompt template 'alpaca' does not write {}; the record would be trained without them: use the tokenizer's chat template (template=None)"
    assert masked(tok, weather({"city": "Paris"}), template="alpaca") == reason.format("tool calls")
    assert masked(tok, thinking(), template="alpaca") == reason.format("reasoning (reasoning_content/thinking)")


def test_string_arguments_that_are_not_a_json_object_are_rejected():
    assert masked(tokenizer("qwen2.5-instruct"), weather("city=Paris")) == (
        "tool call arguments must be a JSON object for this chat template (it writes a dict as JSON); got 'city=Paris'"
    )


@pytest.mark.parametrize(
    ("name", "form"),
    [("qwen2.5-instruct", "dict"), ("llama-3.2-instruct", "dict"), ("mistral-nemo-instruct-2407", "dict"),
     ("llama-3-8b-instruct", ""), ("gptoss", "dict"), ("glm4moe", "dict"), ("qwen3", "either")],
)  # fmt: skip
def test_argument_form_is_probed_from_the_template(name, form):
    """dict: a JSON string would be written escaped (tojson) or not at all; either: both print the JSON once."""
    tok = {"gptoss": gptoss, "glm4moe": glm, "qwen3": qwen3}.get(name, lambda: tokenizer(name))()
    assert detect_role_markers(tok).tool_arguments == form


# ---------------------------------------------------------------- reasoning and template kwargs


def test_gptoss_trains_channel_headers_and_the_analysis_of_the_last_turn():
    text, trained, _ = masked(gptoss(), thinking())
    assert text.endswith(
        "<|start|>user<|message|>hi<|end|><|start|>assistant<|channel|>final<|message|>yo<|end|>"
        "<|start|>user<|message|>2+2?<|end|><|start|>assistant<|channel|>analysis<|message|>add them<|end|>"
        "<|start|>assistant<|channel|>final<|message|>4<|return|>"
    )
    assert trained == [
        "<|channel|>final<|message|>yo<|end|>",
        "<|channel|>analysis<|message|>add them<|end|><|start|>assistant<|channel|>final<|message|>4<|return|>",
    ]
    assert masked(gptoss(), thinking(), mask_reasoning=True)[1] == ["<|channel|>final<|message|>yo<|end|>", "4<|return|>"]


def test_qwen3_reasoning_is_trained_as_the_think_block_the_model_writes():
    text, trained, notes = masked(qwen3(), thinking())
    assert text.endswith("<|im_start|>assistant\n<think>\nadd them\n</think>\n\n4<|im_end|>\n")
    assert trained == ["yo<|im_end|>", "<think>\nadd them\n</think>\n\n4<|im_end|>"]
    assert notes == ()
    assert masked(qwen3(), thinking(), mask_reasoning=True)[1] == ["yo<|im_end|>", "4<|im_end|>"]


def test_qwen3_history_reasoning_is_dropped_and_noted():
    ex = example(Message("user", "hi"), Message("assistant", "yo", reasoning="greet"), Message("user", "2+2?"),
                 Message("assistant", "4", reasoning="add"))  # fmt: skip
    text, trained, notes = masked(qwen3(), ex)
    assert "greet" not in text
    assert trained == ["yo<|im_end|>", "<think>\nadd\n</think>\n\n4<|im_end|>"]
    assert REASONING_DROPPED in notes


def test_qwen3_thinking_on_trains_the_empty_think_block_and_says_which_kwarg_moves_it():
    text, trained, notes = masked(qwen3(), thinking(None))
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n4<|im_end|>\n")
    assert trained == ["yo<|im_end|>", "<think>\n\n</think>\n\n4<|im_end|>"]
    assert notes == (
        Note(
            NoteCode.THINK_BOILERPLATE,
            "trains '<think>\\n\\n</think>\\n\\n', which the template writes into this turn after the generation prompt; "
            'chat_template_kwargs {"enable_thinking": false} moves it into the prompt',
        ),
    )


@pytest.mark.parametrize("where", ["build", "record"])
def test_qwen3_thinking_off_puts_the_empty_block_in_the_prompt(where):
    off = {"enable_thinking": False}
    if where == "build":
        text, trained, notes = masked(qwen3(), thinking(None), chat_template_kwargs=off)
    else:
        text, trained, notes = masked(qwen3(), thinking(None, kwargs=off), chat_template_kwargs={"enable_thinking": True})
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n4<|im_end|>\n")
    assert trained == ["yo<|im_end|>", "4<|im_end|>"]  # the block is what the inference prompt holds
    assert notes == ()


def test_glm_reasoning_and_thinking_off():
    text, trained, _ = masked(glm(), thinking())
    assert text == "[gMASK]<sop><|user|>\nhi<|assistant|>\n<think></think>\nyo<|user|>\n2+2?<|assistant|>\n<think>add them</think>\n4<|endoftext|>"
    assert trained == ["\n<think></think>\nyo<|user|>", "\n<think>add them</think>\n4<|endoftext|>"]
    text, trained, _ = masked(glm(), thinking(None), chat_template_kwargs={"enable_thinking": False})
    assert text == "[gMASK]<sop><|user|>\nhi/nothink<|assistant|>\n<think></think>\nyo<|user|>\n2+2?/nothink<|assistant|>\n<think></think>\n4<|endoftext|>"
    assert trained == ["\nyo<|user|>", "\n4<|endoftext|>"]


def test_template_that_never_writes_reasoning_rejects_the_record():
    assert masked(tokenizer("qwen2.5-instruct"), thinking()) == (
        "the chat template does not write reasoning (reasoning_content/thinking); the record would be trained without them: "
        "use a template that renders them"
    )


def test_markers_report_what_each_template_trains_and_how_it_stops():
    m = detect_role_markers(gptoss())
    assert (m.assistant_header, m.after_prompt, m.stops) == ("<|start|>assistant", "<|channel|>final<|message|>", ("<|return|>", "<|call|>", "<|end|>"))
    m = detect_role_markers(glm())
    assert (m.eot, m.stops, m.eos_appended, m.after_prompt) == ("", ("<|user|>", "<|observation|>"), "<|endoftext|>", "\n<think></think>\n")
    assert m.warnings[0] == (
        "writes no end-of-turn marker: a middle assistant turn is trained through the next turn's first header token "
        "('<|user|>', '<|observation|>'), and EOS '<|endoftext|>' is appended (trained) after the last turn"
    )
    m = detect_role_markers(qwen3(), {"enable_thinking": False})
    assert (m.assistant_header, m.after_prompt, m.thinking_kwarg) == ("<|im_start|>assistant\n<think>\n\n</think>\n\n", "", "")
    m = detect_role_markers(tokenizer("qwen2.5-instruct"))
    assert (m.renders_tools, m.tool_arguments, m.renders_reasoning, m.stops) == (True, "dict", False, ("<|im_end|>",))


# ---------------------------------------------------------------- options


def test_chat_template_kwargs_option_flag_and_fingerprint():
    from ftdata.cli.options import convert_flags

    assert convert_flags({"chat_template_kwargs": '{"enable_thinking": false}'}) == {"chat_template_kwargs": {"enable_thinking": False}}
    with pytest.raises(ConfigError, match=re.escape("--chat-template-kwargs takes a JSON object, e.g. --chat-template-kwargs")):
        convert_flags({"chat_template_kwargs": "{enable_thinking: false}"})
    with pytest.raises(ConfigError, match=re.escape("--chat-template-kwargs takes a JSON object ({...}), got '[1]'")):
        convert_flags({"chat_template_kwargs": "[1]"})
    with pytest.raises(ConfigError, match="chat_template_kwargs cannot set add_generation_prompt"):
        BuildOptions(chat_template_kwargs={"add_generation_prompt": True})
    on, off = (build_key([], DataOptions(chat_template_kwargs={"enable_thinking": v})) for v in (True, False))
    assert on != off
    assert DataOptions(mask_reasoning=True).fingerprint()["mask_reasoning"] is True


def test_build_kwargs_reach_every_render():
    """Marker detection, the prompts and the fallback renders all see the build's kwargs."""
    off = Renderer.from_options(qwen3(), DataOptions(chat_template_kwargs={"enable_thinking": False}))
    assert off.markers.assistant_header.endswith("<think>\n\n</think>\n\n")
    assert off.chat.kwargs == {"enable_thinking": False}


# ---------------------------------------------------------------- hypothesis: calls on Qwen2.5

NAMES = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True)
VALUES = st.one_of(st.text(max_size=8), st.integers(-5, 99), st.booleans(), st.none())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True, database=None)
@given(
    calls=st.lists(st.tuples(NAMES, st.dictionaries(NAMES, VALUES, max_size=3), st.booleans()), min_size=1, max_size=2),
    text=st.sampled_from(["", "Checking.", "  spaced  "]),
    answer=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12).filter(str.strip),
)
def test_random_calls_train_exactly_the_calls_and_answers(calls, text, answer):
    tok = tokenizer("qwen2.5-instruct")
    tool_calls = tuple(ToolCall(n, json.dumps(a) if as_string else a, f"c{i}") for i, (n, a, as_string) in enumerate(calls))
    tools = tuple({"type": "function", "function": {"name": n, "parameters": {}}} for n, _, _ in calls)
    ex = example(Message("user", "go"), Message("assistant", text, tool_calls=tool_calls),
                 *(Message("tool", "ok", tool_call_id=c.id) for c in tool_calls), Message("assistant", answer), tools=tools)  # fmt: skip
    out = masked(tok, ex)
    if isinstance(out, str):  # only a text the vocabulary cannot spell may fail
        assert "cannot spell" in out, out
        return
    _, trained, _ = out
    written = "".join(f'<tool_call>\n{{"name": "{n}", "arguments": {json.dumps(a, ensure_ascii=False)}}}\n</tool_call>' for n, a, _ in calls)
    first = f"{text}\n{written}" if text else written  # the content as written, spaces included
    # Qwen2.5 writes calls without a newline between them only for the first; later ones start on a new line.
    first = first.replace("</tool_call><tool_call>", "</tool_call>\n<tool_call>")
    assert trained == [f"{first}<|im_end|>", f"{answer.strip()}<|im_end|>"]


# ---------------------------------------------------------------- inspection: preview and build


def test_build_reports_the_think_block_advice_once_per_build():
    from ftdata import prepare

    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]} for i in range(3)]
    report = prepare(rows, tokenizer=qwen3()).report
    note = ("trains '<think>\\n\\n</think>\\n\\n', which the template writes into this turn after the generation prompt; "
            'chat_template_kwargs {"enable_thinking": false} moves it into the prompt')  # fmt: skip
    assert report.notes == {NoteCode.THINK_BOILERPLATE: 3}  # one line in the report, with its count
    assert report.note_texts == {NoteCode.THINK_BOILERPLATE: [note]}
    assert prepare(rows, tokenizer=qwen3(), chat_template_kwargs={"enable_thinking": False}).report.notes == {}


def preview_text(tok, examples, **options) -> str:
    """The plain (no-colour) preview of `examples`, as `ftdata preview --no-color` prints it."""
    import io

    from rich.console import Console

    from ftdata.run.stage import Stage
    from ftdata.cli.preview import Printer, build_view

    stage = Stage(tok, DataOptions(**options))
    out = io.StringIO()
    printer = Printer(Console(file=out, color_system=None, width=200), as_json=False, show_tokens=False)
    for n, (_, measured) in enumerate(stage.measure_examples([(0, e) for e in examples], responses=True), start=1):
        printer.record(n, build_view(stage, measured))
    return out.getvalue()


def test_preview_marks_tool_schemas_results_and_trained_calls():
    text = preview_text(glm(), [weather({"city": "Paris"})])
    assert "[gMASK]<sop>⟪<|system|>\n# Tools\n\nYou may call one or more functions" in text
    assert "</tool_call>⟫<|user|>\nWeather in Paris?<|assistant|>⟦\n<think></think>\n<tool_call>⦃get_weather⦄\n" in text
    assert "<arg_value>⦃Paris⦄</arg_value>\n</tool_call><|observation|>⟧\n<tool_response>\n⟨22C⟩\n</tool_response>" in text
    assert text.count("moves it into the prompt") == 1  # the advice once, not per turn


def test_preview_says_the_think_block_advice_once():
    assert preview_text(qwen3(), [thinking(None), thinking(None)]).count("moves it into the prompt") == 1


# ---------------------------------------------------------------- docs/masking.md previews

DOC_PREVIEWS = [
    ("gpt-oss (TRL's gptoss.jinja), reasoning in the last turn", gptoss, lambda: thinking(), {}),
    ("Qwen3 (TRL's qwen3.jinja), reasoning in the last turn", qwen3, lambda: thinking(), {}),
    ("Qwen3, thinking on (the default), no reasoning", qwen3, lambda: thinking(None), {}),
    ("Qwen3, thinking off: --chat-template-kwargs '{\"enable_thinking\": false}'", qwen3, lambda: thinking(None),
     {"chat_template_kwargs": {"enable_thinking": False}}),
    ("GLM-4-MoE (TRL's glm4moe.jinja), a tool call", glm, lambda: weather({"city": "Paris"}), {}),
    ("Qwen2.5 (qwen2.5-instruct) with tools", lambda: tokenizer("qwen2.5-instruct"),
     lambda: weather('{"city": "Paris"}', content="Let me check."), {}),
]  # fmt: skip


def doc_previews() -> str:
    """The 'after' previews of docs/masking.md: `ftdata preview --no-color` bodies (dates masked), notes and the
    rows of a split record as the preview prints them."""
    blocks = []
    for title, tok, ex, options in DOC_PREVIEWS:
        body = preview_text(tok(), [ex()], **options).split("\n", 2)[2]  # drop the record title line
        body = re.sub(r"\d{4}-\d{2}-\d{2}", "YYYY-MM-DD", body).rstrip("\n")
        blocks.append(f"**{title}**\n\n```text\n{body}\n```\n")
    return "\n".join(blocks)


def test_docs_show_the_generated_previews():
    from support import ROOT

    docs = (ROOT / "docs" / "masking.md").read_text(encoding="utf-8")
    assert doc_previews() in docs, "regenerate with: python tests/chat/test_chat_tools.py"


if __name__ == "__main__":
    print(doc_previews())


def test_yaml_config_takes_the_new_options(tmp_path):
    from ftdata.cli.options import resolve

    config = tmp_path / "build.yaml"
    config.write_text("chat_template_kwargs:\n  enable_thinking: false\nmask_reasoning: true\n", encoding="utf-8")
    options = resolve(data="d.jsonl", tokenizer=None, config=config, flags={}).options.data
    assert (options.chat_template_kwargs, options.mask_reasoning) == ({"enable_thinking": False}, True)
    with pytest.raises(ConfigError, match=r"chat_template_kwargs must be a mapping like \{'enable_thinking': False\}"):
        resolve(data="d.jsonl", tokenizer=None, config=None, flags={"chat_template_kwargs": "enable_thinking=false"})
