"""Published SFT sets read as their authors wrote them (tests/published/data/, shapes in README.md there).

Each fixture's records are written out below by hand as the conversation they mean (OpenAI messages + tool
schemas): the reader must give exactly those, and a build on a real tokenizer must train, row by row, what the
target chat template's own rendering of those messages says inference generates (`oracle.trajectory`, which
uses `apply_chat_template` and nothing of ftdata).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import oracle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import TOKENIZERS, tokenizer

from ftdata.errors import Location, RecordError
from ftdata.options import DataOptions
from ftdata.outcomes import NoteCode
from ftdata.records.formats import Columns, detect, to_examples
from ftdata.run.stage import Stage
from ftdata.run.sft import Measured

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")

DATA = Path(__file__).parent / "data"
PINNED = {"date_string": "26 Jul 2024"}


def records(name: str) -> list[Any]:
    path = DATA / name
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines()]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str, reasoning: str | None = None, calls: list[tuple[str, Any]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": text}
    if reasoning is not None:
        out["reasoning_content"] = reasoning
    if calls:
        out["tool_calls"] = [{"type": "function", "function": {"name": n, "arguments": a}} for n, a in calls]
    return out


def tool(name: str, text: str) -> dict[str, Any]:
    return {"role": "tool", "name": name, "content": text}


def schema(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    params = {"type": "object", "properties": properties, "required": required} if properties else {}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": params}}


SYMBOL = {"symbol": {"type": "string", "description": "The stock symbol of the company"}}
HERMES_TOOLS = [schema("get_stock_price", "Get the current stock price of a company", SYMBOL, ["symbol"]),
                schema("get_company_news", "Get the latest news about a company", SYMBOL, ["symbol"])]  # fmt: skip
RATE = {"base_currency": {"type": "string", "description": "The currency to convert from"},
        "target_currency": {"type": "string", "description": "The currency to convert to"}}  # fmt: skip
BMI = {"weight": {"type": "number", "description": "Weight in kilograms"},
       "height": {"type": "number", "description": "Height in meters"}}  # fmt: skip

# What each fixture record means, written out by hand: (file, index) -> (messages, tools).
EXPECTED: dict[tuple[str, int], tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {
    ("nemotron_post_training_sft.jsonl", 0): ([
        {"role": "system", "content": "detailed thinking on"},
        user("Solve the following math problem. Make sure to put the answer (and only answer) inside \\boxed{}.\n\n"
             "What is the sum of the first 5 positive odd integers?"),
        assistant("<think>\nThe first five positive odd integers are 1, 3, 5, 7 and 9. Their sum is 1 + 3 + 5 + 7 + 9 = "
                  "25, which is also 5 squared.\n</think>\n\nThe first five odd numbers add up to 5^2.\n\n\\boxed{25}")], []),
    ("nemotron_post_training_sft.jsonl", 1): ([
        {"role": "system", "content": "detailed thinking off"},
        user("Write a Python function that returns the square of a number."),
        assistant("```python\ndef square(x):\n    return x * x\n```")], []),
    ("nemotron_post_training_sft.jsonl", 2): ([
        {"role": "system", "content": "detailed thinking on"}, user("Hi there!"),
        assistant("Hello! How can I help you today?"), user("Name a primary colour."),
        assistant("<think>\nThe primary colours of light are red, green and blue; red is one.\n</think>\n\nRed.")], []),
    ("hermes_function_calling_v1.json", 0): ([
        user("What's the current price of Apple stock and any recent news about it?"),
        assistant("", calls=[("get_stock_price", {"symbol": "AAPL"}), ("get_company_news", {"symbol": "AAPL"})]),
        tool("get_stock_price", '{"name": "get_stock_price", "content": {"symbol": "AAPL", "price": 189.84}}'),
        tool("get_company_news", '{"name": "get_company_news", "content": {"headline": "Apple unveils new MacBook Pro"}}'),
        assistant("Apple (AAPL) trades at $189.84. In the news: Apple unveils new MacBook Pro.")], HERMES_TOOLS),
    ("hermes_function_calling_v1.json", 1): ([
        user("How is Microsoft stock doing?"), assistant("", calls=[("get_stock_price", {"symbol": "MSFT"})]),
        tool("get_stock_price", '{"name": "get_stock_price", "content": {"symbol": "MSFT", "price": 415.5}}'),
        assistant("Microsoft (MSFT) is at $415.50.")], HERMES_TOOLS),
    ("openthoughts_114k.jsonl", 0): ([
        {"role": "system", "content": records("openthoughts_114k.jsonl")[0]["system"]},
        user("Return your final response within \\boxed{}. What is 12 times 12?"),
        assistant("12 times 12 is 120 + 24.\n\n\\boxed{144}",
                  "Okay, 12 times 12. 12 times 10 is 120 and 12 times 2 is 24.\n\nSo the total is 120 + 24 = 144.")], []),
    ("openthoughts_114k.jsonl", 1): ([
        {"role": "system", "content": records("openthoughts_114k.jsonl")[1]["system"]},
        user("Is 7 a prime number?"), assistant("Yes, 7 is prime.", "Seven has no divisors other than 1 and itself.")], []),
    ("glaive_function_calling_v2.json", 0): ([
        user("Can you book a flight for me from New York to London?"),
        assistant("I'm sorry, but I don't have the capability to book flights. I can help you get the exchange rate "
                  "between two currencies."),
        user("What is the exchange rate from USD to EUR?"),
        assistant("", calls=[("get_exchange_rate", '{"base_currency": "USD", "target_currency": "EUR"}')]),
        tool("get_exchange_rate", '{"exchange_rate": 0.85}'),
        assistant("The current exchange rate from USD to EUR is 0.85.")],
        [schema("get_exchange_rate", "Get the exchange rate between two currencies", RATE, ["base_currency", "target_currency"])]),
    ("glaive_function_calling_v2.json", 1): ([
        {"role": "system", "content": "You are a helpful assistant, with no access to external functions."},
        user("What is the capital of France?"), assistant("The capital of France is Paris.")], []),
    ("glaive_function_calling_v2.json", 2): ([
        user("I weigh 70 kilograms and I am 1.75 meters tall. What is my BMI?"),
        assistant("", calls=[("calculate_bmi", '{"weight": 70, "height": 1.75}')]), tool("calculate_bmi", '{"bmi": 22.86}'),
        assistant("Your Body Mass Index (BMI) is 22.86, which is in the normal range.")],
        [schema("calculate_bmi", "Calculate the Body Mass Index", BMI, ["weight", "height"]),
         schema("get_random_joke", "Get a random joke", {}, [])]),
}  # fmt: skip
SHAPE = {"nemotron_post_training_sft.jsonl": "nemotron", "hermes_function_calling_v1.json": "hermes",
         "openthoughts_114k.jsonl": "openthoughts", "glaive_function_calling_v2.json": "glaive"}  # fmt: skip


def as_dicts(example) -> list[dict[str, Any]]:
    """An example's messages in the form of EXPECTED (calls with their arguments as the data gave them)."""
    out = []
    for m in example.messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.reasoning is not None:
            d["reasoning_content"] = m.reasoning
        if m.tool_calls:
            d["tool_calls"] = [{"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                               for c in m.tool_calls]  # fmt: skip
        if m.role == "tool":
            d["name"] = m.name
        out.append(d)
    return out


@pytest.mark.parametrize(("name", "index"), sorted(EXPECTED))
def test_each_published_record_is_detected_and_read_as_the_conversation_it_means(name: str, index: int) -> None:
    row = records(name)[index]
    assert detect(row, Columns()) == SHAPE[name]
    (example,) = to_examples(row, Location(name, index=index))
    messages, tools = EXPECTED[name, index]
    assert as_dicts(example) == messages
    assert list(example.tools) == tools
    assert (NoteCode.PUBLISHED_SHAPE in {n.code for n in example.notes}) == bool(tools)


def _qwen3():
    """Qwen2.5's tokenizer with TRL's qwen3 template and `<think>`/`</think>` as its tokens (a Qwen3 tokenizer)."""
    from test_chat_tools import template_tokenizer

    return template_tokenizer("qwen3", ("<think>", "</think>"))


TARGETS = {  # the templates each shape is trained on here: its tool calls / reasoning need a template that writes them
    "nemotron_post_training_sft.jsonl": ("qwen3", "llama-3.2-instruct"),
    "hermes_function_calling_v1.json": ("qwen3", "qwen2.5-instruct"),  # Llama 3.2: below
    "openthoughts_114k.jsonl": ("qwen3",),
    "glaive_function_calling_v2.json": ("qwen3", "qwen2.5-instruct"),
}


def _oracle_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """EXPECTED's messages as a template gets them: arguments given as JSON text parsed (both templates here write
    a dict as JSON), a tool result's name kept."""
    def parsed(call: dict[str, Any]) -> dict[str, Any]:
        name, args = call["function"]["name"], call["function"]["arguments"]
        return {"type": "function", "function": {"name": name, "arguments": json.loads(args) if isinstance(args, str) else args}}

    return [{**m, "tool_calls": [parsed(c) for c in m["tool_calls"]]} if m.get("tool_calls") else m for m in messages]


@pytest.mark.parametrize(("name", "target"), [(n, t) for n, ts in TARGETS.items() for t in ts])
def test_a_build_trains_what_the_target_template_writes_at_inference(name: str, target: str) -> None:
    tok = _qwen3() if target == "qwen3" else tokenizer(target)
    stage = Stage(tok, DataOptions(max_length=8192, chat_template_kwargs=PINNED))
    batch = [(Location(name, index=k), row) for k, row in enumerate(records(name))]
    outcomes = stage.run(batch).outcomes
    rejects = [(at, item.reason) for at, item, _ in outcomes if not isinstance(item, Measured)]
    assert not rejects
    for k in range(len(batch)):
        messages, tools = EXPECTED[name, k]
        rows = [(list(i.tokenized.input_ids), list(i.tokenized.labels)) for at, i, _ in outcomes if at == k]
        problems, fewest = oracle.trajectory(tok, _oracle_messages(messages), rows, tools=tools or None, kwargs=PINNED)
        assert not problems, (k, problems)
        assert fewest is None or len(rows) == fewest


def test_hermes_calls_are_trained_as_the_target_template_writes_them_not_as_hermes_text() -> None:
    tok = tokenizer("llama-3.2-instruct")
    stage = Stage(tok, DataOptions(max_length=8192, chat_template_kwargs=PINNED))
    parallel, single = records("hermes_function_calling_v1.json")
    (reject,) = (i for _, i, _ in stage.run([(Location("h", index=0), parallel)]).outcomes)
    assert "only supports single tool-calls at once" in reject.reason  # Llama 3.2's own refusal of two calls in a turn
    (item,) = (i for _, i, _ in stage.run([(Location("h", index=1), single)]).outcomes)
    text = tok.decode(item.tokenized.input_ids)
    trained = tok.decode([t for t, label in zip(item.tokenized.input_ids, item.tokenized.labels) if label != -100])
    assert "<tool_call>" not in text and "You are a function calling AI model" not in text
    assert '{"name": "get_stock_price", "parameters": {"symbol": "MSFT"}}<|eot_id|>' in trained
    assert '"description": "Get the latest news about a company"' in text  # the schemas, as Llama 3.2 writes them


@pytest.mark.parametrize(
    ("row", "field", "match"),
    [
        ({"input": [user("q")], "output": "a", "reasoning": "maybe"}, "reasoning", "must be 'on' or 'off'"),
        ({"input": [user("q")], "output": "<think>\nx\n</think>\n\na", "reasoning": "off"}, "output", "reasoning is 'off'"),
        ({"input": [{"role": "system", "content": "s"}, user("q")], "output": "a", "system_prompt": "detailed thinking on"},
         "system_prompt", "keep one of them"),
        ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "<tool_call>\nnot a call\n</tool_call>"}]},
         "conversations[1].value", "neither JSON nor a Python literal"),
        ({"system": "s", "conversations": [{"from": "user", "value": "q"},
                                            {"from": "assistant", "value": "<|begin_of_thought|>x<|end_of_thought|>y"}]},
         "conversations[1].value", "<|begin_of_solution|>"),
        ({"system": "SYSTEM: f -\n{\"name\": \"f\",}", "chat": "USER: q\n\n\nASSISTANT: a <|endoftext|>"}, "system", "not valid JSON"),
        ({"system": "SYSTEM: s", "chat": "hello\n\n\nASSISTANT: a"}, "chat", "must start with 'USER:'"),
    ],
)  # fmt: skip
def test_a_record_that_does_not_hold_what_its_shape_writes_is_a_located_error(row, field, match) -> None:
    with pytest.raises(RecordError, match=match) as caught:
        to_examples(row, Location("d.jsonl", line=3))
    assert caught.value.field == field and "d.jsonl:3" in str(caught.value)


def test_each_shape_can_be_named_and_a_record_without_markers_is_read_by_the_named_shape() -> None:
    plain = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    assert detect(plain, Columns()) == "sharegpt"
    (example,) = to_examples(plain, Location("d"), format="hermes")
    assert [(m.role, m.content) for m in example.messages] == [("user", "q"), ("assistant", "a")]
    with pytest.raises(RecordError, match="ShareGPT list"):
        to_examples({"messages": []}, Location("d"), format="openthoughts")


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8,
)


@settings(max_examples=40, deadline=None)
@given(name=st.from_regex(r"[a-z_]{1,12}", fullmatch=True), arguments=st.dictionaries(st.text(max_size=8), _VALUES, max_size=4))
def test_a_hermes_call_reads_the_same_whether_its_body_is_json_or_a_python_dict(name: str, arguments: dict[str, Any]) -> None:
    """Hermes v1 writes `<tool_call>` bodies as `repr` of a dict in some subsets and as JSON in others: both are the
    same call, with the arguments as given (a round trip through either form)."""
    def record(body: str) -> dict[str, Any]:
        return {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": f"<tool_call>\n{body}\n</tool_call>"}]}

    calls = []
    for body in (json.dumps({"arguments": arguments, "name": name}), repr({"arguments": arguments, "name": name})):
        (example,) = to_examples(record(body), Location("h.json", index=0))
        calls.append([(c.name, c.arguments) for c in example.messages[1].tool_calls])
    assert calls[0] == calls[1] == [(name, arguments)]


def test_the_nemotron_reader_builds_what_the_column_map_builds() -> None:
    """Out of the box (`format nemotron`, detected) and through the map (`--columns instruction=input,system=
    system_prompt`, test_mapping.py) a Nemotron record becomes the same tokens and labels."""
    import ftdata

    path, tok = DATA / "nemotron_post_training.jsonl", tokenizer("qwen2.5-instruct")
    detected = ftdata.build(str(path), tokenizer=tok).dataset.to_list()
    mapped = ftdata.build(str(path), tokenizer=tok, columns={"instruction": "input", "system": "system_prompt"}).dataset.to_list()
    assert [(r["input_ids"], r["labels"]) for r in detected] == [(r["input_ids"], r["labels"]) for r in mapped]
    assert detect(records("nemotron_post_training.jsonl")[0], Columns()) == "nemotron"
