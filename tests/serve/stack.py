"""A real vLLM render server for the slow tests and for recording the fixtures (`record.py`).

vLLM lives in a venv of its own (`scripts/stacks/vllm.sh`: ~/.cache/ftdata/stacks/vllm-0.33.0): it pins torch and
transformers versions that conflict with ftdata's. `vllm launch render DIR` needs a `config.json` in DIR
(`architectures` and `model_type` suffice; no weights): `served_folder` copies a shared tokenizer folder and adds one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

VERSION = "0.33.0"
VENV = Path(os.environ.get("FTDATA_STACKS", Path.home() / ".cache" / "ftdata" / "stacks")) / f"vllm-{VERSION}"
VLLM = VENV / "bin" / "vllm"
READY = VENV / ".complete"

# What each shared folder's model says of itself in its config.json (the model's own, less everything else).
CONFIGS = {
    "qwen2.5-instruct": ("Qwen2ForCausalLM", "qwen2"),
    "llama-3.2-instruct": ("LlamaForCausalLM", "llama"),
    "llama-3-8b-instruct": ("LlamaForCausalLM", "llama"),
    "gemma-3-it": ("Gemma3ForCausalLM", "gemma3_text"),
    "phi-3-mini-4k-instruct": ("Phi3ForCausalLM", "phi3"),
    "mistral-nemo-instruct-2407": ("MistralForCausalLM", "mistral"),
    "deepseek-v3": ("DeepseekV3ForCausalLM", "deepseek_v3"),
    "smollm2": ("LlamaForCausalLM", "llama"),
    "qwen3-template": ("Qwen3ForCausalLM", "qwen3"),  # the Qwen2.5 files with TRL's Qwen3 template: reasoning
    # The DeepSeek-V3 files served as V3.2: vLLM renders with its own Python encoder (tokenizer_mode deepseek_v32),
    # not with the folder's Jinja template that ftdata builds with.
    # (The V3.2 architecture itself needs the full model config; the V3 one with --tokenizer-mode picks the encoder.)
    "deepseek-v3.2-encoder": ("DeepseekV3ForCausalLM", "deepseek_v3"),
}
SOURCES = {"deepseek-v3.2-encoder": "deepseek-v3"}  # names served from another shared folder
SERVER_ARGS = {"deepseek-v3.2-encoder": ["--tokenizer-mode", "deepseek_v32"]}  # `vllm launch render` flags


def source_folder(name: str, scratch: Path) -> Path | None:
    """The tokenizer folder NAME stands for: a shared one, the bundled SmolLM2's (None), or, for `qwen3-template`,
    the Qwen2.5 files with the Qwen3 chat template TRL ships (a template that writes reasoning and drops it from
    history) written into a copy in `scratch`."""
    from support import TOKENIZERS

    if name == "smollm2":
        return None
    if name != "qwen3-template":
        return TOKENIZERS / SOURCES.get(name, name)
    from ftdata.chat.chat_template import load_chat_template

    folder = scratch / name
    if not folder.is_dir():
        shutil.copytree(TOKENIZERS / "qwen2.5-instruct", folder)
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        config["chat_template"] = load_chat_template("qwen3").text
        (folder / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return folder


def served_folder(source: Path, name: str, target: Path) -> Path:
    """A copy of tokenizer folder `source` with the minimal config.json vLLM needs."""
    shutil.copytree(source, target)
    architecture, model_type = CONFIGS[name]
    (target / "config.json").write_text(json.dumps({"architectures": [architecture], "model_type": model_type}))
    return target


@contextmanager
def render_server(folder: Path, *, log: Path, args: tuple[str, ...] = ()) -> Iterator[str]:
    """`vllm launch render folder` from the stacks venv, as `ftdata check-serving --serve` starts it."""
    from ftdata.serve.launch import render_server as started

    previous = os.environ.get("FTDATA_VLLM")
    os.environ["FTDATA_VLLM"] = str(VLLM)
    try:
        with started(folder, args=args, log=log) as url:
            yield url
    finally:
        if previous is None:
            os.environ.pop("FTDATA_VLLM", None)
        else:
            os.environ["FTDATA_VLLM"] = previous
