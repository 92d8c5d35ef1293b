"""Audio test helpers: clips generated with numpy and written as WAV/FLAC/OGG (soundfile) or MP3 (PyAV), and
the audio-language processors built offline from their transformers classes, saved as real processor folders and
loaded back with `AutoProcessor.from_pretrained` (session fixtures: import them into a test module to use them).

Processor settings are their model repos' `preprocessor_config.json` values, which are the classes' defaults
unless set here: Qwen/Qwen2-Audio-7B-Instruct (WhisperFeatureExtractor, feature_size 128, 30 s chunks),
google/gemma-3n-E4B-it (Gemma3nAudioFeatureExtractor; audio_seq_length 188), microsoft/Phi-4-multimodal-instruct
(Phi4MultimodalFeatureExtractor; compression rate 8). Tokenizers are the closest shared ones, with each family's
audio tokens added: Qwen2.5's for Qwen2-Audio (the same vocabulary), Gemma 3's for Gemma 3n, Phi-3's for Phi-4
(Phi-4's o200k tokenizer is not in ../shared; its audio token is `<|endoftext11|>`, as the transformers
conversion script sets it).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from support import TOKENIZERS

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RATES = (8000, 16000, 22050, 44100, 48000)
FORMATS = ("wav", "flac", "ogg", "mp3")
SHARED_AUDIO = TOKENIZERS.parent / "datasets" / "audio"
CLIPS = SHARED_AUDIO / "mllm_demo_data"


def tone(frames: int, rate: int, channels: int, *, seed: int = 0) -> np.ndarray:
    """`frames` x `channels` float32 samples: a sine per channel (440 Hz, 660 Hz) plus a little noise."""
    t = np.arange(frames) / rate
    noise = np.random.default_rng(seed).standard_normal((frames, channels)) * 0.02
    waves = np.stack([0.3 * np.sin(2 * np.pi * (440 + 220 * c) * t) for c in range(channels)], axis=1)
    return (waves + noise).astype(np.float32)


def write_clip(path: Path, samples: np.ndarray, rate: int) -> Path:
    """`samples` (frames x channels) written in the format of `path`'s suffix: WAV/FLAC/OGG with soundfile, MP3 with PyAV."""
    import soundfile as sf

    fmt = path.suffix[1:]
    if fmt == "mp3":
        _write_mp3(path, samples, rate)
    else:
        subtype = {"wav": "PCM_16", "flac": "PCM_16", "ogg": "VORBIS"}[fmt]
        sf.write(str(path), samples, rate, format=fmt.upper(), subtype=subtype)
    return path


def _write_mp3(path: Path, samples: np.ndarray, rate: int) -> None:
    import av

    layout = "mono" if samples.shape[1] == 1 else "stereo"
    with av.open(str(path), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.T), format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def placeholders(processor, text: str, audio: np.ndarray) -> int:
    """How many audio placeholder tokens the processor's own call writes for `text` with one clip."""
    out = processor(text=[text], audio=[audio], sampling_rate=16000)
    return out["input_ids"][0].count(processor.audio_token_id)


def prompt(processor) -> str:
    """A user turn holding one clip, as the family's template writes it."""
    token = processor.audio_token
    name = type(processor).__name__
    if name == "Qwen2AudioProcessor":  # the processor's own chat template: "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>"
        parts = [{"type": "audio", "audio_url": "clip.wav"}, {"type": "text", "text": "What is that sound?"}]
        return processor.apply_chat_template([{"role": "user", "content": parts}], add_generation_prompt=True)
    if name == "Gemma3nProcessor":
        return f"<start_of_turn>user\n{token}What is that sound?<end_of_turn>\n<start_of_turn>model\n"
    return f"<|user|>{token}What is that sound?<|end|><|assistant|>"


def _round_trip(processor, folder: Path):
    from transformers import AutoProcessor

    processor.save_pretrained(str(folder))
    return AutoProcessor.from_pretrained(str(folder))


def _tokenizer(name: str, extra: dict[str, str]):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TOKENIZERS / name), extra_special_tokens=extra)


@pytest.fixture(scope="session")
def qwen2_audio(tmp_path_factory):
    """Qwen2-Audio: WhisperFeatureExtractor (128 mel bins, 30 s) and Qwen2.5's tokenizer with the audio tokens."""
    from transformers import WhisperFeatureExtractor
    from transformers.models.qwen2_audio.processing_qwen2_audio import Qwen2AudioProcessor

    extra = {"audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}
    fe = WhisperFeatureExtractor(feature_size=128, return_attention_mask=True)
    processor = Qwen2AudioProcessor(feature_extractor=fe, tokenizer=_tokenizer("qwen2.5-instruct", extra))
    return _round_trip(processor, tmp_path_factory.mktemp("qwen2-audio"))


@pytest.fixture(scope="session")
def gemma3n(tmp_path_factory):
    """Gemma 3n: its audio feature extractor, SigLIP's PIL image processor (no torchvision), Gemma 3's tokenizer
    with Gemma 3n's audio tokens."""
    from transformers.models.gemma3n import Gemma3nAudioFeatureExtractor, Gemma3nProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    extra = {
        "audio_token": "<audio_soft_token>", "boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>",
        "image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
    }  # fmt: skip
    images = SiglipImageProcessorPil(size={"height": 768, "width": 768}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = Gemma3nProcessor(
        feature_extractor=Gemma3nAudioFeatureExtractor(), image_processor=images, tokenizer=_tokenizer("gemma-3-it", extra),
        audio_seq_length=188, image_seq_length=256,
    )  # fmt: skip
    return _round_trip(processor, tmp_path_factory.mktemp("gemma3n"))


@pytest.fixture(scope="session")
def phi4(tmp_path_factory):
    """Phi-4-multimodal without its image processor (Phi4MultimodalImageProcessor imports torchvision): the image slot
    holds a bare ImageProcessingMixin, which saves and loads back but processes no image."""
    from transformers.image_processing_base import ImageProcessingMixin
    from transformers.models.phi4_multimodal.feature_extraction_phi4_multimodal import Phi4MultimodalFeatureExtractor
    from transformers.models.phi4_multimodal.processing_phi4_multimodal import Phi4MultimodalProcessor

    extra = {"image_token": "<|endoftext10|>", "audio_token": "<|endoftext11|>"}
    processor = Phi4MultimodalProcessor(
        image_processor=ImageProcessingMixin(), audio_processor=Phi4MultimodalFeatureExtractor(),
        tokenizer=_tokenizer("phi-3-mini-4k-instruct", extra),
    )  # fmt: skip
    return _round_trip(processor, tmp_path_factory.mktemp("phi4-multimodal"))
