"""Many small builds in one process: a notebook, a service or a test worker calling `prepare()` again and again.

Each build keeps a scratch folder until the process ends (the rows its dataset reads), so what a build does per
folder already made, or per object alive, shows as builds that get slower. `--frozen` freezes the heap first
(`gc.freeze()`, as a fork server or a test runner does before its work). Prints the median seconds per build of
the first and the last `--window` builds, and the scratch folders the process held at the end.

    python benchmarks/many_builds.py [--builds 400] [--records 20] [--window 50] [--frozen] [--code PATH]

`--code PATH` runs another checkout's ftdata (say, the code before a change) in the same way.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=400)
    parser.add_argument("--records", type=int, default=20)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--frozen", action="store_true", help="gc.freeze() the heap before the builds")
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose ftdata runs")
    args = parser.parse_args()
    sys.path.insert(0, str(args.code.resolve()))
    tempfile.tempdir = tempfile.mkdtemp(prefix="many-builds-")  # this run's scratch apart from other processes'
    atexit.register(shutil.rmtree, tempfile.tempdir, True)  # registered first: runs after ftdata's own cleanup

    import ftdata

    records = [{"instruction": f"Say {i} in words.", "input": "", "output": f"Number {i}."} for i in range(args.records)]
    ftdata.prepare(records, template="alpaca")  # imports and the tokenizer's first load, outside the timings
    if args.frozen:
        gc.collect()
        gc.freeze()
    times = []
    for _ in range(args.builds):
        start = time.perf_counter()
        result = ftdata.prepare(records, template="alpaca")
        times.append(time.perf_counter() - start)
        assert len(result.dataset) == args.records
    held = len(list(Path(tempfile.gettempdir()).glob("ftdata-[0-9]*")))
    first, last = (statistics.median(part) for part in (times[: args.window], times[-args.window :]))
    print(
        f"code {args.code.resolve()} frozen={args.frozen} objects frozen {gc.get_freeze_count():,}: "
        f"{args.builds} builds of {args.records} records, median s/build first {args.window} {first:.4f}, "
        f"last {args.window} {last:.4f} ({last / first:.2f}x), total {sum(times):.1f} s, "
        f"scratch folders held: {held}"
    )


if __name__ == "__main__":
    main()
