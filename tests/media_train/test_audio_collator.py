"""`MediaCollator` on audio rows: real clips (MP3, WAV, FLAC from ../shared) decoded and resampled per batch, the
real Qwen2-Audio processor's own outputs filtered to what the model takes, every clip's features checked
against its span, and a tiny Qwen2-Audio that trains on the batches with falling loss."""

from __future__ import annotations

import copy
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("soxr")

from audio_rows import QWEN_TOKENIZER, SHARED_AUDIO, audio_rows, qwen2_audio_config, qwen2_audio_processor  # noqa: E402

from ftdata.errors import ConfigError, RecordError  # noqa: E402
from ftdata.train.media_collator import FeatureMismatch, MediaCollator, ModelFacts, model_inputs  # noqa: E402

pytestmark = pytest.mark.skipif(not (QWEN_TOKENIZER.is_dir() and SHARED_AUDIO.is_dir()), reason="shared Qwen2.5 tokenizer or audio not found")


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    return qwen2_audio_processor(tmp_path_factory.mktemp("qwen2-audio"))


@pytest.fixture(scope="module")
def rows(processor):
    return audio_rows(processor)


@pytest.fixture(scope="module")
def model(processor):
    import transformers

    torch.manual_seed(0)
    return transformers.Qwen2AudioForConditionalGeneration(qwen2_audio_config(processor.tokenizer))


def collator(processor, model, **kwargs) -> MediaCollator:
    facts = ModelFacts.of(model.config, pad_token_id=processor.tokenizer.pad_token_id)
    return MediaCollator(None, facts, audio_processor=processor, audio_inputs=model_inputs(model), **kwargs)


def test_rows_are_the_processors_own(rows, processor):
    assert [r["media"][0]["tokens"] for r in rows] == [101, 73, 146, 125]  # ~25 a second
    row = rows[1]
    trained = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
    assert processor.tokenizer.decode(trained) == "A woman is coughing.<|im_end|>"
    assert all(label == -100 for t, label in zip(row["input_ids"], row["labels"]) if t == processor.audio_token_id)


def test_batch_holds_what_the_model_takes(rows, processor, model):
    facts = ModelFacts.of(model.config)
    assert (facts.audio_token_id, facts.image_token_id) == (processor.audio_token_id, None)
    batch = collator(processor, model)(rows[:2])
    assert sorted(batch) == ["attention_mask", "feature_attention_mask", "input_features", "input_ids", "labels"]
    assert batch["input_features"].shape == (2, 128, 3000)  # Whisper's 30 s window
    frames = batch["feature_attention_mask"].sum(-1)
    assert frames.tolist() == [404, 291]  # 64,512 and 46,421 samples at 16 kHz, a frame per 160 started
    _, tokens = model.model.audio_tower._get_feat_extract_output_lengths(frames)  # the model's own rule
    assert tokens.tolist() == [r["media"][0]["tokens"] for r in rows[:2]] == [101, 73]
    assert batch["attention_mask"].sum(-1).tolist() == [len(r["input_ids"]) for r in rows[:2]]
    out = model(**batch)
    assert math.isfinite(out.loss.item())


def test_a_clip_whose_features_disagree_is_one_typed_error(rows, processor, model):
    row = copy.deepcopy(rows[1])
    row["media"][0]["ref"] = rows[0]["media"][0]["ref"]  # 1.mp3 makes 101 tokens, the span holds 73
    with pytest.raises(FeatureMismatch, match=r"audio 0 \(.*1\.mp3, 2\.90 s\) makes 101 features .* span holds 73 tokens"):
        collator(processor, model)([row])


def test_spans_are_checked_against_the_audio_tokens(rows, processor, model):
    row = copy.deepcopy(rows[0])
    row["media"][0]["tokens"] = 100
    with pytest.raises(FeatureMismatch, match=r"audio 0 .* should span 100 placeholder tokens from token 20, but the row holds a run of 101"):
        collator(processor, model)([row])
    row = copy.deepcopy(rows[0])
    row["media"] = []
    with pytest.raises(FeatureMismatch, match=r"101 audio tokens lie outside every recorded audio span"):
        collator(processor, model)([row])


def test_missing_clips_and_foreign_kinds(rows, processor, model, tmp_path):
    row = copy.deepcopy(rows[0])
    row["media"][0]["ref"] = str(tmp_path / "gone.wav")
    with pytest.raises(RecordError, match="audio file .*gone.wav is missing"):
        collator(processor, model)([row])
    row["media"][0]["ref"] = "sha256:" + "0" * 64
    with pytest.raises(RecordError, match="inline clip sha256:0+ not found in"):
        collator(processor, model, audio_dir=tmp_path)([row])
    row = copy.deepcopy(rows[0])
    row["media"][0]["kind"] = "image"
    with pytest.raises(ConfigError, match="reads no image items"):
        collator(processor, model)([row])


def test_inline_clips_resolve_under_the_audio_folder(rows, processor, model, tmp_path):
    import shutil

    row = copy.deepcopy(rows[1])
    shutil.copy(row["media"][0]["ref"], tmp_path / ("ab" * 32 + ".wav"))
    row["media"][0]["ref"] = "sha256:" + "ab" * 32
    batch = collator(processor, model, audio_dir=tmp_path)([row])
    assert batch["feature_attention_mask"].sum().item() == 291

