"""Option rules by owner (docs/design.md, "Tasks"): options.py checks values and parses closed choices once; each
task declares the options it alone reads and those it refuses (`TaskModule.rules`), refused as soon as the task is
known, with the messages the options gave before the rules moved."""

from __future__ import annotations

import typing
from enum import Enum
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ftdata
from ftdata.cli.app import app
from ftdata.errors import ConfigError
from ftdata.mix.recipe import Recipe
from ftdata.options import CHOICES, DATA_FIELDS, BuildOptions, DataOptions, RunOptions
from ftdata.run.stage import Stage, task_module
from ftdata.run.task import check_options
from ftdata.train.config import TrainConfig
from ftdata.types import Engine, OnError, Padding, Task, _Choice


def test_every_rule_names_a_data_option_and_values_of_its_choice() -> None:
    for task in Task:
        rules = task_module(task).rules
        assert set(rules.own) <= set(DATA_FIELDS), task
        assert not rules.own or rules.noun, task  # an owned option's refusal names what the owner builds
        for rule in rules.refuses:
            assert rule.option in DATA_FIELDS, (task, rule.option)
            kind = CHOICES[DataOptions].get(rule.option)
            assert all(isinstance(value, kind) for value in rule.values) if rule.values else True, (task, rule)


def test_options_with_a_task_construct_and_the_task_refuses_what_it_does_not_read() -> None:
    options = DataOptions(task="kto", packing=True)  # values only: no task's rule lives in options.py
    with pytest.raises(ConfigError) as info:
        check_options(options)
    assert str(info.value) == (
        "packing=True does not apply to task=kto: the trainer puts each prompt before each of its completions; drop packing"
    )
    with pytest.raises(ConfigError) as info:
        check_options(DataOptions(task="preference", cut_prompts=True))
    assert str(info.value) == "cut_prompts applies to prompt sets (task=prompts), got task=preference; drop cut_prompts"
    with pytest.raises(ConfigError) as info:
        check_options(DataOptions(task="prompts", truncation="left"))
    assert str(info.value) == (
        "truncation='keep_end' does not apply to task=prompts: a prompt is fitted to max_prompt_length: rejected, or "
        "cut with cut_prompts; drop truncation"
    )
    # what a task allows passes: a keep_response truncation, a prompt set's own options, no task given at all
    check_options(DataOptions(task="prompts", truncation="keep_response", max_prompt_length=8, cut_prompts=True))
    check_options(DataOptions(task="preference", mask="last_assistant", truncation="drop"))
    check_options(DataOptions(packing=True, max_prompt_length=8))


def test_a_given_task_refuses_before_anything_is_read_or_loaded(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"  # a refusal, not a reader error: the data is never opened
    with pytest.raises(ConfigError, match=r"^padding='max_length' does not apply to task=preference: the preference"):
        ftdata.build(str(missing), task="dpo", padding="max_length")
    result = CliRunner().invoke(app, ["build", str(missing), "-o", str(tmp_path / "out"), "--task", "grpo", "--history", "one_row"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --history one_row does not apply to --task prompts: a prompt set trains no turn; drop history\n"
    )


def test_every_path_that_knows_the_task_refuses(char_tok) -> None:
    with pytest.raises(ConfigError, match=r"^processor='proc' does not apply to task=prompts: prompt sets with images"):
        Stage(char_tok, DataOptions(task="prompts", processor="proc"))
    with pytest.raises(ConfigError, match=r"^max_prompt_length applies to prompt sets \(task=prompts\), got task=sft"):
        Stage(char_tok, DataOptions(max_prompt_length=8))  # no task: SFT's rules
    with pytest.raises(ConfigError, match=r"^r\.yaml: mask='train_on_prompt' does not apply to task=kto"):
        Recipe.from_mapping({"task": "kto", "mask": "train_on_prompt", "sources": [{"data": "a.jsonl"}]}, origin="r.yaml")
    with pytest.raises(ConfigError, match=r"^r\.yaml: sources\[0\] \(a\): format='messages' does not apply to task=preference"):
        Recipe.from_mapping({"task": "preference", "sources": [{"data": "a.jsonl", "format": "messages"}]}, origin="r.yaml")
    with pytest.raises(ConfigError, match=r"^mask_reasoning=True does not apply to task=preference"):
        TrainConfig(data="d.jsonl", data_options={"task": "preference", "mask_reasoning": True})


def test_every_closed_choice_is_its_enum_parsed_once() -> None:
    for group in (DataOptions, RunOptions):
        for name, hint in typing.get_type_hints(group).items():
            kinds = [k for k in (*typing.get_args(hint), hint) if isinstance(k, type) and issubclass(k, Enum)]
            assert typing.get_origin(hint) is not typing.Literal, name  # no hand-checked strings
            assert all(issubclass(k, _Choice) for k in kinds), name  # one kind of closed choice
            assert bool(kinds) == (name in CHOICES[group]), name
    options = BuildOptions(padding="MAX-LENGTH", on_error="skip", engine="processes")
    assert (options.data.padding, options.data.on_error, options.run.engine) == (Padding.MAX_LENGTH, OnError.SKIP, Engine.PROCESSES)
    assert options.data.on_error == "skip" and BuildOptions().to_mapping()["padding"] is Padding.NONE
    with pytest.raises(ConfigError) as info:
        BuildOptions(padding_side="middle")
    assert str(info.value) == "padding_side must be one of right, left; got padding_side='middle'"
