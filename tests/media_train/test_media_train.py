"""`ftdata train` on a vision-language model: a tiny random-weight Qwen2-VL (built from a config,
saved with a processor folder made of the real Qwen2.5 tokenizer + a preprocessor_config.json)
trains on rows with real images, LoRA on the language model only, through SFTTrainer; and a
tiny Gemma 3 (real Gemma 3 tokenizer) on a packed row, through its explicit masks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")
datasets = pytest.importorskip("datasets")

from media_support import GEMMA_TOKENIZER, QWEN_TOKENIZER, chat_rows, gemma_chat_rows, gemma_folders, pack, qwen_folders  # noqa: E402

from ftdata.errors import ConfigError  # noqa: E402
from ftdata.train import TrainConfig, train  # noqa: E402

pytestmark = pytest.mark.skipif(not QWEN_TOKENIZER.is_dir(), reason="shared Qwen2.5 tokenizer not found")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    return qwen_folders(tmp_path_factory.mktemp("qwen2vl"))


def family_folders(family: str, tmp: Path) -> tuple[Path, Path]:
    if family == "qwen2_vl":
        return qwen_folders(tmp)
    if not GEMMA_TOKENIZER.is_dir():
        pytest.skip("shared Gemma 3 tokenizer not found")
    return gemma_folders(tmp)


@pytest.mark.slow  # ~50 s: 6 steps with the 151k / 262k-token vocabularies on 2 CPU cores
@pytest.mark.parametrize(("family", "packed"), [("qwen2_vl", False), ("qwen2_vl", True), ("gemma3", True)])
def test_tiny_vlm_trains_with_falling_loss(family, packed, tmp_path):
    folders = family_folders(family, tmp_path)
    rows = chat_rows(folders[1]) if family == "qwen2_vl" else gemma_chat_rows(folders[1])
    if packed:
        rows = pack(rows, tmp_path, max_length=256)
        assert any(len(r["seq_lengths"]) > 1 for r in rows)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "data"))
    seen = []
    model_type = None

    def spy(module, args, kwargs):
        seen.append({k: kwargs.get(k) for k in ("position_ids", "attention_mask", "pixel_values", "image_grid_thw")})

    from transformers import TrainerCallback

    class Hook(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            nonlocal model_type
            model_type = model.config.model_type
            model.register_forward_pre_hook(spy, with_kwargs=True)

    result = train(TrainConfig(
        model=str(folders[0]), processor=str(folders[1]), data=str(tmp_path / "data"), quantization="none", lora_r=8,
        lora_alpha=16, max_steps=6, learning_rate=1e-2, lr_scheduler_type="constant", warmup_steps=0,
        per_device_train_batch_size=4, logging_steps=1, save_strategy="no", eval_strategy="no",
        output_dir=str(tmp_path / "runs"), run_name="vlm",
    ), callbacks=[Hook()])  # fmt: skip
    m = result.metrics
    assert math.isfinite(m["first_loss"]) and math.isfinite(m["last_loss"])
    assert m["last_loss"] < m["first_loss"] - 0.5, m  # the same batch six times: the loss must fall
    assert model_type == family and seen
    batch = seen[0]
    if family == "qwen2_vl":
        assert batch["attention_mask"] is None and batch["position_ids"].shape[0] == 4  # text row + 3 mRoPE rows
        assert batch["image_grid_thw"].shape == (4, 3) and batch["pixel_values"].shape[1] == 3 * 2 * 14 * 14
    else:  # the collator's own masks, one per layer type
        assert sorted(batch["attention_mask"]) == ["full_attention", "sliding_attention", "tokens"]
        assert batch["pixel_values"].shape == (4, 3, 56, 56)
    adapter = result.output_dir
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "preprocessor_config.json").is_file()


def test_lora_sits_on_the_language_model_only(folders, tmp_path):
    from ftdata.train.run import load_model

    loaded = load_model(TrainConfig(model=str(folders[0]), processor=str(folders[1]), quantization="none"))
    trainable = [n for n, p in loaded.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ".language_model." in n for n in trainable)
    assert not any("visual" in n for n, _ in loaded.model.named_modules() if "lora_" in n)
    with pytest.raises(ConfigError, match="match no layer of the language model; its linear layers are: down_proj"):
        load_model(TrainConfig(model=str(folders[0]), processor=str(folders[1]), quantization="none",
                                      target_modules=["qkv"]))  # fmt: skip


def test_qlora_quantizes_the_language_model_only(folders):
    from ftdata.train.run import load_model

    loaded = load_model(TrainConfig(model=str(folders[0]), processor=str(folders[1]), quantization="4bit"))
    kinds = {(".visual." in n, type(m).__name__) for n, m in loaded.model.named_modules() if type(m).__name__ in ("Linear", "Linear4bit")}
    assert (True, "Linear") in kinds and (True, "Linear4bit") not in kinds  # the vision tower stays full precision
    assert (False, "Linear4bit") in kinds


def test_processor_folder_is_required(folders, tmp_path):
    from ftdata.train.run import load_model

    with pytest.raises(ConfigError, match="has no preprocessor_config.json: give --processor DIR"):
        load_model(TrainConfig(model=str(folders[0]), processor=str(tmp_path), quantization="none"))


def test_processor_in_a_yaml_config_is_relative_to_the_file(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "run.yaml").write_text("processor: proc\nmodel: somewhere-else\n")
    cfg = TrainConfig.from_yaml(tmp_path / "run.yaml")
    assert cfg.processor == str(tmp_path / "proc") and cfg.model == "somewhere-else"


@pytest.mark.slow  # ~1 min: a vision build, then 4 steps of the tiny Qwen2-VL on 2 CPU cores
def test_ftdata_train_builds_raw_data_with_the_runs_processor(folders, tmp_path):
    """`ftdata train DATA.jsonl --processor DIR --packing`: the run's processor reaches the build, whose packed
    rows (images expanded, never trained) then train with falling loss."""
    import json

    from typer.testing import CliRunner

    from ftdata.cli.app import app
    from media_support import CAPTIONS

    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": [{"type": "image", "image": str(photo)}, {"type": "text", "text": question}]},
        {"role": "assistant", "content": answer}]}) + "\n" for photo, question, answer in CAPTIONS))  # fmt: skip
    args = ["train", str(data), "--model", str(folders[0]), "--processor", str(folders[1]), "--packing", "--max-length", "512",
            "--quantization", "none", "--lora-r", "8", "--lora-alpha", "16", "--max-steps", "4", "--learning-rate", "1e-2",
            "--lr-scheduler-type", "constant", "--warmup-steps", "0", "--logging-steps", "1", "--save-strategy", "no",
            "-o", str(tmp_path / "runs"), "--run-name", "raw"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "runs" / "raw" / "run.json").read_text())
    metrics = record["metrics"]
    assert math.isfinite(metrics["first_loss"]) and metrics["last_loss"] < metrics["first_loss"], metrics
    assert record["config"]["processor"] == str(folders[1])
