"""Seed workflow 2: the Chinese instruction/output file, with the model's own chat template.

Keeps only records without an `input` (a filter one seed workflow uses) and splits 80/20.

    python examples/chinese_instructions.py [path/to/llamafactory_alpaca_zh_demo.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

from ftdata import load_tokenizer, prepare

DATA = Path(__file__).resolve().parents[2] / "shared/datasets/chinese/llamafactory_alpaca_zh_demo.json"


def main(path: Path) -> None:
    tok = load_tokenizer(None)
    result = prepare(path, tokenizer=tok, template=None, filter="not input", max_length=2048, test_size=0.2, seed=42)
    report = result.report
    print(report.summary())
    print("masked with", report.template, "-", dict(report.methods))
    row = result.dataset["train"][0]
    print("trained text of train row 0:", tok.decode([i for i, l in zip(row["input_ids"], row["labels"]) if l != -100]))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA)
