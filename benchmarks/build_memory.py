"""Peak anonymous and file-backed memory of a build, on every path users run, at two sizes.

Anonymous memory (`RssAnon`: the heap, Python objects, arrays) is what a build holds and
must stay flat as the input grows. File-backed memory (`RssFile`: shared libraries and
memory-mapped files, such as the Arrow files `datasets` maps) is clean and the kernel takes
it back under pressure, so it is reported apart. Both are summed over the process tree of
the measured command (the CLI, its Ray cluster and workers) and sampled every 50 ms; the
peak of each sum is reported.

Paths (bundled SmolLM2, `alpaca` template, --max-length 1024):
  cli          `ftdata build DATA -o OUT` (the default Arrow output, the build cache on, in a temp dir)
  cli-packing  the same with --packing
  prepare      `prepare(DATA, template="alpaca", max_length=1024, packing=True)` in a fresh interpreter
  ray          `ftdata build DIR --engine ray --packing -o OUT`: a local Ray cluster of 2 CPUs; DIR holds
               the records in 8 shard files; the tree includes Ray's own services (GCS, raylet, ...)
  recipe       `ftdata build recipe.yaml -o OUT`: the same records as two sources (shards 0-3, 4-7)
               mixed 1:1 by records, dedup exact, packed

With two sizes or more, a line through the peaks says what 10M and 100M records would hold.

The records are short synthetic Alpaca records (a few words each, seeded), generated once
and cached under $TMPDIR/ftdata-build-memory. The 1M runs take minutes each.

    python benchmarks/build_memory.py [--sizes 100000,300000,1000000] [--paths cli,cli-packing,prepare,ray,recipe]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(tempfile.gettempdir()) / "ftdata-build-memory"
PATHS = ("cli", "cli-packing", "prepare", "ray", "recipe")
SHARDS = 8
WORDS = ("the a model data token label train answer question list explain write short long why how "
         "river city number colour music science history poem code sort table memory fast slow").split()  # fmt: skip
PREPARE = (
    "import sys; from ftdata import prepare; "
    "r = prepare(sys.argv[1], template='alpaca', max_length=1024, packing=True).report; print(r.records, r.tokens)"
)


def records(n: int, seed: int = 0):
    """`n` short Alpaca records: an instruction of 4-12 words, an input one time in three, an output of 3-20 words."""
    rng = random.Random(seed)
    for _ in range(n):
        words = lambda lo, hi: " ".join(rng.choices(WORDS, k=rng.randint(lo, hi)))  # noqa: E731
        yield {"instruction": words(4, 12).capitalize() + "?", "input": words(2, 8) if rng.random() < 1 / 3 else "",
               "output": words(3, 20).capitalize() + "."}  # fmt: skip


def data(n: int) -> tuple[Path, Path]:
    """(one JSONL file, a folder of SHARDS JSONL files) of the same `n` records, made once."""
    single, sharded = CACHE / f"short-{n}.jsonl", CACHE / f"short-{n}"
    if not single.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        part = single.with_suffix(".split_row")
        with part.open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records(n))
        part.rename(single)
    if not sharded.exists():
        part = sharded.with_suffix(".parts")
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir()
        lines = single.read_text(encoding="utf-8").splitlines(keepends=True)
        size = -(-len(lines) // SHARDS)
        for i in range(SHARDS):
            (part / f"part-{i}.jsonl").write_text("".join(lines[i * size : (i + 1) * size]), encoding="utf-8")
        part.rename(sharded)
    return single, sharded


def command(path: str, n: int, out: Path) -> list[str]:
    single, sharded = data(n)
    ftdata = [sys.executable, "-m", "ftdata", "build"]
    common = ["--template", "alpaca", "--max-length", "1024", "-o", str(out), "--cache-dir", str(out.parent / "cache")]
    if path == "cli":
        return [*ftdata, str(single), *common]
    if path == "cli-packing":
        return [*ftdata, str(single), *common, "--packing"]
    if path == "prepare":
        return [sys.executable, "-c", PREPARE, str(single)]
    if path == "recipe":  # the same records as two sources (shards 0-3 and 4-7), mixed 1:1 by records, deduplicated
        recipe = out.parent / "recipe.yaml"
        sources = [{"data": str(sharded / f"part-[{lo}-{lo + 3}].jsonl"), "name": f"half{lo}", "weight": 1} for lo in (0, 4)]
        recipe.write_text(json.dumps({"template": "alpaca", "max_length": 1024, "packing": True, "mix_by": "records",
                                      "dedup": "exact", "sources": sources}))  # fmt: skip
        return [*ftdata, str(recipe), "-o", str(out)]
    return [*ftdata, str(sharded), "--template", "alpaca", "--max-length", "1024", "-o", str(out),
            "--engine", "ray", "--num-workers", "2", "--packing"]  # fmt: skip


def children() -> dict[int, list[int]]:
    """Every process's children, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        parent = int(stat[stat.rindex(b")") + 2 :].split()[1])  # the name may hold spaces and parentheses
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def tree_memory(root: int) -> tuple[int, int]:
    """(RssAnon, RssFile) in KiB summed over `root` and its descendants."""
    tree, todo, anon, file = children(), [root], 0, 0
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, ()))
        try:
            with open(f"/proc/{pid}/status", "rb") as fh:
                for line in fh:
                    if line.startswith(b"RssAnon:"):
                        anon += int(line.split()[1])
                    elif line.startswith(b"RssFile:"):
                        file += int(line.split()[1])
        except OSError:  # the process ended between the listing and the read
            continue
    return anon, file


def measure(path: str, n: int, interval: float) -> dict:
    """Run one build in a fresh process tree; the peak of each memory sum and the wall time."""
    with tempfile.TemporaryDirectory(prefix="ftdata-mem-") as tmp:
        return sampled(command(path, n, Path(tmp) / "out"), Path(tmp), interval, what=f"{path} at {n:,} records")


def sampled(argv: list[str], tmp: Path, interval: float, *, what: str) -> dict:
    """Run `argv` in `tmp` (ftdata's cache there too), sampling its tree's memory: peak MiB and seconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "FTDATA_CACHE": str(tmp / "home")}
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp)
    peak_anon = peak_file = 0
    while proc.poll() is None:
        anon, file = tree_memory(proc.pid)
        peak_anon, peak_file = max(peak_anon, anon), max(peak_file, file)
        time.sleep(interval)
    seconds = time.perf_counter() - start
    stdout, stderr = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{what} failed ({proc.returncode}):\n{stderr.decode()[-3000:]}")
    return {"anon": peak_anon / 1024, "file": peak_file / 1024, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="record counts, smallest first (the ratio is last / first)")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {', '.join(PATHS)}")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between samples")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if unknown := [p for p in paths if p not in PATHS]:
        parser.error(f"--paths takes {', '.join(PATHS)}; got {', '.join(unknown)}")
    for n in sizes:
        data(n)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; sampled every {args.interval * 1000:.0f} ms\n")
    print(f"{'path':<13}{'records':>11}{'anon MiB':>10}{'file MiB':>10}{'seconds':>9}{'anon ratio':>12}")
    for path in paths:
        first = None
        peaks = []
        for n in sizes:
            out = measure(path, n, args.interval)
            first = first or out
            peaks.append(out["anon"])
            ratio = f"{out['anon'] / first['anon']:.2f}x" if out is not first else ""
            print(f"{path:<13}{n:>11,}{out['anon']:>10,.0f}{out['file']:>10,.0f}{out['seconds']:>9.0f}{ratio:>12}", flush=True)
        if len(sizes) > 1:
            print(projection(sizes, peaks), flush=True)


def projection(sizes: list[int], peaks: list[float]) -> str:
    """What 10M and 100M records would hold: the line through the measured peaks (least squares), in MiB, and
    its slope in bytes a record. A line, because what grows with the input is per-row arrays (lengths, byte
    positions, the packing plan); the rest of a build is flat."""
    slope, base = np.polyfit(np.asarray(sizes, dtype=float), np.asarray(peaks, dtype=float), 1)
    at = {n: base + slope * n for n in (10_000_000, 100_000_000)}
    held = ", ".join(f"{n // 1_000_000}M {mib:,.0f} MiB ({mib / peaks[0]:.1f}x)" for n, mib in at.items())
    return f"{'':<13}{'':>11}  line: {base:,.0f} MiB + {slope * 2**20:.0f} bytes a record -> {held}"


if __name__ == "__main__":
    main()
