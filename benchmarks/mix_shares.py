"""The mixing planner on the shared datasets' real sizes: achieved vs target shares, and its time.

    python benchmarks/mix_shares.py

Sources: the LLaMA-Factory Alpaca demo (999 records), glaive tool-call demo (300, epochs_max 3)
and Lamini docs nested (1,400 rows, 1,399 usable), weights 0.5 / 0.3 / 0.2, as in the issue's
recipe. Units per record: records; tokens = the Qwen2.5 tokenizer's count of the record's
message texts joined (no chat template: a stand-in for the built sequence); trained_tokens =
that count for the assistant texts alone. Then the same sources resampled to 1M records, to
time the planner at scale. Pure CPU, no network; docs/recipes.md quotes its output.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ftdata.errors import RecordError
from ftdata.records.formats import to_examples
from ftdata.mix.shares import SourceSizes, plan_mix
from ftdata.io.readers import read_records

SHARED = Path(__file__).resolve().parents[2] / "shared"
SOURCES = [  # name, file, weight, epochs_max
    ("alpaca", SHARED / "datasets" / "alpaca" / "llamafactory_alpaca_en_demo.json", 0.5, 1),
    ("glaive", SHARED / "datasets" / "sharegpt" / "llamafactory_glaive_toolcall_en_demo.json", 0.3, 3),
    ("lamini", SHARED / "datasets" / "lamini" / "lamini_docs_nested.jsonl", 0.2, 1),
]
QWEN = SHARED / "tokenizers" / "qwen2.5-instruct"


def unit_counts(path: Path, tokenizer) -> dict[str, np.ndarray]:
    """Per usable record: 1, its tokens, its trained tokens (records a build would reject are left out)."""
    whole, trained = [], []
    for location, row in read_records(path):
        try:
            examples = to_examples(row, location)
        except RecordError:
            continue
        messages = [m for e in examples for m in e.chat_messages()]
        whole.append("\n".join(m["content"] for m in messages))
        trained.append("\n".join(m["content"] for m in messages if m["role"] == "assistant"))
    count = lambda texts: np.array([len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]])  # noqa: E731
    return {"records": np.ones(len(whole), dtype=np.int64), "tokens": count(whole), "trained_tokens": count(trained)}


def report(units: list[np.ndarray], unit: str, total: int | None) -> None:
    sources = [SourceSizes(name, u, w, e) for (name, _, w, e), u in zip(SOURCES, units)]
    start = time.perf_counter()
    plan = plan_mix(sources, total=total, seed=42, unit=unit)
    took = time.perf_counter() - start
    worst = max(abs(s.share / s.target_share - 1) for s in plan.sources)
    parts = ", ".join(f"{s.name} {s.units:,} ({s.share:.4%}, {s.records:,} rec, {s.repeats:,} rep)" for s in plan.sources)
    print(f"| {unit} | {total if total is None else f'{total:,}'} | {plan.units:,} | {parts} | {worst:.4%} | {took * 1000:.1f} ms |")


def main() -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(QWEN)
    counts = [unit_counts(path, tokenizer) for _, path, _, _ in SOURCES]
    for (name, *_), c in zip(SOURCES, counts):
        print(f"{name}: {len(c['records']):,} records, {c['tokens'].sum():,} tokens (max {c['tokens'].max():,}), "
              f"{c['trained_tokens'].sum():,} trained (max {c['trained_tokens'].max():,})")  # fmt: skip
    print("\n| unit | total | achieved | per source: units (share, records, repeats) | worst share error (relative) | plan time |")
    print("|---|---|---|---|---|---|")
    for unit in ("records", "tokens", "trained_tokens"):
        have = [c[unit] for c in counts]
        report(have, unit, None)
        biggest = min(e * int(u.sum()) / w for (_, _, w, e), u in zip(SOURCES, have))
        report(have, unit, int(biggest * 0.6))
    rng = np.random.default_rng(0)
    scaled = [rng.choice(c["tokens"], n) for c, n in zip(counts, (500_000, 150_000, 350_000))]
    print("\n1M records (the real token counts resampled):")
    report(scaled, "tokens", None)
    report(scaled, "tokens", 100_000_000)


if __name__ == "__main__":
    main()
