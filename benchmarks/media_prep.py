"""Images counted per second vs images processed per second, the memory of a build with images, and the
record loop of this tree against another.

Part 1, counting (runs today). For every image, in one run and side by side:
  count    read the size from the file header (`PIL.Image.open(...).size`, no decode) and apply the
           processor's own rule: Qwen2-VL `get_number_of_image_patches(h, w)` (smart_resize with the
           folder's min/max_pixels) // merge_size**2; Gemma 3 a fixed `image_seq_length`.
  process  what the peers do to know the count: decode the image and run the image processor
           (resize, rescale, normalise, patchify: the pixels), then read the count off its output
           (`image_grid_thw`), or for Gemma 3 the one 896x896 crop.
The two counts are checked equal for every image. Processors: the PIL backends (no torchvision)
with the settings of Qwen/Qwen2-VL-7B-Instruct (min_pixels 3136, max_pixels 12845056) and
google/gemma-3-4b-it (896x896, 256 tokens). Images: matplotlib's sample photos at their own
sizes and re-encoded at phone/camera sizes (JPEG 640x480 .. 4032x3024), plus charts rendered
by matplotlib (PNG).

Part 2, memory (needs `ftdata build --processor`, from the vision build side of ftdata): peak
anonymous memory (RssAnon, summed over the process tree, sampled every 50 ms; see
build_memory.py) of `ftdata build DATA --processor DIR -o OUT` on generated chat records with
one image each (OpenAI content parts pointing at the image files above), at 10k and 100k
records. It must stay flat: no pixels are held, only references, sizes and token spans.
Measured (docs/media.md, 2 shared cores, load average 2-3.5): 541 MiB at 10,000 records, 552 MiB
at 100,000 (1.02x); 10,000 records built in 42 s, 100,000 in 199 s (502 records a second).

Part 3, the record loop of two source trees side by side (`--compare TREE`: another checkout of ftdata,
e.g. `git archive <commit> | tar -x -C /tmp/before`): `Stage.run` and `sft_part` (render, expand, tokenize,
splice, verify, truncate, the media column) over the same records in fresh processes, the two trees in
turn (A B A B ...), CPU seconds of each process's loop (`time.process_time`, so the load of a shared
machine counts less than in wall time); each round builds a new stage, so header and count caches start
cold. The records are part 2's.

Part 4, audio (`--medium audio`). For every clip, in one run and side by side:
  count    `read_header` (WAV/FLAC/OGG: the header, plus a walk of the RIFF chunks, the last FLAC sample or the
           last Ogg page to prove the file whole; MP3: every packet demuxed, nothing decoded) and the family's rule
           (`count_audio`): no sample is decoded.
  process  what the peers do to know the count: decode the clip, average it to mono, resample it with soxr to
           the feature extractor's rate (`load_audio`, the collator's path), run the feature extractor, and read
           the count off its output the way the processor does (Qwen2-Audio: its own `_process_audio` on the
           mask; Phi-4: `audio_embed_sizes`; Gemma 3n: the fixed 188 once the features exist).
The two counts are checked equal for every clip. Clips: a 440/660 Hz tone with noise, written once per format
(tests/media/audio_support.py: WAV and FLAC 16-bit and OGG Vorbis with soundfile, MP3 with PyAV's libmp3lame)
at 8 / 16 / 22.05 / 44.1 / 48 kHz, mono and stereo, 2 to 28 s. The MP3 table compares the two exact ways to
know an MP3's length: demuxing its packets (what `read_header` does) and decoding them. With the memory part,
`ftdata build --processor` (Qwen2-Audio) on chat records with one clip each at 10k and 100k records.

    python benchmarks/media_prep.py [--rounds 3] [--sizes 10000,100000] [--skip-memory]
    python benchmarks/media_prep.py --skip-counting --skip-memory --compare /tmp/before [--loop-records 2000]
    python benchmarks/media_prep.py --medium audio [--family qwen2-audio|gemma3n|phi4] [--clips 12] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ftdata.media.audio_families import AudioFamily, AudioRule, FixedRule, StackedFramesRule, WhisperConvRule, count_audio
from ftdata.media.audio_files import load_audio, read_header

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
QWEN_TOKENIZER = SHARED / "tokenizers" / "qwen2.5-instruct"
CACHE = Path(tempfile.gettempdir()) / "ftdata-media-prep"
# The bundled example processor folder: Qwen/Qwen2-VL-7B-Instruct's preprocessor_config.json and chat template.
EXAMPLE = ROOT / "examples" / "media" / "qwen2-vl"
QWEN2_VL = json.loads((EXAMPLE / "preprocessor_config.json").read_text(encoding="utf-8"))
SIZES = [(640, 480), (1280, 960), (1920, 1080), (4032, 3024)]


def images(folder: Path) -> list[Path]:
    """The benchmark's image files (made once): sample photos, re-encoded photos, rendered charts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    samples = Path(matplotlib.get_data_path()) / "sample_data"
    photos = [samples / "grace_hopper.jpg", samples / "logo2.png", samples / "Minduka_Present_Blue_Pack.png"]
    folder.mkdir(parents=True, exist_ok=True)
    out = list(photos)
    for width, height in SIZES:
        target = folder / f"photo_{width}x{height}.jpg"
        if not target.exists():
            with Image.open(photos[0]) as img:
                img.convert("RGB").resize((width, height)).save(target, quality=90)
        out.append(target)
    for k, (width, height) in enumerate([(800, 600), (1200, 400)]):
        target = folder / f"chart_{width}x{height}.png"
        if not target.exists():
            fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
            fig.gca().plot([x * x * (k + 1) for x in range(50)])
            fig.savefig(target)
            plt.close(fig)
        out.append(target)
    return out


def qwen_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=QWEN2_VL["min_pixels"], max_pixels=QWEN2_VL["max_pixels"])


def gemma_processor():
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    return Gemma3ImageProcessorPil(size={"height": 896, "width": 896}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def count_qwen(processor, path: Path) -> int:
    from PIL import Image

    with Image.open(path) as img:  # the header only: nothing is decoded
        width, height = img.size
    return processor.get_number_of_image_patches(height, width) // processor.merge_size**2


def process_qwen(processor, path: Path) -> int:
    from PIL import Image

    with Image.open(path) as img:
        out = processor(images=img.convert("RGB"), return_tensors="np")
    return int(out["image_grid_thw"].prod()) // processor.merge_size**2


def count_gemma(processor, path: Path) -> int:
    from PIL import Image

    with Image.open(path) as img:  # opened (the header read) so a broken file fails here too
        img.size
    return 256


def process_gemma(processor, path: Path) -> int:
    from PIL import Image

    with Image.open(path) as img:
        out = processor(images=img.convert("RGB"), return_tensors="np")
    return 256 * len(out["pixel_values"])


def rate(fn, processor, files: list[Path], rounds: int) -> tuple[float, list[int]]:
    """Best images/s over `rounds` passes over `files`, and the counts of the last pass."""
    best, counts = 0.0, []
    for _ in range(rounds):
        start = time.perf_counter()
        counts = [fn(processor, path) for path in files]
        best = max(best, len(files) / (time.perf_counter() - start))
    return best, counts


def counting(files: list[Path], rounds: int) -> None:
    tokens = []
    print(f"{'processor':<10}{'images':>8}{'count img/s':>14}{'process img/s':>16}{'speedup':>10}{'ms/img count':>14}{'ms/img process':>16}")
    for name, make, count, process in (("qwen2-vl", qwen_processor, count_qwen, process_qwen),
                                       ("gemma-3", gemma_processor, count_gemma, process_gemma)):  # fmt: skip
        processor = make()
        fast, counted = rate(count, processor, files, rounds * 20)
        slow, processed = rate(process, processor, files, rounds)
        if counted != processed:
            raise SystemExit(f"{name}: counted {counted} but the processor made {processed}")
        print(f"{name:<10}{len(files):>8}{fast:>14,.0f}{slow:>16,.1f}{fast / slow:>9,.0f}x{1000 / fast:>14.3f}{1000 / slow:>16.1f}", flush=True)
        tokens.append(f"{name}: {', '.join(f'{p.name} {c}' for p, c in zip(files, counted))}")
    print("tokens per image, the same both ways:\n  " + "\n  ".join(tokens))


# --- part 2: memory of `ftdata build --processor` -------------------------------------------------


def processor_folder(folder: Path) -> Path:
    """Qwen2-VL's processor folder from the shared Qwen2.5 tokenizer (which has the vision tokens)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(QWEN_TOKENIZER / name, folder / name)
    for name in ("preprocessor_config.json", "chat_template.jinja"):
        shutil.copyfile(EXAMPLE / name, folder / name)
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen2VLProcessor"}))
    return folder


def jsonl_once(name: str, n: int, record: Callable[[int], dict]) -> Path:
    """`n` records (`record(i)`) as JSONL under CACHE/`name`; made once."""
    path = CACHE / name
    if not path.exists():
        with path.open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(record(i)) + "\n" for i in range(n))
    return path


def records_file(n: int, files: list[Path]) -> Path:
    """`n` chat records, one image each (cycling through `files`), as JSONL; made once."""

    def record(i: int) -> dict:
        image = files[i % len(files)]
        return {"messages": [
            {"role": "user", "content": [{"type": "image", "image": str(image)}, {"type": "text", "text": f"What is in picture {i}?"}]},
            {"role": "assistant", "content": f"Picture {i} shows {image.stem.replace('_', ' ')}."},
        ]}  # fmt: skip

    return jsonl_once(f"records_{n}.jsonl", n, record)


def memory(sizes: list[int], records: Callable[[int], Path], processor: Path, interval: float, *, title: str) -> None:
    """Peak anonymous memory of `ftdata build --processor` on `records(n)` at each size (from the cold: --no-cache)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from build_memory import sampled  # the same RssAnon/RssFile sampling as the text builds

    print(f"\n{title}\n{'records':>10}{'anon MiB':>10}{'file MiB':>10}{'seconds':>9}{'anon ratio':>12}")
    first = None
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="ftdata-media-mem-") as tmp:
            argv = [sys.executable, "-m", "ftdata", "build", str(records(n)), "--processor", str(processor), "-o",
                    str(Path(tmp) / "out"), "--max-length", "2048", "--no-cache"]  # fmt: skip
            out = sampled(argv, Path(tmp), interval, what=f"ftdata build --processor ({title}) at {n:,} records")
        first = first or out["anon"]
        ratio = f"{out['anon'] / first:.2f}x" if n != sizes[0] else ""
        print(f"{n:>10,}{out['anon']:>10,.0f}{out['file']:>10,.0f}{out['seconds']:>9.0f}{ratio:>12}", flush=True)


# --- part 3: the record loop, this tree against another ------------------------------------------

_LOOP = """
import json, sys, time
from ftdata.errors import Location
from ftdata.io.resources import load_tokenizer
from ftdata.options import DataOptions
from ftdata.run.stage import Stage
from ftdata.run.sft import sft_part
processor, data, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
tokenizer = load_tokenizer(processor)
records = [(Location(data, i + 1), json.loads(line)) for i, line in enumerate(open(data, encoding="utf-8"))]
best, rows = None, 0
for _ in range(rounds):
    stage = Stage(tokenizer, DataOptions(processor=processor, max_length=2048))
    side = {"media": stage.media} if hasattr(stage, "media") else {"vision": stage.vision}  # the tree before the seam
    start = time.process_time()
    rows = sum(len(sft_part(stage.run(records[i : i + 256]), **side).lengths) for i in range(0, len(records), 256))
    seconds = time.process_time() - start
    best = seconds if best is None else min(best, seconds)
print(json.dumps({"seconds": best, "records": len(records), "rows": rows}))
"""


def loop(trees: list[Path], n: int, files: list[Path], rounds: int, turns: int) -> None:
    """Records per CPU second of the record loop, per tree, the trees in turn (best of `rounds` each)."""
    import subprocess

    processor = processor_folder(CACHE / "qwen2-vl-processor")
    data = records_file(n, files)
    print(f"\nrecord loop, {n:,} records (one image each, max_length 2048), best of {rounds} per process, trees in turn")
    print(f"{'tree':<40}{'turn':>6}{'CPU s':>9}{'records/CPU s':>15}{'rows':>7}")
    results: dict[Path, list[float]] = {tree: [] for tree in trees}
    for turn in range(turns):
        for tree in trees:
            env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
            done = subprocess.run([sys.executable, "-c", _LOOP, str(processor), str(data), str(rounds)], env=env, cwd=tree,
                                  capture_output=True, text=True, check=True)  # fmt: skip
            out = json.loads(done.stdout.strip().splitlines()[-1])
            results[tree].append(out["seconds"])
            print(f"{str(tree)[-40:]:<40}{turn + 1:>6}{out['seconds']:>9.2f}{n / out['seconds']:>15,.0f}{out['rows']:>7}", flush=True)
    for tree, seconds in results.items():
        best, median = min(seconds), sorted(seconds)[len(seconds) // 2]
        print(f"{str(tree)[-40:]:<40} best {best:.2f} CPU s ({n / best:,.0f} records/CPU s), median {median:.2f} ({n / median:,.0f})")


# --- part 4: audio ----------------------------------------------------------------------------------

RATES = (8000, 16000, 22050, 44100, 48000)
FORMATS = ("wav", "flac", "mp3", "ogg")


def audio_clips(folder: Path, per_format: int) -> dict[str, list[Path]]:
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


def audio_family(name: str) -> tuple[AudioRule, object]:
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


def clip_rate(fn, files: list[Path], rounds: int) -> tuple[float, list[int]]:
    """Best clips/s over `rounds` passes over `files`, and the counts of the last pass."""
    best, counts = 0.0, []
    for _ in range(rounds):
        start = time.perf_counter()
        counts = [fn(path) for path in files]
        best = max(best, len(files) / (time.perf_counter() - start))
    return best, counts


def audio_counting(name: str, per_format: int, rounds: int) -> None:
    rule, fe = audio_family(name)
    files = audio_clips(CACHE / "audio", per_format)
    print(f"audio, {name}: header count vs decode + soxr + feature extractor ({per_format} clips a format)")
    print(f"{'format':<8}{'clips':>6}{'seconds':>9}{'count clip/s':>14}{'process clip/s':>16}{'speedup':>10}{'ms/clip count':>15}{'ms/clip process':>17}")
    for fmt in FORMATS:
        paths = files[fmt]
        fast, counted = clip_rate(lambda p: count_audio(read_header(p), rule).tokens, paths, rounds * 10)
        slow, processed = clip_rate(lambda p: processed_count(name, fe, load_audio(p, rate=rule.sampling_rate)), paths, rounds)
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

    demux, by_header = clip_rate(lambda p: read_header(p).frames, paths, rounds * 3)
    decode, by_decoding = clip_rate(decoded, paths, rounds)
    if by_header != by_decoding:
        raise SystemExit(f"MP3 lengths differ: demuxed {by_header}, decoded {by_decoding}")
    seconds = sum(n / read_header(p).sample_rate for n, p in zip(by_header, paths)) / len(paths)
    print(f"\nMP3 length, exact both ways ({len(paths)} clips, {seconds:.0f} s each on average): demux "
          f"{1000 / demux:.2f} ms/clip, decode {1000 / decode:.2f} ms/clip ({decode and demux / decode:.1f}x)")


def qwen2_audio_folder(folder: Path) -> Path:
    """Qwen2-Audio's processor folder (Qwen/Qwen2-Audio-7B-Instruct's feature extractor settings and chat
    template) on the shared Qwen2.5 tokenizer with the audio tokens added, saved by transformers itself."""
    if (folder / "processor_config.json").exists():
        return folder
    from transformers import AutoTokenizer, WhisperFeatureExtractor
    from transformers.models.qwen2_audio.processing_qwen2_audio import Qwen2AudioProcessor

    extra = {"audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}
    tokenizer = AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER), extra_special_tokens=extra)
    fe = WhisperFeatureExtractor(feature_size=128, return_attention_mask=True)
    Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tokenizer).save_pretrained(str(folder))
    return folder


def audio_records(n: int, clips: list[Path]) -> Path:
    """`n` chat records, one clip each (transformers' `{"type": "audio", "path": ...}` part), as JSONL; made once."""

    def record(i: int) -> dict:
        clip = clips[i % len(clips)]
        return {"messages": [
            {"role": "user", "content": [{"type": "audio", "path": str(clip)}, {"type": "text", "text": f"What is in clip {i}?"}]},
            {"role": "assistant", "content": f"Clip {i} is a tone, {clip.stem.split('_')[-1]} long."},
        ]}  # fmt: skip

    return jsonl_once(f"audio_records_{n}.jsonl", n, record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--medium", default="image", choices=["image", "audio"], help="which medium's figures")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the items for processing (x20 images, x10 clips for counting); best kept")
    parser.add_argument("--sizes", default="10000,100000", help="record counts of the memory part, smallest first")
    parser.add_argument("--skip-memory", action="store_true", help="only the counting comparison")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between memory samples")
    parser.add_argument("--skip-counting", action="store_true", help="no counting comparison (part 1)")
    parser.add_argument("--compare", type=Path, help="part 3: another ftdata tree whose record loop runs beside this one's")
    parser.add_argument("--loop-records", type=int, default=2000, help="records of the record-loop comparison")
    parser.add_argument("--turns", type=int, default=2, help="processes per tree in the record-loop comparison, in turn")
    parser.add_argument("--family", action="append", choices=["qwen2-audio", "gemma3n", "phi4"], help="audio: the families (default all)")
    parser.add_argument("--clips", type=int, default=12, help="audio: clips per format")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}\n")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.medium == "audio":
        if not args.skip_counting:
            for name in args.family or ["qwen2-audio", "gemma3n", "phi4"]:
                audio_counting(name, args.clips, args.rounds)
        if not args.skip_memory:
            clips = audio_clips(CACHE / "audio", args.clips)["wav"]
            memory(sizes, lambda n: audio_records(n, clips), qwen2_audio_folder(CACHE / "qwen2-audio-processor"),
                   args.interval, title="audio build memory (Qwen2-Audio, one WAV clip a record)")  # fmt: skip
        return
    files = images(CACHE / "images")
    if not args.skip_counting:
        counting(files, args.rounds)
    if not args.skip_memory:
        memory(sizes, lambda n: records_file(n, files), processor_folder(CACHE / "qwen2-vl-processor"), args.interval,
               title="image build memory (Qwen2-VL, one image a record)")  # fmt: skip
    if args.compare is not None:
        loop([ROOT, args.compare.resolve()], args.loop_records, files, args.rounds, args.turns)


if __name__ == "__main__":
    main()
