"""Per-family audio counts from the header equal the placeholder tokens the model's own processor writes for the
decoded, soxr-resampled mono clip: Qwen2-Audio, Gemma 3n and Phi-4-multimodal built offline (audio_support.py),
Qwen2.5-Omni through its processor's own `_process_audio` (the processor class needs torchvision to exist)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from audio_support import CLIPS, FORMATS, RATES, gemma3n, phi4, placeholders, prompt, qwen2_audio, tone, write_clip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftdata.errors import ConfigError, UnusableRecord
from ftdata.media.audio_families import (
    AudioCount,
    AudioFamily,
    WhisperConvRule,

    count_audio,
    window_exceeded,
)  # fmt: skip
from ftdata.media.audio_files import AudioFormat, AudioHeader, load_audio, read_header
from ftdata.media.families import audio_rule
from ftdata.outcomes import RejectCode

__all__ = ["gemma3n", "phi4", "qwen2_audio"]  # session fixtures used by name below
FAMILIES = ["qwen2_audio", "gemma3n", "phi4"]
SLOW = pytest.mark.slow
# Lengths at 16 kHz where a rule can be off by one: its shortest clip, where a token is added, the 30 s window.
EDGES = {
    "qwen2_audio": [321, 960, 961, 1600, 1601, 16000, 16161, 479680, 479681, 480000, 480001],
    "gemma3n": [513, 514, 16000, 480000, 480001],
    "phi4": [400, 401, 1679, 1680, 1681, 2959, 2960, 16000, 16001, 480000, 496000],
}
# The shared clips, per family: placeholder tokens (the 4 s and 5.9 s clips at 16 kHz: 64,512 and 93,680 samples...).
SHARED_TOKENS = {
    "qwen2_audio": {"1.mp3": 101, "2.wav": 73, "3.flac": 146, "4.mp3": 125},
    "gemma3n": {"1.mp3": 188, "2.wav": 188, "3.flac": 188, "4.mp3": 188},
    "phi4": {"1.mp3": 51, "2.wav": 36, "3.flac": 73, "4.mp3": 63},
}


def _header(samples: int, rate: int = 16000) -> AudioHeader:
    return AudioHeader("clip.wav", AudioFormat.WAV, 1, rate, samples)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_rule_is_the_processors_count_at_every_edge(family, request):
    processor = request.getfixturevalue(family)
    rule, text = audio_rule(processor), prompt(processor)
    for samples in EDGES[family]:
        audio = tone(samples, 16000, 1)[:, 0]
        assert count_audio(_header(samples), rule).tokens == placeholders(processor, text, audio), samples
        if family == "gemma3n":  # the one of the three with its own count from a length
            assert processor._get_num_multimodal_tokens(audio_lengths=[samples]).num_audio_tokens == [188]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_shared_clips(family, request):
    processor = request.getfixturevalue(family)
    rule, text = audio_rule(processor), prompt(processor)
    for name, tokens in SHARED_TOKENS[family].items():
        assert count_audio(read_header(CLIPS / name), rule).tokens == tokens, name
        assert placeholders(processor, text, load_audio(CLIPS / name, rate=rule.sampling_rate)) == tokens, name


def _files_agree(processor, fmt: str, rate: int, channels: int, seconds: float) -> AudioCount:
    """Write a clip, count it from its header, and check the processor writes as many placeholders for it."""
    rule = audio_rule(processor)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_clip(Path(tmp) / f"clip.{fmt}", tone(max(1, round(seconds * rate)), rate, channels), rate)
        count = count_audio(read_header(path), rule)
        audio = load_audio(path, rate=rule.sampling_rate)
    assert len(audio) == count.samples
    assert count.tokens == placeholders(processor, prompt(processor), audio), (fmt, rate, channels, seconds)
    return count


def _sweep(examples: int):
    """A Hypothesis test over clip files (format, rate, layout, length) for one processor."""

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(fmt=st.sampled_from(FORMATS), rate=st.sampled_from(RATES), channels=st.sampled_from([1, 2]),
           seconds=st.one_of(st.floats(0.1, 32.0), st.floats(29.9, 30.1)))  # fmt: skip
    def sweep(processor, fmt, rate, channels, seconds):
        _files_agree(processor, fmt, rate, channels, seconds)

    return sweep


@pytest.mark.parametrize("family", FAMILIES)
def test_header_counts_equal_the_processor_on_clip_files(family, request):
    _sweep(6)(request.getfixturevalue(family))


@SLOW
@pytest.mark.parametrize("family", FAMILIES)
def test_header_counts_equal_the_processor_sweep(family, request):
    _sweep(80)(request.getfixturevalue(family))


@SLOW
@pytest.mark.parametrize("family", FAMILIES)
def test_every_format_rate_and_layout(family, request):
    processor = request.getfixturevalue(family)
    for fmt in FORMATS:
        for rate in RATES:
            for channels in (1, 2):
                for seconds in (0.1, 1.37, 12.5, 31.0):
                    _files_agree(processor, fmt, rate, channels, seconds)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_clip_past_the_window_is_reported(family, request):
    """31 s at 22.05 kHz: Qwen2-Audio and Gemma 3n keep the first 30 s (the count says what is dropped), Phi-4 all."""
    processor = request.getfixturevalue(family)
    count = _files_agree(processor, "flac", 22050, 2, 31.0)
    assert count.samples == 496000
    if family == "phi4":
        assert (count.window, count.kept, count.over_window, count.tokens) == (None, 496000, False, 388)
        return
    assert (count.window, count.kept, count.dropped, count.seconds_dropped) == (480000, 480000, 16000, 1.0)
    assert count.over_window and count.tokens == {"qwen2_audio": 750, "gemma3n": 188}[family]
    reject = window_exceeded(read_header(CLIPS / "2.wav"), count, field="audios")
    assert reject.code is RejectCode.MEDIA_TOO_LONG
    assert str(reject) == (f"field 'audios': audio '{CLIPS / '2.wav'}' is 31.00 s; the processor keeps only the first 30 s "
                           "(480000 samples at 16000 Hz): cut the clip or allow cuts")  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_a_clip_too_short_for_a_token_is_refused(family, request):
    """At min_samples the processor writes a placeholder and makes a feature frame; one sample less it writes none
    (Qwen2-Audio), makes no frame (Gemma 3n) or raises (Phi-4): the count refuses such a clip."""
    processor = request.getfixturevalue(family)
    rule, text = audio_rule(processor), prompt(processor)
    shortest = tone(rule.min_samples, 16000, 1)[:, 0]
    assert placeholders(processor, text, shortest) >= 1
    fe = getattr(processor, "feature_extractor", None) or processor.audio_processor
    if family == "qwen2_audio":
        assert placeholders(processor, text, shortest[:-1]) == 0
    elif family == "gemma3n":
        assert np.asarray(fe(shortest, return_tensors="np")["input_features"]).shape[1] == 1
        assert np.asarray(fe(shortest[:-1], return_tensors="np")["input_features"]).shape[1] == 0
    else:
        with pytest.raises(RuntimeError):
            placeholders(processor, text, shortest[:-1])
    with pytest.raises(UnusableRecord, match=rf"audio 'clip.wav' is {rule.min_samples - 1} samples at 16000 Hz .*needs at least {rule.min_samples}") as err:
        count_audio(_header(rule.min_samples - 1), rule)
    assert err.value.code is RejectCode.MEDIA_TOO_SHORT


def test_the_rules_read_from_the_processors(qwen2_audio, gemma3n, phi4):
    assert [(r.family, r.placeholder, r.sampling_rate, r.window, r.min_samples) for r in map(audio_rule, (qwen2_audio, gemma3n, phi4))] == [
        (AudioFamily.QWEN2_AUDIO, "<|AUDIO|>", 16000, 480000, 321),
        (AudioFamily.GEMMA3N, "<audio_soft_token>", 16000, 480000, 513),
        (AudioFamily.PHI4_MULTIMODAL, "<|endoftext11|>", 16000, None, 400),
    ]  # fmt: skip
    # Phi-4: 12.5 tokens a second, no cap: 10 minutes is 7500 tokens.
    assert [count_audio(_header(s * 16000), audio_rule(phi4)).tokens for s in (1, 2, 60, 600)] == [13, 25, 750, 7500]


def test_a_processor_without_an_audio_rule_is_named():
    with pytest.raises(ConfigError, match=r"processor object: it has no audio count rule in ftdata; audio is counted for Gemma3nProcessor, "):
        audio_rule(object())
    voxtral = type("VoxtralProcessor", (), {})()
    with pytest.raises(ConfigError, match=r"processor VoxtralProcessor: its audio placeholders come only from apply_chat_template"):
        audio_rule(voxtral)


def test_qwen2_5_omni_counts_like_its_processor():
    """Qwen2_5OmniProcessor cannot be built without torchvision (its video processor slot is checked against
    VIDEO_PROCESSOR_MAPPING, a placeholder without torchvision), so its own `_process_audio`,
    `replace_audio_token` and `_get_num_audio_tokens` run on a stand-in holding the real WhisperFeatureExtractor
    with Qwen2.5-Omni's settings (chunk_length 300: a 300 s window, 7500 tokens at most)."""
    from transformers import WhisperFeatureExtractor
    from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import Qwen2_5OmniProcessor

    fe = WhisperFeatureExtractor(feature_size=128, chunk_length=300, return_attention_mask=True)
    stand_in = SimpleNamespace(feature_extractor=fe, audio_token="<|AUDIO|>")
    stand_in.replace_audio_token = lambda inputs, audio_idx, **_: Qwen2_5OmniProcessor.replace_audio_token(stand_in, inputs, audio_idx)
    rule = WhisperConvRule(AudioFamily.QWEN2_5_OMNI, "<|AUDIO|>", fe.sampling_rate, fe.n_samples, fe.hop_length)
    assert rule.window == 4_800_000
    for samples in (321, 16000, 480001, 4_799_999, 4_800_000, 4_800_161):
        _, texts = Qwen2_5OmniProcessor._process_audio(stand_in, [np.zeros(samples, np.float32)], sampling_rate=16000,
                                                        return_attention_mask=True)  # fmt: skip
        assert rule.tokens(samples) == texts[0].count("<|AUDIO|>") == Qwen2_5OmniProcessor._get_num_audio_tokens(stand_in, samples)
    assert rule.tokens(4_800_161) == 7500
