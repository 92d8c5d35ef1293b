"""`ftdata train` / `ftdata eval` through Typer's runner: on a local app (as cli.py registers them)
and, for the one-line errors and exit codes, on the real `ftdata` app."""

from __future__ import annotations

import csv
import json
from dataclasses import fields
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

import ftdata.train.model
import ftdata.train.run
from ftdata.cli.app import app as ftdata_app
from ftdata.cli.options import parse_data_options
from ftdata.errors import ConfigError
from ftdata.cli.train import register, train_from_flags
from ftdata.train.config import TrainConfig
from ftdata.types import MaskPolicy


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
    for flag in ("--config", "--resume", "--data-option", "--allow-code", "--no-lora", "--no-packing",
                 "--max-length", "--test-size", "--seed", "(default: 4bit)"):  # fmt: skip
        assert flag in result.output
    short = {line.split()[1]: line.split()[2] for line in result.output.splitlines() if " -D " in line or " -o " in line}
    assert short == {"--data-option": "-D", "--output-dir": "-o"}
    assert runner.invoke(app, ["eval", "--help"]).exit_code == 0


def test_flags_override_yaml_which_overrides_defaults(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("data: /data/a.json\nlora_r: 8\nlearning_rate: 1.0e-3\nmax_length: 1024\n"
                      "data_options: {limit: 5, mask: last_assistant}")  # fmt: skip
    cfg = train_from_flags(None, config=config, resume=None, data_option=["limit=7"], flags={"lora_r": 4, "seed": 3})
    assert (cfg.data, cfg.lora_r, cfg.learning_rate, cfg.seed) == ("/data/a.json", 4, 1e-3, 3)
    opts = cfg.data_options.data
    assert (opts.limit, opts.mask, opts.max_length, opts.seed) == (7, MaskPolicy.LAST_ASSISTANT, 1024, 3)
    assert train_from_flags("b.json", config=config, resume=None, data_option=None, flags={}).data == "b.json"


def test_data_options_parse_as_their_build_flags() -> None:
    items = ["limit=10", "mask=last_assistant", "columns=output=answer", "columns=input=ctx", "test_size=0.1",
             "packing=true", "chat_template_kwargs={\"enable_thinking\": false}", "system_prompt="]  # fmt: skip
    assert parse_data_options(items) == {
        "limit": 10, "mask": "last_assistant", "columns": {"output": "answer", "input": "ctx"}, "test_size": 0.1,
        "packing": True, "chat_template_kwargs": {"enable_thinking": False}, "system_prompt": "",
    }  # fmt: skip
    with pytest.raises(ConfigError, match=r"^--data-option takes KEY=VALUE, e.g. --data-option max_length=512; got 'limit'$"):
        parse_data_options(["limit"])


# --- the real `ftdata` app: one-line errors, before any model loads -----------------------------


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model (or materialising the bundled one) fails the test."""

    def load(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded")

    for module in (ftdata.train.run, ftdata.train.model):
        monkeypatch.setattr(module, "load_for_training", load)
        monkeypatch.setattr(module, "resolve_model_path", load)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[TrainConfig]:
    """`train` records the config it was given instead of training."""
    configs: list[TrainConfig] = []

    def fake_train(cfg: TrainConfig, **kwargs: object) -> ftdata.train.run.TrainResult:
        configs.append(cfg)
        run_dir = Path(cfg.output_dir) / "fake"
        return ftdata.train.run.TrainResult(run_dir=run_dir, output_dir=run_dir / "adapter", merged_dir=None)

    monkeypatch.setattr(ftdata.train.run, "train", fake_train)
    return configs


def cli(*args: str | Path) -> object:
    return CliRunner().invoke(ftdata_app, [str(a) for a in args])


def test_data_option_max_length_is_accepted(qa_json: Path, tmp_path: Path, started: list[TrainConfig]) -> None:
    result = cli("train", qa_json, "--data-option", "max_length=512", "-D", "mask=last_assistant", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    (cfg,) = started
    assert (cfg.data_options.data.max_length, cfg.data_options.data.mask, cfg.output_dir) == (
        512, MaskPolicy.LAST_ASSISTANT, str(tmp_path),
    )  # fmt: skip


def test_a_misspelt_data_option_fails_before_any_model_loads(qa_json: Path, tmp_path: Path, no_model: None) -> None:
    result = cli("train", qa_json, "--data-option", "max_lenght=512")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "error: --data-option: unknown option 'max_lenght' (did you mean max_length?)\n"
    config = tmp_path / "c.yaml"
    config.write_text("data_options:\n  truncaton: drop\n")
    result = cli("train", qa_json, "--config", config)
    assert result.exit_code == 2
    assert result.stderr == f"error: {config}: data_options: unknown option 'truncaton' (did you mean truncation?)\n"


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("max_length=abc", "--max-length takes a whole number; got 'abc'"),
        ("max_length=-3", "max_length must be a positive integer, got max_length=-3"),
        ("test_size=lots", "--test-size takes a count (200) or a fraction (0.1); got 'lots'"),
        ("mask=everything", "mask must be one of all_assistant, last_assistant, train_on_prompt; got mask='everything'"),
        ("columns=output", "--columns takes KEY=VALUE pairs, e.g. --columns output=answer; got 'output'"),
        ("chat_template_kwargs=[1]", "--chat-template-kwargs takes a JSON object ({...}), got '[1]'"),
    ],
)
def test_a_bad_data_option_value_fails_as_its_build_flag_does(
    qa_json: Path, tmp_path: Path, no_model: None, option: str, message: str
) -> None:
    key, _, value = option.partition("=")
    build = cli("build", qa_json, "-o", tmp_path / "out", "--" + key.replace("_", "-"), value)
    train = cli("train", qa_json, "--data-option", option)
    from ftdata.cli.options import cli_spelling

    assert (train.exit_code, train.stderr) == (2, f"error: {message}\n")  # train speaks data_options' spelling
    assert (build.exit_code, build.stderr) == (2, f"error: {cli_spelling(message)}\n")  # build its flags'



def test_train_flags_are_parsed_like_build_flags(qa_json: Path, no_model: None) -> None:
    for flag, value, message in [("--max-length", "abc", "--max-length takes a whole number; got 'abc'"),
                                 ("--lora-r", "abc", "--lora-r takes a whole number; got 'abc'"),
                                 ("--learning-rate", "fast", "--learning-rate takes a number; got 'fast'")]:  # fmt: skip
        result = cli("train", qa_json, flag, value)
        assert (result.exit_code, result.stderr) == (2, f"error: {message}\n")


def test_command_line_mistakes_are_one_line(qa_json: Path, no_model: None) -> None:
    cases = [
        (["--max-length", "256", "-D", "max_length=512"],
         "command line: max_length is set twice (max_length=256 and data_options.max_length=512); keep one"),
        (["-o", "limit=20"],
         "-o is --output-dir, the folder of the runs, got -o 'limit=20'; for a data option write --data-option limit=20"),
        (["-D", "reader=mymodule:read"],
         "--data-option reader names Python code ('mymodule:read'), which ftdata runs only with --allow-code; "
         "add --allow-code if you trust that code, or use a built-in reader (json, jsonl, csv, parquet, hf)"),
        (["--template", "alpacca"],
         "unknown template 'alpacca'; built-ins are alpaca, instruction-response, question-answer, or give a path to a .jinja file"),
    ]  # fmt: skip
    for args, message in cases:
        result = cli("train", qa_json, *args)
        assert result.stderr == f"error: {message}\n", args
        assert result.exit_code in (2, 5)


def test_a_config_file_reads_paths_relative_to_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[TrainConfig]
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "qa.json").write_text("[]")
    (folder / "train.yaml").write_text("data: qa.json\noutput_dir: runs\nmax_length: 256\ndata_options: {limit: 3}\n")
    monkeypatch.chdir(tmp_path)
    result = cli("train", "--config", "project/train.yaml", "-D", "limit=4")
    assert result.exit_code == 0, result.output
    (cfg,) = started
    assert (cfg.data, cfg.output_dir) == ("project/qa.json", "project/runs")
    assert (cfg.data_options.data.max_length, cfg.data_options.data.limit) == (256, 4)


def test_resume_keeps_the_saved_data_options(tmp_path: Path, started: list[TrainConfig]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    TrainConfig(data="/data/qa.json", max_steps=4, data_options={"max_length": 64, "mask": "last_assistant"}).to_yaml(
        run / "config.yaml"
    )
    result = cli("train", "--resume", run, "--max-steps", "8", "-D", "num_workers=2")
    assert result.exit_code == 0, result.output
    (cfg,) = started
    opts = cfg.data_options.to_mapping()
    assert (cfg.max_steps, opts["max_length"], opts["mask"], opts["num_workers"]) == (8, 64, MaskPolicy.LAST_ASSISTANT, 2)
    for args, change in [(["--max-length", "512"], "max_length: 64 -> 512"),
                         (["-D", "mask=all_assistant"], "mask: 'last_assistant' -> 'all_assistant'")]:  # fmt: skip
        result = cli("train", "--resume", run, *args)
        assert result.exit_code == 2
        assert result.stderr == f"error: cannot change {change} when resuming run; start a new run instead\n"


def test_resume_reads_a_config_saved_before_the_options_nested(tmp_path: Path, started: list[TrainConfig]) -> None:
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.yaml").write_text(
        "data: /data/qa.json\ntemplate: alpaca\nmax_length: 64\npacking: false\ntest_size: 4\n"
        "data_options: {limit: 20}\nseed: 7\nlora_r: 8\n"
    )
    result = cli("train", "--resume", run, "--max-steps", "3")
    assert result.exit_code == 0, result.output
    (cfg,) = started
    opts = cfg.data_options.data
    assert (opts.template, opts.max_length, opts.test_size, opts.limit, cfg.seed, cfg.lora_r) == ("alpaca", 64, 4, 20, 7, 8)


def test_user_mistakes_are_typed_errors(app: typer.Typer, tmp_path: Path) -> None:
    cases = [
        (["train", "--quantization", "2bit"], "quantization must be one of 4bit, 8bit, none"),
        (["train", "--max-steps", "3"], "no training data: give DATA"),
        (["train", "--config", str(tmp_path / "nope.yaml")], "cannot read config"),
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
        "-o", str(tmp_path), "--run-name", "cli", "--data-option", "limit=20", "-D", "mask=last_assistant",
    ], env={"COLUMNS": "200"})  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "done" in result.output and "eval loss" in result.output
    record = json.loads((tmp_path / "cli" / "run.json").read_text())
    options = record["config"]["data_options"]
    assert (options["limit"], options["mask"], options["max_length"], options["test_size"]) == (20, "last_assistant", 64, 4)
    assert yaml.safe_load((tmp_path / "cli" / "config.yaml").read_text())["data_options"] == options
    assert record["data"]["splits"]["test"]["rows"] == 4 and record["data"]["splits"]["train"]["rows"] == 16

    result = runner.invoke(app, ["eval", str(tmp_path / "cli"), "--max-new-tokens", "4", "--width", "40"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "fine-tuned" in result.output and "sacreBLEU: base" in result.output
    with (tmp_path / "cli" / "eval" / "comparison.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and all(r["reference"] for r in rows)
