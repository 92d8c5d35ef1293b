"""Every preference shape of issue 38 item 1, on real chat templates with tool calls and reasoning, pair by
pair against the oracle of tests/pair_oracle.py; and the pairs those templates cannot train right, rejected.

Templates: Qwen2.5 (tools), TRL's qwen3.jinja (reasoning and tools), Mistral-Nemo (tools; the system prompt
moved into the last user turn of an inference prompt), Llama 3.2 (tools, a date line), Gemma 3 (no tools)
and TRL's glm4moe.jinja (no end-of-turn marker: the EOS is appended after a reply, the tool's header after a call)."""

from __future__ import annotations

import json

import pytest
from pair_oracle import EOT, HANDOVER, check_row, expected
from support import TOKENIZERS, tokenizer
from test_chat_tools import glm, qwen3

import ftdata
from ftdata.errors import Location
from ftdata.options import DataOptions
from ftdata.outcomes import NoteCode, RejectCode
from ftdata.run.stage import Stage
from ftdata.run.preference import MeasuredPair
from ftdata.run.report import Reject

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")

SCHEMA = {"type": "function", "function": {"name": "get_weather", "description": "Get the weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}  # fmt: skip
CALL = {"type": "function", "id": "call00001", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
SYSTEM = {"role": "system", "content": "You answer in one short sentence."}


def user(text):
    return {"role": "user", "content": text}


def assistant(text, **kw):
    return {"role": "assistant", "content": text, **kw}


# (record in its shape, what it means: prompt messages, chosen reply, rejected reply, tools)
PLAIN = {
    "trl-standard": ({"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}, [user("What is 2+2?")], assistant("4"), assistant("5"), None),
    "alpaca": (
        {"instruction": "Add the numbers.", "input": "2 and 2", "chosen": "4", "rejected": "22"},
        [user("Add the numbers.\n\n2 and 2")], assistant("4"), assistant("22"), None,
    ),
    "trl-conversational": (
        {"prompt": [SYSTEM, user("Capital of France?")], "chosen": [assistant("Paris.")], "rejected": [assistant("Rome.")]},
        [SYSTEM, user("Capital of France?")], assistant("Paris."), assistant("Rome."), None,
    ),
    "trl-implicit": (
        {"chosen": [user("hi"), assistant("hello"), user("2+2?"), assistant("4")],
         "rejected": [user("hi"), assistant("hello"), user("2+2?"), assistant("22")]},
        [user("hi"), assistant("hello"), user("2+2?")], assistant("4"), assistant("22"), None,
    ),
    "ultrafeedback-binarized": (
        {"prompt": "Name a color.", "chosen": [user("Name a color."), assistant("Blue.")],
         "rejected": [user("Name a color."), assistant("Table.")], "score_chosen": 8.0, "score_rejected": 2.0},
        [user("Name a color.")], assistant("Blue."), assistant("Table."), None,
    ),
    "llamafactory-sharegpt": (
        {"conversations": [{"from": "system", "value": SYSTEM["content"]}, {"from": "human", "value": "Largest planet?"}],
         "chosen": {"from": "gpt", "value": "Jupiter."}, "rejected": {"from": "gpt", "value": "Mars."}},
        [SYSTEM, user("Largest planet?")], assistant("Jupiter."), assistant("Mars."), None,
    ),
    "anthropic-hh": (
        {"chosen": "\n\nHuman: Say hi.\n\nAssistant: Hi there!", "rejected": "\n\nHuman: Say hi.\n\nAssistant: No."},
        [user("Say hi.")], assistant("Hi there!"), assistant("No."), None,
    ),
    "ultrafeedback-raw": (
        {"instruction": "Name a fruit.", "completions": [{"response": "An apple.", "overall_score": 9}, {"response": "A rock.", "overall_score": 2}]},
        [user("Name a fruit.")], assistant("An apple."), assistant("A rock."), None,
    ),
}  # fmt: skip
TOOL_CALLS = {
    "conversational-tool-call": (
        {"prompt": [user("Weather in Paris?")], "chosen": [assistant("", tool_calls=[CALL])],
         "rejected": [assistant("I cannot check that.")], "tools": [SCHEMA]},
        [user("Weather in Paris?")], assistant("", tool_calls=[CALL]), assistant("I cannot check that."), [SCHEMA],
    ),
    "implicit-after-a-tool-result": (
        {"chosen": [user("Weather in Paris?"), assistant("", tool_calls=[CALL]),
                    {"role": "tool", "content": "22C", "tool_call_id": "call00001", "name": "get_weather"}, assistant("It is 22C.")],
         "rejected": [user("Weather in Paris?"), assistant("", tool_calls=[CALL]),
                      {"role": "tool", "content": "22C", "tool_call_id": "call00001", "name": "get_weather"}, assistant("It is cold.")],
         "tools": [SCHEMA]},
        [user("Weather in Paris?"), assistant("", tool_calls=[CALL]),
         {"role": "tool", "content": "22C", "tool_call_id": "call00001", "name": "get_weather"}],
        assistant("It is 22C."), assistant("It is cold."), [SCHEMA],
    ),
}  # fmt: skip
REASONING = {
    "implicit-with-reasoning": (
        {"chosen": [user("2+2?"), assistant("4", reasoning_content="Add two and two.")],
         "rejected": [user("2+2?"), assistant("5", reasoning_content="Guess.")]},
        [user("2+2?")], assistant("4", reasoning_content="Add two and two."), assistant("5", reasoning_content="Guess."), None,
    ),
}  # fmt: skip

# template -> (tokenizer factory, chat_template_kwargs, the shapes it renders)
TEMPLATES = {
    "qwen2.5-instruct": (lambda: tokenizer("qwen2.5-instruct"), None, PLAIN | TOOL_CALLS),
    "trl:qwen3": (qwen3, None, PLAIN | TOOL_CALLS | REASONING),
    "mistral-nemo-instruct-2407": (lambda: tokenizer("mistral-nemo-instruct-2407"), None, PLAIN | TOOL_CALLS),
    "llama-3.2-instruct": (lambda: tokenizer("llama-3.2-instruct"), {"date_string": "26 Jul 2024"}, PLAIN | TOOL_CALLS),
    "gemma-3-it": (lambda: tokenizer("gemma-3-it"), None, PLAIN),
    # no end-of-turn marker: a reply ends with the EOS appended, a call with the tool's header (`<|observation|>`)
    "trl:glm4moe": (glm, None, PLAIN | TOOL_CALLS | REASONING),
}
CASES = [(template, shape) for template, (_, _, shapes) in TEMPLATES.items() for shape in shapes]


def measure(tok, records, *, task="preference", kwargs=None) -> list:
    stage = Stage(tok, DataOptions(task=task, chat_template_kwargs=kwargs, max_length=8192))
    return [item for _, item, _ in stage.run([(Location("t.jsonl", line=i + 1), r) for i, r in enumerate(records)]).outcomes]


@pytest.mark.parametrize(("template", "shape"), CASES, ids=[f"{t}-{s}" for t, s in CASES])
def test_every_shape_builds_the_inference_prompt_and_each_reply_with_its_end_of_turn(template, shape) -> None:
    factory, kwargs, shapes = TEMPLATES[template]
    tok = factory()
    record, prompt, chosen, rejected, tools = shapes[shape]
    (item,) = measure(tok, [record], kwargs=kwargs)
    assert isinstance(item, MeasuredPair), item
    row = item.row
    for reply, completion in zip((chosen, rejected), row.completions):
        exp = expected(tok, EOT[template], prompt, reply, tools=tools, kwargs=kwargs, handover=HANDOVER.get(template))
        assert check_row(tok, exp, row.prompt, completion) == []
    if chosen.get("tool_calls"):  # the call as the template writes it, its arguments included
        assert "get_weather" in tok.decode(row.completions[0]) and "Paris" in tok.decode(row.completions[0])
    if chosen.get("reasoning_content"):
        assert "Add two and two." in tok.decode(row.completions[0])


@pytest.mark.parametrize("template", ["qwen2.5-instruct", "trl:qwen3", "mistral-nemo-instruct-2407"])
def test_kto_shapes_build_the_prompt_and_the_completion(template) -> None:
    factory, kwargs, _ = TEMPLATES[template]
    tok = factory()
    records = [
        {"prompt": "What is 2+2?", "completion": "4", "label": True},
        {"prompt": [user("Weather in Paris?")], "completion": [assistant("", tool_calls=[CALL])], "label": True, "tools": [SCHEMA]},
        {"messages": [SYSTEM, user("Largest planet?"), assistant("Mars.")], "label": False},
    ]
    meant = [([user("What is 2+2?")], assistant("4"), None), ([user("Weather in Paris?")], assistant("", tool_calls=[CALL]), [SCHEMA]),
             ([SYSTEM, user("Largest planet?")], assistant("Mars."), None)]  # fmt: skip
    items = measure(tok, records, task="kto", kwargs=kwargs)
    assert [item.row.label for item in items] == [True, True, False]
    for item, (prompt, reply, tools) in zip(items, meant):
        exp = expected(tok, EOT[template], prompt, reply, tools=tools, kwargs=kwargs)
        assert check_row(tok, exp, item.row.prompt, item.row.completions[0]) == []


def test_mistral_nemo_keeps_the_system_prompt_in_the_inference_prompt() -> None:
    tok = tokenizer("mistral-nemo-instruct-2407")
    record, prompt, *_ = PLAIN["trl-conversational"]
    (item,) = measure(tok, [record])
    text = tok.decode(item.row.prompt)
    assert text.endswith("[INST]You answer in one short sentence.\n\nCapital of France?[/INST]")
    # Its history form has no system prompt: each side is its inference prompt and the reply (a prompt row).
    assert item.rendered.method == "prefix" and "You answer in one short sentence." in item.rendered.text
    assert [tok.decode(c) for c in item.row.completions] == ["Paris.</s>", "Rome.</s>"]


def test_pairs_a_template_cannot_write_are_rejected_with_the_reason() -> None:
    qwen25 = tokenizer("qwen2.5-instruct")
    record = REASONING["implicit-with-reasoning"][0]
    (item,) = measure(qwen25, [record])  # Qwen2.5 writes no reasoning: the completion would lose it
    assert isinstance(item, Reject) and item.code is RejectCode.NOT_RENDERED and "reasoning" in item.reason
    gemma = tokenizer("gemma-3-it")
    (item,) = measure(gemma, [TOOL_CALLS["conversational-tool-call"][0]])
    assert isinstance(item, Reject) and item.code is RejectCode.NOT_RENDERED
    (item,) = measure(qwen25, [{"prompt": "hi<|im_start|>", "chosen": "a", "rejected": "b"}])
    assert isinstance(item, Reject) and item.code is RejectCode.CONTROL_TOKEN


def test_glm_a_final_call_hands_over_to_the_tool_with_the_header_that_stops_generation() -> None:
    """GLM writes no end-of-turn: at inference a call turn ends when the model writes the tool's header
    `<|observation|>`, a stop token of the model (as a reply ends with `<|user|>` or the EOS)."""
    tok = glm()
    (item,) = measure(tok, [TOOL_CALLS["conversational-tool-call"][0]])
    assert isinstance(item, MeasuredPair), item
    call, reply = (tok.decode(c) for c in item.row.completions)
    assert call.endswith("<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call><|observation|>")
    assert reply.endswith("I cannot check that.<|endoftext|>")
    assert tok.convert_tokens_to_ids("<|observation|>") == item.row.completions[0][-1]  # one token, the last


def test_qwen3_with_thinking_off_puts_the_empty_think_block_in_the_prompt() -> None:
    tok = qwen3()
    kwargs = {"enable_thinking": False}
    record, prompt, chosen, rejected, _ = PLAIN["trl-standard"]
    (item,) = measure(tok, [record], kwargs=kwargs)
    assert tok.decode(item.row.prompt).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert [tok.decode(c) for c in item.row.completions] == ["4<|im_end|>", "5<|im_end|>"]
    for reply, completion in zip((chosen, rejected), item.row.completions):
        assert check_row(tok, expected(tok, EOT["trl:qwen3"], prompt, reply, kwargs=kwargs), item.row.prompt, completion) == []


def test_a_pairs_history_is_prompt_as_inference_writes_it_with_no_note_on_turns_it_does_not_train() -> None:
    """Qwen3 drops a history turn's reasoning. A pair trains only its final turn: its prompt is the inference
    prompt (the history reasoning dropped, as at inference), and no note says a reasoning was dropped from a
    trained turn (the SFT rule notes it for a conversation whose history turns it trains or must locate)."""
    tok = qwen3()
    history = [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "reasoning_content": "greet back"},
        {"role": "user", "content": "2+2?"},
    ]  # fmt: skip
    side = {"role": "assistant", "content": "4", "reasoning_content": "add"}
    record = {"prompt": history, "chosen": [side], "rejected": [{**side, "content": "5", "reasoning_content": "guess"}]}
    (item,) = measure(tok, [record])
    assert isinstance(item, MeasuredPair), item
    assert tok.decode(item.row.prompt) == tok.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
    assert "greet back" not in tok.decode(item.row.prompt)
    assert [tok.decode(c) for c in item.row.completions] == ["<think>\nadd\n</think>\n\n4<|im_end|>", "<think>\nguess\n</think>\n\n5<|im_end|>"]
    assert item.tokenized.notes == ()
    sft = Stage(tok, DataOptions(mask="last_assistant", max_length=8192))  # nor for SFT: the turn is not trained
    ((_, row, _),) = sft.run([(Location("t.jsonl", line=1), {"messages": [*history, side]})]).outcomes
    assert row.tokenized.notes == ()
    sft = Stage(tok, DataOptions(history="one_row", max_length=8192))  # where it trains the turn as written
    ((_, row, _),) = sft.run([(Location("t.jsonl", line=1), {"messages": [*history, side]})]).outcomes
    assert [note.code for note in row.tokenized.notes] == [NoteCode.REASONING_DROPPED]


def test_a_build_of_every_shape_in_one_file_on_qwen3(tmp_path) -> None:
    """The shapes side by side in one JSONL file, detected per record, through `ftdata build`."""
    tok = qwen3()
    path = tmp_path / "mixed.jsonl"
    shapes = PLAIN | TOOL_CALLS | REASONING
    path.write_text("".join(json.dumps(record) + "\n" for record, *_ in shapes.values()), encoding="utf-8")
    result = ftdata.build(path, tokenizer=tok)
    assert result.report.sequences == len(shapes) and not result.report.rejected
    assert set(result.report.formats) == {"instruction", "conversational", "implicit", "sharegpt", "hh", "ultrafeedback"}
