"""End to end on CPU: a tiny Llama + the real SmolLM2 tokenizer, QLoRA through SFTTrainer.

One module-scoped run (4-bit NF4 + LoRA, eval split, checkpoints, merge) feeds most tests;
the resume test kills a training process after step 3 and resumes it from checkpoint-2.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ftdata.errors import ConfigError
from ftdata.train import TrainConfig, resume_config, train

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, qa_dataset_dir: Path):
    """QLoRA on the repeated QA rows: 8 steps of 8 rows, eval + checkpoint every 4 steps, merged."""
    cfg = TrainConfig(
        model=str(tiny_model_dir), data=str(qa_dataset_dir), quantization="4bit", lora_r=16, lora_alpha=32,
        max_steps=8, learning_rate=1e-2, lr_scheduler_type="constant", warmup_steps=0,
        per_device_train_batch_size=8, logging_steps=2, eval_strategy="steps", eval_steps=4, save_steps=4,
        save_total_limit=3, merge=True, output_dir=str(tmp_path_factory.mktemp("runs")), run_name="qlora",
    )  # fmt: skip
    return train(cfg)


def test_loss_is_finite_and_decreases(trained) -> None:
    m = trained.metrics
    assert math.isfinite(m["first_loss"]) and math.isfinite(m["last_loss"])
    assert m["last_loss"] < m["first_loss"] - 0.05
    assert m["global_step"] == 8
    assert math.isfinite(m["eval_loss"]) and m["perplexity"] == pytest.approx(math.exp(m["eval_loss"]))


def test_run_folder_layout(trained) -> None:
    run = trained.run_dir
    assert run.name == "qlora"
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["r"] == 16
    assert (run / "adapter" / "tokenizer.json").is_file()
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    assert (run / "checkpoint-4" / "optimizer.pt").is_file()
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / "eval_data" / "dataset_info.json").is_file()
    assert TrainConfig.from_yaml(run / "config.yaml").lora_r == 16


def test_run_json_records_the_run(trained) -> None:
    record = json.loads((trained.run_dir / "run.json").read_text())
    assert record["status"] == "completed"
    assert record["config"]["quantization"] == "4bit"
    model = record["model"]
    assert 0 < model["trainable_params"] < model["total_params"] and model["memory_footprint_bytes"] > 0
    data = record["data"]
    assert len(data["fingerprint"]) == 16 and data["packed"] is False
    assert data["splits"]["train"]["rows"] == 32 and data["splits"]["test"]["rows"] == 8
    assert data["splits"]["train"]["trained_tokens"] < data["splits"]["train"]["tokens"]
    assert {"torch", "transformers", "trl", "peft", "bitsandbytes"} <= set(record["versions"])
    metrics = record["metrics"]
    assert metrics["tokens_seen"] > 0
    assert metrics["estimated_flops"] == 6 * model["total_params"] * metrics["tokens_seen"]
    assert [e["step"] for e in record["log_history"] if "eval_loss" in e] == [0, 4, 8]  # 0: before training
    assert metrics["eval_loss"] < metrics["initial_eval_loss"]


def test_merged_model_equals_base_plus_adapter(trained, tiny_model_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 504, 3226, 314, 253, 2]])
    merged = AutoModelForCausalLM.from_pretrained(str(trained.merged_dir)).eval()
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    adapted = PeftModel.from_pretrained(base, str(trained.output_dir)).eval()
    with torch.no_grad():
        expected = adapted(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-4)  # the adapter did change the model


def test_eval_writes_the_comparison(trained) -> None:
    from ftdata.train.run import evaluate_run
    from ftdata.train.generation import GenerationSettings, corpus_bleu

    report = evaluate_run(trained.run_dir, max_samples=5, settings=GenerationSettings(max_new_tokens=6, batch_size=3))
    assert len(report.rows) == 5
    assert [r["reference"] for r in report.rows][:2] == ["The sky is blue.", "A cat has four legs."]
    for row in report.rows:
        assert row["prompt"].endswith("<|im_start|>assistant\n")
        assert "<|im_start|>" not in row["tuned"] and "<|im_start|>" not in row["base"]  # prompt stripped
    saved = json.loads(Path(report.files["json"]).read_text())
    assert saved["rows"] == report.rows and saved["settings"]["max_new_tokens"] == 6
    tuned, references = [r["tuned"] for r in report.rows], [r["reference"] for r in report.rows]
    assert saved["bleu"]["tuned"] == corpus_bleu(tuned, references)
    assert Path(report.files["csv"]).read_text().splitlines()[0] == "prompt,reference,base,tuned"
    assert json.loads((trained.run_dir / "run.json").read_text())["evaluation"]["samples"] == 5


def test_resume_after_a_crash_continues_the_same_run(tmp_path: Path, tiny_model_dir: Path, qa_dataset_dir: Path):
    cfg = TrainConfig(
        model=str(tiny_model_dir), data=str(qa_dataset_dir), quantization="none", lora_r=8,
        max_steps=5, learning_rate=5e-3, per_device_train_batch_size=4, logging_steps=1, save_steps=2,
        save_total_limit=None, eval_strategy="no", output_dir=str(tmp_path), run_name="crashed",
    )  # fmt: skip
    config_file = tmp_path / "crashed.yaml"
    cfg.to_yaml(config_file)
    script = textwrap.dedent(
        """
        import os, sys
        from transformers import TrainerCallback
        from ftdata.train import TrainConfig, train

        class Crash(TrainerCallback):  # dies like a killed job: after step 3, checkpoint-2 on disk
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == 3:
                    os._exit(17)

        train(TrainConfig.from_yaml(sys.argv[1]), callbacks=[Crash()])
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FTDATA_CACHE": os.environ.get("FTDATA_CACHE", "")}
    env = {k: v for k, v in env.items() if v}
    command = [sys.executable, "-c", script, str(config_file)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    run_dir = tmp_path / "crashed"
    assert proc.returncode == 17, proc.stderr[-2000:]
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (run_dir / "adapter").exists()

    with pytest.raises(ConfigError, match=r"cannot change lora_r: 8 -> 4 when resuming crashed"):
        resume_config(run_dir, {"lora_r": 4})
    resumed = train(resume_config(run_dir), resume=run_dir)
    straight = train(TrainConfig.from_mapping({**cfg.to_dict(), "run_name": "straight"}))

    assert resumed.metrics["global_step"] == straight.metrics["global_step"] == 5
    record = json.loads((run_dir / "run.json").read_text())
    assert record["resumed_from"] == "checkpoint-2"
    losses = {}
    for name, result in (("resumed", resumed), ("straight", straight)):
        history = json.loads((result.run_dir / "run.json").read_text())["log_history"]
        losses[name] = {e["step"]: e["loss"] for e in history if "loss" in e}
    assert sorted(losses["resumed"]) == [1, 2, 3, 4, 5]  # steps 1-2 from the checkpoint, 3-5 after resuming
    for step in (1, 2, 3, 4, 5):  # same data order, weights, optimizer and RNG (dropout) state: same losses
        assert losses["resumed"][step] == pytest.approx(losses["straight"][step], abs=1e-5)
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_resume_needs_a_checkpoint(tmp_path: Path) -> None:
    TrainConfig(data="a.json").to_yaml(tmp_path / "config.yaml")
    with pytest.raises(ConfigError, match="nothing to resume in .*: it has no checkpoint-N folder yet"):
        train(TrainConfig(data="a.json"), resume=tmp_path)
    with pytest.raises(ConfigError, match="is not an ftdata run folder"):
        resume_config(tmp_path / "elsewhere")
