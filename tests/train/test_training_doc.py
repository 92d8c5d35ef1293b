"""docs/training.md stays complete: the option tables are the generated ones, every eval flag is
documented, the example configs load. After a change in the options, rewrite the tables with:

    .venv/bin/python tests/train/test_training_doc.py --update
"""

from __future__ import annotations

import re
import sys
from dataclasses import fields
from pathlib import Path

import typer
from typer.main import get_command

from ftdata.cli.train import options_markdown, register
from ftdata.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "training.md"
TABLES = re.compile(r"<!-- train-options -->\n.*?<!-- /train-options -->", re.S)


def _tables() -> str:
    return f"<!-- train-options -->\n{options_markdown()}<!-- /train-options -->"


def test_the_option_tables_are_the_generated_ones() -> None:
    block = TABLES.search(DOC.read_text(encoding="utf-8"))
    assert block is not None, "docs/training.md has no <!-- train-options --> block"
    assert block.group(0) == _tables(), "stale tables; run `.venv/bin/python tests/train/test_training_doc.py --update`"


def test_every_train_option_has_a_row_with_its_help() -> None:
    text = DOC.read_text(encoding="utf-8")
    for f in fields(TrainConfig):
        assert f"| `{f.name}` |" in text, f"docs/training.md: no row for {f.name}"
        assert f.metadata["help"] in text, f"docs/training.md: help of {f.name} differs from TrainConfig"
    for flag in ("`--data-option KEY=VALUE` / `-D`", "`--output-dir` / `-o`", "`--max-length`", "`--seed`"):
        assert flag in text


def test_every_eval_flag_is_documented() -> None:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """test app"""

    register(app)
    text = DOC.read_text(encoding="utf-8")
    command = get_command(app).commands["eval"]  # type: ignore[attr-defined]
    for param in command.params:
        for flag in param.opts:
            if flag.startswith("--"):
                assert f"`{flag}" in text, f"docs/training.md does not mention {flag}"


def test_gpu_figures_name_their_hardware_and_come_from_the_config_shown() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert "> **Hardware used for this page.**" in text and "NVIDIA H100" in text
    config = ROOT / "examples" / "train_qlora_gpu.yaml"
    assert f"--config examples/{config.name}" in text
    cfg = TrainConfig.from_yaml(config)
    # What the GPU section says the run was: NF4 weights, bf16 compute, packed rows.
    assert (cfg.quantization.value, cfg.precision.value, cfg.data_options.data.packing) == ("4bit", "bf16", True)
    assert cfg.data == str(ROOT / "examples" / "data" / "lamini_docs_600.jsonl")  # relative to the config file


def test_the_yaml_shown_is_the_example_file() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in ("train_quick_cpu.yaml", "train_qlora_alpaca.yaml", "train_dpo_demo.yaml"):
        assert (ROOT / "examples" / name).read_text(encoding="utf-8") in text, f"docs/training.md shows a stale {name}"


def update() -> None:
    """Rewrite the option tables of docs/training.md."""
    text = DOC.read_text(encoding="utf-8")
    DOC.write_text(TABLES.sub(lambda _: _tables(), text), encoding="utf-8")
    print(f"updated {DOC}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        raise SystemExit(f"usage: {sys.argv[0]} --update")
    update()
