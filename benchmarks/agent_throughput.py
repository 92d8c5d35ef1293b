"""Agent-data throughput: long multi-turn tool-call trajectories, examples/min/core, ftdata vs TRL.

The published anchor: fw-ai's cookbook prepares ~405 long multi-turn examples a minute on one core (110k
examples, 12.2 GiB, ~110 KB each, a Qwen3.5 template); tinker-cookbook's renderer ~58 examples/s. This
benchmark makes examples of that size from real trajectories and prepares the same JSONL file with

  raw         the floor: the loaded tokenizer encoding each example's rendering once (its own chat template,
              rendered before the clock starts), no masking, no checks
  one_row     `prepare(FILE, history="one_row")`: one row per example, every assistant turn trained as the
              full render writes it
  inference   `prepare(FILE, history="inference")` (the default): every trained turn as inference sees it
              (one row where the template keeps history intact, as the Qwen2.5 one does)
  tree        `prepare(FILE, history="tree")`: inference's rows of an example as one prefix tree
  processes   history=inference with engine="processes", num_workers=--workers (default 2): the scaling. An
              input stays in the build's own process only under 5,000 records and 4 million characters of text
              (`IN_PROCESS_BELOW`, `IN_PROCESS_CHARS`): a few dozen of these examples start the workers, as a
              user's build does
  trl         TRL's `SFTTrainer._prepare_dataset` on the `messages` (+ `tools`) columns with
              assistant_only_loss=True (TRL swaps in its own training copy of the Qwen2.5 template, with
              `{% generation %}` marks), packing off, datasets caching off

TRL's rows hold more tokens than the render (+3.7% here): `datasets` stores the `messages` column as Arrow structs,
whose schema is the union of every call's arguments, so each call comes back with the other tools' argument names
as null (`"keystrokes": "ls\n", "duration": 0.1, "command": null, "path": null, ...`) and TRL renders and trains
them. ftdata renders each call's arguments as the file holds them.

ftdata's figures are the whole in-memory build (reading the JSONL, compiling the template probes, rendering,
tokenizing, masking and verifying every record); TRL's are `_prepare_dataset` alone (the Dataset is made from
the same rows before the clock starts). Every build must keep every example (no reject) or the run stops.

The examples (`build_examples`): the ATIF trajectories in ../shared/datasets/agent_traces/atif (Harbor's
OpenHands and terminus-2 golden traces), each read into OpenAI messages by ftdata's own ATIF reader
(`ftdata.records.atif.to_messages`), with the `train`/`token_ids` annotations that reader adds taken off
(TRL reads neither). One trajectory is left out: terminus_2-hello-world-invalid-json carries reasoning,
which the Qwen2.5 template does not write (ftdata rejects it; TRL would drop it in silence). Each example
is those 9 trajectories' messages concatenated, verbatim and in full, in a seeded shuffle per pass
(`random.Random(seed + example)`), pass after pass, until the example's JSON line reaches --bytes
(default 110,000); trailing non-assistant messages are then dropped so it ends on an assistant turn. Every
example's `tools` are the OpenHands trajectory's 6 tool definitions. So an example is real text repeated
(each trajectory ~1.3 times), in an order of its own: ftdata tokenizes a stretch between added tokens that it has
seen before once (`ftdata.tokens.stretches`), and here nearly every stretch repeats. With --unique, every message
but the system prompt is tagged with its example and place (`[example 3, message 17] ` before its text and its
tool calls' first text argument), so that only the system prompt and tool definitions repeat, as across the
distinct sessions of one harness.

Tokenizer: ../shared/tokenizers/qwen2.5-instruct (the Qwen one there: no Qwen3 tokenizer is stored), its
own chat template (ChatML with tools). Every measurement runs in a fresh subprocess; the methods alternate
in a fixed order, round after round (--rounds, default 3), and each round's ratios come from its own
measurements. Each measurement is pinned to one core (`os.sched_setaffinity`; processes: --workers cores), so
engine=local runs one thread. The table gives examples/min per core (the processes engine's divided by its
workers) with the anchor's 405/min/core beside it.

    python benchmarks/agent_throughput.py [--examples 200] [--bytes 110000] [--rounds 3] [--workers 2] [--unique]
                                          [--methods one_row,inference,tree,processes,trl]
                                          [--baseline CHECKOUT --methods inference@before,inference,...]

--baseline: another ftdata checkout (its root); a method named METHOD@before runs with that checkout's ftdata, in
the same rounds as the others: before and after in one run.
"""

from __future__ import annotations

import argparse
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
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one core per measurement: the tokenizer's own threads off
ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FTDATA_SHARED", ROOT.parent / "shared"))
ATIF = SHARED / "datasets/agent_traces/atif"
TOKENIZER = SHARED / "tokenizers/qwen2.5-instruct"
LEFT_OUT = ("terminus_2-hello-world-invalid-json.trajectory.json",)  # carries reasoning: Qwen2.5 writes none
ANCHOR_PER_MIN = 405  # fw-ai cookbook, one core, Qwen3.5 template, ~110 KB examples
METHODS = ("raw", "one_row", "inference", "tree", "processes", "trl")
ANNOTATIONS = ("train", "token_ids")  # what ftdata's ATIF reader adds to a message; not OpenAI fields


# ---------------------------------------------------------------- the examples


def trajectories(folder: Path = ATIF) -> tuple[dict[str, Any], list[list[dict[str, Any]]], list[Any]]:
    """The system prompt and tool definitions of the trajectory that declares tools, and each ATIF trajectory
    in `folder` (file-name order, LEFT_OUT skipped) as OpenAI messages without its system messages."""
    sys.path.insert(0, str(ROOT))
    from ftdata.records.atif import to_messages

    bodies, tools, system = [], [], {}
    for path in sorted(folder.glob("*.json")):
        if path.name in LEFT_OUT:
            continue
        trajectory = to_messages(json.loads(path.read_text(encoding="utf-8")), None)
        messages = [{k: v for k, v in m.items() if k not in ANNOTATIONS} for m in trajectory.messages]
        if trajectory.definitions and not tools:
            tools, system = list(trajectory.definitions), messages[0]
        bodies.append([m for m in messages if m["role"] != "system"])
    return system, bodies, tools


def _joined(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """User messages in a row (ATIF allows them, OpenAI messages do not) as one, their texts joined by a blank
    line."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if out and m["role"] == "user" and out[-1]["role"] == "user":
            out[-1] = {**out[-1], "content": out[-1]["content"] + "\n\n" + m["content"]}
        else:
            out.append(m)
    return out


def _tagged(message: dict[str, Any], tag: str) -> dict[str, Any]:
    """`message` with `tag` in front of its text and of each tool call's first text argument: text no other message
    of any example holds."""
    out = {**message, "content": tag + (message.get("content") or "")}
    calls = []
    for call in message.get("tool_calls") or ():
        arguments = dict(call["function"]["arguments"])
        first = next((k for k, v in arguments.items() if isinstance(v, str)), None)
        if first is not None:
            arguments[first] = tag + arguments[first]
        calls.append({**call, "function": {**call["function"], "arguments": arguments}})
    return {**out, "tool_calls": calls} if calls else out


def build_examples(
    count: int, size: int, *, seed: int = 0, folder: Path = ATIF, unique: bool = False
) -> list[dict[str, Any]]:
    """`count` examples of about `size` bytes (their JSON line): the OpenHands system prompt, then the
    trajectories of `folder` concatenated in a seeded shuffle per pass until the line reaches `size`, user
    messages in a row joined, ending on an assistant turn. `unique`: each message but the system prompt tagged
    with its example and place (`_tagged`), so that no two messages of any examples have the same text."""
    system, bodies, tools = trajectories(folder)
    base = len(json.dumps({"messages": [system], "tools": tools}, ensure_ascii=False))
    sizes = [len(json.dumps(b, ensure_ascii=False)) for b in bodies]
    examples = []
    for k in range(count):
        rng = random.Random(seed + k)
        messages: list[dict[str, Any]] = [system]
        total = base
        while total < size:
            order = list(range(len(bodies)))
            rng.shuffle(order)
            for i in order:
                messages += bodies[i]
                total += sizes[i]
                if total >= size:
                    break
        messages = _joined(messages)
        while messages[-1]["role"] != "assistant":
            messages.pop()
        if unique:
            messages[1:] = [_tagged(m, f"[example {k}, message {i}] ") for i, m in enumerate(messages[1:], 1)]
        examples.append({"messages": messages, "tools": tools})
    return examples


def write_jsonl(records: list[dict[str, Any]], path: Path) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


# ---------------------------------------------------------------- one measurement (child process)


def run_raw(path: Path, tok: Any) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    texts = [str(tok.apply_chat_template(r["messages"], tools=r["tools"], tokenize=False)) for r in rows]
    start = time.perf_counter()
    tokens = sum(len(tok(text, add_special_tokens=False)["input_ids"]) for text in texts)
    return {"seconds": time.perf_counter() - start, "records": len(rows), "rows": len(rows), "tokens": tokens}


def run_trl(path: Path, tok: Any, max_length: int) -> dict[str, Any]:
    import datasets
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    datasets.disable_caching()
    with path.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    # tools as a JSON string per row: TRL reads either, and Arrow cannot hold the schemas' mixed types as structs
    data = datasets.Dataset.from_dict(
        {"messages": [r["messages"] for r in rows], "tools": [json.dumps(r["tools"]) for r in rows]}
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(
            output_dir=tmp, assistant_only_loss=True, packing=False, max_length=max_length, report_to=[], use_cpu=True
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=data.select(range(2)), processing_class=tok)
        start = time.perf_counter()
        out = trainer._prepare_dataset(data, tok, args, False, None, "train")
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "records": len(data), "rows": len(out), "tokens": sum(map(len, out["input_ids"]))}


def run_ftdata(path: Path, tok: Any, max_length: int, history: str, engine: str, workers: int) -> dict[str, Any]:
    from ftdata import prepare

    options: dict[str, Any] = {"history": history}
    if engine != "local":
        options.update(engine=engine, num_workers=workers)
    start = time.perf_counter()
    report = prepare(path, tokenizer=tok, max_length=max_length, **options).report
    seconds = time.perf_counter() - start
    if report.rejected or report.cut or report.examples != report.records:
        kept = f"rejected {dict(report.rejected)}, cut {dict(report.cut)}"
        raise SystemExit(f"ftdata history={history} engine={engine}: not every example kept: {kept}")
    return {"seconds": seconds, "records": report.records, "rows": report.rows, "tokens": report.tokens,
            "trained": report.trained_tokens}  # fmt: skip


def pin(cores: int) -> None:
    """This process (and what it starts) on its first `cores` allowed cores: engine=local then runs one thread per
    core it may use, and a one-core figure is one core's."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])


def child(method: str, path: Path, max_length: int, workers: int) -> None:
    method = method.removesuffix("@before")  # the same method, on the --baseline checkout's ftdata (PYTHONPATH)
    pin(workers if method == "processes" else 1)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    tok = transformers.AutoTokenizer.from_pretrained(str(TOKENIZER))
    if method == "raw":
        out = run_raw(path, tok)
    elif method == "trl":
        out = run_trl(path, tok, max_length)
    elif method == "processes":
        out = run_ftdata(path, tok, max_length, "inference", "processes", workers)
    else:
        out = run_ftdata(path, tok, max_length, method, "local", workers)
    out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def measure(method: str, path: Path, max_length: int, workers: int, baseline: Path | None = None) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return its JSON line (`METHOD@before`: with the ftdata of the
    --baseline checkout)."""
    command = [sys.executable, __file__, "--child", method, "--data", str(path), "--max-length", str(max_length),
               "--workers", str(workers)]  # fmt: skip
    code = baseline if method.endswith("@before") and baseline is not None else ROOT
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(code)})
    if done.returncode:
        raise SystemExit(f"{method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the table (parent process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--bytes", type=int, default=110_000, help="size of an example's JSON line")
    parser.add_argument("--max-length", type=int, default=131_072, help="longer than any example: nothing is cut")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--unique", action="store_true", help="no message text repeated: each message tagged with its "
                        "example and place (the system prompt and tools still open every example)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="workers of the processes engine")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated; METHOD@before: with --baseline's ftdata")
    parser.add_argument("--baseline", type=Path, help="another ftdata checkout (its root), measured in the same rounds as "
                        "the methods named METHOD@before: before/after in one run")  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.data, args.max_length, args.workers)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if unknown := [m for m in methods if m.removesuffix("@before") not in METHODS]:
        parser.error(f"--methods takes {', '.join(METHODS)} (each also as METHOD@before); got {', '.join(unknown)}")
    if any(m.endswith("@before") for m in methods) and args.baseline is None:
        parser.error("a METHOD@before needs --baseline CHECKOUT")

    examples = build_examples(args.examples, args.bytes, unique=args.unique)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_jsonl(examples, Path(tmp) / "agent.jsonl")
        lines = path.read_bytes().splitlines()
        turns = [sum(m["role"] == "assistant" for m in e["messages"]) for e in examples]
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; tokenizer {TOKENIZER.name} "
              f"(its own template); {args.rounds} rounds of {', '.join(methods)} in turn")  # fmt: skip
        print(f"data: {len(examples)} examples, {statistics.mean(map(len, lines)) / 1000:.1f} KB each on average "
              f"({min(map(len, lines)):,}-{max(map(len, lines)):,} bytes), {statistics.mean(turns):.0f} assistant "
              f"turns each: the {ATIF.name} trajectories concatenated and repeated (see the docstring)"
              f"{', every message tagged apart (--unique)' if args.unique else ''}\n")  # fmt: skip
        rounds = [
            {m: measure(m, path, args.max_length, args.workers, args.baseline) for m in methods} for _ in range(args.rounds)
        ]
    show(methods, rounds, args.workers)


def show(methods: list[str], rounds: list[dict[str, dict[str, Any]]], workers: int) -> None:
    """Every round's examples/min/core, then the median of each, its ratio to the anchor and to TRL."""
    cores = {m: workers if m.removesuffix("@before") == "processes" else 1 for m in methods}
    built = []
    for m in methods:
        first = rounds[0][m]
        trained = f" ({first['trained']:,} trained)" if "trained" in first else ""
        built.append(f"{m} {first['rows']} rows {first['tokens']:,} tokens{trained}")
    print("what each built: " + "; ".join(built))
    w = {m: max(11, len(m) + 2) for m in methods}  # column widths
    print(f"{'round':>7}" + "".join(f"{m:>{w[m]}}" for m in methods) + "   examples/min/core (processes: per worker)")
    per: dict[str, list[float]] = {m: [] for m in methods}
    for i, measured in enumerate(rounds, 1):
        for m in methods:
            per[m].append(measured[m]["records"] / measured[m]["seconds"] * 60 / cores[m])
        print(f"{i:>7}" + "".join(f"{per[m][-1]:>{w[m]},.0f}" for m in methods), flush=True)
    median = {m: statistics.median(per[m]) for m in methods}
    print(f"{'median':>7}" + "".join(f"{median[m]:>{w[m]},.0f}" for m in methods))
    anchor = "".join(f"{median[m] / ANCHOR_PER_MIN:>{w[m] - 1}.2f}x" for m in methods)
    print(f"{'/anchor':>7}{anchor}   anchor: {ANCHOR_PER_MIN}/min/core (fw-ai cookbook)")
    for base in ("trl", "raw"):
        if base in methods:  # each round's own ratio, then their median
            ratio = {m: statistics.median(a / b for a, b in zip(per[m], per[base])) for m in methods}
            print(f"{'/' + base:>7}" + "".join(f"{ratio[m]:>{w[m] - 1}.2f}x" for m in methods) + "   per round, median")
    if "processes" in methods and "inference" in methods:
        speedup = statistics.median(p * workers / i for p, i in zip(per["processes"], per["inference"]))
        print(f"processes, {workers} workers: {speedup:.2f}x inference's rate on one core (median)")
    print("peak RSS MiB: " + ", ".join(f"{m} {max(r[m]['rss_mib'] for r in rounds):.0f}" for m in methods))


if __name__ == "__main__":
    main()
