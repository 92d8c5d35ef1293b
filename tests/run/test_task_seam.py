"""The task seam as its readers see it: each task states its row columns and how it counts a row's units, so a
built dataset's task comes from one function over the tasks, and a build's report, a recipe's plan and a
training run's record count the same tokens."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from support import modules_assigning

import ftdata
from ftdata.cli.views import VIEWS
from ftdata.run.columns import row_columns, task_of_columns
from ftdata.run.stage import module_of, task_module
from ftdata.train.data import data_task, token_counts
from ftdata.types import Task

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "data"


@pytest.mark.parametrize(
    ("columns", "task"),
    [
        (["input_ids", "labels"], Task.SFT),
        (["input_ids", "attention_mask", "labels", "position_ids", "seq_lengths"], Task.SFT),
        (["prompt_ids", "chosen_ids", "rejected_ids"], Task.PREFERENCE),
        (["prompt_ids", "chosen_ids"], Task.PREFERENCE),  # a broken pair is still pairs: training names the column
        (["prompt_ids", "completion_ids", "label"], Task.KTO),
        (["prompt", "prompt_ids", "tools", "answer"], Task.PROMPTS),
        (["prompt_ids"], Task.PROMPTS),
        (["text"], Task.SFT),  # nothing a task holds: SFT, whose check then names the missing columns
    ],
)
def test_the_task_of_a_built_dataset_comes_from_its_columns(columns: list[str], task: Task) -> None:
    assert task_of_columns(columns) is task
    assert data_task(None, columns) is task
    assert data_task("kto", columns) is Task.KTO  # what the build declared wins


def test_each_task_is_the_task_object_of_the_run_module_named_for_it() -> None:
    """The table of tasks is `Task`: the task named `x` is `ftdata.run.x`'s `TASK`, and no other module of run/
    holds one (so a task is its module and its line in `Task`, and its name by string stays within run/)."""
    for task in Task:
        module = importlib.import_module(module_of(task))
        assert module.__name__ == f"ftdata.run.{task.value}" and module.TASK.task is task
        assert task_module(task) is module.TASK
    assert modules_assigning("run", "TASK") == {module_of(task) for task in Task} == {
        "ftdata.run.sft", "ftdata.run.preference", "ftdata.run.kto", "ftdata.run.prompts"
    }


def test_every_task_states_its_columns_and_unit_and_has_views() -> None:
    assert {task: task_module(task).columns for task in Task} == {
        Task.SFT: ("input_ids", "labels"),
        Task.PREFERENCE: ("prompt_ids", "chosen_ids", "rejected_ids"),
        Task.KTO: ("prompt_ids", "completion_ids", "label"),
        Task.PROMPTS: ("prompt", "prompt_ids"),
    }
    assert [task_module(task).unit for task in Task] == ["sequences", "pairs", "completions", "prompts"]
    assert set(VIEWS) == set(Task)  # each task dressed by the CLI; one without a line gets the plain views
    assert all(callable(task_module(task).stats) for task in Task)  # each measures a source itself
    assert "chosen_ids" in row_columns() and "answer" not in row_columns()


@pytest.mark.parametrize(
    ("data", "task", "options"),
    [
        ("alpaca_en_demo_20.json", Task.SFT, {"max_length": 256}),
        ("dpo_demo_4.json", Task.PREFERENCE, {"max_length": 1024}),
        ("kto_demo_20.json", Task.KTO, {"max_length": 512, "limit": 6, "task": "kto"}),
        ("gsm8k_test_20.jsonl", Task.PROMPTS, {"limit": 6, "task": "prompts"}),
    ],
)
def test_a_build_and_a_training_run_count_the_same_tokens(data: str, task: Task, options: dict[str, object]) -> None:
    """One definition of a row's tokens: a pair holds its prompt once (the report, the plan and the run record)."""
    result = ftdata.prepare(str(DATA / data), **options)
    assert task_of_columns(result.dataset.column_names) is task
    counts = token_counts(result.dataset, task)
    assert counts["tokens"] == result.report.tokens > 0
    assert counts.get("trained_tokens", 0) == result.report.trained_tokens
    if task is Task.PREFERENCE:
        row = result.dataset[0]
        tokens, trained = task_module(task).row_units(result.dataset.select([0]).with_format("arrow")[:])
        chosen, rejected = len(row["chosen_ids"]), len(row["rejected_ids"])
        assert (int(tokens[0]), int(trained[0])) == (len(row["prompt_ids"]) + chosen + rejected, chosen + rejected)
