"""Prompt sets as RL frameworks publish them (verl, verifiers, OpenRLHF): nested columns keep their Arrow types, GRPO's
`exact` reward reads a dotted path and finds verl's reference by itself, `reward_columns` names a subset with true
errors, and the build says which task it made and why. Builds on Qwen2.5's tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from support import TOKENIZERS, tokenizer

import ftdata
from ftdata.errors import ConfigError, FtdataError
from ftdata.train.rewards import make_rewards

DATA = Path(__file__).parent / "data"
QWEN = "qwen2.5-instruct"
VERL = DATA / "verl_gsm8k.jsonl"


def _build(path: Path, **options):
    return ftdata.build(str(path), tokenizer=tokenizer(QWEN), **options)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_verl_rows_keep_reward_model_and_extra_info_as_structs() -> None:
    result = _build(VERL)
    assert result.report.task == "prompts" and result.report.task_reason.startswith("the first record is a prompt with no completion (prompt)")
    features = result.dataset.features
    assert str(features["reward_model"]) == "{'style': Value('string'), 'ground_truth': Value('string')}"
    assert features["extra_info"]["index"].dtype == "int64"
    rows = result.dataset.to_list()
    for row, record in zip(rows, _records(VERL)):
        assert row["prompt"] == record["prompt"]
        assert {k: row[k] for k in ("data_source", "ability", "reward_model", "extra_info")} == {
            k: record[k] for k in ("data_source", "ability", "reward_model", "extra_info")
        }
    tok = tokenizer(QWEN)
    assert tok.decode(rows[0]["prompt_ids"]) == tok.apply_chat_template(_records(VERL)[0]["prompt"], tokenize=False, add_generation_prompt=True)


def test_exact_finds_reward_model_ground_truth_and_scores_it() -> None:
    dataset = _build(VERL).dataset
    features = dict(dataset.features)
    (found,) = make_rewards(["exact"], columns=features)
    (named,) = make_rewards(["exact:reward_model.ground_truth"], columns=features)
    assert found.column == named.column == "reward_model.ground_truth"
    columns = {name: dataset[name] for name in dataset.column_names if name not in ("prompt", "prompt_ids")}
    scores = found(prompts=dataset["prompt"], completions=[[{"role": "assistant", "content": "48 + 24 = 72\n#### 72"}],
                                                            [{"role": "assistant", "content": "#### 12"}]], **columns)  # fmt: skip
    assert scores == [1.0, 0.0]


def test_a_struct_named_as_the_reference_is_refused_in_one_line() -> None:
    """Before: `exact:reward_model` compared the struct's JSON text with the answer: 0.0 on correct answers, silently."""
    features = dict(_build(VERL).dataset.features)
    with pytest.raises(ConfigError, match=r"^rewards: exact:reward_model is a struct column \(style, ground_truth\), not a "
                                          r"reference; name the field that holds the answer: exact:reward_model.ground_truth$"):  # fmt: skip
        make_rewards(["exact:reward_model"], columns=features)


def test_reward_columns_may_name_a_subset_and_its_errors_are_true() -> None:
    result = _build(VERL, reward_columns={"reward_model": "struct{style: string, ground_truth: string}", "data_source": "string"})
    assert result.dataset.column_names == ["prompt", "prompt_ids", "tools", "reward_model", "data_source"]
    assert result.options.data.reward_columns == {
        "reward_model": "struct{style: string, ground_truth: string}", "data_source": "string", "ability": "skip", "extra_info": "skip",
    }  # fmt: skip
    # before: "the first record does not have data_source"
    with pytest.raises(ConfigError, match=r"reward_columns names ground_truth and the prompt set's first record has no column "
                                          r"ground_truth; it has reward_model.ground_truth: map it with --columns "
                                          r"ground_truth=reward_model.ground_truth"):  # fmt: skip
        _build(VERL, reward_columns={"ground_truth": "string"})
    mapped = _build(VERL, reward_columns={"ground_truth": "string"}, columns={"ground_truth": "reward_model.ground_truth"})
    assert mapped.dataset["ground_truth"] == ["72", "10"] and "reward_model" not in mapped.dataset.column_names


def test_a_record_whose_object_has_another_key_widens_the_struct_as_datasets_does(tmp_path: Path) -> None:
    first, second = _records(VERL)
    second["reward_model"]["hint"] = "x"
    data = tmp_path / "verl.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in (first, second)))
    result = _build(data, on_error="skip")
    assert result.dataset["reward_model"] == [{**first["reward_model"], "hint": None}, second["reward_model"]]
    assert result.dataset.features["reward_model"] == datasets.Dataset.from_list([first, second]).features["reward_model"]
    named = _build(data, on_error="skip", reward_columns={"reward_model": "struct{style: string, ground_truth: string}"})
    (reject,) = named.report.sample_rejects  # a struct named in reward_columns is checked key by key
    assert reject.location == f"{data}:2"
    assert reject.reason.startswith("field 'reward_model': has key 'hint' that the column's type struct{style: string, "
                                    "ground_truth: string} does not"), reject.reason  # fmt: skip


def test_verifiers_question_answer_builds_as_sft_naming_task_prompts_and_as_a_prompt_set_when_told() -> None:
    sft = _build(DATA / "verifiers_gsm8k.jsonl")
    assert sft.report.task == "sft"
    assert sft.report.task_reason == (
        "the first record is question/answer data (question, answer), built as SFT (train on the answers); for a "
        "GRPO/RLOO prompt set (the answer as a reward column) pass --task prompts"
    )
    prompts = _build(DATA / "verifiers_gsm8k.jsonl", task="prompts")
    assert prompts.report.task_reason == "given (task=prompts)"
    assert str(prompts.dataset.features["info"]) == "{'source': Value('string'), 'difficulty': Value('int64')}"
    assert prompts.dataset["info"] == [{"source": "gsm8k", "difficulty": 1}, {"source": "gsm8k", "difficulty": 2}]
    (exact,) = make_rewards(["exact"], columns=dict(prompts.dataset.features))
    assert exact.column == "answer"


def test_messages_with_no_reply_and_no_tools_are_a_located_sft_error() -> None:
    """Before: built as a GRPO prompt set in silence (exit 0, "prompts out 1")."""
    path = DATA / "messages_no_reply.jsonl"
    with pytest.raises(FtdataError, match=rf"{path}:1: no assistant turn; nothing to train on: add the reply, or, if these "
                                          r"are prompts for GRPO/RLOO, build a prompt set with --task prompts"):  # fmt: skip
        _build(path)
    (row,) = _build(path, task="prompts").dataset.to_list()
    assert row["prompt"] == _records(path)[0]["messages"]


def test_messages_with_tools_and_no_reply_stay_a_prompt_set(tmp_path: Path) -> None:
    record = {**_records(DATA / "messages_no_reply.jsonl")[0], "tools": [
        {"type": "function", "function": {"name": "add", "description": "Add two numbers.", "parameters": {
            "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}}}]}  # fmt: skip
    data = tmp_path / "tools.jsonl"
    data.write_text(json.dumps(record) + "\n")
    result = _build(data)
    assert result.report.task == "prompts" and "(messages)" in result.report.task_reason


def test_the_cli_summary_names_the_task_and_why(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ftdata.cli.app import app

    out = CliRunner().invoke(app, ["build", str(DATA / "verifiers_gsm8k.jsonl"), "-o", str(tmp_path / "out"), "--tokenizer",
                                   str(TOKENIZERS / QWEN), "--no-cache"])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert " ".join(out.output.split()).startswith(
        "built " + json.loads((tmp_path / "out" / "build.json").read_text())["fingerprint"]
    )
    assert "task sft: the first record is question/answer data (question, answer), built as SFT" in " ".join(out.output.split())
    assert json.loads((tmp_path / "out" / "build.json").read_text())["counts"]["task_reason"].endswith("pass --task prompts")
