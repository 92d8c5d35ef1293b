"""Preference preparation throughput: TRL 1.16's own DPO preparation against ftdata's, in pairs per second.

Same data, one run, one machine, the bundled SmolLM2 tokenizer:
  trl      `DPOTrainer._prepare_dataset` (trl/trainer/dpo_trainer.py 1036-1142) on TRL's conversational
           `prompt`/`chosen`/`rejected` rows: per pair the prompt alone (with the generation prompt),
           prompt+chosen and prompt+rejected rendered and tokenized, the completions cut at the shortest
           common token prefix. One process (`dataset_num_proc=None`), datasets caching disabled,
           `max_length=None` (no filter). The rows are built before the clock starts.
  ftdata   `ftdata_prepare` below: the preference builder from the JSON file (reading, per-pair
           verification included). NOT WRITTEN YET: it raises NotImplementedError, and the table says
           so, until ftdata's preference rows exist (the lead completes it).

Cases: LLaMA-Factory's DPO demo as it is (300 ShareGPT pairs, ../shared/datasets/preference) and a
seeded synthetic set of --pairs pairs (default 3,000) drawn from it with `random.Random(0)`.

Every measurement runs in a fresh subprocess; the methods alternate round after round (trl, ftdata,
trl, ftdata, ...; --rounds, default 3) so a drifting machine compares like with like. The table gives
each method's median seconds and pairs/s, and the median of the per-round ratios.

    python benchmarks/preference_prep.py [--pairs 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FTDATA_SHARED", ROOT.parent / "shared"))
DEMO = SHARED / "datasets/preference/llamafactory_dpo_en_demo.json"
METHODS = ("trl", "ftdata")


# ---------------------------------------------------------------- one measurement (child process)


def trl_rows(path: Path) -> list[dict]:
    """The file's pairs as TRL's conversational rows (ShareGPT roles mapped; a system turn kept in the prompt)."""
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    rows = []
    for record in json.loads(path.read_text(encoding="utf-8")):
        prompt = [{"role": roles[m["from"]], "content": m["value"]} for m in record["conversations"]]
        rows.append({
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": record["chosen"]["value"]}],
            "rejected": [{"role": "assistant", "content": record["rejected"]["value"]}],
        })  # fmt: skip
    return rows


def trl_prepare(path: Path, tok) -> dict:
    import types

    import datasets
    from trl import DPOConfig, DPOTrainer

    datasets.disable_caching()
    data = datasets.Dataset.from_list(trl_rows(path))
    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(output_dir=out, max_length=None, report_to=[], use_cpu=True, bf16=False)
    # _prepare_dataset reads one attribute of the trainer; building a trainer (a model) is not preparation.
    trainer = types.SimpleNamespace(_tokenizer=tok)
    start = time.perf_counter()
    prepared = DPOTrainer._prepare_dataset(trainer, data, tok, args, "train")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "pairs": len(prepared), "tokens": sum(map(len, prepared["chosen_ids"]))}


def ftdata_prepare(path: Path, tok) -> dict:
    """ftdata's preference rows from `path`: TO BE WRITTEN with the preference builder.

    Contract: read `path` (a JSON array of LLaMA-Factory ShareGPT pairs), build `prompt_ids`/
    `chosen_ids`/`rejected_ids` with `tok` under the inference-consistency rule (max_length large
    enough that nothing is cut), time from reading to the finished dataset, and return
    {"seconds": float, "pairs": rows built, "tokens": chosen tokens}.
    """
    raise NotImplementedError("ftdata's preference builder is not written yet (benchmarks/preference_prep.py)")


def child(method: str, path: Path) -> None:
    import datasets
    import transformers

    from ftdata import load_tokenizer

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    tok = load_tokenizer(None)
    try:
        out = trl_prepare(path, tok) if method == "trl" else ftdata_prepare(path, tok)
    except NotImplementedError as exc:
        out = {"missing": str(exc)}
    print(json.dumps(out))


def measure(method: str, path: Path) -> dict:
    """One measurement in a fresh interpreter: its JSON line."""
    command = [sys.executable, __file__, "--child", method, "--data", str(path)]
    done = subprocess.run(command, check=False, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode:
        raise SystemExit(f"{method} on {path.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the table (parent process)


def run_case(name: str, path: Path, pairs: int, rounds: int) -> list[str]:
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}
    for _ in range(rounds):
        for method in METHODS:
            if runs[method] and "missing" in runs[method][-1]:
                continue  # not written yet: once is enough to say so
            runs[method].append(measure(method, path))
    lines = []
    for method in METHODS:
        if "missing" in runs[method][0]:
            lines.append(f"| {name} | {pairs} | {method} | not written yet | | |")
            continue
        seconds = statistics.median(r["seconds"] for r in runs[method])
        built = runs[method][0]["pairs"]
        lines.append(f"| {name} | {pairs} | {method} | {seconds:.2f} | {built / seconds:,.0f} | {built} |")
    if all("missing" not in runs[m][0] for m in METHODS):
        ratio = statistics.median(f["seconds"] / t["seconds"] for t, f in zip(runs["trl"], runs["ftdata"]))
        lines.append(f"| {name} | {pairs} | ftdata / trl time | {ratio:.2f}x (median of {rounds} rounds) | | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3000, help="size of the seeded synthetic case")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every method in turn")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.data)
    demo = json.loads(DEMO.read_text(encoding="utf-8"))
    rng = random.Random(0)
    lines = ["| case | pairs | method | seconds (median) | pairs/s | rows built |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        synthetic = Path(tmp) / "synthetic.json"
        synthetic.write_text(json.dumps([rng.choice(demo) for _ in range(args.pairs)]), encoding="utf-8")
        lines += run_case("real (LLaMA-Factory DPO demo)", DEMO, len(demo), args.rounds)
        lines += run_case(f"synthetic {args.pairs:,}", synthetic, args.pairs, args.rounds)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
