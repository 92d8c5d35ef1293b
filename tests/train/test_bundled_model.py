"""The real bundled SmolLM2-135M-Instruct (slow on CPU) and QLoRA on a CUDA GPU (gpu)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ftdata.train import TrainConfig, train

torch = pytest.importorskip("torch")


@pytest.mark.slow
def test_bundled_model_materialises_once() -> None:
    from transformers import AutoConfig

    from ftdata.train.model import bundled_model_dir, resolve_model_path

    folder = bundled_model_dir()
    assert resolve_model_path(None) == resolve_model_path("smollm2") == folder
    config = AutoConfig.from_pretrained(str(folder))
    assert config.model_type == "llama" and config.num_hidden_layers == 30
    assert getattr(config, "quantization_config", None) is None  # the GGUF marker is gone
    assert {"model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {p.name for p in folder.iterdir()}


@pytest.mark.slow
def test_qlora_on_the_bundled_model_cpu(tmp_path: Path, qa_json: Path) -> None:
    cfg = TrainConfig(
        data=str(qa_json), data_options={"max_length": 96, "test_size": 4}, quantization="4bit", lora_r=8, lora_alpha=16,
        max_steps=4, learning_rate=1e-3, warmup_steps=0, per_device_train_batch_size=4, logging_steps=1,
        eval_strategy="steps", eval_steps=4, save_strategy="no", output_dir=str(tmp_path), run_name="smol",
    )  # fmt: skip
    result = train(cfg)
    m = result.metrics
    assert math.isfinite(m["first_loss"]) and math.isfinite(m["last_loss"])
    assert m["eval_loss"] < m["initial_eval_loss"]  # the same 4 held-out rows, before and after
    record = json.loads((result.run_dir / "run.json").read_text())
    assert record["model"]["total_params"] > 130_000_000  # 134.5M, counted unpacked from 4-bit
    assert (result.output_dir / "adapter_model.safetensors").is_file()

    from ftdata.train.run import evaluate_run
    from ftdata.train.generation import GenerationSettings

    report = evaluate_run(result.run_dir, max_samples=2, settings=GenerationSettings(max_new_tokens=12))
    assert all(row["base"] for row in report.rows)  # a real instruct model answers
    assert set(report.bleu) == {"base", "tuned"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_qlora_bf16_nf4_on_cuda(tmp_path: Path, tiny_model_dir: Path, qa_dataset_dir: Path) -> None:
    from ftdata.train.model import load_for_training

    cfg = TrainConfig(
        model=str(tiny_model_dir), data=str(qa_dataset_dir), quantization="4bit", max_steps=10, learning_rate=1e-2,
        per_device_train_batch_size=8, logging_steps=1, save_strategy="no", output_dir=str(tmp_path), run_name="gpu",
    )  # fmt: skip
    loaded = load_for_training(cfg)
    assert loaded.device.kind == "cuda"
    if torch.cuda.is_bf16_supported():
        assert loaded.device.precision.value == "bf16"
        assert loaded.model.config.quantization_config.bnb_4bit_compute_dtype == torch.bfloat16
    assert any(type(m).__name__ == "Linear4bit" for m in loaded.model.modules())
    result = train(cfg)
    assert result.metrics["last_loss"] < result.metrics["first_loss"]
    assert result.metrics["peak_memory_bytes"] > 0
