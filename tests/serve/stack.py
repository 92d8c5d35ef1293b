"""A real vLLM render server for the slow tests and for recording the fixtures (`record.py`).

vLLM lives in a venv of its own (`scripts/stack_env.sh vllm`: ~/.cache/ftdata/stacks/vllm-0.33.0): it pins torch and
transformers versions that conflict with ftdata's. `vllm launch render DIR` needs a `config.json` in DIR
(`architectures` and `model_type` suffice; no weights): `served_folder` copies a shared tokenizer folder and adds one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
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
}


def served_folder(source: Path, name: str, target: Path) -> Path:
    """A copy of tokenizer folder `source` with the minimal config.json vLLM needs."""
    shutil.copytree(source, target)
    architecture, model_type = CONFIGS[name]
    (target / "config.json").write_text(json.dumps({"architectures": [architecture], "model_type": model_type}))
    return target


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def render_server(folder: Path, *, log: Path, start_timeout: float = 240.0) -> Iterator[str]:
    """`VLLM_TARGET_DEVICE=cpu vllm launch render folder` on a free loopback port; yields its URL, stops it after."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with log.open("w") as fh:
        process = subprocess.Popen(
            [str(VLLM), "launch", "render", str(folder), "--host", "127.0.0.1", "--port", str(port)],
            stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + start_timeout
            while not _ready(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"vllm launch render {folder} did not start: {log.read_text()[-2000:]}")
                time.sleep(1)
            yield url
        finally:
            os.killpg(process.pid, signal.SIGTERM)  # the group this test started (vLLM forks helpers)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
