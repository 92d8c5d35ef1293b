"""Preparation throughput: ftdata vs TRL's own SFTTrainer preparation vs the raw tokenizer.

Same data, same semantics, one run, one machine:
  (a) raw   : the bundled SmolLM2 fast tokenizer batch-encoding the full texts (prompt + response + EOS),
              batches of 1000: the floor any preparation pays.
  (b) trl   : TRL's `SFTTrainer._prepare_dataset` on prompt/completion columns with
              completion_only_loss=True and packing=True (bfd), datasets caching disabled.
  (c) ftdata: `prepare(..., template="alpaca", packing=True)` from the JSONL file (reading included).
Prompts are the Alpaca template rendering of each record, completions its output.

Data: the real Alpaca files in ../shared/datasets/alpaca (1,099 records), and a synthetic
JSONL of --records records (default 200k) made by resampling those real records.
Peak RSS of an ftdata build is measured in fresh subprocesses for 20k and --records records.

    python benchmarks/prep_throughput.py [--records 200000] [--max-length 1024] [--num-proc 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
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


def synthetic(base: list[dict[str, str]], n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [dict(rng.choice(base)) for _ in range(n)]


def prompts_and_completions(records, tok):
    from ftdata.prompts import load_prompt_template

    tpl = load_prompt_template("alpaca")
    return [tpl.render(instruction=r["instruction"], input=r["input"]) for r in records], [r["output"] for r in records]


def bench_raw(records, tok) -> tuple[float, int]:
    prompts, completions = prompts_and_completions(records, tok)
    texts = [p + c + tok.eos_token for p, c in zip(prompts, completions)]
    start = time.perf_counter()
    n = 0
    for i in range(0, len(texts), 1000):
        n += sum(map(len, tok(texts[i : i + 1000], add_special_tokens=False)["input_ids"]))
    return time.perf_counter() - start, n


def bench_trl(records, tok, max_length: int, num_proc: int) -> float:
    import datasets
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    datasets.disable_caching()
    prompts, completions = prompts_and_completions(records, tok)
    data = datasets.Dataset.from_dict({"prompt": prompts, "completion": completions})
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(output_dir=tmp, completion_only_loss=True, packing=True, max_length=max_length, report_to=[],
                         dataset_num_proc=num_proc if num_proc > 1 else None, use_cpu=True)  # fmt: skip
        trainer = SFTTrainer(model=model, args=args, train_dataset=data.select(range(8)), processing_class=tok)
        start = time.perf_counter()
        trainer._prepare_dataset(data, tok, args, True, None, "train")
        return time.perf_counter() - start


def bench_ftdata(path: Path, tok, max_length: int, num_proc: int) -> tuple[float, object]:
    from ftdata import prepare

    start = time.perf_counter()
    result = prepare(path, tokenizer=tok, template="alpaca", max_length=max_length, packing=True, num_proc=num_proc)
    return time.perf_counter() - start, result.report


def peak_rss(path: Path, max_length: int) -> float:
    """Peak RSS (MiB) of a fresh process that builds `path` with ftdata."""
    code = (
        "import resource, json; from ftdata import prepare; "
        f"r = prepare({str(path)!r}, template='alpaca', max_length={max_length}, packing=True).report; "
        "print(json.dumps({'rss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 'seq': r.sequences}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["rss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--num-proc", type=int, default=1)
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()

    import datasets
    import transformers

    from ftdata import load_tokenizer

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    tok = load_tokenizer(None)
    base = real_records()
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"real alpaca": base, f"synthetic {args.records // 1000}k": synthetic(base, args.records)}
        print(f"machine: {os.cpu_count()} cores; tokenizer: bundled SmolLM2; max_length {args.max_length}; num_proc {args.num_proc}\n")
        print(f"{'data':<16}{'records':>9}{'tokens':>12}{'raw tok/s':>12}{'trl tok/s':>12}{'ftdata tok/s':>14}{'ftdata/trl':>11}{'ftdata/raw':>11}{'fill':>8}")
        for name, records in sets.items():
            path = write_jsonl(records, Path(tmp) / "data.jsonl")
            raw_s, tokens = bench_raw(records, tok)
            trl_s = bench_trl(records, tok, args.max_length, args.num_proc)
            ft_s, report = bench_ftdata(path, tok, args.max_length, args.num_proc)
            fill = report.packing["train"]["fill_ratio"]
            print(f"{name:<16}{len(records):>9,}{tokens:>12,}{tokens / raw_s:>12,.0f}{tokens / trl_s:>12,.0f}{tokens / ft_s:>14,.0f}"
                  f"{trl_s / ft_s:>10.2f}x{raw_s / ft_s:>10.0%}{fill:>8.2%}", flush=True)  # fmt: skip
        for length in (1024, 2048):
            from ftdata import prepare

            report = prepare(write_jsonl(sets[f"synthetic {args.records // 1000}k"], Path(tmp) / "fill.jsonl"), tokenizer=tok,
                             template="alpaca", max_length=length, packing=True).report  # fmt: skip
            print(f"packing fill at max_length {length}: {report.packing['train']['fill_ratio']:.2%} "
                  f"({report.packing['train']['rows']:,} rows, {report.packing['train']['sequences_per_row']:.2f} seq/row)")  # fmt: skip
        if not args.skip_rss:
            for n in sorted({20_000, args.records}):
                path = write_jsonl(synthetic(base, n, seed=1), Path(tmp) / f"rss{n}.jsonl")
                print(f"peak RSS, ftdata build of {n:,} records: {peak_rss(path, args.max_length):,.0f} MiB")


if __name__ == "__main__":
    main()
