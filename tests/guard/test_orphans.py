"""Workers die with the build (issue 32): after SIGKILL or SIGTERM of `ftdata build`, no process it
started survives more than a few seconds: the `processes` engine's spawned workers and their
resource tracker, a local Ray cluster's raylet, workers and agents. Read from /proc (Linux)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftdata.guard.reaper import descendants

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _start(pid: int) -> str | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else fields[19]


def _build(tmp_path: Path, rows: int, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Say {i}.", "output": f"{i}!"}) + "\n" for i in range(rows)))
    return subprocess.Popen(
        [sys.executable, "-m", "ftdata", "build", str(data), "-o", str(tmp_path / "out"), "--template", "alpaca",
         "--no-cache", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def _named(keys: set[tuple[int, str]]) -> dict[tuple[int, str], str]:
    """Processes by (pid, start time), with their command lines (read now: a dead one has none)."""
    return {key: _cmdline(key[0])[:120] for key in keys}


def _wait_for(proc: subprocess.Popen[bytes], marker: str, count: int, seconds: float) -> dict[tuple[int, str], str]:
    """The descendants of `proc`, named, once `count` of them have `marker` in their command line."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        kids = descendants(proc.pid)
        if sum(marker in _cmdline(pid) for pid, _ in kids) >= count:
            time.sleep(1)  # let them start work
            return _named(descendants(proc.pid))
        assert proc.poll() is None, "the build ended before its workers were seen"
        time.sleep(0.1)
    raise AssertionError(f"no {count} {marker!r} processes after {seconds} s: {[_cmdline(p) for p, _ in descendants(proc.pid)]}")


def _survivors(kids: dict[tuple[int, str], str], seconds: float) -> list[str]:
    """The command lines (as they were before the kill) of `kids` still alive after `seconds`; killed then."""
    deadline = time.monotonic() + seconds
    while (alive := {(pid, start) for pid, start in kids if _start(pid) == start}) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid, _ in alive:  # leave nothing behind on the shared machine, whatever the outcome
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return sorted(kids[key] for key in alive)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_processes_build_leaves_no_worker(tmp_path: Path, sig: signal.Signals) -> None:
    proc = _build(tmp_path, 40_000, "--engine", "processes", "--num-workers", "2")
    try:
        kids = _wait_for(proc, "multiprocessing", 3, 300)  # two workers and the resource tracker (slack for a loaded machine)
        proc.send_signal(sig)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _survivors(kids, 10) == []


def _shard_scratch(temp: Path) -> list[Path]:
    """A Ray worker's shard scratch under `temp` (Ray's own folder aside)."""
    return [p for top in temp.iterdir() if top.name != "ray" for p in (top, *top.glob("*")) if "shard-" in p.name]


@pytest.mark.slow
def test_a_sigkilled_ray_build_leaves_no_ray_process_and_its_scratch_is_swept(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    temp = Path(f"/tmp/reap-{os.getpid()}")  # short: Ray's socket paths must fit in 107 bytes
    temp.mkdir(exist_ok=True)
    proc = _build(tmp_path, 200_000, "--engine", "ray", "--num-workers", "2", env={"TMPDIR": str(temp)})
    try:
        kids = _wait_for(proc, "ray::", 1, 240)  # a Ray worker names itself ray::IDLE, ray::<task>
        deadline = time.monotonic() + 120
        while not _shard_scratch(temp) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _shard_scratch(temp), "no shard scratch appeared"
        kids |= _named(descendants(proc.pid))
        assert {m for name in kids.values() for m in ("raylet", "gcs_server", "ray::") if m in name} == {"raylet", "gcs_server", "ray::"}
        proc.kill()
        proc.wait(30)
        assert _survivors(kids, 10) == []
        # the next run sweeps what the killed worker left
        subprocess.run([sys.executable, "-m", "ftdata", "build", str(tmp_path / "d.jsonl"), "-o", str(tmp_path / "again"),
                        "--template", "alpaca", "--no-cache", "--limit", "10"],
                       env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(temp)}, check=True, capture_output=True)  # fmt: skip
        assert _shard_scratch(temp) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["rm", "-rf", str(temp)], check=False)
