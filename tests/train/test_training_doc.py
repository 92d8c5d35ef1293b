"""docs/training.md stays complete: every train option and eval flag is documented."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import typer
from typer.main import get_command

from ftdata.train.commands import register
from ftdata.train.config import TrainConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "training.md"


def test_every_train_option_is_documented_with_its_flag_and_help() -> None:
    text = DOC.read_text(encoding="utf-8")
    for f in fields(TrainConfig):
        assert f"| `{f.name}` |" in text, f"docs/training.md: no row for {f.name}"
        assert f.metadata["help"] in text, f"docs/training.md: help of {f.name} differs from TrainConfig"
        if f.name not in {"data", "data_options"}:
            assert f"`--{f.name.replace('_', '-')}" in text


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
    config = Path(__file__).resolve().parents[2] / "examples" / "train_qlora_gpu.yaml"
    assert f"--config examples/{config.name}" in text
    cfg = TrainConfig.from_yaml(config)
    # What the GPU section says the run was: NF4 weights, bf16 compute, packed rows.
    assert (cfg.quantization.value, cfg.precision.value, cfg.packing) == ("4bit", "bf16", True)
