"""Prompt-set preparation throughput (GRPO/RLOO prompts): TRL 1.16's own prompt handling against ftdata's.

In prompts per second.

Same data, one run, one machine, the bundled SmolLM2 tokenizer:
  trl      what `GRPOTrainer` does with a prompt set (trl/trainer/grpo_trainer.py `_tokenize_prompts`): TRL's
           conversational `prompt` rows (the GSM8K question as one user turn) rendered and tokenized by the
           tokenizer's `apply_chat_template(prompts, add_generation_prompt=True, tokenize=True)` in batches of 64.
           TRL checks nothing: no length limit, no reward column. The rows are built before the clock starts.
  ftdata   `ftdata.build(FILE, task="prompts")` in process: the JSONL read, each prompt rendered, tokenized and
           verified against transformers' own rendering, the reward column typed, the Arrow rows written.
  ftdata build
           `ftdata build FILE -o OUT --task prompts --no-cache`, the CLI path users run, timed once the CLI is
           imported: the tokenizer loaded, the rows built, OUT written (dataset, rejects, build.json).

Every method's clock starts with transformers and datasets imported (the libraries both sides run on: TRL's trainer
takes a `datasets.Dataset` and a transformers tokenizer), so no side pays the other's imports; TRL's tokenizer is
loaded before its clock, ftdata's within it. `--cold` times the libraries' import inside ftdata's clocks instead
(what an `ftdata build` process pays on top, about 1.4 s on a 2-core machine; TRL's side then still excludes its own).

Data: GSM8K's first 20 test questions (examples/data/gsm8k_test_20.jsonl) repeated to --records records, each with its
index appended to the question (so no two prompts are the same text).

Every measurement runs in a fresh subprocess; the methods alternate round after round (--rounds, default 3).
The table gives each method's median wall seconds, prompts per second, and the median of the per-round
speed ratios to trl. `--baseline CHECKOUT` measures another ftdata checkout's two methods in the same rounds
(`ftdata@before`, `ftdata build@before`): before and after in one run.

    python benchmarks/prompt_prep.py [--records 20000] [--rounds 3] [--cold] [--baseline CHECKOUT]
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
GSM8K = ROOT / "examples/data/gsm8k_test_20.jsonl"
METHODS = ("trl", "ftdata", "ftdata build")


def write_data(path: Path, records: int) -> None:
    base = [json.loads(line) for line in GSM8K.read_text(encoding="utf-8").splitlines()]
    with path.open("w", encoding="utf-8") as fh:
        for i in range(records):
            row = base[i % len(base)]
            fh.write(json.dumps({"question": f"{row['question']} ({i})", "answer": row["answer"]}) + "\n")


def run_trl(path: Path) -> float:
    from ftdata.io.resources import load_tokenizer

    tok = load_tokenizer(None)
    rows = [
        [{"role": "user", "content": json.loads(line)["question"]}]
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    start = time.perf_counter()
    for at in range(0, len(rows), 64):
        tok.apply_chat_template(rows[at : at + 64], add_generation_prompt=True, tokenize=True, return_dict=True)
    return time.perf_counter() - start


def run_ftdata(path: Path) -> float:
    import ftdata

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        ftdata.build(str(path), Path(out) / "b", task="prompts", cache=False)
        return time.perf_counter() - start


def run_cli(path: Path) -> float:
    from typer.testing import CliRunner

    from ftdata.cli.app import app

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = CliRunner().invoke(
            app, ["build", str(path), "-o", str(Path(out) / "b"), "--task", "prompts", "--no-cache"]
        )
        seconds = time.perf_counter() - start
    if result.exit_code:
        raise SystemExit(result.output)
    return seconds


def child(method: str, path: Path, *, cold: bool) -> None:
    if not cold:  # imported before any clock, as on TRL's side (its tokenizer is loaded before its clock)
        import datasets  # noqa: F401
        import transformers  # noqa: F401
    seconds = {"trl": run_trl, "ftdata": run_ftdata, "ftdata build": run_cli}[method](path)
    print(json.dumps({"seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="ftdata's clocks include importing transformers/datasets")
    parser.add_argument("--baseline", type=Path, help="another ftdata checkout (its root) measured in the same rounds")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0].removesuffix("@before"), Path(args.child[1]), cold=args.cold)
        return
    methods = [*METHODS, *(f"{m}@before" for m in METHODS[1:] if args.baseline is not None)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prompts.jsonl"
        write_data(path, args.records)
        times: dict[str, list[float]] = {m: [] for m in methods}
        for _ in range(args.rounds):
            for method in methods:
                code = args.baseline if method.endswith("@before") else ROOT
                out = subprocess.run(
                    [sys.executable, __file__, "--child", method, str(path), *(["--cold"] if args.cold else [])],
                    capture_output=True,
                    text=True,
                    check=True,
                    env={**os.environ, "PYTHONPATH": str(code)},
                )
                times[method].append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
    imports = "ftdata's clocks include the libraries' import" if args.cold else "libraries imported first"
    print(f"{args.records:,} GSM8K prompts, bundled SmolLM2 tokenizer, {args.rounds} rounds, {os.cpu_count()} CPUs")
    print(imports)
    print(f"{'method':<21} {'median s':>9} {'prompts/s':>10} {'speed vs trl':>13}")
    for method in methods:
        median = statistics.median(times[method])
        ratio = statistics.median(t / m for t, m in zip(times["trl"], times[method]))
        print(f"{method:<21} {median:>9.2f} {args.records / median:>10,.0f} {ratio:>12.2f}x")


if __name__ == "__main__":
    main()
