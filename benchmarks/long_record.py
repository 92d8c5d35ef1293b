"""Work per record: one conversation of N messages (user / assistant alternating), rendered and masked.

Every assistant turn's inference prompt P_i is one render of the conversation up to it, so
rendering each is quadratic in the record's length. `ftdata.chat.turns` locates them from
structure in a bounded number of renders instead: where the template is prefix-stable
(`prompt_ends`) and where it is not (`prompt_tails`: Nemotron 3, Qwen3 with thinking off,
GLM-4.7, DeepSeek-V3.2; docs/masking.md). This prints the seconds one record takes at each size.

    python benchmarks/long_record.py [--tokenizer NAME] [--template T] [--kwargs JSON] [--kind K] [--build] [1000 2000 4000]

NAME is a folder under ../shared/tokenizers (default: the bundled SmolLM2, ChatML; with
--template: qwen2.5-instruct). T is a chat template that replaces the tokenizer's own: a TRL
template name (`nemotron_3_nano`, `qwen3`) or a .jinja path; the think tags it writes are
added to the tokenizer as tokens where missing (as TRL's clone_chat_template does). --build
times `ftdata build` on a JSONL file holding the one record (the path users run, process start
and tokenizer load included) instead of rendering and masking in process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SHARED = Path(os.environ.get("FTDATA_SHARED", Path(__file__).resolve().parents[2] / "shared"))
THINK_TAGS = ("<think>", "</think>")


CITY = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def record(n: int, kind: str = "plain") -> dict[str, Any]:
    """n messages: user / assistant alternating ("plain"), with each assistant turn's reasoning
    ("reasoning"), or user / tool call / tool result / answer ("call")."""
    if kind != "call":
        think = {"reasoning_content": "thinking it over"} if kind == "reasoning" else {}
        return {"messages": [{"role": "user", "content": f"message number {k}"} if k % 2 == 0 else
                             {"role": "assistant", "content": f"message number {k}", **think} for k in range(n)]}  # fmt: skip
    messages: list[dict[str, Any]] = []
    for k in range(n // 4):
        call = {"id": f"call{k:05d}", "type": "function", "function": {"name": "get_weather", "arguments": {"city": f"City {k}"}}}
        messages += [{"role": "user", "content": f"weather {k}?"}, {"role": "assistant", "content": None, "tool_calls": [call]},
                     {"role": "tool", "tool_call_id": call["id"], "name": "get_weather", "content": f"sunny {k}"},
                     {"role": "assistant", "content": f"It is sunny {k}."}]  # fmt: skip
    return {"messages": messages, "tools": [CITY]}


def load(tokenizer: str | None, template: str | None) -> Any:
    """The tokenizer, with `template` set as its chat template (and its think tags as tokens)."""
    from ftdata.io.resources import load_tokenizer

    if template is not None and tokenizer is None:
        tokenizer = "qwen2.5-instruct"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = load_tokenizer(SHARED / "tokenizers" / tokenizer if tokenizer else None)
    if template is not None:
        path = Path(template)
        if not path.suffix:
            import trl

            path = Path(trl.__file__).parent / "chat_templates" / f"{template}.jinja"
        tok.chat_template = path.read_text(encoding="utf-8")
        tok.add_tokens([t for t in THINK_TAGS if t in tok.chat_template and tok.backend_tokenizer.token_to_id(t) is None])
    return tok


def in_process(tok: Any, sizes: list[int], kwargs: dict[str, Any] | None, kind: str) -> None:
    from ftdata.errors import Location
    from ftdata.options import DataOptions
    from ftdata.run.stage import Stage

    stage = Stage(tok, DataOptions(max_length=10**8, chat_template_kwargs=kwargs, max_messages=max(sizes)))
    for n in sizes:
        (example,) = stage.examples(Location("long"), record(n, kind))
        start = time.perf_counter()
        rendered = stage.renderer(example)
        row = stage.masker([rendered])[0]
        seconds = time.perf_counter() - start
        print(f"{n} messages: {seconds:.2f} s ({len(rendered.spans)} trained turns, {len(row.input_ids)} tokens, {rendered.method})")


def with_build(tok: Any, sizes: list[int], kwargs: dict[str, Any] | None, kind: str) -> None:
    """`ftdata build` of a JSONL file with the one record, timed from outside (a fresh process)."""
    with tempfile.TemporaryDirectory(prefix="long-record-") as tmp:
        folder = Path(tmp) / "tokenizer"
        tok.save_pretrained(folder)
        for n in sizes:
            data = Path(tmp) / f"long-{n}.jsonl"
            data.write_text(json.dumps(record(n, kind)) + "\n", encoding="utf-8")
            command = [sys.executable, "-m", "ftdata", "build", str(data), "-o", str(Path(tmp) / f"out-{n}"), "-t", str(folder),
                       "--max-length", str(10**7), "--no-packing", "--no-cache", "--max-messages", str(max(n, 1024))]  # fmt: skip
            if kwargs:
                command += ["--chat-template-kwargs", json.dumps(kwargs)]
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            seconds = time.perf_counter() - start
            last = (done.stdout.strip().splitlines() or done.stderr.strip().splitlines() or [""])[-1]
            print(f"{n} messages: ftdata build {seconds:.2f} s (exit {done.returncode}: {last[:100]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default=None, help="folder under ../shared/tokenizers (default: bundled SmolLM2)")
    parser.add_argument("--template", default=None, help="chat template: a TRL template name or a .jinja path")
    parser.add_argument("--kwargs", default=None, help="chat_template_kwargs as JSON, e.g. '{\"enable_thinking\": false}'")
    parser.add_argument("--kind", choices=["plain", "reasoning", "call"], default="plain",
                        help="assistant turns: plain, with reasoning, or tool calls (user / call / result / answer)")
    parser.add_argument("--build", action="store_true", help="time `ftdata build` on a JSONL file holding the record")
    parser.add_argument("sizes", nargs="*", type=int, default=[1000, 2000, 4000])
    args = parser.parse_args()
    tok = load(args.tokenizer, args.template)
    kwargs = json.loads(args.kwargs) if args.kwargs else None
    (with_build if args.build else in_process)(tok, args.sizes, kwargs, args.kind)


if __name__ == "__main__":
    main()
