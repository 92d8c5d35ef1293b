"""Preference records: every pair and KTO shape read per record, located rejects, the three real
LLaMA-Factory files, and Hypothesis round-trip and metamorphic properties."""

from __future__ import annotations

import collections
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import DATASETS

from ftdata.records.formats import Columns
from ftdata.errors import ConfigError, Location, RecordError, UnusableRecord
from ftdata.io.readers import read_records
from ftdata.outcomes import RejectCode
from ftdata.records.preference import detect_task, looks_like_preference, preference_columns, to_pairs, to_unpaired
from ftdata.types import Message, Pair, Task, ToolCall

LOC = Location("p.jsonl", line=3)
PREFERENCE = DATASETS / "preference"
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}]


def pair(row, **kw) -> Pair:
    (only,) = to_pairs(row, LOC, **kw)
    return only


def user(text):
    return Message("user", text)


def assistant(text, **kw):
    return Message("assistant", text, **kw)


def msg(role, content, **kw):
    return {"role": role, "content": content, **kw}


# --- one literal row per shape -------------------------------------------------------------------


def test_trl_standard_strings_are_an_instruction_pair():
    p = pair({"prompt": "The sky is", "chosen": " blue.", "rejected": " green."})
    assert p.prompt.format == "instruction"
    assert p.prompt.messages == (user("The sky is"),)
    assert (p.chosen, p.rejected) == (assistant(" blue."), assistant(" green."))
    assert (p.chosen_score, p.rejected_score) == (None, None)


def test_alpaca_instruction_and_input():
    p = pair({"instruction": "Add", "input": "1+1", "chosen": "2", "rejected": "11"})
    assert p.prompt.messages == (user("Add"),)
    assert p.prompt.context == "1+1"  # the prompt template places it; a chat template joins it to the user turn
    assert p.chosen_example().chat_messages() == [msg("user", "Add\n\n1+1"), msg("assistant", "2")]
    assert p.rejected == assistant("11")


def test_alpaca_system_and_history():
    p = pair({"system": "Be brief.", "history": [["Hi", "Hello!"]], "instruction": "Add", "chosen": "2", "rejected": "11"})
    assert p.prompt.messages == (Message("system", "Be brief."), user("Hi"), assistant("Hello!"), user("Add"))


def test_trl_conversational_explicit_prompt():
    row = {
        "prompt": [msg("system", "S"), msg("user", "What color is the sky?")],
        "chosen": [msg("assistant", "It is blue.")],
        "rejected": [msg("assistant", "It is green.")],
    }
    p = pair(row)
    assert p.prompt.format == "conversational"
    assert p.prompt.messages == (Message("system", "S"), user("What color is the sky?"))
    assert (p.chosen.content, p.rejected.content) == ("It is blue.", "It is green.")


def test_trl_implicit_prompt_is_the_common_prefix_of_whole_conversations():
    head = [msg("user", "Hi"), msg("assistant", "Hello"), msg("user", "Sky colour?")]
    p = pair({"chosen": [*head, msg("assistant", "Blue.")], "rejected": [*head, msg("assistant", "Green.")]})
    assert p.prompt.format == "implicit"
    assert p.prompt.messages == (user("Hi"), assistant("Hello"), user("Sky colour?"))
    assert (p.chosen, p.rejected) == (assistant("Blue."), assistant("Green."))


def test_ultrafeedback_binarized_keeps_scores_and_checks_the_prompt_text():
    # HuggingFaceH4/ultrafeedback_binarized: prompt text, whole conversations, a copy in `messages`, scores.
    chosen = [msg("user", "Name a prime."), msg("assistant", "7")]
    row = {
        "prompt": "Name a prime.", "prompt_id": "ab12", "chosen": chosen,
        "rejected": [msg("user", "Name a prime."), msg("assistant", "9")], "messages": chosen,
        "score_chosen": 8.5, "score_rejected": 3.0,
    }  # fmt: skip
    p = pair(row)
    assert p.prompt.messages == (user("Name a prime."),)
    assert (p.chosen.content, p.rejected.content, p.chosen_score, p.rejected_score) == ("7", "9", 8.5, 3.0)
    with pytest.raises(RecordError, match=r"p.jsonl:3: field 'prompt': is 'Name an even number.' but the conversations' last"):
        pair({**row, "prompt": "Name an even number."})


def test_llamafactory_sharegpt_pair_with_system_and_tools():
    row = {
        "conversations": [{"from": "human", "value": "Weather in Paris?"}],
        "chosen": {"from": "gpt", "value": "Let me check."},
        "rejected": {"from": "gpt", "value": "No idea."},
        "system": "You are helpful.", "tools": json.dumps(TOOLS),
    }  # fmt: skip
    p = pair(row)
    assert p.prompt.format == "sharegpt"
    assert p.prompt.messages == (Message("system", "You are helpful."), user("Weather in Paris?"))
    assert p.prompt.tools == tuple(TOOLS)
    assert (p.chosen, p.rejected) == (assistant("Let me check."), assistant("No idea."))


def test_llamafactory_sharegpt_function_call_side_is_a_tool_call_turn():
    row = {
        "conversations": [{"from": "human", "value": "Weather in Paris?"}],
        "chosen": {"from": "function_call", "value": '{"name": "weather", "arguments": {"city": "Paris"}}'},
        "rejected": {"from": "gpt", "value": "Sunny, surely."},
        "tools": TOOLS,
    }
    p = pair(row)
    assert p.chosen == assistant("", tool_calls=(ToolCall("weather", {"city": "Paris"}),))
    assert p.rejected.content == "Sunny, surely."


def test_llamafactory_v1_content_parts_and_loss_weights():
    def side(reply):
        return [
            {"role": "system", "content": [{"type": "text", "value": "S"}], "loss_weight": 0.0},
            {"role": "user", "content": [{"type": "text", "value": "Q"}], "loss_weight": 0.0},
            {"role": "assistant", "content": [{"type": "text", "value": reply}], "loss_weight": 1.0},
        ]

    p = pair({"chosen_messages": side("Good."), "rejected_messages": side(" Bad.")})
    assert p.prompt.messages == (Message("system", "S"), user("Q"))  # train flags are not a prompt's business
    assert (p.chosen, p.rejected) == (assistant("Good."), assistant(" Bad."))


def test_anthropic_hh_strings():
    head = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: What is 2+2?"
    p = pair({"chosen": head + "\n\nAssistant: 4.", "rejected": head + "\n\nAssistant: 5, I think."})
    assert p.prompt.format == "hh"
    assert p.prompt.messages == (user("Hi there"), assistant("Hello!"), user("What is 2+2?"))
    assert (p.chosen, p.rejected) == (assistant("4."), assistant("5, I think."))


def test_hh_prompt_with_bare_replies():
    # Dahoas/full-hh-rlhf: the prompt ends with "Assistant:", the sides are the bare replies.
    p = pair({"prompt": "\n\nHuman: Should I buy it?\n\nAssistant:", "chosen": " Compare prices first.", "rejected": " Yes."})
    assert p.prompt.messages == (user("Should I buy it?"),)
    assert (p.chosen.content, p.rejected.content) == ("Compare prices first.", "Yes.")


def test_hh_text_before_the_first_turn_is_an_error():
    with pytest.raises(RecordError, match=r"field 'chosen': has text 'Preamble' before its first 'Human:' turn"):
        pair({"chosen": "Preamble\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"})


def test_a_reply_quoting_a_transcript_is_text_not_hh():
    quoted = "Like this:\n\nHuman: hi\n\nAssistant: hello"
    p = pair({"prompt": "Show an HH transcript.", "chosen": quoted, "rejected": "No."})
    assert (p.prompt.format, p.prompt.messages, p.chosen.content) == ("instruction", (user("Show an HH transcript."),), quoted)


def test_ultrafeedback_raw_completions_best_against_worst():
    # openbmb/UltraFeedback rows: instruction + completions[{model, principle, custom_system_prompt, response, overall_score}]
    def completion(model, response, score):
        return {"model": model, "principle": "helpfulness", "custom_system_prompt": f"As {model}...",
                "response": response, "overall_score": score, "fine-grained_score": score / 2}  # fmt: skip

    row = {
        "source": "evol_instruct", "instruction": "Name a colour.", "models": ["a", "b", "c", "d"],
        "completions": [completion("a", "Red.", 6.0), completion("b", "Blue.", 9.0), completion("c", "Dunno", 2.0),
                        completion("d", "Green.", 9.0)],
    }  # fmt: skip
    p = pair(row)
    assert p.prompt.format == "ultrafeedback"
    assert p.prompt.messages == (user("Name a colour."),)
    assert (p.chosen.content, p.rejected.content, p.chosen_score, p.rejected_score) == ("Blue.", "Dunno", 9.0, 2.0)
    tied = {**row, "completions": [completion("a", "Red.", 5.0), completion("b", "Blue.", 5.0)]}
    with pytest.raises(UnusableRecord, match="every completion scores 5; neither is preferred") as info:
        pair(tied)
    assert info.value.code is RejectCode.NO_PREFERENCE


def test_reasoning_tool_calls_and_kwargs_are_kept():
    call = {"type": "function", "function": {"name": "weather", "arguments": {"city": "Oslo"}}}
    head = [msg("user", "Weather in Oslo?"), {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "content": "-3C"}]  # fmt: skip
    row = {
        "chosen": [*head, msg("assistant", "Cold: -3C.", reasoning_content="The tool says -3.")],
        "rejected": [*head, msg("assistant", "Warm.")],
        "tools": TOOLS, "chat_template_kwargs": {"enable_thinking": True},
    }  # fmt: skip
    p = pair(row)
    assert [m.role for m in p.prompt.messages] == ["user", "assistant", "tool"]
    assert p.prompt.messages[1].tool_calls == (ToolCall("weather", {"city": "Oslo"}),)
    assert p.prompt.messages[2].name == "weather"  # the result is named after the call it answers
    assert p.chosen == assistant("Cold: -3C.", reasoning="The tool says -3.")
    assert (p.prompt.tools, p.prompt.template_kwargs) == (tuple(TOOLS), {"enable_thinking": True})


def test_shared_completion_head_joins_the_prompt():
    # TRL conversational completions of several messages: the call and its result are equal on both
    # sides, so they are context; only the final turns differ.
    call = {"type": "function", "function": {"name": "weather", "arguments": "{}"}}
    done = [{"role": "assistant", "content": "", "tool_calls": [call]}, msg("tool", "sunny")]
    row = {"prompt": [msg("user", "Weather?")], "chosen": [*done, msg("assistant", "Sunny.")], "rejected": [*done, msg("assistant", "Rainy.")]}
    p = pair(row)
    assert [m.role for m in p.prompt.messages] == ["user", "assistant", "tool"]
    assert (p.chosen.content, p.rejected.content) == ("Sunny.", "Rainy.")


@pytest.mark.parametrize(
    "row",
    [
        {"prompt": "Q", "chosen": "A", "rejected": "B"},
        {"prompt": [msg("user", "Q")], "chosen": [msg("assistant", "A")], "rejected": [msg("assistant", "B")]},
        {"chosen": [msg("user", "Q"), msg("assistant", "A")], "rejected": [msg("user", "Q"), msg("assistant", "B")]},
        {"conversations": [{"from": "human", "value": "Q"}], "chosen": {"from": "gpt", "value": "A"}, "rejected": {"from": "gpt", "value": "B"}},
        {"chosen": "\n\nHuman: Q\n\nAssistant: A", "rejected": "\n\nHuman: Q\n\nAssistant: B"},
        {"instruction": "Q", "completions": [{"response": "A", "overall_score": 2}, {"response": "B", "overall_score": 1}]},
    ],
    ids=["instruction", "conversational", "implicit", "sharegpt", "hh", "ultrafeedback"],
)
def test_every_shape_keeps_tools_and_template_kwargs(row):
    p = pair({**row, "tools": TOOLS, "chat_template_kwargs": '{"enable_thinking": false}'})
    assert p.prompt.messages == (user("Q"),)
    assert (p.chosen.content, p.rejected.content) == ("A", "B")
    assert (p.prompt.tools, p.prompt.template_kwargs) == (tuple(TOOLS), {"enable_thinking": False})


def test_column_map_names_the_sides():
    p = pair({"question": "Q", "good": "A", "bad": "B"}, columns=preference_columns({"chosen": "good", "rejected": "bad"}))
    assert (p.prompt.messages, p.chosen.content, p.rejected.content) == ((user("Q"),), "A", "B")
    # An SFT column map is read again with the preference fields.
    p = pair({"q": "Q", "chosen": "A", "rejected": "B"}, columns=Columns({"instruction": "q"}))
    assert p.prompt.messages == (user("Q"),)
    with pytest.raises(ConfigError, match="column map key must be one of .*chosen"):
        preference_columns({"better": "x"})


def test_roles_map_applies_to_both_sides():
    row = {"chosen": [msg("customer", "Q"), msg("agent", "A")], "rejected": [msg("customer", "Q"), msg("agent", "B")]}
    p = pair(row, roles={"customer": "user", "agent": "assistant"})
    assert (p.prompt.messages, p.chosen.content) == ((user("Q"),), "A")


# --- rejects and errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "code", "message"),
    [
        ({"prompt": "Q", "chosen": "A", "rejected": "A"}, RejectCode.CHOSEN_IS_REJECTED,
         r"p.jsonl:3: field 'rejected': chosen and rejected are the same conversation"),
        ({"chosen": [msg("user", "Q1"), msg("assistant", "A")], "rejected": [msg("user", "Q2"), msg("assistant", "B")]},
         RejectCode.PROMPT_MISMATCH, r"field 'chosen\[0\]': the sides differ at message 0 \(user 'Q1' vs user 'Q2'\), a user turn the model does not "
         r"write; a pair diverges at an assistant turn"),
        ({"chosen": [msg("user", "Q"), msg("assistant", "A")], "rejected": [msg("user", "Q"), msg("assistant", "A"), msg("user", "more?"), msg("assistant", "B")]},
         RejectCode.PROMPT_MISMATCH, r"field 'rejected': one side is the other's start: they differ from message 2 \(nothing vs user 'more\?'\)"),
        ({"chosen": [msg("user", "Q"), msg("assistant", "A"), msg("user", "and?")], "rejected": [msg("user", "Q"), msg("assistant", "B")]},
         RejectCode.NOT_ASSISTANT_END, r"field 'chosen\[2\]': ends with a user turn"),
        ({"prompt": "Q", "chosen": "A", "rejected": "  "}, RejectCode.EMPTY_RESPONSE, r"field 'rejected': empty response"),
        ({"conversations": [{"from": "human", "value": "Q"}], "chosen": {"from": "gpt", "value": ""}, "rejected": {"from": "gpt", "value": "B"}},
         RejectCode.EMPTY_RESPONSE, r"field 'conversations\+chosen\[1\]': empty assistant response"),
        ({"prompt": "Q", "chosen": "A", "rejected": "B", "score_chosen": 4, "score_rejected": 4}, RejectCode.NO_PREFERENCE,
         r"field 'score_chosen': chosen and rejected both score 4; neither is preferred"),
    ],
    ids=["same", "prompts-differ", "one-side-goes-on", "ends-with-user", "empty-text", "empty-message", "tied-scores"],
)  # fmt: skip
def test_unusable_pairs_are_rejected_with_a_code(row, code, message):
    with pytest.raises(UnusableRecord, match=message) as info:
        pair(row)
    assert info.value.code is code


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "Q", "chosen": "A"}, r"field 'rejected': has chosen but no rejected; a pair needs both .* --columns chosen=COLUMN"),
        ({"prompt": "Q", "chosen": "A", "rejected": [msg("assistant", "B")]},
         r"field 'chosen': chosen is text and rejected is a list; give both as text"),
        ({"prompt": [msg("user", "Q")], "chosen": "A", "rejected": "B"},
         r"field 'prompt': is a list of messages but chosen and rejected are text; give each as \[\{\"role\": \"assistant\""),
        ({"chosen": [msg("assistant", "A")], "rejected": [msg("assistant", "B")]},
         r"field 'prompt': chosen and rejected hold only the replies .* must be a list of messages .*; give it, or give"),
        ({"chosen": [msg("user", "Q"), msg("assistant", "A")], "rejected": [msg("assistant", "B")]},
         r"field 'rejected': one side is a whole conversation and the other starts with the assistant's reply"),
        ({"chosen": {"from": "gpt", "value": "A"}, "rejected": {"from": "gpt", "value": "B"}},
         r"field 'conversations': chosen and rejected are single messages, so the prompt must be a conversations"),
        ({"prompt": "Q", "chosen": "A", "rejected": "B", "score_chosen": 1, "score_rejected": 9},
         r"field 'score_chosen': the chosen side scores 1, below the rejected side's 9"),
        ({"prompt": "Q", "chosen": "A", "rejected": "B", "score_chosen": 1}, r"field 'score_rejected': is missing"),
        ({"chosen_messages": [msg("user", "Q"), msg("assistant", "A", loss_weight=0.0)], "rejected_messages": [msg("user", "Q"), msg("assistant", "B")]},
         r"field 'chosen_messages\[1\]': a preference completion is trained whole"),
        ({"chosen": [msg("user", "Q"), msg("robot", "A")], "rejected": [msg("user", "Q"), msg("assistant", "B")]},
         r"field 'chosen\[1\].role': unknown role 'robot'"),
        (["not", "an", "object"], r"expected an object with chosen and rejected, got list"),
    ],
    ids=["one-side", "mixed-types", "list-prompt-text-sides", "no-prompt", "mixed-forms", "no-conversations", "scores-reversed", "one-score",
         "untrained-completion", "unknown-role", "not-an-object"],
)  # fmt: skip
def test_malformed_pairs_name_the_field_and_the_fix(row, message):
    with pytest.raises(RecordError, match=message) as info:
        pair(row)
    assert not isinstance(info.value, UnusableRecord)


def test_a_reader_error_row_is_raised():
    error = RecordError("duplicate key", location=LOC)
    with pytest.raises(RecordError, match="duplicate key"):
        to_pairs(error, LOC)
    with pytest.raises(RecordError, match="duplicate key"):
        to_unpaired(error, LOC)


# --- KTO -----------------------------------------------------------------------------------------


def test_kto_trl_standard_and_conversational():
    (r,) = to_unpaired({"prompt": "The sky is", "completion": " blue.", "label": True}, LOC)
    assert (r.prompt.messages, r.completion, r.label, r.prompt.format) == ((user("The sky is"),), assistant(" blue."), True, "instruction")
    row = {"prompt": [msg("user", "Q")], "completion": [msg("assistant", "A")], "label": False}
    (r,) = to_unpaired(row, LOC)
    assert (r.prompt.messages, r.completion.content, r.label, r.prompt.format) == ((user("Q"),), "A", False, "conversational")
    assert r.example().messages == (user("Q"), assistant("A"))


def test_kto_llamafactory_messages_and_label():
    row = {"messages": [msg("user", "Q1"), msg("assistant", "A1"), msg("user", "Q2"), msg("assistant", "A2")], "label": False}
    (r,) = to_unpaired(row, LOC)
    assert r.prompt.messages == (user("Q1"), assistant("A1"), user("Q2"))
    assert (r.completion, r.label, r.prompt.format) == (assistant("A2"), False, "messages")


def test_kto_reads_a_pair_as_two_records():
    chosen, rejected = to_unpaired({"prompt": "Q", "chosen": "A", "rejected": "B"}, LOC)
    assert (chosen.completion.content, chosen.label, rejected.completion.content, rejected.label) == ("A", True, "B", False)
    assert chosen.prompt == rejected.prompt


@pytest.mark.parametrize(("label", "expected"), [(True, True), ("false", False), ("True", True), (1, True), (0, False)])
def test_kto_labels(label, expected):
    (r,) = to_unpaired({"prompt": "Q", "completion": "A", "label": label}, LOC)
    assert r.label is expected


@pytest.mark.parametrize(
    ("row", "error", "message"),
    [
        ({"prompt": "Q", "completion": "A", "label": "maybe"}, RecordError, r"field 'label': must be true \(desirable\) or false"),
        ({"prompt": "Q", "completion": "A"}, RecordError, r"field 'label': no label; KTO needs label true .* --columns label=COLUMN"),
        ({"prompt": "Q", "label": True}, RecordError, r"field 'completion': no completion and no messages"),
        ({"prompt": "Q", "completion": [msg("assistant", "A")], "label": True}, RecordError, r"field 'prompt': completion is a list of messages, so"),
        ({"messages": [msg("user", "Q"), msg("assistant", "A"), msg("user", "ok?")], "label": True}, UnusableRecord,
         r"field 'messages\[2\]': ends with a user turn; the completion must be the assistant's turn"),
        ({"prompt": "Q", "completion": "", "label": True}, UnusableRecord, r"field 'completion': empty response"),
    ],
    ids=["bad-label", "no-label", "no-completion", "mixed", "ends-with-user", "empty"],
)  # fmt: skip
def test_kto_errors(row, error, message):
    with pytest.raises(error, match=message):
        to_unpaired(row, LOC)


# --- detection -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "task"),
    [
        ({"prompt": "Q", "chosen": "A", "rejected": "B"}, Task.PREFERENCE),
        ({"instruction": "Q", "output": "A", "rejected": "B"}, Task.PREFERENCE),  # a broken pair is still not SFT data
        ({"chosen_messages": [], "rejected_messages": []}, Task.PREFERENCE),
        ({"instruction": "Q", "completions": [{"response": "A", "overall_score": 1}]}, Task.PREFERENCE),
        ({"prompt": "Q", "completion": "A", "label": True}, Task.KTO),
        ({"messages": [msg("user", "Q"), msg("assistant", "A")], "label": False}, Task.KTO),
        ({"conversations": [], "label": "true"}, Task.KTO),
        ({"instruction": "Q", "output": "A"}, None),
        ({"messages": [msg("user", "Q"), msg("assistant", "A")], "label": "positive"}, None),  # a class label
        ({"text": "Great film", "label": 1}, None),  # classification data: 0/1 is a class, and there is no response
        ({"instruction": "Q", "output": "A", "label": 0}, None),
        ({"instruction": "Q", "completions": "A"}, None),
        ([msg("user", "Q"), msg("assistant", "A")], None),
    ],
)  # fmt: skip
def test_looks_like_preference(row, task):
    assert looks_like_preference(row) is task


def test_detect_task_reads_a_json_bool_label_as_kto_and_asks_about_text():
    assert detect_task({"instruction": "Q", "output": "A"}, LOC) is Task.SFT
    assert detect_task({"prompt": "Q", "chosen": "A", "rejected": "B"}, LOC) is Task.PREFERENCE
    assert detect_task({"prompt": "Q", "completion": "A", "label": True}, LOC) is Task.KTO  # TRL's unpaired rows
    # LLaMA-Factory: messages + label (its kto_en_demo), alpaca rows + kto_tag / tag (its docs' KTO example)
    assert detect_task({"messages": [msg("user", "Q"), msg("assistant", "A")], "label": True}, LOC) is Task.KTO
    assert detect_task({"instruction": "Q", "output": "A", "kto_tag": False}, LOC) is Task.KTO
    assert detect_task({"instruction": "Q", "output": "A", "tag": True}, LOC) is Task.KTO
    assert detect_task({"instruction": "Q", "output": "A", "tag": "math"}, LOC) is Task.SFT  # a category, not a label
    for row in ({"messages": [msg("user", "Q"), msg("assistant", "A")], "label": "false"}, {"prompt": "Q", "completion": "A", "label": "true"}):
        with pytest.raises(RecordError, match=r"p.jsonl:3: field 'label': a label written as text \('(true|false)'\) beside a completion: .* --task kto .* --task sft"):
            detect_task(row, LOC)


# --- the real LLaMA-Factory files ----------------------------------------------------------------


def _read(name, read):
    return [(loc, read(row, loc)) for loc, row in read_records(PREFERENCE / name)]


def test_llamafactory_dpo_demo_all_300_pairs():
    rows = _read("llamafactory_dpo_en_demo.json", to_pairs)
    pairs = [p for _, (p,) in rows]
    assert len(pairs) == 300 and {p.prompt.format for p in pairs} == {"sharegpt"}
    assert collections.Counter(len(p.prompt.messages) for p in pairs) == {1: 114, 2: 80, 3: 1, 5: 57, 7: 46, 9: 1, 13: 1}
    assert sum(p.prompt.messages[0].role == "system" for p in pairs) == 80
    first = pairs[0]
    assert first.prompt.messages[0].content.startswith("Hi! I'd like to create a new language game")
    assert first.chosen.content.startswith("That sounds like a fun and engaging idea!")
    assert all(p.prompt.messages[-1].role == "user" and p.chosen != p.rejected for p in pairs)
    # Read for KTO, each pair is two records.
    assert collections.Counter(r.label for _, records in _read("llamafactory_dpo_en_demo.json", to_unpaired) for r in records) == {True: 300, False: 300}


def test_llamafactory_v1_dpo_demo_all_10_pairs():
    pairs = [p for _, (p,) in _read("llamafactory_v1_dpo_demo.jsonl", to_pairs)]
    assert len(pairs) == 10 and {p.prompt.format for p in pairs} == {"implicit"}
    assert {tuple(m.role for m in p.prompt.messages) for p in pairs} == {("system", "user")}
    assert pairs[0].chosen.content.startswith("Abdulah Hasanagic is the proud owner")
    assert all(p.rejected.content.startswith(" ") for p in pairs)  # the data's own leading space, kept


def test_llamafactory_kto_demo_all_300_records():
    records = [r for _, (r,) in _read("llamafactory_kto_en_demo.json", to_unpaired)]
    assert len(records) == 300 and {r.prompt.format for r in records} == {"messages"}
    assert collections.Counter(r.label for r in records) == {True: 150, False: 150}
    assert collections.Counter(len(r.prompt.messages) for r in records) == {1: 223, 3: 3, 5: 47, 7: 22, 9: 1, 11: 4}
    assert records[0].completion.content.startswith("Ooh ooh ah ah!")
    # Without --task, its JSON true/false `label` makes it KTO, never SFT.
    (loc, row), *_ = read_records(PREFERENCE / "llamafactory_kto_en_demo.json")
    assert looks_like_preference(row) is Task.KTO and detect_task(row, loc) is Task.KTO


# --- properties ----------------------------------------------------------------------------------

# Text the HH shape can carry too: no ':' (no turn marker can appear), stripped, not empty.
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters=":") | st.sampled_from("\n "), max_size=12)
CONTENT = TEXT.map(str.strip).filter(bool)
SHAPES = ("instruction", "conversational", "implicit", "sharegpt", "hh")


def _row(shape: str, history: list[tuple[str, str]], asked: str, chosen: str, rejected: str) -> dict:
    """A raw row of `shape`: the exchanges of `history`, then `asked`, then the two replies."""
    turns = [m for u, a in history for m in (msg("user", u), msg("assistant", a))] + [msg("user", asked)]
    if shape == "instruction":
        return {"instruction": asked, "history": [list(h) for h in history], "chosen": chosen, "rejected": rejected}
    if shape == "conversational":
        return {"prompt": turns, "chosen": [msg("assistant", chosen)], "rejected": [msg("assistant", rejected)]}
    if shape == "implicit":
        return {"chosen": [*turns, msg("assistant", chosen)], "rejected": [*turns, msg("assistant", rejected)]}
    if shape == "sharegpt":
        speaker = {"user": "human", "assistant": "gpt"}
        return {"conversations": [{"from": speaker[t["role"]], "value": t["content"]} for t in turns],
                "chosen": {"from": "gpt", "value": chosen}, "rejected": {"from": "gpt", "value": rejected}}  # fmt: skip
    head = "".join(f"\n\n{'Human' if t['role'] == 'user' else 'Assistant'}: {t['content']}" for t in turns)
    return {"chosen": f"{head}\n\nAssistant: {chosen}", "rejected": f"{head}\n\nAssistant: {rejected}"}


pairs_of = st.tuples(st.sampled_from(SHAPES), st.lists(st.tuples(CONTENT, CONTENT), max_size=3), CONTENT, CONTENT, CONTENT)


@settings(max_examples=150, deadline=None)
@given(pairs_of)
def test_prompt_and_each_side_reconstruct_that_side(case):
    shape, history, asked, chosen, rejected = case
    row = _row(shape, history, asked, chosen, rejected)
    expected = tuple(m for u, a in history for m in (user(u), assistant(a))) + (user(asked),)
    if chosen == rejected:
        with pytest.raises(UnusableRecord) as info:
            pair(row)
        assert info.value.code is RejectCode.CHOSEN_IS_REJECTED
        return
    p = pair(row)
    assert p.prompt.format == shape
    assert p.chosen_example().messages == (*expected, assistant(chosen))
    assert p.rejected_example().messages == (*expected, assistant(rejected))


@settings(max_examples=150, deadline=None)
@given(pairs_of, st.data())
def test_editing_the_rejected_reply_never_changes_the_prompt_or_the_chosen_reply(case, data):
    shape, history, asked, chosen, rejected = case
    if chosen == rejected:
        return
    before = pair(_row(shape, history, asked, chosen, rejected))
    at = data.draw(st.integers(0, len(rejected) - 1))
    edited = rejected[:at] + data.draw(TEXT.filter(lambda c: len(c) == 1)) + rejected[at + 1 :]
    try:
        after = pair(_row(shape, history, asked, chosen, edited))
    except UnusableRecord as exc:  # the edit made the sides equal, or blanked the reply
        assert exc.code in (RejectCode.CHOSEN_IS_REJECTED, RejectCode.EMPTY_RESPONSE)
        return
    assert (after.prompt, after.chosen) == (before.prompt, before.chosen)
