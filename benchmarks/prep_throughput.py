"""Preparation throughput: ftdata vs TRL's own SFTTrainer preparation vs the raw tokenizer.

Same data, same semantics, one run, one machine:
  raw      the bundled SmolLM2 fast tokenizer batch-encoding the full texts (prompt + response
           + EOS), batches of 1000: the floor any preparation pays.
  trl      TRL's `SFTTrainer._prepare_dataset` on prompt/completion columns with
           completion_only_loss=True and packing=True (bfd), datasets caching disabled.
  ftdata   `prepare(..., template="alpaca", packing=True)` from the JSONL file (reading, per-record
           verification and packing included), once per executor named in --engines.
Prompts are the Alpaca template rendering of each record, completions its output.

Cases: the real Alpaca files in ../shared/datasets/alpaca (1,099 records) and a seeded
synthetic set of --records records (default 20,000) drawn from them with `random.Random(0)`:
the reproducible "synthetic 20k" figure (bundled SmolLM2, `alpaca`, BFD packing at 1024). Drawn with
replacement, each record's texts come ~18 times, and ftdata tokenizes a text it has seen twice only once
(`ftdata.tokens.repeats`); --unique adds "synthetic 20k unique": the same draw with every record's instruction and
output numbered, so no text repeats, as in data without duplicates.

Every measurement runs in a fresh subprocess (so its peak RSS is its own). The methods
alternate in a fixed order, round after round (raw, ftdata, trl, raw, ftdata, trl, ...;
--rounds, default 5), and each round's ratios come from that round's own measurements, so a
machine whose speed drifts compares like with like: ftdata runs right after the raw
tokenizer and right before TRL, never 15 s of TRL away from either. The table gives every
round, then the min and median of each ratio. All tok/s use the raw tokenizer's token count. Peak memory of
larger builds, on every path: benchmarks/build_memory.py.

    python benchmarks/prep_throughput.py [--records 20000] [--engines local,processes,ray]
                                         [--rounds 5] [--synthetic-only] [--unique] [--baseline CHECKOUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FTDATA_SHARED", ROOT.parent / "shared"))
ALPACA = [SHARED / "datasets/alpaca/llamafactory_alpaca_en_demo.json", SHARED / "datasets/alpaca/stanford_alpaca_first100_torchtune.json"]
ENGINES = ("local", "processes", "ray")


def real_records() -> list[dict[str, str]]:
    out = []
    for path in ALPACA:
        out += [{k: r[k] for k in ("instruction", "input", "output")} for r in json.loads(path.read_text()) if r["output"].strip()]
    return out


def write_jsonl(records: list[dict[str, str]], path: Path) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def synthetic(base: list[dict[str, str]], n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [dict(rng.choice(base)) for _ in range(n)]


def numbered(records: list[dict[str, str]]) -> list[dict[str, str]]:
    """Each record's instruction and output with its number in the set: no text repeats."""
    return [{**r, "instruction": f"{r['instruction']} (#{i})", "output": f"{r['output']} (#{i})"} for i, r in enumerate(records)]


def engine_unavailable(engine: str) -> str:
    """Why this ftdata cannot run `engine` here ('' when it can)."""
    from ftdata.options import BuildOptions

    if engine == "local":
        return ""
    if "engine" not in _option_names(BuildOptions):
        return "this ftdata has no executor option yet (BuildOptions.engine)"
    if engine == "ray" and importlib.util.find_spec("ray") is None:
        return "ray is not installed (pip install 'ftdata[ray]')"
    return ""


# ---------------------------------------------------------------- one measurement (child process)


def prompts_and_completions(records):
    from ftdata.chat.prompt_templates import load_prompt_template

    tpl = load_prompt_template("alpaca")
    return [tpl.render(instruction=r["instruction"], input=r["input"]) for r in records], [r["output"] for r in records]


def run_raw(path: Path, tok, max_length: int) -> dict:
    prompts, completions = prompts_and_completions(read_jsonl(path))
    texts = [p + c + tok.eos_token for p, c in zip(prompts, completions)]
    start = time.perf_counter()
    n = 0
    for i in range(0, len(texts), 1000):
        n += sum(map(len, tok(texts[i : i + 1000], add_special_tokens=False)["input_ids"]))
    return {"seconds": time.perf_counter() - start, "tokens": n}


def run_trl(path: Path, tok, max_length: int) -> dict:
    import datasets
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    datasets.disable_caching()
    prompts, completions = prompts_and_completions(read_jsonl(path))
    data = datasets.Dataset.from_dict({"prompt": prompts, "completion": completions})
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(output_dir=tmp, completion_only_loss=True, packing=True, max_length=max_length, report_to=[], use_cpu=True)
        trainer = SFTTrainer(model=model, args=args, train_dataset=data.select(range(8)), processing_class=tok)
        start = time.perf_counter()
        trainer._prepare_dataset(data, tok, args, True, None, "train")
        return {"seconds": time.perf_counter() - start}


def run_ftdata(path: Path, tok, max_length: int, engine: str = "local", workers: int = 2) -> dict:
    from ftdata import prepare
    from ftdata.options import BuildOptions

    options = {"engine": engine} if "engine" in _option_names(BuildOptions) else {}
    if engine != "local" and "num_workers" in _option_names(BuildOptions):
        options["num_workers"] = workers
    start = time.perf_counter()
    report = prepare(path, tokenizer=tok, template="alpaca", max_length=max_length, packing=True, **options).report
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens": report.tokens, "fill": report.packing["train"].fill_ratio, "records": report.records}


def child(method: str, path: Path, max_length: int, workers: int) -> None:
    import datasets
    import transformers

    from ftdata import load_tokenizer

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    tok = load_tokenizer(None)
    if method == "raw":
        out = run_raw(path, tok, max_length)
    elif method == "trl":
        out = run_trl(path, tok, max_length)
    else:
        out = run_ftdata(path, tok, max_length, engine=method.split(":", 1)[1].split("@")[0], workers=workers)
    out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def measure(method: str, path: Path, max_length: int, workers: int = 2, baseline: Path | None = None) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON line (`ftdata:ENGINE@before`: the ftdata
    of the --baseline checkout)."""
    command = [sys.executable, __file__, "--child", method, "--data", str(path), "--max-length", str(max_length), "--workers", str(workers)]
    code = baseline if method.endswith("@before") and baseline is not None else ROOT
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(code)})
    if done.returncode:
        raise SystemExit(f"{method} on {path.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the table (parent process)


def _option_names(options: type) -> set[str]:
    """Every option name, flat: the fields of BuildOptions, or of its three parts where it holds them."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(options)}
    if names == {"data", "run", "output"}:
        from ftdata.options import FIELDS

        return set(FIELDS)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000, help="size of the seeded synthetic case")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--engines", default="local,processes,ray", help="ftdata executors to measure, comma-separated")
    parser.add_argument("--workers", type=int, default=2, help="workers for the processes and ray executors")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every method in turn; min and median of each ratio")
    parser.add_argument("--synthetic-only", action="store_true", help="skip the real Alpaca case")
    parser.add_argument("--unique", action="store_true", help="also the synthetic set with every record numbered (no text repeats)")
    parser.add_argument("--baseline", type=Path, help="another ftdata checkout (its root) measured in the same rounds, "
                        "its engines named ENGINE@before: before/after in one run")  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.data, args.max_length, args.workers)

    sys.path.insert(0, str(ROOT))
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if unknown := [e for e in engines if e not in ENGINES]:
        parser.error(f"--engines takes {', '.join(ENGINES)}; got {', '.join(unknown)}")
    methods = ["raw", "trl"]
    for engine in engines:
        if why := engine_unavailable(engine):
            print(f"note: ftdata engine {engine!r} skipped: {why}")
        else:
            methods.append(f"ftdata:{engine}")
            if args.baseline is not None:
                methods.append(f"ftdata:{engine}@before")
    base = real_records()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; tokenizer: bundled SmolLM2; "
          f"template alpaca; max_length {args.max_length}; {args.rounds} rounds of {', '.join(methods)} in turn\n")  # fmt: skip
    cases = {f"synthetic {args.records // 1000}k": synthetic(base, args.records)}
    if args.unique:
        cases[f"synthetic {args.records // 1000}k unique"] = numbered(synthetic(base, args.records))
    if not args.synthetic_only:
        cases = {"real alpaca": base, **cases}
    with tempfile.TemporaryDirectory() as tmp:
        for name, records in cases.items():
            path = write_jsonl(records, Path(tmp) / f"{name.replace(' ', '_')}.jsonl")
            order = ["raw", *methods[2:], "trl"]  # ftdata next to both baselines
            rounds = []
            for k in range(args.rounds):
                rounds.append({})
                for m in order:
                    rounds[-1][m] = measure(m, path, args.max_length, args.workers, args.baseline)
                    print(f"  round {k + 1}: {m} {rounds[-1][m]['seconds']:.2f} s", file=sys.stderr, flush=True)
            show(name, len(records), methods, rounds)


def show(name: str, records: int, methods: list[str], rounds: list[dict[str, dict]]) -> None:
    """Every round's rates and ratios, then the min and median of each ratio."""
    engines = [m.split(":", 1)[1] for m in methods[2:]]
    tokens = rounds[0]["raw"]["tokens"]
    print(f"{name}: {records:,} records, {tokens:,} tokens, fill {rounds[0][methods[-1]]['fill']:.2%}" if engines else name)
    ratio_names = [f"{e}/{base}" for e in engines for base in ("raw", "trl")]
    print(f"{'round':>7}{'raw tok/s':>11}{'trl tok/s':>11}" + "".join(f"{e:>13}" for e in engines)
          + "".join(f"{r:>18}" for r in ratio_names) + "  peak RSS MiB (" + "/".join(m.replace("ftdata:", "") for m in methods) + ")")  # fmt: skip
    ratios: dict[str, list[float]] = {r: [] for r in ratio_names}
    for i, measured in enumerate(rounds, 1):
        rate = {m: tokens / measured[m]["seconds"] for m in methods}
        for e, m in zip(engines, methods[2:]):
            ratios[f"{e}/raw"].append(rate[m] / rate["raw"])
            ratios[f"{e}/trl"].append(rate[m] / rate["trl"])
        rss = "/".join(f"{measured[m]['rss_mib']:.0f}" for m in methods)
        print(f"{i:>7}{rate['raw']:>11,.0f}{rate['trl']:>11,.0f}" + "".join(f"{rate[m]:>13,.0f}" for m in methods[2:])
              + "".join(f"{ratios[r][-1]:>17.2f}x" for r in ratio_names) + f"  {rss}", flush=True)  # fmt: skip
    for label, pick in (("min", min), ("median", statistics.median)):
        print(f"{label:>7}{'':>22}{'':>{13 * len(engines)}}" + "".join(f"{pick(ratios[r]):>17.2f}x" for r in ratio_names))
    print()


if __name__ == "__main__":
    main()

