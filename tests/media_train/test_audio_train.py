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

from audio_rows import CHATS, QWEN_TOKENIZER, SHARED_AUDIO, audio_rows, qwen2_audio_folders  # noqa: E402

from ftdata.train import TrainConfig, train  # noqa: E402

pytestmark = pytest.mark.skipif(not (QWEN_TOKENIZER.is_dir() and SHARED_AUDIO.is_dir()), reason="shared Qwen2.5 tokenizer or audio not found")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One tiny Qwen2-Audio and its processor folder for both tests (building them takes seconds)."""
    return qwen2_audio_folders(tmp_path_factory.mktemp("qwen2-audio"))


@pytest.fixture(scope="module")
def run(tmp_path_factory, folders):
    tmp = tmp_path_factory.mktemp("qwen2-audio-run")
    model, processor_dir, processor = folders
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


def test_ftdata_build_makes_the_rows_the_collator_was_tested_on_and_they_train(tmp_path, folders):
    """The build path (ftdata.build with the processor folder) and the processor's own rows agree token for
    token, media column included; a run on the build's OUT folder trains (the clips found where they are: one
    step loads all four clips of its batch of four)."""
    import json

    import ftdata

    model, processor_dir, processor = folders
    data = tmp_path / "chat.jsonl"
    with data.open("w", encoding="utf-8") as fh:
        for clip, question, answer in CHATS:
            user = {"role": "user", "content": [{"type": "audio", "path": str(clip)}, {"type": "text", "text": question}]}
            fh.write(json.dumps({"messages": [user, {"role": "assistant", "content": answer}]}) + "\n")
    built = ftdata.build(str(data), tmp_path / "out", processor=str(processor_dir), cache=False)
    expected = audio_rows(processor)
    for got, want in zip(built.dataset, expected, strict=True):
        assert got["input_ids"] == want["input_ids"] and got["labels"] == want["labels"]
        ((item,), (oracle,)) = got["media"], want["media"]
        assert {k: item[k] for k in ("kind", "ref", "start", "tokens")} == {k: oracle[k] for k in ("kind", "ref", "start", "tokens")}
        assert item["seconds"] == pytest.approx(oracle["seconds"], abs=1e-3)
    result = train(TrainConfig(
        model=str(model), processor=str(processor_dir), data=str(tmp_path / "out"), quantization="none", lora_r=8,
        lora_alpha=16, max_steps=1, learning_rate=1e-2, per_device_train_batch_size=4, logging_steps=1,
        save_strategy="no", eval_strategy="no", output_dir=str(tmp_path / "runs"), run_name="built",
    ))  # fmt: skip
    assert math.isfinite(result.metrics["last_loss"])
