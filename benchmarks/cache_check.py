"""What a content-keyed cache costs: checking a hit on 100k image records, and making the media manifest.

Part 1, the media manifest (in this process, no build): N distinct PNG files (64x48, ~200 bytes, each
its own pixels), older than `RACY_NS`, as a build's records name them.
  make     `Manifest.of`: every file hashed (cold: an empty digest index), then again with the digest
           index the first run filled (warm: another build of the same images, e.g. another option)
  check    what a cache hit does: load the entry's media.json and stat every file (`Manifest.changed`);
           then once more after one image was edited in place with its mtime restored (found, one hash)

Part 2, `ftdata build` end to end (`--e2e N`, off by default: N records take minutes to build): the
same images, one per chat record, with the example Qwen2-VL processor folder; the first build with a
cache, the re-run (a hit), and a `--no-cache` build, each timed as a whole process.

    python benchmarks/cache_check.py [--images 100000] [--rounds 5] [--e2e 0]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
QWEN_TOKENIZER = ROOT.parent / "shared" / "tokenizers" / "qwen2.5-instruct"
WORK = Path(tempfile.gettempdir()) / "ftdata-cache-check"


def images(n: int) -> list[Path]:
    """`n` distinct small PNG files (made once, then reused)."""
    from PIL import Image

    folder = WORK / f"images_{n}"
    done = folder / ".done"
    if done.is_file():
        return sorted(folder.glob("*.png"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in range(n):
        im = Image.new("RGB", (64, 48), (i % 256, (i // 256) % 256, (i // 65536) % 256))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        (folder / f"{i:06d}.png").write_bytes(buf.getvalue())
    done.touch()
    return sorted(folder.glob("*.png"))


def seconds(fn, rounds: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def manifest_costs(files: list[Path], rounds: int) -> None:
    from ftdata.guard import inputs
    from ftdata.guard.inputs import Digests, Manifest, stat_of

    oldest = max(max(st[1], st[2]) for st in map(stat_of, files))  # type: ignore[index]
    wait = (oldest + inputs.RACY_NS - time.time_ns()) / 1e9
    if wait > 0:
        time.sleep(wait + 0.1)  # as after a real build: the images are older than RACY_NS
    read = {str(p): stat_of(p) for p in files}
    index = WORK / "index.sqlite"
    index.unlink(missing_ok=True)
    inputs._MEMO.clear()
    started = time.perf_counter()
    with Digests(index) as digests:
        manifest = Manifest.of(read, digests, taken_ns=time.time_ns())
    cold = time.perf_counter() - started
    inputs._MEMO.clear()  # another process: only the index remembers
    started = time.perf_counter()
    with Digests(index) as digests:
        Manifest.of(read, digests, taken_ns=time.time_ns())
    warm = time.perf_counter() - started
    text = manifest.to_json()
    size = len(text.encode())

    def check() -> list[str]:
        return Manifest.from_json(text).changed(Digests())

    hit, changed = seconds(check, rounds)
    assert changed == [], changed
    victim = files[len(files) // 2]
    before = victim.stat()
    data = bytearray(victim.read_bytes())
    data[-20] ^= 0xFF  # a byte inside the last chunk's CRC field
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    miss, changed = seconds(check, 1)
    assert changed == [str(victim)], changed
    victim.write_bytes(bytes(data[:-20]) + bytes([data[-20] ^ 0xFF]) + bytes(data[-19:]))  # put it back
    print(f"images                     {len(files):,} ({sum(p.stat().st_size for p in files) / len(files):.0f} bytes each)")
    print(f"manifest, cold (hash all)  {cold:.2f} s")
    print(f"manifest, warm (index)     {warm:.2f} s")
    print(f"media.json                 {size / 2**20:.1f} MiB")
    print(f"hit check (load + stat)    {hit:.2f} s (median of {rounds})")
    print(f"one image edited, mtime restored: found in {miss:.2f} s")


def end_to_end(files: list[Path]) -> None:
    """`ftdata build` of one chat record per image: first build (cached), hit, and --no-cache."""
    folder = WORK / "qwen2-vl"
    if not (folder / "tokenizer.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        for source in (ROOT / "examples" / "media" / "qwen2-vl").iterdir():
            if source.name != ".gitignore":
                shutil.copyfile(source, folder / source.name)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(QWEN_TOKENIZER / name, folder / name)
    data = WORK / f"records_{len(files)}.jsonl"
    with data.open("w", encoding="utf-8") as fh:
        for path in files:
            parts = [{"type": "image", "image": str(path)}, {"type": "text", "text": "What colour is this?"}]
            fh.write(json.dumps({"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": "A colour."}]}) + "\n")
    cache = WORK / "builds"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    for label, extra in (("first build (cached)", ["--cache-dir", str(cache)]), ("re-run (hit)", ["--cache-dir", str(cache)]),
                         ("--no-cache build", ["--no-cache"])):  # fmt: skip
        out = WORK / "out"
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "ftdata", "build", str(data), "--processor", str(folder), "-o", str(out), *extra],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        print(f"{label:<27}{time.perf_counter() - started:.1f} s   {done.stdout.splitlines()[0][:150]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--e2e", type=int, default=0, help="records of the end-to-end builds (0: skip them)")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    manifest_costs(images(args.images), args.rounds)
    if args.e2e:
        end_to_end(images(args.images)[: args.e2e])


if __name__ == "__main__":
    main()
