"""Micro-benchmarks of the Python around the tokenizer, each next to a faster equivalent.

Each case times today's code path and a proposed replacement on the seeded synthetic Alpaca
records (see prep_throughput.py), checks that both give the same result, and prints
microseconds per record. These are the measured proposals in docs/performance.md.

    python benchmarks/hotspots.py [--records 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from itertools import chain
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the seeded synthetic data of prep_throughput


def best(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from ftdata import load_tokenizer
    from ftdata.errors import Location
    from ftdata.records.formats import Columns, to_examples
    from ftdata.chat.markers import control_tokens
    from ftdata.chat.prompt_templates import load_prompt_template

    import prep_throughput as prep
    records = prep.synthetic(prep.real_records(), args.records)
    n = len(records)
    tok = load_tokenizer(None)
    cases = []

    # 1. Control-token check (render.Renderer._check_controls): a generator per field vs one regex.
    controls = control_tokens(tok)
    texts = [t for r in records for t in (r["instruction"], r["input"], r["output"])]
    pattern = re.compile("|".join(map(re.escape, controls)))

    def controls_today():
        return [next((c for c in controls if c in t), None) for t in texts]

    def controls_regex():
        return [m.group() if (m := pattern.search(t)) else None for t in texts]

    cases.append(("render: control-token check", controls_today, controls_regex))

    # 2. Prompt template (prompts.PromptTemplate.render): Template.render vs the compiled
    #    root function over a context built once per call without re-merging globals.
    tpl = load_prompt_template("alpaca")
    compiled = tpl._compiled

    def prompt_today():
        return [tpl.render(instruction=r["instruction"], input=r["input"]) for r in records]

    def prompt_direct():
        root, new = compiled.root_render_func, compiled.new_context
        return ["".join(root(new({"instruction": r["instruction"], "input": r["input"], "system": ""}, shared=True)))
                for r in records]  # fmt: skip

    cases.append(("prompts: alpaca render", prompt_today, prompt_direct))

    # 3. Format detection (formats.to_examples): detect and resolve columns per record vs once per key set.
    columns = Columns()
    locs = [Location("x", index=i) for i in range(n)]

    def formats_today():
        return [to_examples(r, loc, columns=columns) for r, loc in zip(records, locs)]

    def formats_once_per_shape():
        shapes: dict[frozenset, str] = {}
        out = []
        for r, loc in zip(records, locs):
            key = frozenset(r)
            name = shapes.get(key) or shapes.setdefault(key, to_examples(r, loc, columns=columns)[0].format)
            out.append(to_examples(r, loc, format=name, columns=columns))
        return out

    cases.append(("formats: detect per record vs per shape", formats_today, formats_once_per_shape))

    # 4. Chunk assembly (pipeline.Stage.__call__): extend Python lists then np.asarray vs one
    #    np.fromiter over the chained rows.
    enc = tok.backend_tokenizer.encode_batch([r["instruction"] + r["output"] for r in records], add_special_tokens=False)
    rows = [e.ids for e in enc]

    def chunk_today():
        ids: list[int] = []
        for row in rows:
            ids.extend(row)
        return np.asarray(ids, dtype=np.int32)

    def chunk_fromiter():
        total = sum(map(len, rows))
        return np.fromiter(chain.from_iterable(rows), dtype=np.int32, count=total)

    cases.append(("pipeline: chunk ids to numpy", chunk_today, chunk_fromiter))

    print(f"{n:,} synthetic Alpaca records, best of {args.repeats}; microseconds per record\n")
    print(f"{'hot spot':<42}{'today':>9}{'proposed':>10}{'gain':>8}")
    for name, today, proposed in cases:
        t0, a = best(today, args.repeats)
        t1, b = best(proposed, args.repeats)
        same = np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
        if not same:
            raise SystemExit(f"{name}: the proposed path gives a different result")
        print(f"{name:<42}{t0 / n * 1e6:>9.1f}{t1 / n * 1e6:>10.1f}{t0 / t1:>7.2f}x")


if __name__ == "__main__":
    main()
