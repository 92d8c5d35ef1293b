"""How many placeholder tokens a clip of N samples becomes, per model family, from the processor's own settings.

    rule  = families.audio_rule(processor)                            # once per build (a small picklable spec)
    count = count_audio(read_header("a.flac"), rule)                # per clip: no samples decoded
    count.tokens, count.over_window, count.seconds_dropped

N is the clip's length at the feature extractor's `sampling_rate`, after the collator's soxr resampling
(`resampled_length`). The tokens counted are the ones the audio features fill (`rule.placeholder` repeated),
not the begin/end markers around them. What each processor does (transformers 5.24):

  Qwen2-Audio, Qwen2.5-Omni (`WhisperConvRule`): the Whisper feature extractor cuts the clip to its window
      (`n_samples` = chunk_length * sampling_rate: 30 s for Qwen2-Audio, 300 s in Qwen2.5-Omni's config) and
      pads to it; its attention mask, one entry per `hop_length` samples, is 1 for ceil(kept / hop) frames;
      the processor turns L frames into ((L - 1) // 2 + 1 - 2) // 2 + 1 tokens (two stride-2 steps of the
      encoder; `processing_qwen2_audio.py` `_process_audio`, `processing_qwen2_5_omni.py`
      `_get_feat_extract_output_lengths`). 30 s -> 3000 frames -> 750 tokens; 16,000 samples -> 25.
  Gemma 3n (`FixedRule`): every clip is `audio_seq_length` (188) tokens (`processing_gemma3n.py`
      `full_audio_sequence`); the feature extractor keeps the first `max_length` samples (480,000 = 30 s,
      its `__call__` default) and makes no frame from fewer than frame_length + 1 (513).
  Phi-4-multimodal (`StackedFramesRule`): no window. F = (N - win_length) // hop_length + 1 frames (times
      `audio_feat_stride`), then ceil(F / audio_compression_rate), then ceil(. / audio_downsample_rate)
      (`feature_extraction_phi4_multimodal.py` `_compute_audio_embed_size`): 100 frames/s / 8 = 12.5 tokens/s.
      Fewer than win_length (400) samples make the feature extractor raise.

A clip shorter than `rule.min_samples` makes no token (Qwen: 320 samples or fewer give 0, and the processor
then writes no placeholder at all) or no feature frame: `count_audio` rejects it (`media_too_short`).
A clip longer than the window is reported (`AudioCount.over_window`, `dropped`): the caller rejects it
(`window_exceeded` -> `media_too_long`) or keeps the processor's cut and counts the seconds dropped.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from ftdata.errors import UnusableRecord
from ftdata.media.audio_files import AudioHeader, resampled_length
from ftdata.outcomes import RejectCode


class AudioFamily(StrEnum):
    """The audio-language model families whose processors are counted."""

    QWEN2_AUDIO = "qwen2_audio"
    QWEN2_5_OMNI = "qwen2_5_omni"
    GEMMA3N = "gemma3n"
    PHI4_MULTIMODAL = "phi4_multimodal"


class AudioRule(Protocol):
    """A family's count: tokens for a clip of `samples` samples at `sampling_rate` (the feature extractor's)."""

    @property
    def family(self) -> AudioFamily: ...

    @property
    def placeholder(
        self,
    ) -> str: ...  # the token the features fill, repeated `tokens(...)` times (`processor.audio_token`)

    @property
    def sampling_rate(self) -> int: ...

    @property
    def window(self) -> int | None: ...  # samples the processor keeps; None: all

    @property
    def min_samples(self) -> int: ...  # fewer make no token or no feature frame

    def tokens(self, samples: int) -> int: ...


@dataclass(frozen=True, slots=True)
class _Facts:
    """What every rule holds: the family, its placeholder token and the rate its feature extractor reads."""

    family: AudioFamily
    placeholder: str
    sampling_rate: int


@dataclass(frozen=True, slots=True)
class WhisperConvRule(_Facts):
    """Qwen2-Audio, Qwen2.5-Omni: Whisper frames of the kept window through two stride-2 steps."""

    window: int  # the feature extractor's n_samples
    hop_length: int

    @property
    def min_samples(self) -> int:
        return 2 * self.hop_length + 1  # 3 frames: the first length that makes a token

    def tokens(self, samples: int) -> int:
        frames = _ceil_div(min(samples, self.window), self.hop_length)  # the mask's ones: at 0, hop, 2 hop, ...
        if self.window % self.hop_length:  # the extractor drops the mask's last entry when the window is uneven
            frames = min(frames, self.window // self.hop_length)
        return ((frames - 1) // 2 + 1 - 2) // 2 + 1


@dataclass(frozen=True, slots=True)
class FixedRule(_Facts):
    """Gemma 3n: the same number of tokens for every clip; the features of the kept window fill them."""

    window: int  # the feature extractor's max_length
    per_clip: int  # the processor's audio_seq_length
    frame_length: int

    @property
    def min_samples(self) -> int:
        return self.frame_length + 1  # one frame is frame_length + 1 samples (the extra one for pre-emphasis)

    def tokens(self, samples: int) -> int:
        return self.per_clip


@dataclass(frozen=True, slots=True)
class StackedFramesRule(_Facts):
    """Phi-4-multimodal: every frame kept (no window), stacked `compression_rate` to a token, rounded up."""

    win_length: int
    hop_length: int
    feat_stride: int
    compression_rate: int
    downsample_rate: int

    @property
    def window(self) -> None:
        return None

    @property
    def min_samples(self) -> int:
        return self.win_length

    def tokens(self, samples: int) -> int:
        frames = ((samples - self.win_length) // self.hop_length + 1) * self.feat_stride
        return _ceil_div(_ceil_div(frames, self.compression_rate), self.downsample_rate)


@dataclass(frozen=True, slots=True)
class AudioCount:
    """One clip's count: `tokens` placeholders from `samples` at `sampling_rate`; the processor reads `kept` of them."""

    tokens: int
    samples: int
    kept: int
    sampling_rate: int
    window: int | None

    @property
    def dropped(self) -> int:
        return self.samples - self.kept

    @property
    def over_window(self) -> bool:
        return self.dropped > 0

    @property
    def seconds_dropped(self) -> float:
        return self.dropped / self.sampling_rate


def count_audio(header: AudioHeader, rule: AudioRule, *, field: str | None = None) -> AudioCount:
    """The placeholder tokens the processor makes of the clip `header` describes, and what its window cuts.

    Raises:
        UnusableRecord: a clip too short to make a token or a feature frame (`media_too_short`).

    Example:
        >>> count_audio(read_header("2.wav"), qwen2_audio_rule)  # 46,421 samples at 16 kHz (2.9 s)
        AudioCount(tokens=73, samples=46421, kept=46421, sampling_rate=16000, window=480000)
    """
    samples = resampled_length(header.frames, header.sample_rate, rule.sampling_rate)
    if samples < rule.min_samples:
        raise UnusableRecord(
            f"audio {header.ref!r} is {samples} samples at {rule.sampling_rate} Hz ({header.seconds:.3f} s); "
            f"{rule.family.value} needs at least {rule.min_samples}: remove the clip or give a longer one",
            field=field,
            code=RejectCode.MEDIA_TOO_SHORT,
        )
    window = rule.window
    kept = samples if window is None else min(samples, window)
    return AudioCount(rule.tokens(samples), samples, kept, rule.sampling_rate, window)


def window_exceeded(header: AudioHeader, count: AudioCount, *, field: str | None = None) -> UnusableRecord:
    """The reject for a clip past the window, for a caller that refuses cut clips (`media_too_long`)."""
    window = count.window or count.samples
    return UnusableRecord(
        f"audio {header.ref!r} is {count.samples / count.sampling_rate:.2f} s; the processor keeps only the first "
        f"{window / count.sampling_rate:g} s ({window} samples at {count.sampling_rate} Hz): "
        "cut the clip or allow cuts",
        field=field,
        code=RejectCode.MEDIA_TOO_LONG,
    )


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def whisper_rule(family: AudioFamily) -> Callable[[Any], WhisperConvRule]:
    """Qwen2-Audio's and Qwen2.5-Omni's rule from the processor's Whisper feature extractor."""

    def build(processor: Any) -> WhisperConvRule:
        fe = processor.feature_extractor
        return WhisperConvRule(family, processor.audio_token, fe.sampling_rate, fe.n_samples, fe.hop_length)

    return build


def gemma3n_rule(processor: Any) -> FixedRule:
    """Gemma 3n's rule: `audio_seq_length` per clip, the feature extractor's call default as the window."""
    fe = processor.feature_extractor
    # The window is a call default, not a setting: Gemma3nAudioFeatureExtractor.__call__(max_length=480_000).
    window = inspect.signature(type(fe).__call__).parameters["max_length"].default
    return FixedRule(
        AudioFamily.GEMMA3N,
        processor.audio_token,
        fe.sampling_rate,
        window,
        processor.audio_seq_length,
        fe.frame_length,
    )


def phi4_rule(processor: Any) -> StackedFramesRule:
    """Phi-4-multimodal's rule from its audio processor's frame settings."""
    fe = processor.audio_processor
    return StackedFramesRule(
        AudioFamily.PHI4_MULTIMODAL,
        processor.audio_token,
        fe.sampling_rate,
        fe.win_length,
        fe.hop_length,
        fe.audio_feat_stride,
        fe.audio_compression_rate,
        fe.audio_downsample_rate,
    )


# Processor classes with audio that ftdata does not count, and why (`families.audio_rule` names them).
UNSUPPORTED = {
    "VoxtralProcessor": "its audio placeholders come only from apply_chat_template with mistral-common and the "
    "model's tekken.json tokenizer (its __call__ refuses audio tokens in text)",
    "GraniteSpeechProcessor": "its feature extractor needs torchaudio (MelSpectrogram), which ftdata does not install",
}

__all__ = [
    "UNSUPPORTED",
    "AudioCount",
    "AudioFamily",
    "AudioRule",
    "FixedRule",
    "StackedFramesRule",
    "WhisperConvRule",
    "count_audio",
    "gemma3n_rule",
    "phi4_rule",
    "whisper_rule",
    "window_exceeded",
]
