"""Preference rows (ftdata.run.preference) on the reversible byte tokenizer: literal records to literal ids, the
rejects with their reasons, truncation of the shared prompt, the task option, and Hypothesis properties.

The byte tokenizer's ChatML renders `<s><|im_start|>user\\n2+2?<|im_end|>\\n<|im_start|>assistant\\n`
as one token per byte (`<s>` 256, `<|im_start|>` 258, `<|im_end|>` 259, `\\n` 198, `4` 19, `5` 20)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ftdata
from ftdata.errors import ConfigError, Location, RecordError
from ftdata.options import DataOptions
from ftdata.outcomes import RejectCode, RejectStage
from ftdata.run.stage import Stage
from ftdata.types import Task
from ftdata.run.preference import MeasuredPair
from ftdata.run.report import Reject
from ftdata.run.task import check_options

BOS, IM_START, IM_END, NL = 256, 258, 259, 198
PROMPT = "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"


def ids(tok, text: str) -> list[int]:
    """The byte tokenizer's ids of `text` (no BOS), read as text in the assertions."""
    return tok(text, add_special_tokens=False)["input_ids"]


def rows(tok, records, **options):
    return ftdata.build(records, tokenizer=tok, **options).dataset.to_list()


def outcomes(tok, records, **options) -> list:
    stage = Stage(tok, DataOptions(task="preference", **options))
    located = [(Location("d.jsonl", line=i + 1), r) for i, r in enumerate(records)]
    return [item for _, item, _ in stage.run(located).outcomes]


# --- literal rows ---------------------------------------------------------------------------------


def test_a_pair_is_the_prompt_alone_and_each_reply_with_its_end_of_turn(char_tok) -> None:
    (row,) = rows(char_tok, [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}])
    assert row == {
        "prompt_ids": [BOS, IM_START, 84, 82, 68, 81, NL, 17, 10, 17, 30, IM_END, NL, IM_START, 64, 82, 82, 72, 82, 83, 64, 77, 83, NL],
        "chosen_ids": [19, IM_END],
        "rejected_ids": [20, IM_END],
    }
    assert char_tok.decode(row["prompt_ids"]) == "<s>" + PROMPT  # the generation prompt, the BOS the tokenizer adds in front


def test_a_kto_record_is_the_prompt_its_completion_and_its_label(char_tok) -> None:
    (row,) = rows(char_tok, [{"prompt": "2+2?", "completion": "5", "label": False}])  # TRL's unpaired shape: detected
    assert row == {"prompt_ids": [BOS, *ids(char_tok, PROMPT)], "completion_ids": [20, IM_END], "label": False}


def test_kto_reads_a_pair_as_two_records_and_a_split_keeps_them_together(char_tok) -> None:
    records = [{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(10)]
    built = ftdata.build(records, tokenizer=char_tok, task="kto", test_size=0.2, seed=3).dataset
    for split in built.values():
        by_prompt: dict[tuple, list[bool]] = {}
        for row in split:
            by_prompt.setdefault(tuple(row["prompt_ids"]), []).append(row["label"])
        assert all(sorted(labels) == [False, True] for labels in by_prompt.values())
    assert (len(built["train"]), len(built["test"])) == (16, 4)


def test_a_multi_turn_prompt_keeps_its_history_and_trains_only_the_final_replies(char_tok) -> None:
    record = {
        "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}, {"from": "human", "value": "2+2?"}],
        "chosen": {"from": "gpt", "value": "4"}, "rejected": {"from": "gpt", "value": "5"},
    }  # fmt: skip
    (row,) = rows(char_tok, [record])
    history = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
    assert char_tok.decode(row["prompt_ids"]) == "<s>" + history + PROMPT
    assert (row["chosen_ids"], row["rejected_ids"]) == ([19, IM_END], [20, IM_END])


# --- rejects, each with its reason ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "stage", "code"),
    [
        ({"prompt": "2+2?", "chosen": "4", "rejected": "4"}, RejectStage.FORMAT, RejectCode.CHOSEN_IS_REJECTED),
        ({"prompt": "2+2?", "chosen": "", "rejected": "5"}, RejectStage.FORMAT, RejectCode.EMPTY_RESPONSE),
        ({"prompt": "2+2?", "chosen": "4<|im_end|>", "rejected": "5"}, RejectStage.RENDER, RejectCode.CONTROL_TOKEN),
        (
            {"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "4"}],
             "rejected": [{"role": "user", "content": "b"}, {"role": "assistant", "content": "5"}]},
            RejectStage.FORMAT, RejectCode.PROMPT_MISMATCH,
        ),
        (
            {"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "4"}],
             "rejected": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "5"}, {"role": "user", "content": "?"}]},
            RejectStage.FORMAT, RejectCode.NOT_ASSISTANT_END,
        ),
    ],
    ids=["chosen-is-rejected", "empty-reply", "control-token", "prompts-differ", "not-assistant-end"],
)  # fmt: skip
def test_a_pair_that_cannot_be_trained_right_is_rejected_with_its_reason(char_tok, record, stage, code) -> None:
    (item,) = outcomes(char_tok, [record])
    assert isinstance(item, Reject) and (item.stage, item.code, item.location) == (stage, code, "d.jsonl:1")


def test_replies_the_template_writes_alike_are_the_same_tokens_and_rejected(char_tok) -> None:
    """A template that trims the reply writes '4' and '4 ' as the same completion: nothing to prefer."""
    from support import make_char_tokenizer

    trims = make_char_tokenizer(chat_template=(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ))  # fmt: skip
    (item,) = outcomes(trims, [{"prompt": "2+2?", "chosen": "4", "rejected": "4 "}])
    assert (item.stage, item.code) == (RejectStage.VERIFY, RejectCode.CHOSEN_IS_REJECTED)
    assert "same tokens once rendered" in item.reason


def test_every_reject_is_counted_and_written_to_the_rejects_file(char_tok, tmp_path) -> None:
    records = [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}, {"prompt": "x", "chosen": "4", "rejected": "4"}]
    result = ftdata.build(records, tokenizer=char_tok, rejects_path=str(tmp_path / "r.jsonl"))
    assert dict(result.report.rejected) == {RejectCode.CHOSEN_IS_REJECTED: 1} and result.report.sequences == 1
    (line,) = (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["code"] == "chosen_is_rejected" and json.loads(line)["location"] == "<records>[1]"


# --- the task: detected, forced, refused ----------------------------------------------------------


def test_preference_data_among_sft_records_stops_the_build_naming_the_record(char_tok) -> None:
    records = [{"instruction": "hi", "output": "yo"}, {"prompt": "2+2?", "chosen": "4", "rejected": "5"}]
    with pytest.raises(RecordError, match=r"<records>\[1\]: is preference data .* choose with --task preference or --task sft"):
        ftdata.build(records, tokenizer=char_tok)


def test_a_source_read_once_is_not_read_ahead_and_its_pairs_stop_an_sft_build(char_tok) -> None:
    pairs = iter([{"prompt": "2+2?", "chosen": "4", "rejected": "5"}])
    with pytest.raises(RecordError, match=r"<records>\[0\]: is preference data .* a source read once"):
        ftdata.build(pairs, tokenizer=char_tok)
    (row,) = rows(char_tok, iter([{"prompt": "2+2?", "chosen": "4", "rejected": "5"}]), task="preference")
    assert row["chosen_ids"] == [19, IM_END]


def test_sft_data_among_preference_records_stops_the_build(char_tok) -> None:
    records = [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}, {"instruction": "hi", "output": "yo"}]
    with pytest.raises(RecordError, match=r"<records>\[1\]: field 'chosen': has no chosen and rejected"):
        ftdata.build(records, tokenizer=char_tok)


def test_task_sft_trains_a_pair_as_its_chosen_conversation(char_tok) -> None:
    (row,) = rows(char_tok, [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}], task="sft")
    assert row["input_ids"] == [BOS, *ids(char_tok, PROMPT + "4<|im_end|>\n")]
    assert [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100] == [19, IM_END]


def test_a_column_map_names_the_sides_and_the_label_in_a_build(char_tok) -> None:
    """`--columns chosen=good,rejected=bad` (docs/preference.md): the keys of preference data are map keys
    of a build, as SFT's are; an SFT build told task=sft reads them too (the chosen side trained)."""
    pair = {"question": "2+2?", "good": "4", "bad": "5"}
    (row,) = rows(char_tok, [pair], columns={"chosen": "good", "rejected": "bad"})
    assert (row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) == ([BOS, *ids(char_tok, PROMPT)], [19, IM_END], [20, IM_END])
    (kto,) = rows(char_tok, [{"prompt": "2+2?", "completion": "5", "ok": False}], columns={"label": "ok"})
    assert kto == {"prompt_ids": [BOS, *ids(char_tok, PROMPT)], "completion_ids": [20, IM_END], "label": False}
    (sft,) = rows(char_tok, [pair], columns={"chosen": "good", "rejected": "bad"}, task="sft")
    assert [t for t, label in zip(sft["input_ids"], sft["labels"]) if label != -100] == [19, IM_END]
    with pytest.raises(ConfigError, match="column map key must be one of .*chosen.*; got 'better'='good'"):
        rows(char_tok, [pair], columns={"better": "good"})


def test_a_bool_label_beside_a_conversation_is_kto_and_text_is_asked_about(char_tok) -> None:
    record = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "label": True}
    with pytest.raises(RecordError, match="choose with --task kto .* or --task sft"):
        ftdata.build([{**record, "label": "true"}], tokenizer=char_tok)
    result = ftdata.build([record], tokenizer=char_tok)
    assert result.report.task == "kto" and "true/false 'label'" in result.report.task_reason
    (kto,) = rows(char_tok, [record])
    assert (kto["label"], kto["completion_ids"]) == (True, [*ids(char_tok, "yo"), IM_END])
    (sft,) = rows(char_tok, [record], task="sft")
    assert "labels" in sft and "label" not in sft


@pytest.mark.parametrize(
    ("option", "value"),
    [("packing", True), ("padding", "max_length"), ("truncation", "split"), ("mask", "train_on_prompt"), ("mask_reasoning", True), ("format", "messages")],
)
def test_options_that_mean_nothing_for_pairs_are_refused(option, value) -> None:
    with pytest.raises(ConfigError, match=f"^{option}=.* does not apply to task=preference"):
        check_options(DataOptions(task="preference", **{option: value}))


def test_a_refused_option_on_data_detected_as_preference_says_so(char_tok) -> None:
    with pytest.raises(ConfigError, match=r"packing=True does not apply .* \(task=preference: the data's first record"):
        ftdata.build([{"prompt": "2+2?", "chosen": "4", "rejected": "5"}], tokenizer=char_tok, packing=True)


def test_build_json_records_the_task(char_tok, tmp_path) -> None:
    ftdata.build([{"prompt": "2+2?", "chosen": "4", "rejected": "5"}], tmp_path / "out", tokenizer=char_tok)
    manifest = json.loads((tmp_path / "out" / "build.json").read_text(encoding="utf-8"))
    assert manifest["options"]["task"] == "preference" and manifest["counts"]["task"] == "preference"
    assert ftdata.load(tmp_path / "out").dataset.column_names == ["prompt_ids", "chosen_ids", "rejected_ids"]


# --- the sides share their prompt's renders, within the pair only ----------------------------------


def counted_prompts(monkeypatch, stage) -> list[str]:
    """The inference prompts (generation=True renders) the chat template really renders, in order."""
    rendered: list[str] = []
    chat = stage.renderer.chat
    real = chat._render

    def count(messages, **options):
        text = real(messages, **options)
        if options["generation"]:
            rendered.append(text)
        return text

    monkeypatch.setattr(chat, "_render", count)
    from ftdata.chat.direct import Direct  # a bound conversation's renders run its compiled template directly

    direct = Direct.__call__

    def count_direct(self, messages, *, generation, **options):
        text = direct(self, messages, generation=generation, **options)
        if generation and text is not None:
            rendered.append(text)
        return text

    monkeypatch.setattr(Direct, "__call__", count_direct)
    return rendered


def test_a_pairs_prompts_are_rendered_once_for_both_sides_and_never_shared_across_records(char_tok, monkeypatch) -> None:
    history = [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "2+2?"},
    ]  # fmt: skip
    record = {"prompt": history, "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]}
    stage = Stage(char_tok, DataOptions(task="preference"))
    alone = stage.run([(Location("h", index=0), record)]).outcomes[0][1]
    prompts = counted_prompts(monkeypatch, stage)
    ran = stage.run([(Location("h", index=i), record) for i in range(2)])
    # Each record: its own inference prompt, once for its two sides; its history turn's is not rendered (a pair
    # trains only its final turn, so its history is prompt, with nothing to locate).
    assert len(prompts) == 2 and prompts[0] == prompts[1] and prompts[0].endswith("2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert all(item.row == alone.row for _, item, _ in ran.outcomes)


def test_renders_outside_a_pair_are_not_shared(char_tok, monkeypatch) -> None:
    stage = Stage(char_tok, DataOptions())
    prompts = counted_prompts(monkeypatch, stage)
    messages = [{"role": "user", "content": "2+2?"}]
    stage.renderer.chat(messages, generation=True)
    stage.renderer.chat(messages, generation=True)
    assert len(prompts) == 2


# --- truncation: the shared prompt cut once, never a completion -----------------------------------


def _long_pair(turns: int) -> dict:
    history = [m for i in range(turns) for m in ({"from": "human", "value": f"question {i} " * 3}, {"from": "gpt", "value": f"answer {i}"})]
    return {"conversations": [*history, {"from": "human", "value": "2+2?"}], "chosen": {"from": "gpt", "value": "four"},
            "rejected": {"from": "gpt", "value": "5"}}  # fmt: skip


def test_keep_response_drops_the_oldest_exchanges_of_the_shared_prompt_once(char_tok, tmp_path) -> None:
    full = rows(char_tok, [_long_pair(3)], max_length=4096)[0]
    result = ftdata.build([_long_pair(3)], tokenizer=char_tok, max_length=150, rejects_path=str(tmp_path / "r.jsonl"))
    (row,) = result.dataset.to_list()
    prompt = char_tok.decode(row["prompt_ids"])
    assert "question 0" not in prompt and "answer 2" in prompt and prompt.endswith(PROMPT)
    assert (row["chosen_ids"], row["rejected_ids"]) == (full["chosen_ids"], full["rejected_ids"])  # never cut
    assert len(row["prompt_ids"]) + len(row["chosen_ids"]) <= 150 < len(full["prompt_ids"]) + len(full["chosen_ids"])
    assert dict(result.report.cut) == {RejectCode.TURNS_DROPPED: 1}
    reject = json.loads((tmp_path / "r.jsonl").read_text(encoding="utf-8"))
    assert reject["kept"] and reject["reason"].startswith("oldest turns dropped: the shared prompt cut from")


def test_a_pair_whose_completion_cannot_fit_is_rejected_too_long_and_counted(char_tok, tmp_path) -> None:
    records = [_long_pair(1) | {"chosen": {"from": "gpt", "value": "x" * 60}}, {"prompt": "a", "chosen": "b", "rejected": "c"}]
    result = ftdata.build(records, tokenizer=char_tok, max_length=50, rejects_path=str(tmp_path / "r.jsonl"))
    assert dict(result.report.rejected) == {RejectCode.TOO_LONG: 1} and result.report.sequences == 1
    reject = json.loads((tmp_path / "r.jsonl").read_text(encoding="utf-8"))
    assert reject["location"] == "<records>[0]" and "completions are never cut" in reject["reason"]


def test_keep_start_and_keep_end_cut_tokens_as_trl_does_once_for_both_sides(char_tok) -> None:
    full = rows(char_tok, [_long_pair(2)], max_length=4096)[0]
    limit = len(full["prompt_ids"]) + 2
    (start,) = rows(char_tok, [_long_pair(2)], max_length=limit, truncation="keep_start")
    assert start["prompt_ids"] == full["prompt_ids"] and start["chosen_ids"] == full["chosen_ids"][:2]
    assert start["rejected_ids"] == full["rejected_ids"][:2]
    (end,) = rows(char_tok, [_long_pair(2)], max_length=limit, truncation="keep_end")
    over = len(full["prompt_ids"]) + len(full["chosen_ids"]) - limit
    assert end["prompt_ids"] == full["prompt_ids"][over:] and end["chosen_ids"] == full["chosen_ids"]


def test_drop_and_error(char_tok) -> None:
    result = ftdata.build([_long_pair(2), {"prompt": "a", "chosen": "b", "rejected": "c"}], tokenizer=char_tok, max_length=60, truncation="drop")
    assert dict(result.report.rejected) == {RejectCode.TOO_LONG: 1}
    with pytest.raises(RecordError, match=r"<records>\[0\]: field 'max_length': \d+ tokens \(prompt \d+ \+ longer completion"):
        ftdata.build([_long_pair(2)], tokenizer=char_tok, max_length=60, truncation="error")


# --- properties -----------------------------------------------------------------------------------

TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="<>"), min_size=1, max_size=12).filter(str.strip)
HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@HYP
@given(prompt=TEXT, chosen=TEXT, rejected=TEXT, at=st.integers(min_value=0), byte=st.characters(min_codepoint=33, max_codepoint=126))
def test_editing_the_rejected_reply_changes_neither_the_prompt_nor_the_chosen_completion(char_tok, prompt, chosen, rejected, at, byte) -> None:
    i = at % len(rejected)
    edited = rejected[:i] + byte + rejected[i + 1 :]
    pairs = [{"prompt": prompt, "chosen": chosen, "rejected": r} for r in (rejected, edited)]
    stage = Stage(char_tok, DataOptions(task="preference"))
    first, second = (item for _, item, _ in stage.run([(Location("h", index=0), p) for p in pairs]).outcomes)
    if isinstance(first, MeasuredPair) and isinstance(second, MeasuredPair):
        assert first.row.prompt == second.row.prompt and first.row.completions[0] == second.row.completions[0]


@HYP
@given(prompt=TEXT, chosen=TEXT, rejected=TEXT)
def test_swapping_chosen_and_rejected_swaps_the_row(char_tok, prompt, chosen, rejected) -> None:
    stage = Stage(char_tok, DataOptions(task="preference"))
    records = [{"prompt": prompt, "chosen": chosen, "rejected": rejected}, {"prompt": prompt, "chosen": rejected, "rejected": chosen}]
    a, b = (item for _, item, _ in stage.run([(Location("h", index=i), r) for i, r in enumerate(records)]).outcomes)
    assert type(a) is type(b)
    if isinstance(a, MeasuredPair):
        assert (a.row.prompt, a.row.completions) == (b.row.prompt, b.row.completions[::-1])


@HYP
@given(prompt=TEXT, chosen=TEXT, rejected=TEXT)
def test_the_row_spells_the_inference_prompt_then_each_reply_and_its_end_of_turn(char_tok, prompt, chosen, rejected) -> None:
    stage = Stage(char_tok, DataOptions(task="preference"))
    ((_, item, _),) = stage.run([(Location("h", index=0), {"prompt": prompt, "chosen": chosen, "rejected": rejected})]).outcomes
    if isinstance(item, MeasuredPair):
        generation = char_tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        assert char_tok.decode(item.row.prompt) == "<s>" + generation
        assert [char_tok.decode(c) for c in item.row.completions] == [chosen + "<|im_end|>", rejected + "<|im_end|>"]


def test_the_stage_of_a_preference_build_is_a_pair_stage(char_tok) -> None:
    assert Stage(char_tok, DataOptions(task="kto")).task.task is Task.KTO
    assert Stage(char_tok, DataOptions()).task.task is Task.SFT
