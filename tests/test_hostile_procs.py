"""Faults that need real processes: concurrent builds on one cache or one output folder, and
scratch cleanup after SIGTERM / SIGKILL (issue 10)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = [{"instruction": f"q{i}", "output": ""} for i in range(40)] + [
    {"instruction": f"Say {i}.", "output": f"Number {i}."} for i in range(60)
]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    env.pop("FTDATA_DEBUG", None)
    return env


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


def _build(tmp_path: Path, *args: object) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "ftdata.cli.app", "build", *map(str, args), "--template", "alpaca", "--on-error", "skip"]
    return subprocess.Popen(cmd, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def _rejects_intact(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 40, len(lines)
    assert all(json.loads(line)["location"].endswith(f"d.jsonl:{i + 1}") for i, line in enumerate(lines))


def test_two_builds_at_once_on_one_cache_both_succeed(tmp_path: Path) -> None:
    data, cache = _data(tmp_path), tmp_path / "cache"
    procs = [_build(tmp_path, data, "-o", tmp_path / f"out{i}", "--cache-dir", cache) for i in range(2)]
    results = [_finish(p) for p in procs]
    for code, out, err in results:
        assert code == 0 and "Traceback" not in err, err
    for i in range(2):
        _rejects_intact(tmp_path / f"out{i}" / "rejects.jsonl")
    entries = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and sorted(p.name for p in entries[0].iterdir()) == [
        "complete.json", "dataset", "rejects.jsonl", "report.json",
    ]  # fmt: skip
    _rejects_intact(entries[0] / "rejects.jsonl")


def test_two_builds_at_once_into_one_out_take_turns(tmp_path: Path) -> None:
    data, out = _data(tmp_path), tmp_path / "out"
    procs = [_build(tmp_path, data, "-o", out, "--no-cache") for _ in range(2)]
    results = [_finish(p) for p in procs]
    for code, _, err in results:
        assert code == 0 and "Traceback" not in err, err
    _rejects_intact(out / "rejects.jsonl")
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["build.json", "dataset", "rejects.jsonl"]
    assert not [p for p in out.iterdir() if p.name.startswith(".ftdata-tmp-")]


_HOLD_SCRATCH = """
import sys, time
from ftdata.io import safeio
print(safeio.scratch_dir(), flush=True)
time.sleep(60)
"""


def _scratch_holder(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_SCRATCH], env=_env(tmp_path), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    path = Path(proc.stdout.readline().strip())
    assert path.is_dir() and path.parent == tmp_path
    return proc, path


def test_scratch_is_removed_on_sigterm(tmp_path: Path) -> None:
    proc, path = _scratch_holder(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM
    assert not path.exists()


def test_scratch_of_a_killed_run_is_removed_by_the_next_run(tmp_path: Path) -> None:
    proc, path = _scratch_holder(tmp_path)
    live, live_path = _scratch_holder(tmp_path)
    proc.kill()
    proc.wait(timeout=30)
    assert path.exists()  # SIGKILL cannot be handled
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "from ftdata.io import safeio; safeio.scratch_dir()"], env=_env(tmp_path), check=True)
    assert not path.exists() and live_path.exists()  # the live run's scratch is left alone
    live.kill()
    live.wait(timeout=30)
    assert time.monotonic() - started < 60
