"""Training throughput: padded vs packed (padding-free) rows of the same data, through `ftdata.train`.

For each model, two short runs on the same seeded synthetic Alpaca records (bundled SmolLM2
tokenizer, `alpaca` template): `packing=False` (TRL pads each batch to its longest row) and
`packing=True` (ftdata's BFD rows, trained padding-free). Printed per run: real (non-pad)
tokens per second of training, steps, wall time and peak memory (CUDA: peak allocated; CPU:
peak RSS of this process, which includes everything loaded before).

Models:
  tiny      a 2-layer Llama built from a config (random weights, vocab of the bundled tokenizer):
            runs anywhere in seconds.
  llama-1b  a 1.1B Llama built from a config (TinyLlama's shape, random bf16 weights): for GPUs.
  smollm2   the bundled SmolLM2-135M-Instruct.
  Anything else is read as a local model folder.

Defaults follow the device: on CUDA, bf16 compute and 4-bit NF4 (QLoRA) weights; on CPU,
fp32 and no quantization (--quantization 4bit works on CPU too, slowly). The device is
printed first. Keep the CPU run short: a handful of steps.

    python benchmarks/train_throughput.py [--models tiny,smollm2] [--steps 5] [--records 400]
                                          [--max-length 512] [--batch-size 4] [--quantization auto]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the seeded synthetic data of prep_throughput


SHAPES = {
    # 2 layers, hidden 128: runs anywhere in seconds.
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    # TinyLlama-1.1B's shape (22 layers, hidden 2048, 32 heads / 4 KV heads): GPU-sized work per token.
    "llama-1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                     num_key_value_heads=4),
}  # fmt: skip


def config_model(name: str, folder: Path) -> Path:
    """A Llama of one of `SHAPES` with the bundled tokenizer's vocabulary and random weights, saved as a model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ftdata import load_tokenizer

    tok = load_tokenizer(None)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=4096, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, **SHAPES[name])  # fmt: skip
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({os.cpu_count()} cores, torch {torch.__version__})"


def one_run(model: str | None, data: Path, *, packing: bool, args: argparse.Namespace, out: Path) -> dict:
    import torch

    from ftdata.train import TrainConfig, train

    quantization = args.quantization
    if quantization == "auto":
        quantization = "4bit" if torch.cuda.is_available() else "none"
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    cfg = TrainConfig(
        model=model, data=str(data), data_options={"template": "alpaca", "max_length": args.max_length, "packing": packing},
        quantization=quantization, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        logging_steps=1, save_strategy="no", output_dir=str(out), run_name=f"{'packed' if packing else 'padded'}",
        warmup_steps=0,
    )  # fmt: skip
    started = time.perf_counter()
    metrics = train(cfg).metrics
    wall = time.perf_counter() - started
    runtime = float(metrics.get("train_runtime") or wall)
    return {
        "tokens": int(metrics["tokens_seen"]),
        "tok_s": metrics["tokens_seen"] / runtime,
        "seconds": runtime,
        "peak_mib": metrics["peak_memory_bytes"] / 2**20,
        "quantization": quantization,
        "loss": metrics.get("train_loss"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,smollm2", help="tiny, smollm2 or a model folder; comma-separated")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--quantization", default="auto", help="auto (4bit on CUDA, none on CPU), 4bit, 8bit, none")
    args = parser.parse_args()

    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    import prep_throughput as prep
    print(f"device: {device_name()}")
    print(f"data: {args.records} seeded synthetic Alpaca records, alpaca template, max_length {args.max_length}, "
          f"batch {args.batch_size}, {args.steps} steps\n")  # fmt: skip
    print(f"{'model':<10}{'rows':<8}{'quant':>6}{'tokens':>9}{'seconds':>9}{'tok/s':>10}{'peak MiB':>10}{'packed/padded':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        data = prep.write_jsonl(prep.synthetic(prep.real_records(), args.records), Path(tmp) / "data.jsonl")
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            model = None if name == "smollm2" else str(config_model(name, Path(tmp) / name)) if name in SHAPES else name
            runs = {}
            for packing in (False, True):
                r = runs[packing] = one_run(model, data, packing=packing, args=args, out=Path(tmp) / "runs" / name)
                speedup = f"{r['tok_s'] / runs[False]['tok_s']:>14.2f}x" if packing else ""
                print(f"{name:<10}{'packed' if packing else 'padded':<8}{r['quantization']:>6}{r['tokens']:>9,}{r['seconds']:>9.1f}"
                      f"{r['tok_s']:>10,.0f}{r['peak_mib']:>10,.0f}{speedup}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
