"""The run record: `run.json` (what ran, on what, with which result), `loss.png` and, for DPO/KTO
runs, `rewards.png` (the reward margin, chosen minus rejected, that TRL logs), for GRPO runs the
mean reward of the sampled completions (and in run.json each reward's mean per logged step)."""

from __future__ import annotations

import hashlib
import json
import math
import platform
import re
import resource
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
PLOT_FILE = "loss.png"
REWARDS_PLOT_FILE = "rewards.png"
# TRL's DPO/KTO log keys: the mean of beta * (policy - reference log-prob) of chosen minus rejected
# completions, and (DPO) the share of pairs where the chosen reward is the higher one.
MARGIN, ACCURACY = "rewards/margins", "rewards/accuracies"
# TRL's GRPO log keys: the mean (weighted sum over the rewards) of a step's completions, and each reward's
# mean as `rewards/<name>/mean` (its std as `rewards/<name>/std`).
REWARD = "reward"
_REWARD_MEAN = re.compile(r"^rewards/(.+)/mean$")
LIBRARIES = ("ftdata", "torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets")


def now() -> str:
    """UTC timestamp, ISO 8601, to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def versions() -> dict[str, str]:
    """Python, platform and the library versions that shape a run."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            module = sys.modules.get(name)
            out[name] = getattr(module, "__version__", "not installed")
    return out


def data_fingerprint(splits: dict[str, Any]) -> str:
    """One short hash over the per-split fingerprints, columns and content hashes."""
    blob = json.dumps(splits, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def peak_memory_bytes(device_kind: str) -> int:
    """Peak CUDA memory allocated by this process, or its peak resident set size on CPU."""
    if device_kind == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def estimated_flops(total_params: int, tokens: int) -> int:
    """The 6·N·D training estimate (forward 2N + backward 4N per token).

    An upper bound for LoRA: the frozen weights need no weight gradients (~4N per token).
    """
    return 6 * total_params * tokens


def points(log_history: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    """(step, value) of every log entry that holds `key` (with a value: TRL logs None for a GRPO reward that
    scored nothing)."""
    return [(int(e["step"]), float(e[key])) for e in log_history if e.get(key) is not None and "step" in e]


def loss_points(log_history: list[dict[str, Any]]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(train, eval) loss points as (step, loss) from the trainer's log history."""
    return points(log_history, "loss"), points(log_history, "eval_loss")


def summarize_losses(log_history: list[dict[str, Any]], *, perplexities: bool = True) -> dict[str, float | None]:
    """First and last logged train loss, final eval loss and its perplexity, and the eval
    loss before training (step 0) when it was measured. `perplexities=False` (DPO/KTO, whose
    loss is no cross-entropy) leaves the perplexities out."""
    train, evals = loss_points(log_history)
    summary = {
        "first_loss": train[0][1] if train else None,
        "last_loss": train[-1][1] if train else None,
        **_final(evals, "eval_loss"),
    }
    if perplexities:
        summary |= {
            "initial_perplexity": perplexity(summary["initial_eval_loss"]),
            "perplexity": perplexity(summary["eval_loss"]),
        }
    return summary


def summarize_rewards(log_history: list[dict[str, Any]]) -> dict[str, float | None]:
    """A DPO/KTO run's reward margins (first and last logged in training, before and after
    training on the eval split) and the eval reward accuracy (DPO)."""
    train = points(log_history, MARGIN)
    return {
        "first_reward_margin": train[0][1] if train else None,
        "last_reward_margin": train[-1][1] if train else None,
        **_final(points(log_history, f"eval_{MARGIN}"), "eval_reward_margin"),
        **_final(points(log_history, f"eval_{ACCURACY}"), "eval_reward_accuracy"),
    }


def summarize_sampled_rewards(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """A GRPO run's mean reward (first and last logged in training, before and after training on the eval
    split) and each reward's first and last logged mean: `{"reward_means": {"exact": {"first": 0.0, "last": 0.5}}}`."""
    train = points(log_history, REWARD)
    means = {
        name: {"first": steps[0][1], "last": steps[-1][1]} for name, steps in reward_means(log_history).items() if steps
    }
    return {
        "first_reward": train[0][1] if train else None,
        "last_reward": train[-1][1] if train else None,
        **_final(points(log_history, f"eval_{REWARD}"), "eval_reward"),
        "reward_means": means,
    }


def reward_means(log_history: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Each reward's mean per logged training step, from TRL's `rewards/<name>/mean` keys (GRPO; a step where
    a reward scored no completion logs None and is left out): `{"exact": [(1, 0.0), (2, 0.25)]}`."""
    names = dict.fromkeys(m.group(1) for e in log_history for key in e if (m := _REWARD_MEAN.match(key)))
    out: dict[str, list[tuple[int, float]]] = {}
    for name in names:
        key = f"rewards/{name}/mean"
        out[name] = [(int(e["step"]), float(e[key])) for e in log_history if e.get(key) is not None and "step" in e]
    return out


def _final(evals: list[tuple[int, float]], name: str) -> dict[str, float | None]:
    """`name` (the last value) and `initial_<name>` (the value at step 0, before training, if measured)."""
    return {
        f"initial_{name}": evals[0][1] if evals and evals[0][0] == 0 else None,
        name: evals[-1][1] if evals else None,
    }


def perplexity(loss: float | None) -> float | None:
    """exp(loss), None when there is no loss, inf when it overflows."""
    if loss is None:
        return None
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def plot_losses(log_history: list[dict[str, Any]], path: Path, *, title: str) -> Path | None:
    """Draw train and eval loss against the step into `path` (PNG); None when nothing was logged."""
    return plot_curves(log_history, path, title=title, key="loss", label="loss")


def plot_rewards(log_history: list[dict[str, Any]], path: Path, *, title: str) -> Path | None:
    """Draw the train and eval reward margin (chosen - rejected) of a DPO/KTO run into `path`, or the mean
    reward of a GRPO run's completions; None for a run that logged neither (SFT)."""
    if any(REWARD in e for e in log_history) and not any(MARGIN in e for e in log_history):
        return plot_curves(log_history, path, title=title, key=REWARD, label="mean reward")
    return plot_curves(log_history, path, title=title, key=MARGIN, label="reward margin")


def plot_curves(log_history: list[dict[str, Any]], path: Path, *, title: str, key: str, label: str) -> Path | None:
    """Draw `key` (train) and `eval_<key>` against the step into `path` (PNG); None when neither was logged."""
    train, evals = points(log_history, key), points(log_history, f"eval_{key}")
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display; safe in worker processes and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train, strict=True), label=f"train {label}", marker="." if len(train) < 50 else None)
    if evals:
        ax.plot(*zip(*evals, strict=True), label=f"eval {label}", marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel(label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write `record` atomically (tmp file + rename), non-finite floats as strings."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_finite(record), indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_run(run_dir: Path) -> dict[str, Any]:
    """The run record of `run_dir` ({} when there is none yet)."""
    path = run_dir / RUN_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so every reader can parse the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
