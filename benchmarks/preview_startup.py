"""How fast does `ftdata preview` start printing on a large file?

Writes a 50,000-record Alpaca-style JSONL file in a temporary folder, runs
`ftdata preview FILE` as a subprocess (bundled tokenizer, chat template) several times, and
prints the wall-clock time to the first output line, to the first record and to the end of
the command. Preview reads only the records it shows, so the file size should not matter.
`--tokenizer` times a real tokenizer folder instead of the bundled one (each is compared to
the bundled one in the same run).

    .venv/bin/python benchmarks/preview_startup.py            # 5 runs, 50k records
    .venv/bin/python benchmarks/preview_startup.py --runs 3 --records 200000
    .venv/bin/python benchmarks/preview_startup.py --tokenizer ../shared/tokenizers/qwen2.5-instruct
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_records(path: Path, n: int) -> None:
    """`n` instruction records, each different, a few hundred characters long."""
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            row = {
                "instruction": f"Explain step {i} of the process in two sentences.",
                "input": "" if i % 3 else f"Context {i}: the process has {i % 17 + 2} steps.",
                "output": f"Step {i} prepares the data. " * (1 + i % 7) + "Then the next step begins.",
            }
            fh.write(json.dumps(row) + "\n")


def ftdata_command() -> list[str]:
    """The installed `ftdata` script next to this interpreter, else `python -m ftdata.cli.app`."""
    script = Path(sys.executable).with_name("ftdata")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ftdata.cli.app"]


def time_once(command: list[str]) -> tuple[float, float, float]:
    """Seconds to the first stdout line, to the first record's line and to the end of the process."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    first_line = time.perf_counter() - started
    record = first_line
    for line in proc.stdout:
        if "record 1 " in line:
            record = time.perf_counter() - started
            break
    proc.stdout.read()
    code = proc.wait()
    total = time.perf_counter() - started
    if code != 0 or not first:
        errors = proc.stderr.read() if proc.stderr else ""
        raise SystemExit(f"{' '.join(command)} failed with exit code {code}: {errors}")
    return first_line, record, total


def _line(label: str, values: list[float]) -> str:
    return f"{label:<21}median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokenizer", action="append", default=[], help="a tokenizer folder to time too (repeatable)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="ftdata-bench-"))
    results = {}
    try:
        data = folder / "records.jsonl"
        write_records(data, args.records)
        for tokenizer in (None, *args.tokenizer):
            command = [*ftdata_command(), "preview", str(data), "-n", "3", *(["-t", tokenizer] if tokenizer else [])]
            time_once(command)  # warm-up: materialises the bundled tokenizer and fills the OS file cache
            results[tokenizer or "bundled SmolLM2"] = [time_once(command) for _ in range(args.runs)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"ftdata preview on {args.records:,} records ({data.name}), {args.runs} runs after one warm-up")
    for name, runs in results.items():
        print(f"tokenizer {name}")
        print(_line("  first output line", [r[0] for r in runs]))
        print(_line("  first record", [r[1] for r in runs]))
        print(_line("  whole command", [r[2] for r in runs]))


if __name__ == "__main__":
    main()
