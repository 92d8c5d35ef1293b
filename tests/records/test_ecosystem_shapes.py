"""Shapes the fine-tuning ecosystem writes (LLaMA-Factory v1 parts, ms-swift, KTO tags, plain text, per-message
supervision flags) build as what they are, and what a record holds that its rows do not carry is never silent."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings, strategies as st
from support import DATASETS, ROOT, make_char_tokenizer, tokenizer, trained_text

import ftdata
import ftdata.io.readers
from ftdata.errors import Location, RecordError, UnusableRecord
from ftdata.outcomes import NoteCode
from ftdata.records.formats import to_examples
from ftdata.types import Message, ToolCall

LOC = Location("d.jsonl", line=1)
IGNORE = -100


def one(row, **kw):
    (example,) = to_examples(row, LOC, **kw)
    return example


def user(text):
    return {"role": "user", "content": text}


def assistant(text, **kw):
    return {"role": "assistant", "content": text, **kw}


@pytest.fixture(scope="module")
def char_tok():
    return make_char_tokenizer()


# --- LLaMA-Factory v1 typed parts --------------------------------------------------------------------


def test_v1_reasoning_and_tool_call_parts_become_the_turns_own():
    row = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "value": "Weather in Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "reasoning", "value": "I should call the tool."},
                    {"type": "tool_call", "value": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
                ],
            },
            {"role": "tool", "content": [{"type": "text", "value": "18C"}]},
            {"role": "assistant", "content": [{"type": "text", "value": "It is "}, {"type": "text", "value": "18C."}]},
        ]
    }
    ex = one(row)
    assert ex.messages[1] == Message(
        "assistant", "", None, tool_calls=(ToolCall("get_weather", {"city": "Paris"}, None),),
        reasoning="I should call the tool.",
    )  # fmt: skip
    assert [m.content for m in ex.messages] == ["Weather in Paris?", "", "18C", "It is 18C."]
    assert ex.messages[2].name == "get_weather"  # the result names the call it answers


def test_v1_image_url_part_is_media_and_video_is_refused_by_name():
    ex = one({"messages": [{"role": "user", "content": [{"type": "image_url", "value": "cat.png"}, {"type": "text", "value": "What?"}]}, assistant("A cat.")]})  # fmt: skip
    assert [r.value for r in ex.messages[0].media] == ["cat.png"]
    with pytest.raises(RecordError, match=r"field 'messages\[0\]\.content\[0\]': is a video part"):
        one({"messages": [{"role": "user", "content": [{"type": "video_url", "value": "a.mp4"}]}, assistant("A cat.")]})


def test_reasoning_or_calls_given_twice_are_an_error():
    part = [{"type": "reasoning", "value": "think"}, {"type": "text", "value": "4"}]
    with pytest.raises(RecordError, match="reasoning both as a content part and as a field"):
        one({"messages": [user("2+2?"), {"role": "assistant", "content": part, "reasoning_content": "other"}]})
    call = [{"type": "tool_call", "value": {"name": "f", "arguments": {}}}]
    calls = [{"type": "function", "function": {"name": "g", "arguments": "{}"}}]
    with pytest.raises(RecordError, match="tool calls both as content parts and in tool_calls"):
        one({"messages": [user("go"), {"role": "assistant", "content": call, "tool_calls": calls}]})


def test_v1_demo_builds_every_record_and_notes_its_placeholders():
    path = DATASETS / "messages" / "llamafactory_v1_sft_demo.jsonl"
    # An independent count: the records whose assistant text holds a {{...}} placeholder.
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [" ".join(p["value"] for m in r["messages"] if m["role"] == "assistant" for p in m["content"]) for r in lines]
    expected = sum(bool(re.search(r"\{\{\s*\w+\s*\}\}", t)) for t in texts)
    result = ftdata.build(path)
    assert (result.report.records, result.report.n_rejected) == (500, 0)
    assert expected == 50 and result.report.notes[NoteCode.PLACEHOLDER] == expected
    assert "50 noted (50 placeholder)" in result.report.summary()
    assert any("{{name}}" in t for t in result.report.note_texts[NoteCode.PLACEHOLDER])


# --- ms-swift and Firefly exchanges; query/response/history ------------------------------------------


def test_swift_exchanges_are_a_user_then_an_assistant_turn_each():
    ex = one({"system": "Be terse.", "conversation": [{"human": "Hi", "assistant": "Hello."}, {"human": "2+2?", "assistant": "4"}]})  # fmt: skip
    assert [(m.role, m.content) for m in ex.messages] == [
        ("system", "Be terse."), ("user", "Hi"), ("assistant", "Hello."), ("user", "2+2?"), ("assistant", "4"),
    ]  # fmt: skip
    history = one({"system": "Be terse.", "query": "2+2?", "response": "4", "history": [["Hi", "Hello."]]})
    assert history.messages == ex.messages


def test_an_empty_turn_is_named_by_its_index():
    row = {"conversation": [{"human": "Hi", "assistant": "Hello."}, {"human": "And?", "assistant": "  "}, {"human": "x", "assistant": "y"}]}  # fmt: skip
    with pytest.raises(UnusableRecord, match=r"empty assistant response at messages\[3\] \(assistant turn 2 of 3, message 4 of 6\)"):  # fmt: skip
        one(row)


# --- KTO labels under their publishers' names --------------------------------------------------------


@pytest.mark.parametrize("name", ["label", "kto_tag", "tag"])
def test_a_bool_kto_label_builds_kto_rows(char_tok, name):
    records = [{"instruction": "2+2?", "output": "4", name: True}, {"instruction": "2+2?", "output": "5", name: False}]
    result = ftdata.build(records, tokenizer=char_tok)
    assert result.report.task == "kto" and f"true/false {name!r}" in result.report.task_reason
    assert [r["label"] for r in result.dataset.to_list()] == [True, False]
    sft = ftdata.build(records, tokenizer=char_tok, task="sft")
    assert sft.report.notes[NoteCode.UNUSED_COLUMN] == 2  # the label is not used, and the note says what uses it
    assert any("KTO rows read it" in t for t in sft.report.note_texts[NoteCode.UNUSED_COLUMN])


# --- plain text: language-modelling rows -------------------------------------------------------------


def test_text_records_are_documents_trained_whole_with_end_of_text(char_tok):
    docs = ["The quick fox.", "A second, longer document."]
    result = ftdata.build([{"text": d} for d in docs], tokenizer=char_tok, packing=True, max_length=128)
    (row,) = result.dataset.to_list()
    # The oracle: each document is BOS + its bytes + EOS (the char tokenizer is one token per byte).
    expected: list[int] = []
    for doc in docs:
        expected += char_tok(doc + "</s>", add_special_tokens=True)["input_ids"]
    assert row["input_ids"] == expected and row["seq_lengths"] == [len(d) + 2 for d in docs]
    assert [i for i, label in zip(row["input_ids"], row["labels"]) if label == IGNORE] == [char_tok.bos_token_id] * 2
    assert trained_text(char_tok, row) == "".join(d + "</s>" for d in docs)


def test_text_records_on_a_real_tokenizer_train_every_token_but_bos():
    tok = tokenizer("llama-3.2-instruct")
    result = ftdata.build([{"text": "Once upon a time, there was a fox."}], tokenizer=tok)
    (row,) = result.dataset.to_list()
    assert row["input_ids"] == tok("Once upon a time, there was a fox." + tok.eos_token)["input_ids"]
    assert row["labels"] == [IGNORE, *row["input_ids"][1:]]


# --- per-message supervision under the names publishers use ------------------------------------------


def _labels_by_turn(tok, record):
    (row,) = ftdata.build([record], tokenizer=tok).dataset.to_list()
    return trained_text(tok, row)


@pytest.mark.parametrize(
    ("first", "second"),
    [({"loss_mask": 0}, {"loss_mask": 1}), ({"trainable": False}, {"trainable": True}), ({"train": False}, {})],
)
def test_per_message_flags_train_only_the_turns_they_say(char_tok, first, second):
    record = {"messages": [user("Hi"), assistant("Bad.", **first), user("Again"), assistant("Good.", **second)]}
    assert _labels_by_turn(char_tok, record) == "Good.<|im_end|>"


def test_record_level_keep_loss(char_tok):
    record = {"messages": [user("Hi"), assistant("Bad."), user("Again"), assistant("Good.")], "keep_loss": [0, 0, 0, 1]}
    assert _labels_by_turn(char_tok, record) == "Good.<|im_end|>"
    with pytest.raises(RecordError, match=r"field 'keep_loss': must be a list of one true/false \(or 0/1\) per message: 4 messages, got 3 items"):  # fmt: skip
        one({**record, "keep_loss": [0, 0, 1]})
    with pytest.raises(RecordError, match=r"field 'keep_loss': is 1 but messages\[1\] says train=False; keep one"):
        one({**record, "messages": [user("Hi"), assistant("Bad.", loss_mask=0), user("Again"), assistant("Good.")], "keep_loss": [0, 1, 0, 1]})  # fmt: skip


def test_bad_or_contradicting_flags_are_errors():
    with pytest.raises(RecordError, match=r"field 'messages\[1\]\.loss_mask': is 2; a train flag is true/false or 0/1"):
        one({"messages": [user("Hi"), assistant("Yo", loss_mask=2)]})
    with pytest.raises(RecordError, match=r"field 'messages\[1\]': train and loss_mask differ; keep one train flag"):
        one({"messages": [user("Hi"), assistant("Yo", train=True, loss_mask=0)]})


# --- nothing present vanishes in silence ------------------------------------------------------------


def test_media_tags_and_columns_without_a_processor_are_refused_per_record():
    path = DATASETS / "audio" / "llamafactory_mllm_audio_demo.json"  # <audio> tags + an audios column
    with pytest.raises(ftdata.FtdataError, match=r"every record was rejected \(3 of 3\); first: .*\[0\]: the record has audios but the build has no processor; give --processor DIR"):  # fmt: skip
        ftdata.build(path)
    record = json.loads(path.read_text())[0]
    result = ftdata.build([record, {"instruction": "Q", "output": "A"}], max_reject_ratio=1.0)
    assert result.report.rejected == {"media_no_processor": 1} and len(result.dataset) == 1


def test_video_is_refused_and_scores_are_noted(char_tok):
    records = [
        {"instruction": "Describe it", "output": "A cat.", "videos": ["a.mp4"]},
        {"instruction": "Describe <video>", "output": "A cat."},
        {"instruction": "Rate", "output": "Fine.", "score": 8.5, "label": 3},
    ]
    result = ftdata.build(records, tokenizer=char_tok, max_reject_ratio=1.0)
    assert result.report.rejected == {"media_unsupported": 2}
    texts = result.report.note_texts[NoteCode.UNUSED_COLUMN]
    assert result.report.notes[NoteCode.UNUSED_COLUMN] == 1 and len(texts) == 2
    assert any("column 'score'" in t and "--task prompts" in t for t in texts)


@settings(max_examples=25, deadline=None)
@given(
    extra=st.dictionaries(st.sampled_from(["score", "rating", "label", "tag", "reward"]),
                          st.one_of(st.integers(-5, 5), st.floats(0, 10), st.text(min_size=1, max_size=5)), min_size=1),
    answer=st.text(st.characters(codec="utf-8", exclude_characters="{}<\ufffc"), min_size=1, max_size=20).filter(str.strip),
)  # fmt: skip
def test_an_unused_column_changes_notes_never_rows(extra, answer):
    tok = make_char_tokenizer()
    base = {"instruction": "Q", "output": answer}
    plain = ftdata.build([base], tokenizer=tok, task="sft").dataset.to_list()
    noted = ftdata.build([{**base, **extra}], tokenizer=tok, task="sft")
    assert noted.dataset.to_list() == plain
    assert noted.report.notes[NoteCode.UNUSED_COLUMN] == 1


def test_an_unreadable_row_names_the_nearest_fields():
    with pytest.raises(RecordError, match=r"columns are instrution, respone; map one with --columns instruction=COLUMN \(nearest: --columns instruction=instrution,output=respone\)$"):  # fmt: skip
        one({"instrution": "a", "respone": "b"})
    with pytest.raises(RecordError, match=r"columns are body; map one with --columns instruction=COLUMN$"):
        one({"body": "a"})


def test_swift_rejected_response_is_a_pair_against_the_last_reply(char_tok):
    record = {"messages": [{"role": "system", "content": "Be terse."}, user("2+2?"), assistant("4")], "rejected_response": "5"}  # fmt: skip
    (row,) = ftdata.build([record], tokenizer=char_tok).dataset.to_list()
    expected = ftdata.build([{"system": "Be terse.", "prompt": "2+2?", "chosen": "4", "rejected": "5"}], tokenizer=char_tok)
    assert row == expected.dataset.to_list()[0]
    with pytest.raises(RecordError, match="has rejected but no chosen"):  # no reply to set it against
        ftdata.build([{"messages": [user("2+2?")], "rejected_response": "5"}], tokenizer=char_tok)


def test_a_txt_file_is_one_document_a_line(tmp_path, char_tok):
    """LLaMA-Factory's pre-training data (`wiki_demo.txt`, `dataset_info.json`: `columns: {prompt: text}`), read as
    `datasets`' text loader reads it: a row `{"text": line}` a line; blank lines separate documents."""
    path = tmp_path / "wiki_demo.txt"
    path.write_text("First document.\n\nSecond one.\n", encoding="utf-8")
    result = ftdata.build(path, tokenizer=char_tok)
    assert [r["record"] for r in result.dataset.to_list()] == [f"{path}:1", f"{path}:3"]
    assert [trained_text(char_tok, r) for r in result.dataset.to_list()] == ["First document.</s>", "Second one.</s>"]
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("not data\n")
    (tmp_path / "folder" / "d.jsonl").write_text('{"text": "A doc."}\n')
    assert len(ftdata.build(tmp_path / "folder", tokenizer=char_tok).dataset) == 1  # a folder's .txt is its notes


def test_axolotl_segments_train_the_labelled_segments_as_written(char_tok):
    """axolotl's template-free `input_output` rows: no template, no end-of-text added, label false masked."""
    segments = [{"label": False, "text": "User: hi\n"}, {"label": True, "text": "Bot: hello!"}, {"label": False, "text": " [end]"}]  # fmt: skip
    (row,) = ftdata.build([{"segments": segments}], tokenizer=char_tok).dataset.to_list()
    assert row["input_ids"] == char_tok("User: hi\nBot: hello! [end]")["input_ids"]  # BOS + the bytes, nothing else
    assert trained_text(char_tok, row) == "Bot: hello!"
    with pytest.raises(UnusableRecord, match="no segment with label true"):
        one({"segments": [{"label": False, "text": "x"}]})
    with pytest.raises(RecordError, match=r"field 'segments\[0\]': label is 'yes'; give true or false"):
        one({"segments": [{"label": "yes", "text": "x"}]})


def test_swift_agent_call_turns_in_a_row_are_one_turn_of_parallel_calls():
    path = ROOT / "tests" / "published" / "data" / "swift_agent.jsonl"
    ((_, row),) = list(ftdata.io.readers.read_records(path))
    ex = one(row)
    assert [m.role for m in ex.messages] == ["user", "assistant", "tool", "tool", "assistant"]
    assert [(c.name, c.arguments) for c in ex.messages[1].tool_calls] == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]  # fmt: skip
    tok = tokenizer("qwen2.5-instruct")
    (built,) = ftdata.build(path, tokenizer=tok).dataset.to_list()
    assert trained_text(tok, built).count("<tool_call>") == 2


def test_verl_enable_thinking_column_is_the_records_template_kwarg():
    row = {"messages": [user("2+2?"), assistant("4")], "enable_thinking": False}
    assert one(row).template_kwargs == {"enable_thinking": False}
    with pytest.raises(RecordError, match=r"field 'enable_thinking': is 'no'; give true or false"):
        one({**row, "enable_thinking": "no"})
    with pytest.raises(RecordError, match="field 'enable_thinking'.*not also a different one in chat_template_kwargs"):
        one({**row, "chat_template_kwargs": {"enable_thinking": True}})
    # On Qwen3's template the empty think block is then prompt, as in the served prompt.
    tok = tokenizer("qwen2.5-instruct")
    path = ROOT / "tests" / "published" / "data" / "verl_multiturn_sft.parquet"
    rows = ftdata.build(path, tokenizer=tok, chat_template="qwen3").dataset.to_list()
    assert [trained_text(tok, r) for r in rows] == ["15% of 80 is 12.<|im_end|>", "20% of 80 is 16.<|im_end|>"]


def test_a_tokenized_row_says_so():
    with pytest.raises(RecordError, match=r"field 'input_ids': is already tokenized \(input_ids\); ftdata builds rows from text"):  # fmt: skip
        one({"input_ids": [1, 2, 3], "attention_mask": [1, 1, 1], "labels": [-100, 2, 3]})


def test_instruction_data_with_a_segments_or_text_column_stays_instruction_data():
    row = {"instruction": "Q", "output": "A", "segments": [{"start": 0, "end": 1}], "text": "### Q"}
    assert one(row).format == "instruction"
