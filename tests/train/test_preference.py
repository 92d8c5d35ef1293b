"""DPO and KTO through `ftdata train` / `ftdata eval`: a tiny Llama with the SmolLM2 vocabulary, CPU,
a few steps on preference rows given to TRL's trainers untouched.

The builds come from `train_records.preference_build` (ftdata's rows under the rule, a build.json with
the task) until the preference builder is merged; then that helper calls `ftdata build`.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from train_records import preference_build, preference_records, preference_rows
from typer.testing import CliRunner

import ftdata
from ftdata.cli.app import app
from ftdata.errors import ConfigError
from ftdata.train import TrainConfig, resume_config, train
from ftdata.train.config import Method
from ftdata.train.data import data_task, load_splits
from ftdata.types import Task

torch = pytest.importorskip("torch")
LOG2 = math.log(2)


def _config(model: Path | None, data: Path, out: Path, name: str, **overrides) -> TrainConfig:
    """A few steps of 2 rows, constant learning rate, a log every step (model None: the bundled one)."""
    values = {
        "model": str(model) if model else None, "data": str(data), "quantization": "none", "lora_r": 8, "lora_alpha": 16,
        "max_steps": 3, "learning_rate": 5e-3, "lr_scheduler_type": "constant", "warmup_steps": 0,
        "per_device_train_batch_size": 2, "logging_steps": 1, "eval_strategy": "no", "save_strategy": "no",
        "output_dir": str(out), "run_name": name,
    }  # fmt: skip
    return TrainConfig(**{**values, **overrides})


def _history(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "run.json").read_text())["log_history"]


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, dpo_build: Path):
    """DPO with LoRA: 3 steps, eval before and after, checkpoint-2."""
    cfg = _config(tiny_model_dir, dpo_build, tmp_path_factory.mktemp("runs"), "dpo", eval_strategy="steps",
                  eval_steps=3, save_strategy="steps", save_steps=2, save_total_limit=None)  # fmt: skip
    return train(cfg)


# --- options --------------------------------------------------------------------------------------


def test_method_options_parse_once_and_exclude_sft_only_ones() -> None:
    cfg = TrainConfig(method="DPO", loss_type=" IPO ", beta="0.5")
    assert (cfg.method, cfg.loss_type, cfg.beta) == (Method.DPO, "ipo", 0.5)
    assert (cfg.to_dict()["method"], TrainConfig().method) == ("dpo", None)
    assert [Method.of(task) for task in Task] == [Method.SFT, Method.DPO, Method.KTO, Method.GRPO]
    cases = [
        ({"method": "sft", "loss_type": "ipo"},
         "loss_type is an option of --method dpo, kto or grpo; this run trains sft rows, got loss_type='ipo'"),
        ({"method": "dpo", "streaming": True}, "streaming works on sft rows only and this run trains dpo: drop streaming"),
        ({"method": "kto", "group_by_length": True},
         "group_by_length works on sft rows only and this run trains kto: drop group_by_length"),
        ({"method": "dpo", "packing": True}, "packing works on sft rows only and this run trains dpo: drop packing"),
        ({"method": "orpo"}, "method must be one of sft, dpo, kto, grpo; got method='orpo'"),
        ({"beta": 0}, "beta must be > 0, got beta=0"),
        ({"undesirable_weight": -1}, "undesirable_weight must be > 0, got undesirable_weight=-1"),
    ]  # fmt: skip
    for values, message in cases:
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            TrainConfig.from_mapping(values)


def test_the_task_comes_from_the_build_else_from_the_columns() -> None:
    assert data_task("preference", ["input_ids", "labels"]) is Task.PREFERENCE  # what the build declared wins
    assert data_task(None, ["prompt_ids", "chosen_ids", "rejected_ids", "extra"]) is Task.PREFERENCE
    assert data_task(None, ["prompt_ids", "completion_ids", "label"]) is Task.KTO
    assert data_task(None, ["input_ids", "attention_mask", "labels"]) is Task.SFT
    assert data_task("sft", []) is Task.SFT


def test_loss_types_are_the_installed_trls(tmp_path: Path, tiny_model_dir: Path, dpo_build: Path) -> None:
    from trl import __version__

    from ftdata.train.preference import loss_type, loss_types

    assert loss_types(Method.DPO) == (
        "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
        "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
    )  # fmt: skip
    assert loss_types(Method.KTO) == ("kto", "apo_zero_unpaired")
    assert loss_type(TrainConfig(), Method.DPO) == "sigmoid" and loss_type(TrainConfig(), Method.KTO) == "kto"
    with pytest.raises(ConfigError, match=rf"^loss_type must be one of kto, apo_zero_unpaired for --method kto \(TRL {__version__}\); got loss_type='ipo'$"):
        loss_type(TrainConfig(loss_type="ipo"), Method.KTO)


def test_trl_configs_get_the_rows_as_built(tmp_path: Path, tiny_model_dir: Path, dpo_build: Path, kto_build: Path) -> None:
    from ftdata.train.model import load_for_training
    from ftdata.train.preference import preference_args

    cfg = _config(tiny_model_dir, dpo_build, tmp_path, "args", loss_type="ipo", beta=0.25)
    loaded = load_for_training(cfg)
    dpo = preference_args(cfg, Method.DPO, run_dir=tmp_path, loaded=loaded, splits=load_splits(cfg, loaded.tokenizer))
    assert (type(dpo).__name__, dpo.max_length, dpo.loss_type, dpo.beta) == ("DPOConfig", None, ["ipo"], 0.25)
    assert (dpo.train_sampling_strategy, dpo.max_steps, dpo.eval_strategy) == ("random", 3, "no")
    cfg = _config(tiny_model_dir, kto_build, tmp_path, "args", undesirable_weight=1.5)
    kto = preference_args(cfg, Method.KTO, run_dir=tmp_path, loaded=loaded, splits=load_splits(cfg, loaded.tokenizer))
    assert (type(kto).__name__, kto.max_length, kto.loss_type, kto.beta) == ("KTOConfig", None, "kto", 0.1)
    assert (kto.train_sampling_strategy, kto.desirable_weight, kto.undesirable_weight) == ("sequential", 1.0, 1.5)
    with pytest.raises(ConfigError, match=r"^--method kto needs per_device_train_batch_size >= 2: .*; got per_device_train_batch_size=1$"):
        preference_args(TrainConfig(per_device_train_batch_size=1), Method.KTO, run_dir=tmp_path, loaded=loaded,
                        splits=load_splits(cfg, loaded.tokenizer))  # fmt: skip


def test_kl_rows_and_label_advice_are_trls(tmp_path: Path, smol_tok) -> None:
    """TRL's own KTO preparation, run on text rows, gives the KL rows `kl_rows` gives its output."""
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    from ftdata.train.preference import KL_COLUMN, kl_rows, warn_label_balance

    trainer = SimpleNamespace(calculate_KL=True, _tokenizer=smol_tok, desirable_weight=1.0, undesirable_weight=1.0)
    text = Dataset.from_list([{"prompt": f"Q{i}?", "completion": f" A{i}.", "label": i % 2 == 0} for i in range(5)])
    args = KTOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, max_length=None, use_cpu=True, bf16=False)
    theirs = KTOTrainer._prepare_dataset(trainer, text, smol_tok, args, "train")
    ours = kl_rows(theirs.remove_columns(KL_COLUMN), batch_size=2)
    assert ours[KL_COLUMN] == theirs[KL_COLUMN]
    c = theirs["completion_ids"]
    assert ours[KL_COLUMN] == [c[1], c[0], c[3], c[2], c[4]]  # rotated by one inside each batch of 2
    # TRL logs for these 3 desirable and 2 undesirable rows: desirable_weight in [0.67, 0.89] or undesirable_weight in [1.13, 1.5]
    with pytest.warns(UserWarning, match=r"^ftdata: 3 desirable and 2 undesirable rows: set desirable_weight in \[0\.67, 0\.89\] or undesirable_weight in \[1\.13, 1\.50\]"):
        warn_label_balance(text["label"], TrainConfig())


# --- training ---------------------------------------------------------------------------------------


def test_dpo_with_lora_trains_against_the_adapter_off_model(dpo_run) -> None:
    m = dpo_run.metrics
    assert m["global_step"] == 3 and math.isfinite(m["last_loss"]) and math.isfinite(m["eval_loss"])
    # Step 1: the fresh adapter is the base, so the policy equals the reference: loss log 2, margin 0.
    assert m["first_loss"] == pytest.approx(LOG2, abs=1e-6) and m["first_reward_margin"] == 0
    assert m["initial_eval_loss"] == pytest.approx(LOG2, abs=1e-6) and m["initial_eval_reward_margin"] == 0
    assert m["eval_reward_margin"] > 0 and m["eval_loss"] < LOG2
    assert "perplexity" not in m and "initial_perplexity" not in m  # a DPO loss is no cross-entropy
    run = dpo_run.run_dir
    # TRL would copy the fresh adapter into a "ref" adapter and save it as adapter/ref/: the reference is the adapter switched off
    assert sorted(p.name for p in (run / "adapter").iterdir() if p.is_dir()) == []
    assert (run / "rewards.png").read_bytes()[:4] == b"\x89PNG" and (run / "loss.png").is_file()
    record = json.loads((run / "run.json").read_text())
    assert record["method"] == {"name": "dpo", "loss_type": "sigmoid", "beta": 0.1, "reference": "the base model (adapter disabled)"}
    assert record["data"]["task"] == "preference" and record["outputs"]["rewards_plot"] == "rewards.png"
    train_split = record["data"]["splits"]["train"]
    assert (train_split["columns"], train_split["rows"]) == (["prompt_ids", "chosen_ids", "rejected_ids"], 16)
    assert TrainConfig.from_yaml(run / "config.yaml").method is None  # the data decided; a resume decides the same


def test_dpo_resumes_from_a_checkpoint(tmp_path: Path, tiny_model_dir: Path, dpo_build: Path, dpo_run) -> None:
    from transformers import TrainerCallback

    class Stop(TrainerCallback):  # ends the run after step 2, as a killed job would leave it: checkpoint-2
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step == 2

    cfg = _config(tiny_model_dir, dpo_build, tmp_path, "stopped", save_strategy="steps", save_steps=2)
    train(cfg, callbacks=[Stop()])
    run = tmp_path / "stopped"
    with pytest.raises(ConfigError, match=r"^cannot change method: None -> 'kto' when resuming stopped"):
        resume_config(run, {"method": "kto"})
    resumed = train(resume_config(run), resume=run)
    assert resumed.metrics["global_step"] == 3
    assert json.loads((run / "run.json").read_text())["resumed_from"] == "checkpoint-2"
    losses = {e["step"]: e["loss"] for e in _history(run) if "loss" in e}
    straight = {e["step"]: e["loss"] for e in _history(dpo_run.run_dir) if "loss" in e}
    assert sorted(losses) == [1, 2, 3]
    for step in (1, 2, 3):  # same rows, order, adapter, optimizer: the same losses as the uninterrupted run
        assert losses[step] == pytest.approx(straight[step], abs=1e-5)


@pytest.mark.parametrize("quantization", ["none", pytest.param("4bit", marks=pytest.mark.slow)])  # 4bit: QLoRA, ~5x slower on CPU
def test_kto_with_lora_trains_with_trls_kl_rows(tmp_path: Path, tiny_model_dir: Path, kto_build: Path, quantization: str) -> None:
    result = train(_config(tiny_model_dir, kto_build, tmp_path, "kto", max_steps=2, quantization=quantization))
    m = result.metrics
    assert m["first_loss"] == pytest.approx(0.5, abs=1e-6)  # policy = reference: 1 - sigmoid(0)
    assert math.isfinite(m["last_loss"]) and m["global_step"] == 2
    record = json.loads((result.run_dir / "run.json").read_text())
    assert record["method"] == {"name": "kto", "loss_type": "kto", "beta": 0.1, "desirable_weight": 1.0,
                                "undesirable_weight": 1.0, "reference": "the base model (adapter disabled)"}  # fmt: skip
    assert record["data"]["splits"]["train"]["desirable"] == 8 and "kl" in record["log_history"][0]
    assert ftdata.load(kto_build).report.splits == {"train": 16, "test": 4}  # the KL rows left the build folder as built


@pytest.mark.parametrize("task", ["preference", "kto"])
def test_full_fine_tuning_trains_against_a_frozen_copy(tmp_path: Path, tiny_model_dir: Path, dpo_build: Path,
                                                       kto_build: Path, task: str) -> None:  # fmt: skip
    data = dpo_build if task == "preference" else kto_build
    result = train(_config(tiny_model_dir, data, tmp_path, task, lora=False, max_steps=2, learning_rate=1e-3))
    m = result.metrics
    assert m["first_loss"] == pytest.approx(LOG2 if task == "preference" else 0.5, abs=1e-6)
    assert math.isfinite(m["last_loss"]) and m["last_loss"] != m["first_loss"]
    assert (result.run_dir / "model" / "model.safetensors").is_file()
    assert json.loads((result.run_dir / "run.json").read_text())["method"]["reference"] == "a frozen copy of the base model"


def test_a_method_the_rows_do_not_fit_is_one_line(tmp_path: Path, tiny_model_dir: Path, dpo_build: Path,
                                                  qa_dataset_dir: Path) -> None:  # fmt: skip
    common = ["--model", tiny_model_dir, "--quantization", "none", "-o", tmp_path, "--max-steps", "1"]
    cases = [
        (dpo_build, "kto", (f"--method kto trains unpaired rows (prompt_ids, completion_ids, label), but {dpo_build} holds "
         "preference pairs (prompt_ids, chosen_ids, rejected_ids): train it with --method dpo (or no --method), or build "
         "the data with --task kto")),
        (qa_dataset_dir, "dpo", ("--method dpo trains preference pairs (prompt_ids, chosen_ids, rejected_ids), but "
         f"{qa_dataset_dir} holds sft rows (input_ids, labels): train it with --method sft (or no --method), or build the "
         "data with --task preference")),
    ]  # fmt: skip
    for data, method, message in cases:
        result = CliRunner().invoke(app, [str(a) for a in ("train", data, "--method", method, *common)])
        assert (result.exit_code, result.stderr) == (2, f"error: {message}\n")


def test_the_summary_of_a_dpo_run_shows_the_reward_margins(capsys: pytest.CaptureFixture[str]) -> None:
    from ftdata.cli.train import _print_train_summary
    from ftdata.train.run import TrainResult

    metrics = {"global_step": 10, "wall_seconds": 12.5, "first_loss": 0.6931, "last_loss": 0.5, "initial_eval_loss": 0.6931,
               "eval_loss": 0.6, "first_reward_margin": 0.0, "last_reward_margin": 0.4, "initial_eval_reward_margin": 0.0,
               "eval_reward_margin": 0.2, "initial_eval_reward_accuracy": 0.0, "eval_reward_accuracy": 0.75}  # fmt: skip
    _print_train_summary(TrainResult(run_dir=Path("runs/d"), output_dir=Path("runs/d/adapter"), merged_dir=None, metrics=metrics))
    assert capsys.readouterr().out.splitlines() == [
        "done runs/d  (10 steps, 12.5 s)",
        "  train loss 0.6931 -> 0.5000",
        "  eval loss 0.6931 -> 0.6000",
        "  train reward margin 0.0000 -> 0.4000",
        "  eval reward margin 0.0000 -> 0.2000",
        "  eval reward accuracy 0.0000 -> 0.7500",
        "  saved runs/d/adapter",
    ]


# --- evaluation ---------------------------------------------------------------------------------------


class Bigram(torch.nn.Module):
    """A model whose next-token distribution depends on the current token only: logits = log of `probs`."""

    def __init__(self, probs: list[list[float]]):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(probs).log())

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, logits_to_keep=0):
        return SimpleNamespace(logits=self.table[input_ids][:, -logits_to_keep:])


def test_preference_accuracy_by_hand() -> None:
    from ftdata.train.preference_eval import (
        HeldOutPair,
        ScoringSettings,
        completion_logps,
        pair_margins,
        preference_report,
    )

    model = Bigram([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25], [0.5, 0.2, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1]])
    # log p([3, 0] | [1]) = log p(3|1) + log p(0|3) = log 0.25 + log 0.7; padding and batching change nothing.
    assert completion_logps(model, [([2, 1], [3, 0]), ([1], [2])], batch_size=2, pad_id=0) == pytest.approx(
        [math.log(0.25 * 0.7), math.log(0.25)]
    )
    pairs = [
        HeldOutPair((0,), (3, 0), (1, 0)),  # 0.4 * 0.7 vs 0.2 * 0.25: chosen higher
        HeldOutPair((1,), (2,), (3,)),  # 0.25 vs 0.25: a tie is not right
        HeldOutPair((2,), (3,), (0, 0)),  # 0.1 vs 0.5 * 0.1: chosen higher
        HeldOutPair((3,), (1, 1), (0,)),  # 0.1 * 0.25 vs 0.7: rejected higher
    ]
    margins = pair_margins(model, pairs, settings=ScoringSettings(batch_size=3), pad_id=0)
    assert margins == pytest.approx([math.log(0.28 / 0.05), 0.0, math.log(2.0), math.log(0.025 / 0.7)], abs=1e-6)
    tok = SimpleNamespace(decode=lambda ids: " ".join(map(str, ids)))
    report = preference_report(Path("run"), tok, pairs, {"tuned": margins}, skipped=0, settings=ScoringSettings())
    assert report.accuracy == {"tuned": 0.5}
    assert report.rows[0] == {"prompt": "0", "chosen": "3 0", "rejected": "1 0", "tuned": round(math.log(0.28 / 0.05), 4)}


def test_eval_of_a_dpo_run_agrees_with_trls_rewards(dpo_run) -> None:
    """The tuned-minus-base log-prob margins `ftdata eval` computes are TRL's eval rewards / beta."""
    from ftdata.train.run import evaluate_run
    from ftdata.train.generation import GenerationSettings

    report = evaluate_run(dpo_run.run_dir, settings=GenerationSettings(batch_size=5))
    assert len(report.rows) == 4 and set(report.accuracy) == {"base", "tuned"}
    final = [e for e in _history(dpo_run.run_dir) if "eval_rewards/margins" in e][-1]
    rewards = [0.1 * (row["tuned"] - row["base"]) for row in report.rows]
    assert sum(rewards) / len(rewards) == pytest.approx(final["eval_rewards/margins"], abs=2e-5)  # rows keep 4 decimals
    assert sum(r > 0 for r in rewards) / len(rewards) == final["eval_rewards/accuracies"]
    saved = json.loads(Path(report.files["json"]).read_text())
    assert saved["preference_accuracy"] == report.accuracy and saved["settings"] == {"batch_size": 5}
    assert Path(report.files["csv"]).read_text().splitlines()[0] == "prompt,chosen,rejected,base,tuned"
    evaluation = json.loads((dpo_run.run_dir / "run.json").read_text())["evaluation"]
    assert evaluation["samples"] == 4 and evaluation["mean_logp_margin"] == report.margin


def test_kto_rows_are_paired_by_prompt_for_eval(smol_tok) -> None:
    from ftdata.train.preference_eval import held_out_pairs

    rows = preference_rows(smol_tok, preference_records("kto")[:5], "kto")  # 2 whole pairs and one desirable row
    pairs, skipped = held_out_pairs(rows, Task.KTO)
    assert skipped == 1 and [smol_tok.decode(p.chosen_ids) for p in pairs] == ["Blue.<|im_end|>", "Four.<|im_end|>"]
    assert [smol_tok.decode(p.rejected_ids) for p in pairs] == ["Green.<|im_end|>", "Nine.<|im_end|>"]


@pytest.mark.slow
def test_dpo_on_the_shared_demo_with_the_bundled_model(tmp_path: Path, smol_tok) -> None:
    """SmolLM2-135M-Instruct, LoRA, 8 steps on 4 of LLaMA-Factory's DPO demo pairs (rows under the rule),
    each seen 4 times: the loss stays finite and the reward margin rises."""
    from ftdata.io.readers import read_records

    demo = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "preference" / "llamafactory_dpo_en_demo.json"
    records = [row for _, row in read_records(demo)]
    rows = preference_rows(smol_tok, records, "preference")
    short = [r for r, row in zip(records, rows) if len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"])) <= 256]
    data = preference_build(tmp_path / "demo", smol_tok, task="preference", train=short[:4] * 4)
    result = train(_config(None, data, tmp_path / "runs", "demo", max_steps=8, learning_rate=5e-4))
    history = _history(result.run_dir)
    margins = [e["rewards/margins"] for e in history if "rewards/margins" in e]
    assert len(margins) == 8 and all(math.isfinite(e["loss"]) for e in history if "loss" in e)
    assert result.metrics["first_loss"] == pytest.approx(LOG2, abs=1e-5)
    assert sum(margins[4:]) / 4 > sum(margins[:4]) / 4, margins
