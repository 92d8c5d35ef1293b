"""The inspection page at scale: `ftdata inspect OUT` on builds of 10,000 and 1,000,000 rows, as users run it.

Builds N short, distinct instruction records (`ftdata build --no-cache --engine processes`, not timed here),
then times `ftdata inspect OUT -o page.html` as a whole process and reports its wall time, peak RSS (with the
pages of the dataset file it touched, which the kernel can drop), its anonymous memory at exit, and the page's size. The sample shown is the default (first 10, 10 drawn, 5 longest); the distributions read every
row in Arrow batches, so memory should stay flat while the rows grow 100x.

    python benchmarks/inspect_scale.py [--rows 10000,1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
FTDATA = [sys.executable, "-m", "ftdata"]
# `ftdata ARGS` in this process, then its own peak RSS (KiB) as the last line on stderr
MEASURED = """
import resource, sys
from ftdata.cli import main
sys.argv = ["ftdata", *sys.argv[1:]]
try:
    main()
finally:
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    print(status.get("RssAnon", "0 kB").split()[0], file=sys.stderr)  # heap and stacks, at exit (Linux)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def records(n: int, path: Path) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"instruction": f"Add {i} and {i % 97}.", "output": f"{i} plus {i % 97} is {i + i % 97}."}) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="10000,1000000")
    args = parser.parse_args()
    print(f"{'rows':>9} {'build s':>8} {'inspect s':>9} {'peak RSS MiB':>12} {'anon MiB':>9} {'page KiB':>9}")
    for n in map(int, args.rows.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            data, out, page = records(n, Path(tmp) / "data.jsonl"), Path(tmp) / "out", Path(tmp) / "page.html"
            start = time.perf_counter()
            subprocess.run([*FTDATA, "build", str(data), "-o", str(out), "--no-cache", "--engine", "processes", "--max-length", "64"],
                           check=True, capture_output=True)  # fmt: skip
            built = time.perf_counter() - start
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", MEASURED, "inspect", str(out), "-o", str(page)], check=True, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            *_, anon, peak = done.stderr.strip().splitlines()
            rss, anon = f"{int(peak) / 1024:,.0f}", f"{int(anon) / 1024:,.0f}"
            print(f"{n:>9,} {built:>8.1f} {seconds:>9.2f} {rss:>12} {anon:>9} {page.stat().st_size / 1024:>9,.0f}", flush=True)


if __name__ == "__main__":
    main()
