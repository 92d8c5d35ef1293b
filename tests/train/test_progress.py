"""`ftdata train` output: a progress bar with the loss and an eval table, not raw log dicts."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from ftdata.train import TrainConfig, train
from ftdata.train.config import Method
from ftdata.train.progress import EVAL_HEADER, PREFERENCE_HEADER, TrainingDisplay, eval_row


def test_eval_row_aligns_under_the_header() -> None:
    row = eval_row(30, {"eval_loss": 2.104, "eval_mean_token_accuracy": 0.5612})
    assert row == "   30     2.1040        8.20           0.561"
    assert len(row) == len(EVAL_HEADER)
    assert eval_row(0, {"eval_loss": 3.0}) == "    0     3.0000       20.09               -"


def test_a_preference_run_shows_reward_margin_and_accuracy() -> None:
    logs = {"eval_loss": 0.6012, "eval_rewards/margins": 0.2141, "eval_rewards/accuracies": 0.75, "eval_mean_token_accuracy": 0.3}
    row = eval_row(30, logs, Method.DPO)
    assert PREFERENCE_HEADER == " step  eval loss  reward margin  reward accuracy"
    assert row == "   30     0.6012         0.2141            0.750" and len(row) == len(PREFERENCE_HEADER)
    assert eval_row(0, {"eval_loss": 0.5, "eval_rewards/margins": 0.0}, Method.KTO) == "    0     0.5000         0.0000                -"


def test_train_shows_a_bar_with_the_loss_and_an_eval_table(
    tmp_path: Path, tiny_model_dir: Path, qa_dataset_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120, color_system=None)
    cfg = TrainConfig(
        model=str(tiny_model_dir), data=str(qa_dataset_dir), quantization="none", max_steps=2,
        per_device_train_batch_size=2, per_device_eval_batch_size=8, logging_steps=1, eval_strategy="steps",
        eval_steps=1, save_strategy="no", output_dir=str(tmp_path), run_name="shown",
    )  # fmt: skip
    run_dir = train(cfg, console=console).run_dir
    text = out.getvalue()
    history = json.loads((run_dir / "run.json").read_text())["log_history"]
    evals = [e for e in history if "eval_loss" in e]
    assert [e["step"] for e in evals] == [0, 1, 2]
    last_loss = [e["loss"] for e in history if "loss" in e][-1]
    expected_rows = [EVAL_HEADER, *(eval_row(e["step"], e) for e in evals)]
    lines = text.splitlines()
    assert [line for line in lines if not line.startswith("training")] == expected_rows
    bars = [line for line in lines if line.startswith("training")]
    assert len(bars) == 1  # not a terminal: the bar is drawn once, at the end
    assert re.fullmatch(rf"training\s+━+ 2/2 \S+ \S+ loss {last_loss:.3f}", bars[0].rstrip()), bars[0]
    assert "{'" not in text  # no raw log dicts on screen ...
    assert "'eval_loss'" not in capsys.readouterr().out  # ... and none printed past the console


def _callback_args():
    from transformers import TrainerControl, TrainingArguments

    return TrainingArguments(output_dir="unused", use_cpu=True, report_to="none"), TrainerControl()


def test_verbose_also_prints_the_raw_logs() -> None:
    from transformers import TrainerState

    out = io.StringIO()
    display = TrainingDisplay(Console(file=out, force_terminal=False, width=200), verbose=True)
    args, control = _callback_args()
    state = TrainerState(is_world_process_zero=True, max_steps=4, global_step=2)
    logs = {"eval_loss": 2.5, "eval_runtime": 4.2, "epoch": 0.5}
    display.on_log(args, state, control, logs=logs)
    display.on_log(args, state, control, logs={"loss": 2.25, "grad_norm": 0.79})
    assert out.getvalue().splitlines() == [
        repr(logs), EVAL_HEADER, eval_row(2, logs), "{'loss': 2.25, 'grad_norm': 0.79}"
    ]


def test_only_the_main_process_draws() -> None:
    from transformers import TrainerState

    out = io.StringIO()
    display = TrainingDisplay(Console(file=out, force_terminal=False), verbose=True)
    args, control = _callback_args()
    state = TrainerState(is_world_process_zero=False, max_steps=4)
    display.on_train_begin(args, state, control)
    display.on_log(args, state, control, logs={"eval_loss": 1.0})
    display.on_train_end(args, state, control)
    assert out.getvalue() == ""


def test_the_bitsandbytes_kernel_hub_notice_is_dropped_and_other_records_kept() -> None:
    import logging

    import ftdata.train  # noqa: F401  (installs the filter)

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")

    def record(msg: str) -> logging.LogRecord:
        return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, msg, (), None)

    notice = "Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'."
    assert not logger.filter(record(notice))
    assert logger.filter(record("CUDA kernel failed"))  # the record itself from Python 3.12 on, True before
