"""Rows, tokens and build time of multi-turn data in each way of training history turns, side by side.

  inference   `ftdata build FILE` (history=inference, the default): every trained turn as inference sees it,
              a record split into the fewest rows that do (docs/masking.md, "Rows of a record")
  one_row     `ftdata build FILE --history one_row`: one row per record, history turns as the full render
              writes them (what TRL and Axolotl train)
  per_turn    one row per assistant turn (LLaMA-Factory v1's split): every record cut after each assistant
              turn, each piece built with --mask last_assistant
  tree_own    `ftdata build FILE --history tree --no-tree-across-records`: inference's rows of a record as one
              prefix tree, each shared prefix forwarded once (docs/packing.md, "Tree rows"); `tokens` counts the
              tree's unique tokens
  tree        `ftdata build FILE --history tree` (across records, the default): records that start with the same
              tokens (system prompt, tool schemas) share one tree of at most --max-length tokens

Each is the CLI path users run (`ftdata build ... --no-cache`, timed as a whole process), on the same file,
tokenizer and chat template, in one run. The cases:

  glaive      the shared glaive tool-call demo: 300 real multi-turn ShareGPT chats with tool calls
  atif        shared/datasets/agent_traces/atif: Harbor's 10 ATIF trajectories (its integration tests' golden
              files: OpenHands and Terminus-2 runs, continuations and subagents), the folder read as one source
  agent       benchmarks/data/swegym_openhands_sampled_5.json: 5 real OpenHands agent trajectories
              (gpt-4o on SWE-Gym tasks; 2-3 user turns, 11-30 assistant turns with tool calls each)
  agent+think the same trajectories as a reasoning model's: the thought OpenHands records beside each call
              moved to `reasoning_content` (made at run time, not stored)

on the Qwen2.5 tokenizer with TRL's qwen3 template (empty think block in the last turn only; reasoning kept
after the last user query), TRL's gptoss template (drops every history turn's reasoning; `<|return|>` ends
only a last turn; it writes no call turn's text, so the agent traces as recorded are rejected there), TRL's
glm4moe template (drops reasoning before the last user query) and the tokenizer's own template
(prefix-stable).

With --step CASES (e.g. --step glaive), each build of those cases also trains one step on CPU, in a process of
its own: a tiny Llama from a config (2 layers, hidden 64, sdpa, the tokenizer's vocabulary), every row forwarded
and back-propagated one at a time (no padding), logits made only where a token is trained; tree rows through
`ftdata.train.tree` (tree_attention, each token scored from its parent), as `ftdata train` runs them. It prints
the step's seconds, its loss (tree == inference) and the process's peak RSS.

`x1row` is each mode's tokens over one_row's (the same case and template).

    python benchmarks/history_rows.py [--cases glaive,atif,agent,agent+think] [--tokenizer DIR] [--rounds 3]
                                      [--step glaive] [--limit N (the first N records of each case)]
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
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FTDATA_SHARED", ROOT.parent / "shared"))
GLAIVE = SHARED / "datasets/sharegpt/llamafactory_glaive_toolcall_en_demo.json"
AGENT = ROOT / "benchmarks/data/swegym_openhands_sampled_5.json"
ATIF = SHARED / "datasets/agent_traces/atif"
TOKENIZER = SHARED / "tokenizers/qwen2.5-instruct"
FTDATA = [sys.executable, "-m", "ftdata"]
ASSISTANT = ("gpt", "function_call", "assistant")


def _turns(record: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    key = "conversations" if "conversations" in record else "messages"
    return key, record[key]


def per_turn(records: list[dict[str, Any]], out: Path) -> Path:
    """`records` (ShareGPT `conversations` or OpenAI `messages`), each cut after each of its assistant turns."""
    with out.open("w", encoding="utf-8") as fh:
        for record in records:
            key, turns = _turns(record)
            for k, turn in enumerate(turns):
                if turn.get("from", turn.get("role")) in ASSISTANT:
                    if k + 1 < len(turns) and turns[k + 1].get("from") == "function_call":
                        continue  # a ShareGPT answer joined with the call after it is one assistant turn
                    fh.write(json.dumps({**record, key: turns[: k + 1]}, ensure_ascii=False) + "\n")
    return out


def thoughts_as_reasoning(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each assistant call's content (the agent's thought before acting) as its `reasoning_content`."""
    def moved(m: dict[str, Any]) -> dict[str, Any]:
        if m["role"] == "assistant" and m.get("tool_calls") and (m.get("content") or "").strip():
            return {**m, "content": "", "reasoning_content": m["content"].strip()}
        return m

    return [{**r, "messages": [moved(m) for m in r["messages"]]} for r in records]


def build(data: Path, flags: list[str], workdir: Path) -> tuple[float, dict, Path]:
    """The build's wall seconds, its counts and its folder; raises SystemExit with ftdata's own error line when the
    build fails (exit 1: every record rejected, e.g. `--limit 1` on a template that rejects that record)."""
    out = Path(tempfile.mkdtemp(dir=workdir)) / "out"
    start = time.perf_counter()
    command = [*FTDATA, "build", str(data), "-o", str(out), "--no-cache", *flags]
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    counts = json.loads((out / "build.json").read_text(encoding="utf-8"))["counts"]
    return seconds, counts, out


def train_step(out: Path) -> dict[str, float]:
    """One CPU training step over every row of the build in `out` (run in a process of its own: `--step-of`)."""
    import resource

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    import ftdata
    from ftdata.tokens.layouts import TREE, layout_of
    from ftdata.train.tree import TreeCollator, tree_forward, use_tree_attention

    rows = ftdata.load(str(out)).dataset
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=151_936, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=131_072, tie_word_embeddings=True, attn_implementation="sdpa",
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    tree = layout_of(rows) is TREE
    if tree:
        use_tree_attention(model)
    trained = sum(sum(label != -100 for label in r[1:]) for r in rows["labels"])
    start, total = time.perf_counter(), 0.0
    for row in rows:
        if tree:
            loss, _ = tree_forward(model, TreeCollator(0)([row]), num_items=trained)
        else:
            labels = torch.tensor(row["labels"][1:])
            at = torch.nonzero(labels != -100).flatten()
            logits = model(input_ids=torch.tensor([row["input_ids"]]), logits_to_keep=at, use_cache=False).logits[0]
            loss = torch.nn.functional.cross_entropy(logits.float(), labels[at], reduction="sum") / trained
        loss.backward()
        total += loss.item()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "loss": total, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def step(out: Path) -> dict[str, float]:
    run = subprocess.run([sys.executable, __file__, "--step-of", str(out)], check=True, capture_output=True, text=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="glaive,atif,agent,agent+think")
    parser.add_argument("--tokenizer", type=Path, default=TOKENIZER)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, help="the first N records of each case only")
    parser.add_argument("--step", default="", help="cases whose builds also train one CPU step, e.g. glaive")
    parser.add_argument("--step-of", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step_of is not None:
        print(json.dumps(train_step(args.step_of)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        agent = json.loads(AGENT.read_text(encoding="utf-8"))
        think = work / "agent_think.json"
        think.write_text(json.dumps(thoughts_as_reasoning(agent), ensure_ascii=False), encoding="utf-8")
        cases = {  # name -> (file, templates)
            "glaive": (GLAIVE, ("qwen3", None)),
            "atif": (ATIF, ("qwen3",)),  # a folder of ATIF files: no per_turn cut (it cuts message lists)
            "agent": (AGENT, ("qwen3", None)),  # gptoss rejects them all: it drops a call turn's text
            "agent+think": (think, ("qwen3", "gptoss", "glm4moe")),
        }
        print(f"tokenizer {args.tokenizer.name}, {args.rounds} rounds, `ftdata build --no-cache` wall (median)")
        print(f"{'case':<12} {'template':<8} {'mode':<10} {'records':>7} {'rows':>5} {'tokens':>9} {'trained':>8} {'split':>5} {'rejected':>8} {'x1row':>5} {'seconds':>7}")
        for case in args.cases.split(","):
            data, templates = cases[case]
            records = json.loads(data.read_text(encoding="utf-8")) if data.is_file() else sorted(data.glob("*.json"))
            if args.limit is not None and data.is_file():
                records = records[: args.limit]
                data = work / f"{case}_first_{args.limit}.json"
                data.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
            cut = per_turn(records, work / f"{case}_per_turn.jsonl") if data.is_file() else None
            for template in templates:
                base = ["--tokenizer", str(args.tokenizer), "--max-length", "65536", "--on-error", "skip"]
                base += ["--chat-template", template] if template else []
                modes = {
                    "one_row": (data, [*base, "--history", "one_row"]),  # first: each mode's x1row is over it
                    "inference": (data, base),
                    "per_turn": (cut, [*base, "--mask", "last_assistant", "--history", "one_row"]),
                    "tree_own": (data, [*base, "--history", "tree", "--no-tree-across-records"]),
                    "tree": (data, [*base, "--history", "tree"]),
                }
                one_row = 0
                for mode, (path, flags) in modes.items():
                    if path is None:
                        continue
                    times, counts, out = [], {}, Path()
                    try:
                        for _ in range(args.rounds):
                            seconds, counts, out = build(path, flags, work)
                            times.append(seconds)
                    except SystemExit as failed:  # the table goes on: this row says why it has no figures
                        name = f"{case:<12} {template or 'own':<8} {mode:<10} {len(records):>7}"
                        print(f"{name} not built: {failed}", flush=True)
                        continue
                    one_row = counts["tokens"] if mode == "one_row" else one_row
                    ratio = f"{counts['tokens'] / one_row:.2f}" if one_row else "-"
                    stepped = step(out) if case in args.step.split(",") else None
                    trained = f" step {stepped['seconds']:.1f} s loss {stepped['loss']:.6f} peak {stepped['peak_mib']:.0f} MiB" if stepped else ""
                    print(
                        f"{case:<12} {template or 'own':<8} {mode:<10} {len(records):>7} {counts['sequences']:>5} {counts['tokens']:>9} "
                        f"{counts['trained_tokens']:>8} {counts.get('split_records', 0):>5} {sum(counts.get('rejected', {}).values()):>8} "
                        f"{ratio:>5} {statistics.median(times):>7.2f}{trained}", flush=True,
                    )


if __name__ == "__main__":
    main()
