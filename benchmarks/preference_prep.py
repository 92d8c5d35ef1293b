"""Preference preparation throughput: TRL 1.16's own DPO preparation against ftdata's, in pairs per second.

Same data, one run, one machine, the bundled SmolLM2 tokenizer:
  trl      `DPOTrainer._prepare_dataset` (trl/trainer/dpo_trainer.py 1036-1142) on TRL's conversational
           `prompt`/`chosen`/`rejected` rows: per pair the prompt alone (with the generation prompt),
           prompt+chosen and prompt+rejected rendered and tokenized, the completions cut at the shortest
           common token prefix. One process (`dataset_num_proc=None`), datasets caching disabled,
           `max_length=None` (no filter). The rows are built before the clock starts.
  ftdata   `ftdata.build(FILE)` in process (`ftdata_prepare`): the JSON file read, the pairs detected,
           `prompt_ids`/`chosen_ids`/`rejected_ids` built under the inference-consistency rule and every
           pair verified (docs/preference.md), engine=local with its default threads (one per core).
  ftdata build
           `ftdata build FILE -o OUT --no-cache`, the CLI path users run (`ftdata_cli`), timed once the CLI
           is imported: the bundled tokenizer loaded, the rows built, OUT written (dataset, rejects, build.json).
  ftdata build --engine processes
           the same with spawned worker processes (one per core): no GIL shared between the Python parts of
           two batches, for the price of starting the workers (an input under 5,000 records runs in process,
           as engine=local does). CPU seconds add the workers'.

Cases: LLaMA-Factory's DPO demo as it is (300 ShareGPT pairs, ../shared/datasets/preference) and a
seeded synthetic set of --pairs pairs (default 3,000) drawn from it with `random.Random(0)`.

Every measurement runs in a fresh subprocess; the methods alternate round after round (trl, ftdata,
ftdata build, trl, ...; --rounds, default 3) so a drifting machine compares like with like. The table
gives each method's median wall and CPU seconds (CPU: every thread of the child, so a loaded machine shows
less in it), pairs per second of each, and the medians of the per-round speed ratios to trl.

    python benchmarks/preference_prep.py [--pairs 3000] [--rounds 3] [--synthetic-only]
        [--methods "ftdata,ftdata build,ftdata build --engine processes"]
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
METHODS = ("trl", "ftdata", "ftdata build", "ftdata build --engine processes")


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
    start, cpu = time.perf_counter(), time.process_time()
    prepared = DPOTrainer._prepare_dataset(trainer, data, tok, args, "train")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"seconds": seconds, "cpu": cpu, "pairs": len(prepared), "tokens": sum(map(len, prepared["chosen_ids"]))}


def ftdata_prepare(path: Path, tok) -> dict:
    """ftdata's preference rows from `path`, in process: `ftdata.build` (the one driver) reads the JSON file,
    detects the pairs, builds `prompt_ids`/`chosen_ids`/`rejected_ids` under the inference-consistency rule
    and verifies every pair (engine=local, its default threads), with a max_length nothing reaches; timed
    from reading to the finished dataset."""
    import ftdata

    start, cpu = time.perf_counter(), time.process_time()
    result = ftdata.build(path, tokenizer=tok, max_length=1 << 20)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    data = result.dataset
    assert result.report.task == "preference" and not result.report.rejected and not result.report.cut
    return {"seconds": seconds, "cpu": cpu, "pairs": len(data), "tokens": sum(map(len, data["chosen_ids"]))}


def ftdata_cli(path: Path, tok, *extra: str) -> dict:
    """`ftdata build FILE -o OUT --no-cache [extra]` as a user runs it, timed in the child once the CLI module
    is imported: the bundled tokenizer loaded, the rows built and written to OUT with rejects.jsonl and
    build.json. CPU seconds: this process's and, with --engine processes, its finished workers'."""
    import ftdata
    from ftdata.cli.app import app

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        start, cpu = time.perf_counter(), _cpu()
        code = app(["build", str(path), "-o", str(out), "--no-cache", "--max-length", str(1 << 20), *extra], standalone_mode=False)
        seconds, cpu = time.perf_counter() - start, _cpu() - cpu
        assert code in (None, 0), code
        data = ftdata.load(out).dataset
        return {"seconds": seconds, "cpu": cpu, "pairs": len(data), "tokens": sum(map(len, data["chosen_ids"]))}


def _cpu() -> float:
    """CPU seconds of this process and of its children that have finished (worker processes)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def child(method: str, path: Path) -> None:
    import datasets
    import transformers

    from ftdata import load_tokenizer

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    tok = load_tokenizer(None)
    prepare = {
        "trl": trl_prepare, "ftdata": ftdata_prepare, "ftdata build": ftdata_cli,
        "ftdata build --engine processes": lambda path, tok: ftdata_cli(path, tok, "--engine", "processes"),
    }[method]  # fmt: skip
    out = prepare(path, tok)
    print(json.dumps(out))


def measure(method: str, path: Path) -> dict:
    """One measurement in a fresh interpreter: its JSON line."""
    command = [sys.executable, __file__, "--child", method, "--data", str(path)]
    done = subprocess.run(command, check=False, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode:
        raise SystemExit(f"{method} on {path.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the table (parent process)


def run_case(name: str, path: Path, pairs: int, rounds: int, methods: tuple[str, ...] = METHODS) -> list[str]:
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for _ in range(rounds):
        for method in methods:
            runs[method].append(measure(method, path))
    lines = []
    for method in methods:
        seconds, cpu = (statistics.median(r[key] for r in runs[method]) for key in ("seconds", "cpu"))
        built = runs[method][0]["pairs"]
        lines.append(f"| {name} | {pairs} | {method} | {seconds:.2f} | {built / seconds:,.0f} | {cpu:.2f} | {built / cpu:,.0f} | {built} |")
    for method in methods[1:]:
        wall, cpu = (statistics.median(t[key] / f[key] for t, f in zip(runs["trl"], runs[method])) for key in ("seconds", "cpu"))
        lines.append(f"| {name} | {pairs} | {method} / trl | {wall:.2f}x | | {cpu:.2f}x | | (medians of {rounds} per-round ratios) |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3000, help="size of the seeded synthetic case")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every method in turn")
    parser.add_argument("--methods", default=",".join(METHODS[1:]), help="ftdata methods to time against trl, comma-separated")
    parser.add_argument("--synthetic-only", action="store_true", help="skip the real 300-pair case")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.data)
    demo = json.loads(DEMO.read_text(encoding="utf-8"))
    rng = random.Random(0)
    lines = [
        "| case | pairs | method | seconds (median) | pairs/s | CPU seconds (median) | pairs per CPU second | rows built |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        synthetic = Path(tmp) / "synthetic.json"
        synthetic.write_text(json.dumps([rng.choice(demo) for _ in range(args.pairs)]), encoding="utf-8")
        methods = ("trl", *(m.strip() for m in args.methods.split(",") if m.strip()))
        if unknown := set(methods) - set(METHODS):
            parser.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS[1:])}")
        if not args.synthetic_only:
            lines += run_case("real (LLaMA-Factory DPO demo)", DEMO, len(demo), args.rounds, methods)
        lines += run_case(f"synthetic {args.pairs:,}", synthetic, args.pairs, args.rounds, methods)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
