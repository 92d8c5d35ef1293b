"""`ftdata train --chat-template`: the run builds with the template and saves it with the tokenizer, so
`ftdata eval` and inference render what training saw; a build folder trains with the template it was built with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ftdata.errors import ConfigError

TERSE = (
    "{% for m in messages %}{% if loop.first %}<|im_start|>system\nBe terse.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture()
def app() -> typer.Typer:
    from ftdata.cli.app import app as main

    return main


def test_train_saves_the_chat_template_with_the_adapter(app: typer.Typer, tmp_path: Path, tiny_model_dir: Path, qa_json: Path) -> None:
    from ftdata.io.resources import load_tokenizer

    (tmp_path / "terse.jinja").write_text(TERSE, encoding="utf-8")
    result = CliRunner().invoke(app, [
        "train", str(qa_json), "--model", str(tiny_model_dir), "--quantization", "none", "--max-length", "64",
        "--max-steps", "1", "--save-strategy", "no", "--chat-template", str(tmp_path / "terse.jinja"),
        "-o", str(tmp_path / "runs"), "--run-name", "terse",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    adapter = tmp_path / "runs" / "terse" / "adapter"
    assert (adapter / "chat_template.jinja").read_text(encoding="utf-8") == TERSE
    assert load_tokenizer(str(adapter)).chat_template == TERSE  # what `ftdata eval` loads
    record = json.loads((tmp_path / "runs" / "terse" / "run.json").read_text())
    assert record["config"]["data_options"]["chat_template"] == str(tmp_path / "terse.jinja")
    assert record["data"]["build"]["template"] == f"chat template {tmp_path / 'terse.jinja'}"


def test_a_build_folder_trains_with_the_chat_template_it_was_built_with(tmp_path: Path, qa_json: Path) -> None:
    from ftdata import build
    from ftdata.io.resources import load_tokenizer
    from ftdata.train.config import TrainConfig
    from ftdata.train.data import load_splits
    from ftdata.train.model import with_run_template

    (tmp_path / "terse.jinja").write_text(TERSE, encoding="utf-8")
    build(str(qa_json), tmp_path / "out", chat_template=str(tmp_path / "terse.jinja"), cache_dir=None)
    build(str(qa_json), tmp_path / "plain", cache_dir=None)
    with pytest.raises(ConfigError, match=r"out was built with chat template '.*terse\.jinja'; train with the same one \(--chat-template"):
        load_splits(TrainConfig(data=str(tmp_path / "out")), load_tokenizer(None))
    cfg = TrainConfig(data=str(tmp_path / "out"), data_options={"chat_template": str(tmp_path / "terse.jinja")})
    assert load_splits(cfg, with_run_template(load_tokenizer(None), cfg)).train.num_rows == 24
    with pytest.raises(ConfigError, match=r"plain was built with the tokenizer's own chat template, the run gives chat_template="):
        cfg = TrainConfig(data=str(tmp_path / "plain"), data_options={"chat_template": str(tmp_path / "terse.jinja")})
        load_splits(cfg, with_run_template(load_tokenizer(None), cfg))


def test_train_runs_on_the_rows_of_split_records(app: typer.Typer, tmp_path: Path, tiny_model_dir: Path) -> None:
    """The bundled agent trajectories (ATIF) on TRL's qwen3 template: one record splits into two rows (its first
    query's loop has reasoning qwen3 drops from history); `ftdata train` builds and trains on those rows. Formats
    count records (3 ATIF trajectories), sequences count rows (4). One step of the default 4 rows trains them all."""
    from support import ROOT

    result = CliRunner().invoke(app, [
        "train", str(ROOT / "examples" / "atif"), "--model", str(tiny_model_dir), "--quantization", "none",
        "--max-length", "512", "--max-steps", "1", "--save-strategy", "no", "--chat-template", "qwen3",
        "-o", str(tmp_path / "runs"), "--run-name", "agents",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    record = json.loads((tmp_path / "runs" / "agents" / "run.json").read_text())
    build = record["data"]["build"]
    assert (build["records"], build["sequences"], build["split_records"], dict(build["formats"])) == (3, 4, 1, {"atif": 3})
    assert record["data"]["splits"]["train"]["rows"] == 4 and record["metrics"]["train_loss"] > 0
