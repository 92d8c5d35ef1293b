"""run.json helpers and the loss plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ftdata.train import record

HISTORY = [
    {"eval_loss": 2.1, "step": 0, "epoch": 0},
    {"loss": 2.0, "step": 1, "epoch": 0.1},
    {"loss": 1.5, "step": 5, "epoch": 0.5},
    {"eval_loss": 1.4, "step": 5, "epoch": 0.5},
    {"loss": 1.0, "step": 10, "epoch": 1.0},
    {"eval_loss": 1.1, "step": 10, "epoch": 1.0},
    {"train_runtime": 3.0, "step": 10},
]


def test_loss_points_and_summary() -> None:
    train, evals = record.loss_points(HISTORY)
    assert train == [(1, 2.0), (5, 1.5), (10, 1.0)]
    assert evals == [(0, 2.1), (5, 1.4), (10, 1.1)]
    summary = record.summarize_losses(HISTORY)
    assert summary["first_loss"] == 2.0 and summary["last_loss"] == 1.0
    assert summary["eval_loss"] == 1.1 and math.isclose(summary["perplexity"], math.exp(1.1))
    assert summary["initial_eval_loss"] == 2.1 and math.isclose(summary["initial_perplexity"], math.exp(2.1))
    assert record.summarize_losses(HISTORY[1:])["initial_eval_loss"] is None


def test_plot_is_a_png(tmp_path: Path) -> None:
    path = record.plot_losses(HISTORY, tmp_path / "loss.png", title="t")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert record.plot_losses([{"train_runtime": 1.0}], tmp_path / "none.png", title="t") is None


def test_json_is_strict_even_with_inf(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    record.write_json(path, {"perplexity": math.inf, "nested": [float("nan")]})
    assert json.loads(path.read_text()) == {"perplexity": "inf", "nested": ["nan"]}
    assert record.read_run(tmp_path) == {"perplexity": "inf", "nested": ["nan"]}
    assert record.read_run(tmp_path / "missing") == {}


def test_flops_estimate_and_fingerprint() -> None:
    assert record.estimated_flops(1_000, 10) == 60_000
    a = record.data_fingerprint({"train": {"rows": 3}})
    assert a == record.data_fingerprint({"train": {"rows": 3}}) != record.data_fingerprint({"train": {"rows": 4}})
    assert record.perplexity(None) is None and record.perplexity(1e6) == math.inf


def test_versions_name_the_training_stack() -> None:
    found = record.versions()
    for name in ("python", "torch", "transformers", "trl", "peft", "bitsandbytes"):
        assert found[name]


# TRL's GRPO log: the mean reward of a step's completions, each reward's mean (None where it scored nothing).
GRPO_HISTORY = [
    {"loss": 0.0, "reward": 0.25, "rewards/exact/mean": 0.0, "rewards/exact/std": 0.0, "rewards/format/mean": 0.25, "step": 1},
    {"eval_loss": 0.0, "eval_reward": 0.5, "eval_rewards/exact/mean": 0.5, "step": 1},
    {"loss": 0.01, "reward": 0.75, "rewards/exact/mean": None, "rewards/format/mean": 0.75, "step": 2},
    {"loss": 0.02, "reward": 1.0, "rewards/exact/mean": 0.5, "rewards/format/mean": 0.5, "step": 3},
    {"train_runtime": 3.0, "step": 3},
]


def test_grpo_rewards_per_step_and_summary(tmp_path: Path) -> None:
    assert record.reward_means(GRPO_HISTORY) == {"exact": [(1, 0.0), (3, 0.5)], "format": [(1, 0.25), (2, 0.75), (3, 0.5)]}
    assert record.summarize_sampled_rewards(GRPO_HISTORY) == {
        "first_reward": 0.25, "last_reward": 1.0, "initial_eval_reward": None, "eval_reward": 0.5,
        "reward_means": {"exact": {"first": 0.0, "last": 0.5}, "format": {"first": 0.25, "last": 0.5}},
    }  # fmt: skip
    assert record.reward_means(HISTORY) == {} and record.reward_means([{"rewards/margins": 0.1, "step": 1}]) == {}
    path = record.plot_rewards(GRPO_HISTORY, tmp_path / "rewards.png", title="t")
    assert path is not None and path.read_bytes()[:4] == b"\x89PNG"
    assert record.plot_rewards(HISTORY, tmp_path / "none.png", title="t") is None
