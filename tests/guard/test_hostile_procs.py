"""Faults that need real processes: concurrent builds on one cache or one output folder, and
scratch cleanup after SIGTERM / SIGKILL (issue 10); OUT under load and SIGKILL (issue 32, slow)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ftdata

ROOT = Path(__file__).resolve().parents[2]
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


def _build(tmp_path: Path, *args: object, new_session: bool = False) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "ftdata.cli.app", "build", *map(str, args), "--template", "alpaca", "--on-error", "skip"]
    return subprocess.Popen(
        cmd, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        start_new_session=new_session,
    )  # fmt: skip


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
from ftdata.guard import safeio
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
    subprocess.run([sys.executable, "-c", "from ftdata.guard import safeio; safeio.scratch_dir()"], env=_env(tmp_path), check=True)
    assert not path.exists() and live_path.exists()  # the live run's scratch is left alone
    live.kill()
    live.wait(timeout=30)
    assert time.monotonic() - started < 60


# --- issue 32: OUT under load and under SIGKILL (slow: each case is many real builds) ---------------

BIG = [{"instruction": f"q{i}", "output": ""} if i % 4 == 0 else {"instruction": f"Say {i} and why.", "output": f"Number {i}, in words."}
       for i in range(3000)]  # fmt: skip


def _big(tmp_path: Path, rows: list[dict[str, str]] = BIG, name: str = "big.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _visible(folder: Path) -> dict[str, bytes | str]:
    """Every entry of `folder` but ftdata's temporary names, with the bytes of each file."""
    return {
        str(p.relative_to(folder)): "dir" if p.is_dir() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if not p.relative_to(folder).parts[0].startswith(".ftdata-tmp-")
    }


@pytest.mark.slow
def test_two_builds_into_one_out_take_turns_beside_a_busy_cpu_ten_times(tmp_path: Path) -> None:
    """Issue 32: the second build, started a second after the first while it writes, waits for the
    lock and never refuses OUT (refused 10 times out of 10 before)."""
    data = _big(tmp_path)
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for round_ in range(10):
            out = tmp_path / f"out{round_}"
            first = _build(tmp_path, data, "-o", out, "--no-cache", "--output-format", "jsonl")
            time.sleep(1)
            second = _build(tmp_path, data, "-o", out, "--no-cache", "--output-format", "jsonl")
            for code, _, err in (_finish(first), _finish(second)):
                assert code == 0 and "Traceback" not in err, (round_, err)
            assert ftdata.load(out).report.records == 3000
            assert sorted(p.name for p in out.iterdir()) == [".ftdata-output.json", ".ftdata.lock", "build.json", "rejects.jsonl", "train.jsonl"]
    finally:
        burner.kill()
        burner.wait()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", "processes"])
def test_a_build_killed_at_any_moment_leaves_the_earlier_out_or_the_new_one_whole(tmp_path: Path, engine: str) -> None:
    """SIGKILL of `ftdata build` from its start to its end, including late in --engine processes:
    OUT is byte for byte the earlier build, or (killed after its commit) the new one once the
    next reader has looked."""
    old, new = _data(tmp_path), _big(tmp_path)
    args = ("--no-cache", "--output-format", "jsonl", "--engine", engine, "--num-workers", "2")
    earlier = tmp_path / "earlier"
    assert _finish(_build(tmp_path, old, "-o", earlier, *args))[0] == 0
    reference = tmp_path / "reference"
    started = time.monotonic()
    assert _finish(_build(tmp_path, new, "-o", reference, *args))[0] == 0
    took = time.monotonic() - started
    outcomes = []
    for i in range(12):
        out = tmp_path / f"out{i}"
        shutil.copytree(earlier, out, symlinks=True)
        before = _visible(out)
        proc = _build(tmp_path, new, "-o", out, *args, new_session=True)
        time.sleep(took * (0.3 + 0.07 * i))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        if _visible(out) == before:
            outcomes.append("earlier")
            continue
        loaded = ftdata.load(out)  # finishes what a build killed while publishing had committed
        assert (out / "rejects.jsonl").read_bytes() == (reference / "rejects.jsonl").read_bytes()
        assert (out / "train.jsonl").read_bytes() == (reference / "train.jsonl").read_bytes()
        assert loaded.report.records == 3000
        outcomes.append("new")
    assert "earlier" in outcomes, outcomes
