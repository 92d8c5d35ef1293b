"""A build killed with SIGKILL (issue 32): OUT is the earlier build again, or the new one whole, a moment
after the kill, without another ftdata run: the build's watchdog (`reaper.Watchdog("stage")`,
`commit.recover`) removes its uncommitted stage or finishes its publish. Real `python -m ftdata build`
processes, killed (alone or with their process group; SIGTERM once) before the commit, mid-build with
`--engine processes` or `ray` (slow), at the commit and mid-publish, and while writing a cache entry;
OUT's full listing, dot files included, and its bytes are compared. ftdata has no test hook: where a
build must stop at a given step, the killed process's own script (`PAUSED`, `CACHING`) patches that
step to wait. Read from /proc (Linux)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import ftdata
from ftdata.build import cache as cache_module
from ftdata.guard import commit, safeio
from ftdata.guard.reaper import descendants
from test_hostile_procs import _env

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")

OLD = [{"instruction": f"Say {i}.", "output": f"{i}!"} for i in range(30)]
NEW = [{"instruction": f"q{i}", "output": ""} if i % 4 == 0 else {"instruction": f"Say {i} and why.", "output": f"Number {i}, in words."}
       for i in range(40_000)]  # fmt: skip  (still running a few seconds after its stage appears)
SMALL = NEW[:200]  # reaches its commit quickly
ARGS = ("--template", "alpaca", "--on-error", "skip", "--no-cache", "--output-format", "jsonl")

# `python -m ftdata build ...` that stops once it has written its cache entry (under its temporary name)
CACHING = """
import runpy, sys, time
import datasets

real = datasets.Dataset.save_to_disk

def paused(self, path, *args, **kwargs):
    real(self, path, *args, **kwargs)
    print("caching", flush=True)
    time.sleep(120)

datasets.Dataset.save_to_disk = paused
sys.argv[0] = "ftdata"
runpy.run_module("ftdata", run_name="__main__")
"""

# `python -m ftdata build ...` whose publish stops (after `steps` of its renames) until it is killed
PAUSED = """
import os, runpy, sys, time
from ftdata.guard import commit

def paused(folder, stage):
    for name in {steps!r}:  # the real publish's first renames: the earlier build.json aside, then a new file
        if name == "build.json":
            os.replace(folder / name, stage / ".ftdata-old" / name)
        else:
            os.replace(stage / name, folder / name)
    print("publishing", flush=True)
    time.sleep(120)

commit.publish = paused
sys.argv[0] = "ftdata"
runpy.run_module("ftdata", run_name="__main__")
"""


def _jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def listing(folder: Path) -> dict[str, bytes | str]:
    """Every entry under `folder`, dot files and ftdata's temporary names included: bytes, 'dir' or 'link'."""
    return {
        str(p.relative_to(folder)): "link" if p.is_symlink() else "dir" if p.is_dir() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
    }


def _within(seconds: float, done: Callable[[], bool]) -> bool:
    """Whether `done()` holds within `seconds` (a look that finds a file removed under it is looked again)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if done():
                return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _watchdogs(pid: int) -> list[str]:
    """The command lines of the watchdogs of the build `pid` still running."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().decode().split("\0")
        except (OSError, ValueError):
            continue
        if any(a.endswith("reaper.py") for a in args) and str(pid) in args:
            found.append(" ".join(args))
    return found


def _start(
    tmp_path: Path, data: Path, out: Path, *extra: str, script: str | None = None, args: tuple[str, ...] = ARGS
) -> subprocess.Popen[str]:  # fmt: skip
    head = ["-c", script] if script else ["-m", "ftdata"]
    return subprocess.Popen(
        [sys.executable, *head, "build", str(data), "-o", str(out), *args, *extra], env=_env(tmp_path), cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip


def _run(tmp_path: Path, data: Path, out: Path) -> None:
    proc = _start(tmp_path, data, out)
    proc.communicate(timeout=300)
    assert proc.returncode == 0
    assert _watchdogs(proc.pid) == []  # a normal end stops it


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An earlier build (`old`) and, for reference, the new small build (`small`), made once."""
    tmp = tmp_path_factory.mktemp("builds")
    _run(tmp, _jsonl(tmp / "old.jsonl", OLD), tmp / "old")
    _run(tmp, _jsonl(tmp / "small.jsonl", SMALL), tmp / "small")
    _jsonl(tmp / "new.jsonl", NEW)
    return tmp


def _earlier(builds: Path, tmp_path: Path) -> tuple[Path, dict[str, bytes | str]]:
    out = tmp_path / "out"
    shutil.copytree(builds / "old", out, symlinks=True)
    return out, listing(out)


def _kill(proc: subprocess.Popen[str], *, group: bool, sig: signal.Signals = signal.SIGKILL) -> None:
    if group:  # what a terminal's Ctrl-\ or a job scheduler does
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode == -sig


def _stage(out: Path) -> list[Path]:
    return [p for p in out.iterdir() if p.name.startswith(safeio.TEMP_MARK) and p.name.endswith("-stage")]


def _rejects_growing(out: Path) -> bool:
    """Whether the build has read records: its rejects file (under its temporary name) holds some."""
    return any(p.name.endswith("rejects.jsonl") and p.stat().st_size > 0 for stage in _stage(out) for p in stage.iterdir())


def _running(proc: subprocess.Popen[str], condition: Callable[[], bool]) -> Callable[[], bool]:
    """`condition`, asserting on each look that the build still runs (it is to be killed mid-way)."""

    def check() -> bool:
        assert proc.poll() is None, "the build ended before the moment to kill it"
        return condition()

    return check


def _workers(proc: subprocess.Popen[str]) -> bool:
    return sum(b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid, _ in descendants(proc.pid)) >= 2


@pytest.mark.parametrize(
    ("moment", "group", "sig"),
    [("staged", True, signal.SIGKILL), ("rows", False, signal.SIGKILL), ("rows", True, signal.SIGTERM)],
)  # fmt: skip
def test_a_build_killed_before_its_commit_leaves_out_exactly_as_it_was_at_once(
    builds: Path, tmp_path: Path, moment: str, group: bool, sig: signal.Signals
) -> None:  # fmt: skip
    """Killed once its stage exists, or once it writes rejects there: within 5 s OUT lists (dot files
    included) and holds exactly what it did before, $TMPDIR holds no scratch of it, and the watchdog
    is gone. Before: the hidden stage stayed in OUT until the next ftdata run (SIGTERM too: ftdata's
    handler removes its scratch and dies of the signal again, running no `finally`), and so did the
    scratch of a build killed with SIGKILL."""
    out, before = _earlier(builds, tmp_path)
    proc = _start(tmp_path, builds / "new.jsonl", out)  # TMPDIR is tmp_path
    assert _within(120, _running(proc, (lambda: bool(_stage(out))) if moment == "staged" else (lambda: _rejects_growing(out))))
    assert listing(out) != before
    _kill(proc, group=group, sig=sig)
    assert _within(5, lambda: listing(out) == before), sorted(listing(out))
    assert _within(5, lambda: _scratch(tmp_path) == [])
    assert _within(5, lambda: _watchdogs(proc.pid) == [])


def _scratch(folder: Path) -> list[str]:
    """ftdata's scratch folders in `folder` (a build's $TMPDIR)."""
    return sorted(p.name for p in folder.glob(f"{safeio.SCRATCH_PREFIX}*"))


@pytest.mark.slow
@pytest.mark.parametrize("group", [True, False])
def test_a_processes_build_killed_mid_build_leaves_out_as_it_was(builds: Path, tmp_path: Path, group: bool) -> None:
    out, before = _earlier(builds, tmp_path)
    proc = _start(tmp_path, builds / "new.jsonl", out, "--engine", "processes", "--num-workers", "2")
    assert _within(240, _running(proc, lambda: _workers(proc) and _rejects_growing(out)))
    _kill(proc, group=group)
    assert _within(5, lambda: listing(out) == before), sorted(listing(out))
    assert _within(5, lambda: _watchdogs(proc.pid) == [])


@pytest.mark.parametrize("steps", [(), ("build.json", "train.jsonl")], ids=["at-the-commit", "mid-publish"])
def test_a_build_killed_after_its_commit_is_published_whole_at_once(builds: Path, tmp_path: Path, steps: tuple[str, ...]) -> None:
    """Killed (with its process group) once committed, before its first rename or after setting the
    earlier build.json aside and moving train.jsonl: within 5 s OUT holds the new build whole, with
    no ftdata run in between. Before: OUT had no build.json until the next ftdata run."""
    out, _ = _earlier(builds, tmp_path)
    proc = _start(tmp_path, builds / "small.jsonl", out, script=PAUSED.format(steps=list(steps)))
    assert proc.stdout is not None and proc.stdout.readline() == "publishing\n"
    _kill(proc, group=True)
    reference = listing(builds / "small")
    assert _within(5, lambda: listing(out).keys() == reference.keys()), sorted(listing(out))
    now = listing(out)
    assert {k: v for k, v in now.items() if k != "build.json"} == {k: v for k, v in reference.items() if k != "build.json"}
    assert _within(5, lambda: _watchdogs(proc.pid) == [])
    assert ftdata.load(out).report.records == len(SMALL)


def test_a_build_killed_while_it_writes_its_cache_entry_leaves_nothing_in_the_cache(builds: Path, tmp_path: Path) -> None:
    """The entry is written under a temporary name in the cache folder and renamed when complete;
    killed before that, the build's watchdog removes it (before: a full copy of the dataset stayed
    there for good, as nothing sweeps a cache folder)."""
    out, before = _earlier(builds, tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    args = tuple(a for a in ARGS if a != "--no-cache")
    proc = _start(tmp_path, builds / "small.jsonl", out, "--cache-dir", str(cache), script=CACHING, args=args)
    assert proc.stdout is not None and proc.stdout.readline() == "caching\n"
    assert [p.name for p in cache.iterdir() if p.name.startswith(safeio.TEMP_MARK)]
    _kill(proc, group=True)
    # No entry stays; the digest index (`.digests.sqlite`, written as files are hashed) is no half-written entry.
    entries = lambda: [name for name in listing(cache) if name != cache_module.DIGESTS]  # noqa: E731
    assert _within(5, lambda: entries() == [] and listing(out) == before), (sorted(listing(cache)), sorted(listing(out)))
    assert _within(5, lambda: _watchdogs(proc.pid) == [])


# --- what the watchdog touches: only this build's names, never through a link ----------------------


def _committed_stage(out: Path, name: str, files: dict[str, str]) -> Path:
    stage = out / name
    (stage / commit.ASIDE).mkdir(parents=True)
    for file, text in files.items():
        (stage / file).write_text(text)
    (stage / commit.OWNER_FILE).write_text(json.dumps({"written_by": "ftdata", "files": sorted(files)}))
    (stage / commit.PUBLISH).write_text(json.dumps({"files": sorted(files), "remove": []}))
    return stage


def test_recover_touches_only_this_builds_names_and_follows_no_link(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep")
    (out / commit.LOCK_FILE).write_text("")
    (out / "build.json").write_text("old")
    mine, other = f"{safeio.TEMP_MARK}41-", f"{safeio.TEMP_MARK}4-"
    (out / f"{mine}aaaaaaaa-stage").mkdir()
    (out / f"{mine}aaaaaaaa-stage" / "rejects.jsonl").write_text("x")
    (out / f"{mine}bbbbbbbb-rows").symlink_to(elsewhere)  # a link planted at one of this build's names
    (out / f"{other}cccccccc-stage").mkdir()  # another build's (a live one holds the lock; a dead one's is the next run's)
    commit.recover(out, mine)
    assert sorted(p.name for p in out.iterdir()) == sorted([commit.LOCK_FILE, f"{other}cccccccc-stage", "build.json"])
    assert (elsewhere / "keep.txt").read_text() == "keep"
    _committed_stage(out, f"{mine}dddddddd-stage", {"build.json": "new", "train.jsonl": "rows"})
    commit.recover(out, mine)
    assert sorted(p.name for p in out.iterdir()) == sorted([
        commit.OWNER_FILE, commit.LOCK_FILE, f"{other}cccccccc-stage", "build.json", "train.jsonl",
    ])  # fmt: skip
    assert (out / "build.json").read_text() == "new"


def test_recover_does_nothing_when_the_lock_is_a_link(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "lock").write_text("")
    (out / commit.LOCK_FILE).symlink_to(tmp_path / "lock")
    (out / f"{safeio.TEMP_MARK}41-aaaaaaaa-stage").mkdir()
    commit.recover(out, f"{safeio.TEMP_MARK}41-")
    assert sorted(p.name for p in out.iterdir()) == sorted([commit.LOCK_FILE, f"{safeio.TEMP_MARK}41-aaaaaaaa-stage"])


WATCHED = """
import os, sys, time
from pathlib import Path
from ftdata.guard.reaper import Watchdog
out = Path(sys.argv[1])
dog = Watchdog("stage", str(out), f".ftdata-tmp-{os.getpid()}-").__enter__()
(out / f".ftdata-tmp-{os.getpid()}-aaaaaaaa-stage").mkdir()
if sys.argv[2] == "stop":
    dog.stop()
print(dog.proc.pid if dog.proc else 0, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("stop", [False, True])
def test_the_watchdog_acts_on_the_death_of_its_process_only(tmp_path: Path, stop: bool) -> None:
    """Its process killed, the watchdog removes the stage at once and ends; stopped first (a normal
    end), it is gone and leaves the stage (which the process itself removes) alone."""
    out = tmp_path / "out"
    out.mkdir()
    (out / commit.LOCK_FILE).write_text("")
    proc = subprocess.Popen([sys.executable, "-c", WATCHED, str(out), "stop" if stop else "run"], env=_env(tmp_path),
                            stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    assert proc.stdout is not None
    dog = int(proc.stdout.readline())
    assert (dog == 0) == stop
    # A watchdog just started may not have exec'd yet (its /proc cmdline is still its parent's): wait for it.
    assert stop or _within(5, lambda: bool(_watchdogs(proc.pid)))
    assert not stop or _watchdogs(proc.pid) == []
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    expected = sorted([commit.LOCK_FILE, f"{safeio.TEMP_MARK}{proc.pid}-aaaaaaaa-stage"]) if stop else [commit.LOCK_FILE]
    assert _within(5, lambda: sorted(p.name for p in out.iterdir()) == expected), sorted(p.name for p in out.iterdir())
    assert _within(5, lambda: _watchdogs(proc.pid) == [])


@pytest.mark.slow
def test_a_ray_build_killed_while_its_workers_write_into_the_stage_leaves_out_as_it_was(builds: Path, tmp_path: Path) -> None:
    """engine=ray's workers write their Parquet files into the stage (and would make its folders
    again): the stage watchdog removes it until it stays gone while the reaper kills them."""
    pytest.importorskip("ray")
    out, before = _earlier(builds, tmp_path)
    temp = Path(f"/tmp/kill-{os.getpid()}")  # short: Ray's socket paths must fit in 107 bytes
    temp.mkdir(exist_ok=True)
    try:
        args = ("--template", "alpaca", "--on-error", "skip", "--no-cache", "--engine", "ray", "--num-workers", "2")
        proc = _start(temp, builds / "new.jsonl", out, args=args)
        writing = lambda: any(p.name.endswith("-data") for stage in _stage(out) for p in stage.iterdir())  # noqa: E731
        assert _within(300, _running(proc, writing))
        _kill(proc, group=True)
        assert _within(5, lambda: listing(out) == before), sorted(listing(out))
        assert _within(5, lambda: _watchdogs(proc.pid) == [])
    finally:
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("group", [True, False])
def test_a_ray_build_killed_while_a_worker_holds_its_shard_scratch_leaves_tmpdir_as_it_was(tmp_path: Path, group: bool) -> None:
    """Killed (the driver alone, or its process group) while a Ray worker builds a shard in its own
    scratch: the reaper kills the cluster, then sweeps the scratch whose owners it killed, so within
    5 s $TMPDIR holds nothing of ftdata's. Before: the worker's `ftdata-<pid>-*` folder stayed until
    the next ftdata run (Ray ends its workers without their exit handlers; SIGKILL runs none)."""
    pytest.importorskip("ray")
    temp = Path(f"/tmp/kill-{os.getpid()}")  # short: Ray's socket paths must fit in 107 bytes
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(4):
        _jsonl(shards / f"part-{i}.jsonl", NEW[i::4])
    try:
        args = ("--template", "alpaca", "--on-error", "skip", "--no-cache", "--engine", "ray", "--num-workers", "2")
        proc = _start(temp, shards, tmp_path / "out", args=args)  # TMPDIR is temp
        worker = lambda: any(not name.startswith(f"{safeio.SCRATCH_PREFIX}{proc.pid}-") for name in _scratch(temp))
        assert _within(300, _running(proc, worker))
        _kill(proc, group=group)
        left = lambda: sorted(name for name in os.listdir(temp) if name != "ray")  # ray: Ray's own session folder (its logs)
        assert _within(5, lambda: left() == []), left()
        assert _within(5, lambda: _watchdogs(proc.pid) == [])
    finally:
        shutil.rmtree(temp, ignore_errors=True)
