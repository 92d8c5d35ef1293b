"""Peak memory of reading one over-long record: what `--max-line-bytes` keeps out of memory, per command.

Every command reads user bytes through the read bounds (`ftdata/guard/bounds.py`): a record
past `max_line_bytes` is skipped unread, so it must cost a read buffer, not its size. Each
case runs in a fresh process; its peak RSS is the kernel's high-water mark (`ru_maxrss` from
`wait4`: the largest of the command's processes, watchdogs included), and its seconds the wall
time. The inputs are generated in a temporary folder:

  small.jsonl     200 short Alpaca records (the baseline: a small build)
  long.jsonl      the same 200 records and, after the first, one line of LINE_MB MB (an
                  instruction of that many `x`)
  field.csv       the same 200 records as CSV and, after the first, one record whose quoted field
                  holds FIELD_MB MB on one line
  field-lines.csv the same, the field's text broken into lines of 100 characters (a record of a
                  million lines)
  recipe.yaml     two sources (small.jsonl and long.jsonl), mixed 1:1 by records

Cases (bundled SmolLM2, `alpaca` template, `--max-length 512`, `--on-error skip`, `--no-cache`):

  build-small     ftdata build small.jsonl --max-line-bytes 100000 -o OUT
  build-long      ftdata build long.jsonl --max-line-bytes 100000 -o OUT
  stats-small     ftdata stats small.jsonl --max-line-bytes 100000
  stats-long      ftdata stats long.jsonl --max-line-bytes 100000
  recipe-small    ftdata build recipe.yaml -o OUT, both sources small.jsonl (max_line_bytes: 100000 in it)
  recipe-long     ftdata build recipe.yaml -o OUT, the second source long.jsonl
  csv-field       ftdata build field.csv -o OUT (the default bounds: 64 MiB a record)
  csv-field-lines ftdata build field-lines.csv -o OUT (the same)

A case that fails, or prints a traceback, says so in the last column.

    python benchmarks/read_bounds.py [--line-mb 200] [--field-mb 100] [--rounds 3] [--cases build-small,build-long,...]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("build-small", "build-long", "stats-small", "stats-long", "recipe-small", "recipe-long", "csv-field", "csv-field-lines")
WORDS = ("the", "a", "model", "data", "token", "label", "train", "answer", "question", "explain", "write", "short", "long", "river",
         "city", "number", "poem")  # fmt: skip
BOUND = "100000"
_CHUNK = 1 << 20


def records(n: int = 200, seed: int = 0) -> list[dict[str, str]]:
    """`n` short Alpaca records (a few words each, seeded)."""
    rng = random.Random(seed)

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choices(WORDS, k=rng.randint(lo, hi)))

    return [{"instruction": words(4, 12).capitalize() + "?", "input": "", "output": words(3, 20).capitalize() + "."} for _ in range(n)]


def _write_long(fh, size: int, *, unit: bytes) -> None:
    """`size` bytes of `unit` repeated, a MiB at a time (the generator holds a MiB, not the line)."""
    block = unit * (_CHUNK // len(unit))
    left = size
    while left > 0:
        fh.write(block[: min(left, len(block))])
        left -= len(block)


def make_inputs(folder: Path, *, line_mb: int, field_mb: int) -> None:
    """small.jsonl, long.jsonl, field.csv and the two recipes in `folder`."""
    rows = records()
    lines = [json.dumps(r).encode() + b"\n" for r in rows]
    (folder / "small.jsonl").write_bytes(b"".join(lines))
    with (folder / "long.jsonl").open("wb") as fh:
        fh.write(lines[0])
        fh.write(b'{"instruction": "')
        _write_long(fh, line_mb * 1_000_000, unit=b"x")
        fh.write(b'", "input": "", "output": "y"}\n')
        fh.writelines(lines[1:])
    for name, unit in (("field.csv", b"x"), ("field-lines.csv", b"x" * 99 + b"\n")):
        with (folder / name).open("wb") as fh:
            fh.write(b"instruction,input,output\n")
            fh.write(f'"{rows[0]["instruction"]}","","{rows[0]["output"]}"\n'.encode())
            fh.write(b'"')
            _write_long(fh, field_mb * 1_000_000, unit=unit)
            fh.write(b'",,y\n')
            fh.writelines(f'"{r["instruction"]}","","{r["output"]}"\n'.encode() for r in rows[1:])
    for name, second in (("recipe-small.yaml", "small.jsonl"), ("recipe-long.yaml", "long.jsonl")):
        sources = [{"data": str(folder / "small.jsonl"), "name": "a", "weight": 1}, {"data": str(folder / second), "name": "b", "weight": 1}]
        recipe = {"template": "alpaca", "max_length": 512, "mix_by": "records", "on_error": "skip", "max_line_bytes": int(BOUND), "sources": sources}
        (folder / name).write_text(json.dumps(recipe), encoding="utf-8")


def command(case: str, folder: Path, out: Path) -> list[str]:
    ftdata = [sys.executable, "-m", "ftdata"]
    flags = ["--template", "alpaca", "--max-length", "512", "--on-error", "skip"]
    bound = ["--max-line-bytes", BOUND]
    build = [*ftdata, "build", "--no-cache", "-o", str(out)]
    return {
        "build-small": [*build, str(folder / "small.jsonl"), *flags, *bound],
        "build-long": [*build, str(folder / "long.jsonl"), *flags, *bound],
        "stats-small": [*ftdata, "stats", str(folder / "small.jsonl"), *flags, *bound],
        "stats-long": [*ftdata, "stats", str(folder / "long.jsonl"), *flags, *bound],
        "recipe-small": [*build, str(folder / "recipe-small.yaml")],
        "recipe-long": [*build, str(folder / "recipe-long.yaml")],
        "csv-field": [*build, str(folder / "field.csv"), *flags],
        "csv-field-lines": [*build, str(folder / "field-lines.csv"), *flags],
    }[case]


def run(argv: list[str], cwd: Path) -> dict:
    """Run `argv`; its peak RSS (MiB, the kernel's high-water mark of its largest process), seconds and outcome."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "FTDATA_CACHE": str(cwd / "home")}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    outcome = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
    if "Traceback" in stderr:
        outcome += ", traceback: " + stderr.strip().splitlines()[-1][:80]
    elif proc.returncode:
        outcome += ": " + (stderr.strip().splitlines() or [""])[-1][:100]
    return {"rss": usage.ru_maxrss / 1024, "seconds": seconds, "outcome": outcome}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--line-mb", type=int, default=200, help="MB of the long JSONL line")
    parser.add_argument("--field-mb", type=int, default=100, help="MB of the long CSV field")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each case (the lowest peak and time are shown)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    args = parser.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if unknown := [c for c in cases if c not in CASES]:
        parser.error(f"--cases takes {', '.join(CASES)}; got {', '.join(unknown)}")
    with tempfile.TemporaryDirectory(prefix="read-bounds-") as tmp:
        folder = Path(tmp)
        make_inputs(folder, line_mb=args.line_mb, field_mb=args.field_mb)
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; line {args.line_mb} MB, "
              f"CSV field {args.field_mb} MB; best of {args.rounds}\n")  # fmt: skip
        run(command("build-small", folder, folder / "warm-up"), folder)  # the first run fills ftdata's cache (markers)
        print(f"{'case':<17}{'peak RSS MiB':>13}{'(all runs)':>22}{'seconds':>9}  outcome")
        for case in cases:
            runs = []
            for i in range(args.rounds):
                out = folder / f"out-{case}-{i}"
                runs.append(run(command(case, folder, out), folder))
            best = min(runs, key=lambda r: r["rss"])
            every = "/".join(f"{r['rss']:.0f}" for r in runs)
            fastest = min(r["seconds"] for r in runs)
            print(f"{case:<17}{best['rss']:>13,.0f}{every:>22}{fastest:>9.1f}  {best['outcome']}", flush=True)


if __name__ == "__main__":
    main()
