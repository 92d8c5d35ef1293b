"""A recipe build against single builds of the same records, in one process, alternating.

The recipe mixes three sources (the shared Alpaca, glaive tool-call and Lamini sets, each
repeated `--copies` times into a JSONL file) with weights equal to their sizes and
`epochs_max: 1` (weights = each source's usable records), so the mixture is every record exactly once: the same records as the three
single builds (each source with its own options). Both go through `ftdata.build`, the
driver `ftdata build` runs. Rounds alternate (single, recipe, single, ...); the ratio is
single-build time / recipe time (>= 1: the recipe is as fast), min and median over rounds.
A second recipe adds `dedup: exact` and decontamination against one evaluation file, to
show what those cost.

    python benchmarks/recipe_throughput.py [--copies 6] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SOURCES = {
    "alpaca": (SHARED / "datasets/alpaca/llamafactory_alpaca_en_demo.json", {}),
    "glaive": (SHARED / "datasets/sharegpt/llamafactory_glaive_toolcall_en_demo.json", {}),
    "lamini": (SHARED / "datasets/lamini/lamini_docs_nested.jsonl", {"template": "question-answer"}),
}
TOKENIZER = SHARED / "tokenizers/qwen2.5-instruct"
COMMON = {"max_length": 2048, "packing": True, "on_error": "skip"}


def rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import ftdata
    from ftdata.io.resources import load_tokenizer

    tok = load_tokenizer(str(TOKENIZER))
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        files, sizes = {}, {}
        for name, (path, _) in SOURCES.items():
            records = rows(path) * args.copies
            files[name] = tmp / f"{name}.jsonl"
            files[name].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
            sizes[name] = len(records)
        # weights = each source's usable records (a single build's records less its rejects): the
        # mixture "everything once" is then exactly the records the single builds keep
        usable = {}
        for n in SOURCES:
            report = ftdata.build(str(files[n]), tokenizer=tok, **COMMON, **SOURCES[n][1]).report
            usable[n] = report.records - report.n_rejected
        sources = [{"data": str(files[n]), "name": n, "weight": usable[n], **SOURCES[n][1]} for n in SOURCES]
        plain = tmp / "recipe.yaml"
        plain.write_text(yaml.safe_dump({**COMMON, "mix_by": "records", "sources": sources}))
        checked = tmp / "checked.yaml"
        evals = str(SHARED / "datasets/codealpaca/code_alpaca_2k.json")
        checked.write_text(yaml.safe_dump({**COMMON, "mix_by": "records", "dedup": "exact", "decontaminate": [evals], "sources": sources}))

        def singles() -> int:
            return sum(ftdata.build(str(files[n]), tokenizer=tok, **COMMON, **SOURCES[n][1]).report.sequences for n in SOURCES)

        def recipe(path: Path) -> int:
            return ftdata.build(str(path), tokenizer=tok).report.sequences

        times: dict[str, list[float]] = {"single builds": [], "recipe": [], "recipe + dedup + decontaminate": []}
        counts = {}
        for _ in range(args.rounds):
            for label, run in (("single builds", singles), ("recipe", lambda: recipe(plain)),
                               ("recipe + dedup + decontaminate", lambda: recipe(checked))):  # fmt: skip
                started = time.perf_counter()
                counts[label] = run()
                times[label].append(time.perf_counter() - started)
    records = sum(sizes.values())
    print(f"{records:,} records ({', '.join(f'{n} {s:,}' for n, s in sizes.items())}), {args.rounds} rounds, Qwen2.5 tokenizer")
    print(f"{'build':32} {'min s':>7} {'median s':>9} {'records/s (median)':>19} {'sequences':>10}")
    for label, values in times.items():
        median = statistics.median(values)
        print(f"{label:32} {min(values):7.2f} {median:9.2f} {records / median:19,.0f} {counts[label]:10,}")
    base = times["single builds"]
    for label in ("recipe", "recipe + dedup + decontaminate"):
        ratios = [s / r for s, r in zip(base, times[label])]
        print(f"throughput {label} / single builds: min {min(ratios):.2f}x, median {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
