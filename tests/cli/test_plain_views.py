"""A task without views of its own in the CLI's table (`ftdata.cli.views.VIEWS`) is still previewed and measured:
the plain views print each record as its task renders it and every figure its `stats` measured. So a new task is
its module (`ftdata.run.<name>`) and its line in `types.Task`; a line in `VIEWS` only dresses its output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ftdata
from ftdata.cli import views
from ftdata.cli.app import app

DATA = Path(__file__).resolve().parents[2] / "examples" / "data"


def run(*args: object) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def no_views(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views, "VIEWS", {})


def test_plain_preview_shows_each_prompt_as_the_build_tokenizes_it(tmp_path: Path, no_views: None) -> None:
    data = DATA / "gsm8k_test_20.jsonl"
    run("build", data, "--task", "prompts", "--limit", "3", "-o", tmp_path / "out", "--no-cache")
    built = [json.loads(line) for line in run("preview", data, "--task", "prompts", "-n", "3", "--json").splitlines()]
    header, shown = built[0], built[1:]
    assert header["type"] == "header" and header["task"] == "prompts"
    rows = ftdata.load(tmp_path / "out").dataset
    assert [item["tokens"] for item in shown] == [len(ids) for ids in rows["prompt_ids"]]
    assert [item["location"] for item in shown] == [f"{data}:{n}" for n in (1, 2, 3)]
    assert all("<|im_start|>user" in item["text"] and item["text"].endswith("assistant\n") for item in shown)
    text = run("preview", data, "--task", "prompts", "-n", "2")
    assert f"record 1 · {data}:1 · {shown[0]['tokens']} tokens\n" in text
    assert "record 3" not in text


def test_the_plain_header_names_the_length_limit_the_task_reads(no_views: None) -> None:
    """A prompt set reads max_prompt_length; a task that does not (SFT shown plainly here) is held to max_length."""
    prompts = run("preview", DATA / "gsm8k_test_20.jsonl", "--task", "prompts", "-n", "1", "--max-prompt-length", "300")
    assert "(max_prompt_length=300)" in prompts
    sft = run("preview", DATA / "alpaca_en_demo_20.json", "-n", "1", "--max-length", "512")
    assert "each record as the sft task renders it" in sft
    assert "(max_length=512)" in sft and "max_prompt_length" not in sft


def test_plain_stats_print_every_figure_the_task_measured(no_views: None) -> None:
    data = DATA / "gsm8k_test_20.jsonl"
    measured = json.loads(run("stats", data, "--task", "prompts", "--json"))
    lines = dict(line.split(None, 1) for line in run("stats", data, "--task", "prompts").splitlines() if line.strip())
    assert lines["records"] == "20" and lines["prompts"] == "20"
    assert lines["prompt_tokens.p50"] == str(measured["prompt_tokens"]["p50"])
    assert lines["task"] == "prompts"
    assert lines["reward_columns.answer.prompts"] == "20"  # nested figures are joined by dots, never dropped
    assert lines["rejected"] == lines["opens"] == "{}"


def test_plain_views_refuse_plots(tmp_path: Path, no_views: None) -> None:
    result = CliRunner().invoke(app, ["stats", str(DATA / "alpaca_en_demo_20.json"), "--plot", str(tmp_path / "p.png")])
    assert result.exit_code != 0 and "--plot and --html draw SFT length histograms" in result.output
    assert not (tmp_path / "p.png").exists()
