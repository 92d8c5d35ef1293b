"""`ftdata train` / `ftdata eval` through Typer's runner, on a local app (as cli.py registers them)."""

from __future__ import annotations

import csv
import json
from dataclasses import fields
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ftdata.errors import ConfigError
from ftdata.train.commands import parse_data_options, register, train_from_flags
from ftdata.train.config import TrainConfig


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """ftdata (test app)."""

    register(app)
    return app


runner = CliRunner()


def test_every_option_is_a_flag_with_help(app: typer.Typer) -> None:
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for f in fields(TrainConfig):
        if f.name not in {"data", "data_options"}:
            assert "--" + f.name.replace("_", "-") in result.output, f.name
    for flag in ("--config", "--resume", "--data-option", "--no-lora", "--no-packing", "(default: 4bit)"):
        assert flag in result.output
    assert runner.invoke(app, ["eval", "--help"]).exit_code == 0


def test_flags_override_yaml_which_overrides_defaults(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("data: a.json\nlora_r: 8\nlearning_rate: 1.0e-3\ndata_options: {limit: 5, mask: last_assistant}")
    cfg = train_from_flags(None, config=config, resume=None, data_option=["limit=7"], flags={"lora_r": 4, "seed": None})
    assert (cfg.data, cfg.lora_r, cfg.learning_rate, cfg.seed) == ("a.json", 4, 1e-3, 42)
    assert cfg.data_options == {"limit": 7, "mask": "last_assistant"}
    assert train_from_flags("b.json", config=config, resume=None, data_option=None, flags={}).data == "b.json"


def test_data_options_parse_as_yaml() -> None:
    assert parse_data_options(["limit=10", "mask=last_assistant", "columns={output: answer}", "system_prompt="]) == {
        "limit": 10, "mask": "last_assistant", "columns": {"output": "answer"}, "system_prompt": None,
    }  # fmt: skip
    with pytest.raises(ConfigError, match="--data-option must look like KEY=VALUE, got 'limit'"):
        parse_data_options(["limit"])


def test_user_mistakes_are_typed_errors(app: typer.Typer, tmp_path: Path) -> None:
    cases = [
        (["train", "--quantization", "2bit"], "quantization must be one of 4bit, 8bit, none"),
        (["train", "--max-steps", "3"], "no training data: give DATA"),
        (["train", "--config", str(tmp_path / "nope.yaml")], "config file not found"),
        (["train", "--resume", str(tmp_path), "--config", str(tmp_path / "x.yaml")], "drop --config"),
        (["eval", str(tmp_path)], "is not an ftdata run folder"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert isinstance(result.exception, ConfigError), (args, result.output)
        assert message in str(result.exception) and result.exception.exit_code == 2


def test_train_then_eval_from_a_data_file(app: typer.Typer, tmp_path: Path, tiny_model_dir: Path, qa_json: Path):
    """The whole CLI path: build_sft_dataset on a JSON file -> SFTTrainer -> run folder -> eval table."""
    result = runner.invoke(app, [
        "train", str(qa_json), "--model", str(tiny_model_dir), "--quantization", "none", "--max-length", "64",
        "--test-size", "4", "--max-steps", "2", "--logging-steps", "1", "--save-strategy", "no",
        "--output-dir", str(tmp_path), "--run-name", "cli", "-o", "limit=20",
    ], env={"COLUMNS": "200"})  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "done" in result.output and "eval loss" in result.output
    record = json.loads((tmp_path / "cli" / "run.json").read_text())
    assert record["config"]["data_options"] == {"limit": 20}
    assert record["data"]["splits"]["test"]["rows"] == 4 and record["data"]["splits"]["train"]["rows"] == 16

    result = runner.invoke(app, ["eval", str(tmp_path / "cli"), "--max-new-tokens", "4", "--width", "40"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "fine-tuned" in result.output and "sacreBLEU: base" in result.output
    with (tmp_path / "cli" / "eval" / "comparison.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and all(r["reference"] for r in rows)
