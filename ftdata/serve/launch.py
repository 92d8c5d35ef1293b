"""A vLLM render server ftdata starts itself from a model folder (`ftdata check-serving OUT --serve MODEL_DIR`).

    vllm: $FTDATA_VLLM, else the venv `scripts/stacks/vllm.sh` made (~/.cache/ftdata/stacks/vllm-*/bin/vllm),
          else `vllm` on PATH
    VLLM_TARGET_DEVICE=cpu vllm launch render MODEL_DIR --host 127.0.0.1 --port FREE   (no GPU, no weights)

vLLM pins torch and transformers versions of its own, so it runs in its own venv as a separate process: ftdata
only talks to it over loopback HTTP, and stops the process group it started when the check ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ftdata.errors import ConfigError
from ftdata.io.resources import cache_root
from ftdata.serve.client import ServerError

__all__ = ["render_server", "vllm_binary"]

START_TIMEOUT = 240.0  # seconds: 13-30 s on 2 CPU cores, more under load


def vllm_binary() -> Path | None:
    """The `vllm` executable to start: $FTDATA_VLLM, the stacks venv's, or the one on PATH (None: none found)."""
    if given := os.environ.get("FTDATA_VLLM"):
        return Path(given) if Path(given).is_file() else None
    made = sorted((cache_root() / "stacks").glob("vllm-*/bin/vllm"))
    if made:
        return made[-1]
    found = shutil.which("vllm")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:  # noqa: S310  # loopback, ours
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def render_server(
    folder: str | Path, *, args: Sequence[str] = (), log: Path | None = None, start_timeout: float = START_TIMEOUT
) -> Iterator[str]:
    """`vllm launch render folder` on a free loopback port, for the block; yields its URL.

    Raises:
        ConfigError: no vllm executable, or `folder` has no config.json (vLLM reads the model's type from it).
        ServerError: the server exited or was not ready within `start_timeout` (its log's last line named).
    """
    model = Path(folder).expanduser()
    if not (model / "config.json").is_file():
        raise ConfigError(
            f"{model} has no config.json: vllm launch render reads the model's type from it; give the model folder, "
            'or add one with its "architectures" and "model_type"'
        )
    binary = vllm_binary()
    if binary is None:
        raise ConfigError(
            "no vllm to start: run scripts/stacks/vllm.sh (a venv of its own, ~3 min), set FTDATA_VLLM to a vllm "
            "executable, or start a server yourself and give --url"
        )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = log or Path(tempfile.mkstemp(prefix="vllm-render-", suffix=".log")[1])
    with log.open("w") as fh:
        command = [str(binary), "launch", "render", str(model), "--host", "127.0.0.1", "--port", str(port), *args]
        process = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + start_timeout
            while not _ready(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
                    last = lines[-1][:300] if lines else "(no output)"
                    state = "exited" if process.poll() is not None else f"was not ready in {start_timeout:g} s"
                    raise ServerError(f"vllm launch render {model} {state}: {last} (log: {log})")
                time.sleep(1)
            yield url
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)  # the group started here (vLLM forks helpers)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
