"""`ftdata train` and `ftdata eval` on an audio-language model: a tiny random-weight Qwen2-Audio (built from a
config, saved with a real Qwen2-Audio processor folder) trains with LoRA on its language model on rows of
real clips (MP3, WAV, FLAC from ../shared) whose features the collator makes per batch, and the run
evaluates with the clips."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")
pytest.importorskip("soxr")
datasets = pytest.importorskip("datasets")

from audio_rows import QWEN_TOKENIZER, SHARED_AUDIO, audio_rows, qwen2_audio_folders  # noqa: E402

from ftdata.train import TrainConfig, train  # noqa: E402

pytestmark = pytest.mark.skipif(not (QWEN_TOKENIZER.is_dir() and SHARED_AUDIO.is_dir()), reason="shared Qwen2.5 tokenizer or audio not found")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qwen2-audio-run")
    model, processor_dir, processor = qwen2_audio_folders(tmp)
    rows = audio_rows(processor)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp / "data"))
    seen = []

    def spy(module, args, kwargs):
        seen.append({k: kwargs.get(k) for k in ("input_features", "feature_attention_mask", "attention_mask")})

    from transformers import TrainerCallback

    class Hook(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            model.register_forward_pre_hook(spy, with_kwargs=True)

    result = train(TrainConfig(
        model=str(model), processor=str(processor_dir), data=str(tmp / "data"), quantization="none", lora_r=8,
        lora_alpha=16, max_steps=6, learning_rate=1e-2, lr_scheduler_type="constant", warmup_steps=0,
        per_device_train_batch_size=4, logging_steps=1, save_strategy="no", eval_strategy="no",
        output_dir=str(tmp / "runs"), run_name="audio",
    ), callbacks=[Hook()])  # fmt: skip
    return result, seen, rows


def test_tiny_qwen2_audio_trains_with_falling_loss(run):
    result, seen, rows = run
    m = result.metrics
    assert math.isfinite(m["first_loss"]) and math.isfinite(m["last_loss"])
    assert m["last_loss"] < m["first_loss"] - 0.5, m
    batch = seen[0]
    assert batch["input_features"].shape == (4, 128, 3000)  # the clips' log-mel features, made by the collator
    assert batch["feature_attention_mask"].shape == (4, 3000)
    adapter = Path(result.output_dir)
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "preprocessor_config.json").is_file()
