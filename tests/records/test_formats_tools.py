"""Formats for tool use and reasoning: tool calls, tool results, tool schemas, reasoning, template kwargs."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import DATASETS

from ftdata.errors import ConfigError, Location, RecordError, UnusableRecord
from ftdata.records.formats import Columns, to_examples
from ftdata.io.readers import read_records
from ftdata.types import Example, Message, ToolCall
from ftdata.outcomes import Note, NoteCode

LOC = Location("d.jsonl", line=3)
GLAIVE = DATASETS / "sharegpt" / "llamafactory_glaive_toolcall_en_demo.json"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def one(row, **kw) -> Example:
    (example,) = to_examples(row, LOC, **kw)
    return example


def user(text="Weather in Paris?"):
    return {"role": "user", "content": text}


def test_openai_call_with_dict_arguments_and_null_content():
    row = {"messages": [
        user(),
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        {"role": "assistant", "content": "21 degrees."},
    ]}  # fmt: skip
    assert one(row).messages == (
        Message("user", "Weather in Paris?"),
        Message("assistant", "", tool_calls=(ToolCall("get_weather", {"city": "Paris"}, "call_1"),)),
        Message("tool", '{"temp": 21}', name="get_weather", tool_call_id="call_1"),
        Message("assistant", "21 degrees."),
    )


def test_string_arguments_are_kept_as_given_and_text_beside_a_call_stays():
    row = {"messages": [
        user(),
        {"role": "assistant", "content": "I will call a tool.",
         "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "name": "get_weather", "content": "sunny"},
        {"role": "assistant", "content": "Sunny."},
    ]}  # fmt: skip
    ex = one(row)
    assert ex.messages[1] == Message("assistant", "I will call a tool.", tool_calls=(ToolCall("get_weather", '{"city":"Paris"}'),))
    assert ex.messages[2] == Message("tool", "sunny", name="get_weather")


def test_flat_calls_missing_content_and_empty_string_content():
    row = [
        user(),
        {"role": "assistant", "tool_calls": [{"name": "ping", "arguments": None}]},
        {"role": "tool", "content": "pong"},
        {"role": "assistant", "content": "", "tool_calls": [{"name": "ping", "arguments": "{}", "id": "b"}]},
    ]
    ex = one(row)
    assert ex.format == "chat"
    assert [m.tool_calls for m in ex.messages if m.role == "assistant"] == [(ToolCall("ping", {}),), (ToolCall("ping", "{}", "b"),)]
    assert ex.messages[2].name == "ping"  # the only call before it


def test_parallel_calls_and_two_tool_turns_are_named_by_id():
    row = {"messages": [
        user("Weather in Paris and Rome?"),
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"id": "b", "type": "function", "function": {"name": "get_time", "arguments": {"city": "Rome"}}},
        ]},
        {"role": "tool", "tool_call_id": "b", "content": "12:00"},
        {"role": "tool", "tool_call_id": "a", "content": "21"},
        {"role": "assistant", "content": "21 degrees in Paris; noon in Rome."},
    ]}  # fmt: skip
    ex = one(row)
    assert [(m.role, m.name, m.tool_call_id) for m in ex.messages[2:4]] == [("tool", "get_time", "b"), ("tool", "get_weather", "a")]
    assert [c.name for c in ex.messages[1].tool_calls] == ["get_weather", "get_time"]


def test_tool_names_are_left_unset_when_they_cannot_be_determined():
    calls = [{"name": "f", "arguments": {}}, {"name": "g", "arguments": {}}]
    row = [user(), {"role": "assistant", "content": None, "tool_calls": calls}, {"role": "tool", "content": "both"}]
    assert one(row).messages[2] == Message("tool", "both")  # one result for two calls: which one is unknown


@pytest.mark.parametrize("key", ["reasoning_content", "thinking", "reasoning"])
def test_reasoning_keys(key):
    row = {"messages": [user("2+2?"), {"role": "assistant", "content": "4", key: "Add two and two."}]}
    assert one(row).messages[1] == Message("assistant", "4", reasoning="Add two and two.")


def test_blank_reasoning_is_none_and_think_tags_stay_in_content():
    row = {"messages": [user("2+2?"), {"role": "assistant", "content": "<think>add</think>4", "reasoning_content": " "}]}
    assert one(row).messages[1] == Message("assistant", "<think>add</think>4")


def test_tools_as_list_and_as_json_string_give_the_wrapped_form():
    bare = dict(WEATHER["function"])
    msgs = [user(), {"role": "assistant", "content": "Which city?"}]
    assert one({"messages": msgs, "tools": [WEATHER]}).tools == (WEATHER,)
    assert one({"messages": msgs, "tools": [bare]}).tools == (WEATHER,)
    assert one({"messages": msgs, "tools": json.dumps([bare])}).tools == (WEATHER,)
    assert one({"messages": msgs, "tools": [{"type": "function", **bare}]}).tools == (WEATHER,)  # Responses API style
    assert one({"messages": msgs, "tools": "[]"}).tools == ()
    assert one({"messages": msgs, "tools": None}).tools == ()


def test_chat_template_kwargs_column_as_object_or_json():
    msgs = [user(), {"role": "assistant", "content": "Which city?"}]
    assert one({"messages": msgs, "chat_template_kwargs": {"enable_thinking": False}}).template_kwargs == {"enable_thinking": False}
    assert one({"messages": msgs, "chat_template_kwargs": '{"enable_thinking": true}'}).template_kwargs == {"enable_thinking": True}
    assert one({"messages": msgs}).template_kwargs == {}
    ex = one({"instruction": "Q", "output": "A", "chat_template_kwargs": {"enable_thinking": False}})
    assert ex.template_kwargs == {"enable_thinking": False}


def test_rows_from_an_arrow_dataset_with_nulls_for_missing_keys():
    """datasets gives every row every key (null where a row lacks it): nulls read as absent."""
    import datasets

    calling = [
        user("q"),
        {"role": "assistant", "content": None, "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]},
        {"role": "tool", "tool_call_id": "a", "content": "1"},
        {"role": "assistant", "content": "done", "reasoning_content": "think"},
    ]  # fmt: skip
    rows = [
        {"messages": calling, "tools": [WEATHER], "chat_template_kwargs": {"enable_thinking": False}},
        {"messages": [user("q"), {"role": "assistant", "content": "a"}], "tools": [], "chat_template_kwargs": {}},
    ]
    arrow_rows = list(datasets.Dataset.from_list(rows))
    assert arrow_rows[1]["chat_template_kwargs"] == {"enable_thinking": None}
    first, second = (one(row) for row in arrow_rows)
    assert first.messages == (
        Message("user", "q"),
        Message("assistant", "", tool_calls=(ToolCall("f", '{"x": 1}', "a"),)),
        Message("tool", "1", name="f", tool_call_id="a"),
        Message("assistant", "done", reasoning="think"),
    )
    assert (first.tools, first.template_kwargs) == ((WEATHER,), {"enable_thinking": False})
    assert second.messages == (Message("user", "q"), Message("assistant", "a"))
    assert (second.tools, second.template_kwargs) == ((), {})


def test_column_map_for_tools_and_template_kwargs():
    row = {"messages": [user(), {"role": "assistant", "content": "ok"}], "my_tools": [WEATHER], "kw": {"x": 1}}
    ex = one(row, columns=Columns({"tools": "my_tools", "chat_template_kwargs": "kw"}))
    assert (ex.tools, ex.template_kwargs) == ((WEATHER,), {"x": 1})
    with pytest.raises(RecordError, match=r"field 'my_tools': is not valid JSON \(Expecting value at line 1 column 2\)"):
        one({**row, "my_tools": "[x]"}, columns=Columns({"tools": "my_tools"}))
    with pytest.raises(ConfigError, match="column map key must be one of chat_template_kwargs, .*tools"):
        Columns({"schemas": "x"})


def test_sharegpt_function_call_and_observation_become_a_call_and_its_result():
    row = {
        "conversations": [
            {"from": "human", "value": "Weather in Paris?"},
            {"from": "gpt", "value": "Let me check."},
            {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
            {"from": "observation", "value": '{"temp": 21}'},
            {"from": "gpt", "value": "21 degrees."},
        ],
        "tools": json.dumps([WEATHER["function"]]),
    }
    ex = one(row)
    assert ex.messages == (
        Message("user", "Weather in Paris?"),
        Message("assistant", "Let me check.", tool_calls=(ToolCall("get_weather", {"city": "Paris"}),)),
        Message("tool", '{"temp": 21}', name="get_weather"),
        Message("assistant", "21 degrees."),
    )
    assert ex.tools == (WEATHER,)
    assert Note(NoteCode.FUNCTION_CALL_JOINED, "a function_call turn joined the assistant text before it") in ex.notes


def test_sharegpt_function_call_with_a_list_of_calls():
    calls = [{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": '{"b": 2}'}]
    row = {"conversations": [
        {"from": "human", "value": "go"}, {"from": "function_call", "value": json.dumps(calls)},
        {"from": "observation", "value": "1"}, {"from": "observation", "value": "2"}, {"from": "gpt", "value": "done"},
    ]}  # fmt: skip
    ex = one(row)
    assert ex.messages[1] == Message("assistant", "", tool_calls=(ToolCall("f", {"a": 1}), ToolCall("g", '{"b": 2}')))
    assert [(m.role, m.name) for m in ex.messages[2:4]] == [("tool", "f"), ("tool", "g")]


def test_glaive_file_converts_every_record_with_its_calls_and_schemas():
    examples = [e for loc, row in read_records(GLAIVE) for e in to_examples(row, loc)]
    assert len(examples) == 300
    messages = [m for e in examples for m in e.messages]
    assert sum(len(m.tool_calls) for m in messages) == 211
    assert sum(1 for m in messages if m.role == "tool") == sum(1 for m in messages if m.role == "tool" and m.name) == 211
    assert sum(len(e.tools) for e in examples) == 219
    assert all(t["type"] == "function" and set(t) == {"type", "function"} for e in examples for t in e.tools)
    first = examples[0]
    assert first.messages[2:5] == (
        Message("user", "I have chicken, bell peppers, and rice."),
        Message("assistant", "", tool_calls=(ToolCall("search_recipes", {"ingredients": ["chicken", "bell peppers", "rice"]}),)),
        Message("tool", json.dumps({"recipes": [
            {"name": "Chicken and Bell Pepper Stir Fry", "ingredients": ["chicken", "bell peppers", "rice"],
             "instructions": "Cut the chicken into small pieces. Slice the bell peppers. Cook the rice. Stir fry the "
                             "chicken and bell peppers. Serve over rice."},
            {"name": "Chicken and Rice Casserole", "ingredients": ["chicken", "bell peppers", "rice"],
             "instructions": "Cook the chicken and rice separately. Mix them together with the bell peppers in a "
                             "casserole dish. Bake until golden brown."},
        ]}), name="search_recipes"),
    )  # fmt: skip
    assert [m.role for m in first.messages] == ["user", "assistant", "user", "assistant", "tool", "assistant", "user", "assistant"]
    assert first.tools == ({"type": "function", "function": {
        "name": "search_recipes", "description": "Search for recipes based on ingredients",
        "parameters": {"type": "object", "properties": {"ingredients": {
            "type": "array", "items": {"type": "string"}, "description": "The ingredients to search for"}},
            "required": ["ingredients"]},
    }},)  # fmt: skip


def _assistant_call(arguments):
    return [user(), {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": arguments}}]}]


@pytest.mark.parametrize(
    ("row", "error", "match"),
    [
        ({"messages": _assistant_call('{"city": Paris}')}, RecordError,
         r"d.jsonl:3: field 'messages\[1\].tool_calls\[0\].function.arguments': is not valid JSON "
         r"\(Expecting value at line 1 column 10\) in '\{\"city\": Paris\}'; give the arguments as an object or a JSON object string"),
        ({"messages": _assistant_call("[1, 2]")}, RecordError,
         r"field 'messages\[1\].tool_calls\[0\].function.arguments': must be a JSON object, got list \[1, 2\]"),
        ({"messages": _assistant_call(5)}, RecordError, r"function.arguments': must be a JSON object, got int 5"),
        ({"messages": [user(), {"role": "assistant", "content": "", "tool_calls": [{"arguments": {}}]}]}, RecordError,
         r"field 'messages\[1\].tool_calls\[0\].name': must be the function's name as a non-empty string, got None"),
        ({"messages": [user(), {"role": "assistant", "content": "", "tool_calls": {"name": "f"}}]}, RecordError,
         r"field 'messages\[1\].tool_calls': must be a list of calls, got dict"),
        ({"messages": [user(), {"role": "assistant", "content": None}]}, UnusableRecord,
         r"field 'messages\[1\]': empty assistant response"),
        ({"messages": [user(), {"role": "assistant", "content": "hi", "reasoning_content": 7}]}, RecordError,
         r"field 'messages\[1\].reasoning_content': must be a string, got int 7; give the reasoning as text"),
        ({"messages": [user(), {"role": "assistant", "content": "hi", "reasoning_content": "a", "thinking": "b"}]}, RecordError,
         r"field 'messages\[1\]': reasoning_content and thinking differ; keep one reasoning field"),
        ({"messages": [{"role": "user", "content": "q", "reasoning_content": "r"}, {"role": "assistant", "content": "a"}]},
         RecordError, r"field 'messages\[0\]': a user turn cannot carry tool calls or reasoning; move them to an assistant turn"),
        ({"messages": [user(), {"role": "tool", "content": "x"}, {"role": "assistant", "content": "a"}]}, RecordError,
         r"field 'messages\[1\]': a tool result must follow an assistant turn with tool_calls \(or another tool result\); "
         r"add the call to the assistant turn before it, or remove this turn"),
        ({"messages": [user(), {"role": "assistant", "content": "a"}, {"role": "tool", "content": "x"}]}, RecordError,
         r"field 'messages\[2\]': a tool result must follow"),
        ({"messages": [*_assistant_call({}), {"role": "assistant", "content": "a"}]}, RecordError,
         r"field 'messages\[2\]': two assistant turns in a row"),
        ({"messages": [user(), {"role": "assistant", "content": "", "tool_calls": [{"id": "a", "name": "f", "arguments": {}}]},
                       {"role": "tool", "tool_call_id": "z", "content": "x"}]}, RecordError,
         r"field 'messages\[2\].tool_call_id': tool_call_id 'z' answers no call of the assistant turn before it \(its call ids: a\); fix the id"),
        ({"messages": [user(), {"role": "assistant", "content": "a"}], "tools": '[{"name": "f",}]'}, RecordError,
         r"field 'tools': is not valid JSON \(Expecting property name enclosed in double quotes at line 1 column 15\)"),
        ({"messages": [user(), {"role": "assistant", "content": "a"}], "tools": {"name": "f"}}, RecordError,
         r"field 'tools': must be a list of tool schemas, got dict"),
        ({"messages": [user(), {"role": "assistant", "content": "a"}], "tools": [{"description": "d"}]}, RecordError,
         r"field 'tools\[0\].name': must be the function's name"),
        ({"messages": [user(), {"role": "assistant", "content": "a"}], "tools": [{"type": "web_search"}]}, RecordError,
         r"field 'tools\[0\].type': has type 'web_search'; only function tools are supported"),
        ({"messages": [user(), {"role": "assistant", "content": "a"}], "chat_template_kwargs": "[1]"}, RecordError,
         r"field 'chat_template_kwargs': must be an object of chat template arguments, got list \[1\]; "
         r"give an object such as \{\"enable_thinking\": false\}"),
        ({"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "get_weather(Paris)"}]},
         RecordError, r"field 'conversations\[1\].value': is not valid JSON \(Expecting value at line 1 column 1\)"),
        ({"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "[]"}]},
         RecordError, r"field 'conversations\[1\].value': is an empty list of calls"),
    ],
)  # fmt: skip
def test_errors_name_the_field_and_the_fix(row, error, match):
    with pytest.raises(error, match=match):
        one(row)


# Hypothesis: OpenAI conversations with tool calls come out carrying exactly the generated calls.
names = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True)
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | texts, lambda inner: st.lists(inner, max_size=3), max_leaves=5)
arguments = st.dictionaries(names, json_values, max_size=3)


@st.composite
def exchanges(draw):
    """One user turn, then an assistant turn that calls tools (results follow) or answers in text."""
    messages, expected = [], []
    question = draw(texts)
    messages.append({"role": "user", "content": question})
    expected.append(Message("user", question))
    for n in range(draw(st.integers(0, 3))):
        calls = draw(st.lists(st.tuples(names, arguments, st.booleans(), st.booleans()), min_size=1, max_size=3))
        text = draw(st.sampled_from([None, "", "Checking."]))
        wire, tool_calls = [], []
        for j, (name, args, as_string, flat) in enumerate(calls):
            call = ToolCall(name, json.dumps(args) if as_string else args, f"c{n}_{j}")
            function = {"name": call.name, "arguments": call.arguments}
            wire.append({"id": call.id, **function} if flat else {"id": call.id, "type": "function", "function": function})
            tool_calls.append(call)
        messages.append({"role": "assistant", "content": text, "tool_calls": wire})
        expected.append(Message("assistant", text or "", tool_calls=tuple(tool_calls)))
        for j, (name, *_) in enumerate(calls):
            result = draw(texts)
            messages.append({"role": "tool", "tool_call_id": f"c{n}_{j}", "content": result})
            expected.append(Message("tool", result, name=name, tool_call_id=f"c{n}_{j}"))
    answer = draw(texts.filter(str.strip))
    reasoning = draw(st.none() | texts.filter(str.strip))
    messages.append({"role": "assistant", "content": answer, "reasoning_content": reasoning})
    expected.append(Message("assistant", answer, reasoning=reasoning))
    return messages, expected


@settings(max_examples=60, deadline=None)
@given(st.lists(exchanges(), min_size=1, max_size=3))
def test_openai_conversations_round_trip(parts):
    messages = [m for wire, _ in parts for m in wire]
    expected = tuple(m for _, want in parts for m in want)
    ex = one({"messages": messages, "tools": [WEATHER]})
    assert ex.messages == expected
    assert [c for m in ex.messages for c in m.tool_calls] == [c for m in expected for c in m.tool_calls]
    assert ex.tools == (WEATHER,)
