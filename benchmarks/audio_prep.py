"""Media items counted per second from their headers vs processed per second by the model's own feature extractor.

Audio (this part). For every clip, in one run and side by side:
  count    `read_header` (WAV/FLAC/OGG: the header, plus a walk of the RIFF chunks, the last FLAC sample or the last
           Ogg page to prove the file whole; MP3: every packet demuxed, nothing decoded) and the family's rule
           (`count_audio`): no sample is decoded.
  process  what the peers do to know the count: decode the clip, average it to mono, resample it with soxr to the
           feature extractor's rate (`load_audio`, the collator's path), run the feature extractor, and read the
           count off its output the way the processor does (Qwen2-Audio: its own `_process_audio` on the mask;
           Phi-4: `audio_embed_sizes`; Gemma 3n: the fixed 188 once the features exist).
The two counts are checked equal for every clip. Clips: a 440/660 Hz tone with noise, written once per format
(tests/media/audio_support.py: WAV and FLAC 16-bit and OGG Vorbis with soundfile, MP3 with PyAV's libmp3lame) at 8 / 16 / 22.05 /
44.1 / 48 kHz, mono and stereo, 2 to 28 s. The MP3 table compares the two exact ways to know an MP3's length:
demuxing its packets (what `read_header` does) and decoding them.
Measured (2 shared cores, load average 3.3-3.4, 12 clips a format, 162 s of audio; the process column is noisy):
  qwen2-audio  WAV 15,175 vs 10.6 clips/s (1,433x), FLAC 6,373 vs 10.5 (605x), MP3 815 vs 9.8 (83x), OGG 2,270 vs 9.7 (235x)
  phi4         WAV 14,974 vs 11.5 (1,306x), FLAC 6,744 vs 12.2 (555x), MP3 702 vs 10.5 (67x), OGG 2,274 vs 47.6 (48x)
  gemma3n      WAV 15,393 vs 46.5 (331x), FLAC 6,812 vs 30.1 (226x), MP3 713 vs 21.0 (34x), OGG 2,276 vs 17.7 (128x)
  MP3 length: demux 1.2-1.6 ms a clip, decode 5.2-6.5 ms (14 s clips); both grow with the clip's length.
The image part (vision_prep.py's counting) joins this file when ftdata.vision moves to ftdata.media.

    python benchmarks/audio_prep.py [--family qwen2-audio|gemma3n|phi4] [--clips 12] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ftdata.media.audio_families import (
    AudioFamily,
    AudioRule,
    FixedRule,
    StackedFramesRule,
    WhisperConvRule,
    count_audio,
)
from ftdata.media.audio_files import load_audio, read_header

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(tempfile.gettempdir()) / "ftdata-media-prep" / "audio"
RATES = (8000, 16000, 22050, 44100, 48000)
FORMATS = ("wav", "flac", "mp3", "ogg")


def clips(folder: Path, per_format: int) -> dict[str, list[Path]]:
    """`per_format` clips per format, made once (with the tests' writers): rates and layouts cycling, 2 to 28 s."""
    tests = str(ROOT / "tests" / "media")
    if tests not in sys.path:
        sys.path[:0] = [tests, str(ROOT / "tests")]
    from audio_support import tone, write_clip

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[Path]] = {fmt: [] for fmt in FORMATS}
    for k in range(per_format):
        rate, channels, seconds = RATES[k % len(RATES)], 1 + k % 2, 2 + (k * 7) % 27
        for fmt in FORMATS:
            path = folder / f"clip{k}_{rate}_{channels}ch_{seconds}s.{fmt}"
            if not path.exists():
                write_clip(path, tone(seconds * rate, rate, channels, seed=k), rate)
            out[fmt].append(path)
    return out


def family(name: str) -> tuple[AudioRule, object]:
    """The family's rule (what `audio_rule` reads from its processor) and its feature extractor, from the model
    repos' settings: Qwen/Qwen2-Audio-7B-Instruct, google/gemma-3n-E4B-it, microsoft/Phi-4-multimodal-instruct."""
    if name == "qwen2-audio":
        from transformers import WhisperFeatureExtractor

        fe = WhisperFeatureExtractor(feature_size=128, return_attention_mask=True)
        return WhisperConvRule(AudioFamily.QWEN2_AUDIO, "<|AUDIO|>", 16000, fe.n_samples, fe.hop_length), fe
    if name == "gemma3n":
        from transformers.models.gemma3n import Gemma3nAudioFeatureExtractor

        fe = Gemma3nAudioFeatureExtractor()
        return FixedRule(AudioFamily.GEMMA3N, "<audio_soft_token>", 16000, 480_000, 188, fe.frame_length), fe
    from transformers.models.phi4_multimodal.feature_extraction_phi4_multimodal import Phi4MultimodalFeatureExtractor

    fe = Phi4MultimodalFeatureExtractor()
    return StackedFramesRule(AudioFamily.PHI4_MULTIMODAL, "<|endoftext11|>", 16000, fe.win_length, fe.hop_length,
                             fe.audio_feat_stride, fe.audio_compression_rate, fe.audio_downsample_rate), fe  # fmt: skip


def processed_count(name: str, fe, audio: np.ndarray) -> int:
    """The processor's count from the feature extractor's output on the clip."""
    if name == "qwen2-audio":
        from transformers.models.qwen2_audio.processing_qwen2_audio import Qwen2AudioProcessor

        stand_in = SimpleNamespace(feature_extractor=fe, replace_audio_token=lambda inputs, audio_idx: "<|AUDIO|>" * inputs["num_audio_tokens"][audio_idx])
        _, texts = Qwen2AudioProcessor._process_audio(stand_in, [audio], sampling_rate=16000)
        return texts[0].count("<|AUDIO|>")
    out = fe(audio, sampling_rate=16000, return_tensors="np") if name == "phi4" else fe(audio, return_tensors="np")
    return int(out["audio_embed_sizes"][0]) if name == "phi4" else 188 * len(out["input_features"])


def rate(fn, files: list[Path], rounds: int) -> tuple[float, list[int]]:
    """Best clips/s over `rounds` passes over `files`, and the counts of the last pass."""
    best, counts = 0.0, []
    for _ in range(rounds):
        start = time.perf_counter()
        counts = [fn(path) for path in files]
        best = max(best, len(files) / (time.perf_counter() - start))
    return best, counts


def audio(name: str, per_format: int, rounds: int) -> None:
    rule, fe = family(name)
    files = clips(CACHE, per_format)
    print(f"audio, {name}: header count vs decode + soxr + feature extractor ({per_format} clips a format)")
    print(f"{'format':<8}{'clips':>6}{'seconds':>9}{'count clip/s':>14}{'process clip/s':>16}{'speedup':>10}{'ms/clip count':>15}{'ms/clip process':>17}")
    for fmt in FORMATS:
        paths = files[fmt]
        fast, counted = rate(lambda p: count_audio(read_header(p), rule).tokens, paths, rounds * 10)
        slow, processed = rate(lambda p: processed_count(name, fe, load_audio(p, rate=rule.sampling_rate)), paths, rounds)
        if counted != processed:
            raise SystemExit(f"{name} {fmt}: counted {counted} but the processor made {processed}")
        seconds = sum(read_header(p).seconds for p in paths)
        print(f"{fmt:<8}{len(paths):>6}{seconds:>9.0f}{fast:>14,.0f}{slow:>16,.1f}{fast / slow:>9,.0f}x{1000 / fast:>15.3f}{1000 / slow:>17.1f}", flush=True)
    mp3_cost(files["mp3"], rounds)


def mp3_cost(paths: list[Path], rounds: int) -> None:
    """An MP3's exact length two ways: demuxing its packets (read_header) and decoding every frame."""
    import av

    def decoded(path: Path) -> int:
        with av.open(str(path)) as container:
            return sum(frame.samples for frame in container.decode(container.streams.audio[0]))

    demux, by_header = rate(lambda p: read_header(p).frames, paths, rounds * 3)
    decode, by_decoding = rate(decoded, paths, rounds)
    if by_header != by_decoding:
        raise SystemExit(f"MP3 lengths differ: demuxed {by_header}, decoded {by_decoding}")
    seconds = sum(n / read_header(p).sample_rate for n, p in zip(by_header, paths)) / len(paths)
    print(f"\nMP3 length, exact both ways ({len(paths)} clips, {seconds:.0f} s each on average): demux "
          f"{1000 / demux:.2f} ms/clip, decode {1000 / decode:.2f} ms/clip ({decode and demux / decode:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="qwen2-audio", choices=["qwen2-audio", "gemma3n", "phi4"])
    parser.add_argument("--clips", type=int, default=12, help="clips per format")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the clips for processing (x10 for counting); best kept")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}\n")
    audio(args.family, args.clips, args.rounds)


if __name__ == "__main__":
    main()
