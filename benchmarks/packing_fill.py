"""Packing speed and fill: `plan_bins` time for 200k sequences and fill ratios at 1024/2048.

    python benchmarks/packing_fill.py [--sequences 200000] [--repeats 3]

Length distributions (all in tokens):
- uniform: uniform integers in [100, 800];
- lognormal: median 300, sigma 0.5, clipped to [100, 800] (instruction data has a long right tail);
- alpaca-qwen: the real LLaMA-Factory Alpaca demo (999 records, ../shared/datasets) rendered
  with the Qwen2.5 chat template and tokenized, then resampled with replacement. Skipped
  when the shared files are not there.
Pure CPU, no network. The numbers in docs/packing.md come from this script.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ftdata.tokens.packing import packing_stats, plan_bins

SHARED = Path(__file__).resolve().parents[2] / "shared"
ALPACA = SHARED / "datasets" / "alpaca" / "llamafactory_alpaca_en_demo.json"
QWEN = SHARED / "tokenizers" / "qwen2.5-instruct"


def alpaca_qwen_lengths() -> np.ndarray | None:
    """Token lengths of the real Alpaca demo under the Qwen2.5 chat template, or None."""
    if not (ALPACA.exists() and QWEN.exists()):
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(QWEN)
    records = json.loads(ALPACA.read_text(encoding="utf-8"))
    lengths = []
    for r in records:
        prompt = f"{r['instruction']}\n\n{r['input']}" if r.get("input") else r["instruction"]
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": r["output"]}]
        lengths.append(len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)))
    return np.asarray(lengths)


def distributions(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    found = {
        "uniform 100-800": rng.integers(100, 801, n),
        "lognormal 100-800": np.clip(rng.lognormal(np.log(300), 0.5, n), 100, 800).astype(np.int64),
    }
    real = alpaca_qwen_lengths()
    if real is not None:
        found[f"alpaca-qwen (median {int(np.median(real))}, max {real.max()})"] = rng.choice(real, n)
    return found


def best_time(lengths: np.ndarray, max_length: int, repeats: int) -> tuple[float, list[list[int]]]:
    best, bins = float("inf"), []
    for _ in range(repeats):
        start = time.perf_counter()
        bins = plan_bins(lengths, max_length=max_length)
        best = min(best, time.perf_counter() - start)
    return best, bins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    print(f"{'distribution':<40} {'n':>8} {'max_len':>7} {'rows':>8} {'fill':>7} {'seq/row':>7} {'time s':>7}")
    for name, lengths in distributions(args.sequences, rng).items():
        for n in sorted({1_000, 10_000, args.sequences}):
            for max_length in (1024, 2048):
                sample = lengths[:n][lengths[:n] <= max_length]  # longer rows are split/truncated upstream
                repeats = args.repeats if n == args.sequences else 1
                seconds, bins = best_time(sample, max_length, repeats)
                s = packing_stats(sample, bins, max_length=max_length)
                print(
                    f"{name:<40} {s.sequences:>8,} {max_length:>7} {s.rows:>8,} "
                    f"{s.fill_ratio:>7.2%} {s.sequences_per_row:>7.2f} {seconds:>7.3f}"
                )


if __name__ == "__main__":
    main()
