"""Span-level and weighted supervision: Axolotl's `train_detail`, per-message `loss_weight`,
and the `loss_weights` column (ftdata/chat/supervision.py, masking, output)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import make_char_tokenizer, tokenizer

from ftdata import build_sft_dataset
from ftdata.errors import RecordError
from ftdata.outcomes import NoteCode
from ftdata.run.stage import Stage
from ftdata.options import DataOptions

CHAR_TOK = make_char_tokenizer()

# Axolotl's own case: tests/prompt_strategies/test_chat_templates_advanced.py::test_message_field_training
# (axolotl-ai-cloud/axolotl): end_offset is inclusive, so [9..18] is " very well".
AXOLOTL_CONTENT = "I'm doing very well, thank you!"
AXOLOTL_DETAIL = [
    {"begin_offset": 0, "end_offset": 8, "train": False},
    {"begin_offset": 9, "end_offset": 18, "train": True},
    {"begin_offset": 19, "end_offset": 30, "train": False},
]


def runs(tok, row) -> list[str]:
    """The decoded runs of consecutive trained tokens of a row."""
    out, cur = [], []
    for token, label in zip(row["input_ids"], row["labels"]):
        if label != -100:
            cur.append(token)
        elif cur:
            out.append(tok.decode(cur))
            cur = []
    return [*out, tok.decode(cur)] if cur else out


def conversation(detail=None, weight=None, content=AXOLOTL_CONTENT):
    assistant = {"role": "assistant", "content": content}
    if detail is not None:
        assistant["train_detail"] = detail
    if weight is not None:
        assistant["loss_weight"] = weight
    return {"messages": [{"role": "user", "content": "How are you?"}, assistant]}


@pytest.mark.parametrize(
    ("name", "closer"), [("qwen2.5-instruct", "<|im_end|>"), ("llama-3-8b-instruct", "<|eot_id|>")]
)
def test_axolotl_train_detail_case_on_real_tokenizers(name, closer):
    tok = tokenizer(name)
    (row,) = build_sft_dataset([conversation(AXOLOTL_DETAIL)], tokenizer=tok)
    # The span's words, then the end-of-turn marker (Axolotl's default train_on_eos: turn).
    assert runs(tok, row) == [" very well", closer]


def test_train_detail_on_the_reversible_tokenizer():
    tok = make_char_tokenizer()  # one token per byte: the trained text is exactly the spans' characters
    detail = [{"begin_offset": 0, "end_offset": 2, "train": True}, {"begin_offset": 5, "end_offset": 6, "train": True}]
    (row,) = build_sft_dataset([conversation(detail, content="abc def gh")], tokenizer=tok)
    assert runs(tok, row) == ["abc", "ef", "<|im_end|>"]  # characters not in a train span carry no loss


def test_a_span_edge_inside_a_token_keeps_the_token_trained_with_a_note():
    tok = tokenizer("qwen2.5-instruct")
    # "unbelievable" is several BPE tokens; an edge after "u" falls inside the first one.
    stage = Stage(tok, DataOptions())
    row = conversation([{"begin_offset": 0, "end_offset": 0, "train": True}], content="unbelievable results")
    (outcome,) = stage.measure([(None, row)])
    measured = outcome[1]
    labels, ids = measured.tokenized.labels, measured.tokenized.input_ids
    trained = [tok.decode([i]) for i, label in zip(ids, labels) if label != -100]
    first = tok.decode(tok("unbelievable", add_special_tokens=False)["input_ids"][:1])
    assert trained == [first, "<|im_end|>"]  # the whole token holding "u", as Axolotl widens a span to tokens
    assert NoteCode.TRAIN_DETAIL_WIDENED in {n.code for n in measured.tokenized.notes}


def test_a_build_without_weights_has_no_weights_column_and_unchanged_rows():
    tok = tokenizer("qwen2.5-instruct")
    plain = build_sft_dataset([conversation()], tokenizer=tok)
    assert plain.column_names == ["input_ids", "attention_mask", "labels", "record"]
    weighted = build_sft_dataset([conversation(weight=0.5), conversation()], tokenizer=tok)
    assert weighted.column_names == ["input_ids", "attention_mask", "labels", "record", "loss_weights"]
    assert weighted[1]["input_ids"] == plain[0]["input_ids"] and weighted[1]["labels"] == plain[0]["labels"]
    assert set(weighted[1]["loss_weights"]) == {1.0}
    row = weighted[0]
    assert {w for w, label in zip(row["loss_weights"], row["labels"]) if label != -100} == {0.5}


def test_weights_travel_through_packing_split_and_padding():
    tok = tokenizer("qwen2.5-instruct")
    rows = [conversation(weight=0.25, content=f"answer {i}") for i in range(4)] + [conversation(content="plain")]
    packed = build_sft_dataset(rows, tokenizer=tok, packing=True, max_length=512)
    (row,) = packed
    trained = [w for w, label in zip(row["loss_weights"], row["labels"]) if label != -100]
    assert sorted(set(trained)) == [0.25, 1.0] and trained.count(1.0) == 2  # "plain<|im_end|>"
    assert len(row["loss_weights"]) == len(row["input_ids"])
    split = build_sft_dataset(rows, tokenizer=tok, test_size=2, padding="max_length", max_length=64)
    for part in split.values():
        assert all(len(r["loss_weights"]) == 64 for r in part)


def test_weight_zero_masks_the_turn_and_one_is_a_plain_turn():
    tok = tokenizer("qwen2.5-instruct")
    row = {"messages": [
        {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1", "loss_weight": 0},
        {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2", "loss_weight": 1},
    ]}  # fmt: skip
    (out,) = build_sft_dataset([row], tokenizer=tok)
    assert runs(tok, out) == ["a2<|im_end|>"] and out.keys() >= {"labels"} and "loss_weights" not in out


def test_train_detail_on_a_template_that_rewrites_the_content_is_rejected(tmp_path):
    tok = make_char_tokenizer(
        chat_template="{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | replace('doing', 'DOING') }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    rejects = tmp_path / "rejects.jsonl"
    with pytest.raises(Exception, match="every record was rejected"):
        build_sft_dataset([conversation(AXOLOTL_DETAIL)], tokenizer=tok, rejects_path=str(rejects))
    assert "rewrites the content" in rejects.read_text()  # no character offsets into a rewritten content


@pytest.mark.parametrize(
    ("detail", "match"),
    [
        ([{"begin_offset": 0, "end_offset": 31, "train": True}], r"end_offset=31 is outside the content's 31 characters"),
        ([{"begin_offset": 3, "end_offset": 1}], r"outside the content"),
        ({"begin_offset": 0}, r"must be a list"),
        ([{"begin_offset": "0", "end_offset": 2}], r"give a list of"),
    ],
)
def test_bad_train_detail_is_a_record_error_naming_the_field(detail, match):
    from ftdata.records.formats import to_examples

    with pytest.raises(RecordError, match=r"messages\[1\]\.train_detail.*" + match):
        to_examples(conversation(detail), "x.jsonl:1")


def test_train_detail_without_a_trained_span_masks_the_turn():
    tok = tokenizer("qwen2.5-instruct")
    row = {"messages": [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1", "train_detail": [{"begin_offset": 0, "end_offset": 1, "train": False}]},
        {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"},
    ]}  # fmt: skip
    (out,) = build_sft_dataset([row], tokenizer=tok)
    assert runs(tok, out) == ["a2<|im_end|>"]


def test_weights_and_spans_survive_keep_response_truncation():
    tok = tokenizer("qwen2.5-instruct")
    long_turns = []
    for i in range(6):
        long_turns += [{"role": "user", "content": f"question {i} " * 8}, {"role": "assistant", "content": f"answer {i}"}]
    long_turns[-1] = {"role": "assistant", "content": "final answer", "loss_weight": 0.5,
                      "train_detail": [{"begin_offset": 6, "end_offset": 11, "train": True}]}  # fmt: skip
    (out,) = build_sft_dataset([{"messages": long_turns}], tokenizer=tok, max_length=80)
    assert runs(tok, out)[-1] == " answer<|im_end|>"  # "final" is not in the span
    last = [w for w, label in zip(out["loss_weights"], out["labels"]) if label != -100][-2:]
    assert last == [0.5, 0.5]


def test_offsets_count_from_the_content_as_given_when_the_template_trims_it():
    tok = make_char_tokenizer(
        chat_template="{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    detail = [{"begin_offset": 2, "end_offset": 4, "train": True}]  # "abc" of "  abc def  "
    (row,) = build_sft_dataset([conversation(detail, content="  abc def  ")], tokenizer=tok)
    assert runs(tok, row) == ["abc", "<|im_end|>"]


@settings(max_examples=60, deadline=None)
@given(
    content=st.text(alphabet="ab cd.", min_size=1, max_size=24),
    cuts=st.lists(st.tuples(st.integers(0, 23), st.integers(0, 23), st.booleans()), min_size=1, max_size=4),
)
def test_trained_characters_are_exactly_the_trained_spans_on_the_reversible_tokenizer(content, cuts):
    """One token per byte: the trained text is the content's characters inside a train: true span
    (and not only in train: false ones), then the end-of-turn marker; nothing when no span trains."""
    detail = [
        {"begin_offset": min(a, b) % len(content), "end_offset": max(a, b) % len(content), "train": t} for a, b, t in cuts
    ]
    detail = [d for d in detail if d["begin_offset"] <= d["end_offset"]]
    trained = [any(d["train"] and d["begin_offset"] <= k <= d["end_offset"] for d in detail) for k in range(len(content))]
    if not content.strip() or not detail:
        return
    row = {"messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": content, "train_detail": detail},
        {"role": "user", "content": "q2"}, {"role": "assistant", "content": "end"},
    ]}  # fmt: skip
    (out,) = build_sft_dataset([row], tokenizer=CHAR_TOK)
    text = "".join(c for c, t in zip(content, trained) if t)
    expected = (text + "<|im_end|>" if any(trained) else "") + "end<|im_end|>"
    assert "".join(runs(CHAR_TOK, out)) == expected


def test_stats_and_split_truncation_read_weighted_rows():
    from ftdata.run.stats import collect

    tok = tokenizer("qwen2.5-instruct")
    turns = []
    for i in range(4):
        turns += [{"role": "user", "content": f"question {i} " * 6}, {"role": "assistant", "content": f"answer {i}", "loss_weight": 0.5}]
    parts = build_sft_dataset([{"messages": turns}], tokenizer=tok, max_length=60, truncation="split")
    assert len(parts) > 1
    stats = collect([{"messages": turns}], Stage(tok, DataOptions(max_length=60, truncation="split")))
    assert stats.counts.records == 1 and stats.counts.n_rejected == 0  # the stats reducer reads weighted rows as pairs
    for row in parts:
        assert {w for w, label in zip(row["loss_weights"], row["labels"]) if label != -100} == {0.5}
