"""Rows, tokens and build time of multi-turn data in each way of training history turns, side by side.

  inference   `ftdata build FILE` (history=inference, the default): every trained turn as inference sees it,
              a record split into the fewest rows that do (docs/masking.md, "Rows of a record")
  one_row     `ftdata build FILE --history one_row`: one row per record, history turns as the full render
              writes them (what TRL and Axolotl train)
  per_turn    one row per assistant turn (LLaMA-Factory v1's split): every record cut after each assistant
              turn, each piece built with --mask last_assistant

Each is the CLI path users run (`ftdata build ... --no-cache`, timed as a whole process), on the same file,
tokenizer and chat template, in one run. Default case: the shared glaive tool-call demo (300 real multi-turn
ShareGPT records with tool calls) on the Qwen2.5 tokenizer with TRL's qwen3 template (which writes its empty
think block into the last turn only) and with the tokenizer's own template (prefix-stable).

    python benchmarks/history_rows.py [--data FILE] [--tokenizer DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FTDATA_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "datasets/sharegpt/llamafactory_glaive_toolcall_en_demo.json"
TOKENIZER = SHARED / "tokenizers/qwen2.5-instruct"
FTDATA = [sys.executable, "-m", "ftdata"]


def per_turn(data: Path, out: Path) -> Path:
    """`data` (a JSON array of ShareGPT records) with each record cut after each of its assistant turns."""
    records = json.loads(data.read_text(encoding="utf-8"))
    with out.open("w", encoding="utf-8") as fh:
        for record in records:
            turns = record["conversations"]
            for k, turn in enumerate(turns):
                if turn["from"] in ("gpt", "function_call"):
                    if k + 1 < len(turns) and turns[k + 1]["from"] == "function_call":
                        continue  # an answer joined with the call after it is one assistant turn
                    fh.write(json.dumps({**record, "conversations": turns[: k + 1]}, ensure_ascii=False) + "\n")
    return out


def build(data: Path, flags: list[str], workdir: Path) -> tuple[float, dict]:
    out = Path(tempfile.mkdtemp(dir=workdir)) / "out"
    start = time.perf_counter()
    subprocess.run([*FTDATA, "build", str(data), "-o", str(out), "--no-cache", *flags], check=True, capture_output=True)
    seconds = time.perf_counter() - start
    counts = json.loads((out / "build.json").read_text(encoding="utf-8"))["counts"]
    return seconds, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--tokenizer", type=Path, default=TOKENIZER)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cut = per_turn(args.data, work / "per_turn.jsonl")
        print(f"data {args.data.name}, tokenizer {args.tokenizer.name}, {args.rounds} rounds, `ftdata build --no-cache` wall (median)")
        print(f"{'template':<10} {'mode':<10} {'records':>8} {'rows':>6} {'tokens':>9} {'trained':>8} {'split':>6} {'seconds':>8}")
        for template in ("qwen3", None):
            base = ["--tokenizer", str(args.tokenizer), "--max-length", "4096", "--on-error", "skip"]
            base += ["--chat-template", template] if template else []
            modes = {
                "inference": (args.data, base),
                "one_row": (args.data, [*base, "--history", "one_row"]),
                "per_turn": (cut, [*base, "--mask", "last_assistant", "--history", "one_row"]),
            }
            for mode, (data, flags) in modes.items():
                times, counts = [], {}
                for _ in range(args.rounds):
                    seconds, counts = build(data, flags, work)
                    times.append(seconds)
                records = len(json.loads(args.data.read_text(encoding="utf-8")))
                print(
                    f"{template or 'own':<10} {mode:<10} {records:>8} {counts['sequences']:>6} {counts['tokens']:>9} "
                    f"{counts['trained_tokens']:>8} {counts.get('split_records', 0):>6} {statistics.median(times):>8.2f}"
                )


if __name__ == "__main__":
    main()
