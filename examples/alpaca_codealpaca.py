"""Seed workflow 1: Alpaca / CodeAlpaca instruction data -> masked, packed dataset with a 90/10 split.

    python examples/alpaca_codealpaca.py [path/to/code_alpaca_2k.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

from ftdata import load_tokenizer, prepare

DATA = Path(__file__).resolve().parents[2] / "shared/datasets/codealpaca/code_alpaca_2k.json"


def main(path: Path) -> None:
    tok = load_tokenizer(None)  # the bundled SmolLM2-135M-Instruct tokenizer, offline
    result = prepare(path, tokenizer=tok, template="alpaca", max_length=1024, packing=True, test_size=0.1, seed=42)
    print(result.report.summary())
    for split, ds in result.dataset.items():
        print(f"{split}: {len(ds)} packed rows, fill {result.report.packing[split]['fill_ratio']:.2%}")
    row = result.dataset["train"][0]
    start = row["labels"].index(next(x for x in row["labels"] if x != -100))
    print("first trained text of row 0:", repr(tok.decode(row["input_ids"][start : start + 30])))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA)
