"""Faults in the middle of a build (issue 32): the lock first, OUT published whole or not at all,
a full disk as one line, nothing followed through a symbolic link, a sweep that removes only
ftdata's own scratch. Kills are injected in-process here (fast); real SIGKILLs and load are in
test_hostile_procs.py."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from test_cli import cached_tokenizers  # noqa: F401  - the fixture, re-used here
import ftdata
from ftdata.cli.app import app
from ftdata.errors import ConfigError, DiskFullError, FtdataWarning, OutputMismatch
from ftdata.run.rows import ArrowRows
from ftdata.guard import safeio
from ftdata.io.readers import read_records
from ftdata.build.api import BuildResult
from support import tokenizer

OLD = [{"instruction": f"Say {w}.", "output": f"{w.title()}!"} for w in ("hi", "bye", "yes", "no", "ok")] + [
    {"instruction": "Say nothing.", "output": ""}
]
NEW = [{"instruction": f"Count to {i}.", "output": " ".join(map(str, range(1, i + 1)))} for i in range(1, 4)] + [
    {"instruction": f"Empty {i}.", "output": ""} for i in range(2)
]
BAD = [{"instruction": f"q{i}", "output": ""} for i in range(12)]


def _jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def snapshot(folder: Path) -> dict[str, str | bytes]:
    """Every entry under `folder` but ftdata's temporary names: path -> bytes (files), 'dir', or 'link -> target'."""
    out: dict[str, str | bytes] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if rel.parts[0].startswith(safeio.TEMP_MARK):
            continue
        out[str(rel)] = f"link -> {os.readlink(path)}" if path.is_symlink() else "dir" if path.is_dir() else path.read_bytes()
    return out


def build(data: Path, out: Path, **options: object) -> BuildResult:
    return ftdata.build(str(data), out, tokenizer=tokenizer(None), template="alpaca", **options)


# --- 1. the lock first ----------------------------------------------------------------------------


def test_a_second_build_waits_for_the_lock_before_it_judges_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A live build holds the lock while a file it writes is not listed as its own yet (what a
    second build saw in issue 32): the second one waits, then finds OUT in order."""
    out = tmp_path / "out"
    out.mkdir()
    (out / safeio.OWNER_FILE).write_text(json.dumps({"written_by": "ftdata", "files": []}))
    fd = os.open(out / safeio.LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the live build
    (out / "rejects.jsonl").write_text("")  # published, not yet recorded as its own
    outcome: list[BaseException | str] = []

    def second() -> None:
        try:
            with safeio.OutputDir(out):
                outcome.append("entered")
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    waited, deadline = "", time.monotonic() + 120
    while thread.is_alive() and "waiting for another build" not in waited and time.monotonic() < deadline:
        thread.join(0.05)
        waited += capsys.readouterr().err
    assert "waiting for another build" in waited
    assert not outcome, outcome  # blocked on the lock, nothing judged
    (out / safeio.OWNER_FILE).write_text(json.dumps({"written_by": "ftdata", "files": ["rejects.jsonl"]}))
    os.close(fd)  # the live build ends
    thread.join(30)
    assert outcome == ["entered"]


def test_a_folder_ftdata_never_locked_is_refused_untouched(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds files that ftdata did not write \(notes.txt\)"):
        safeio.OutputDir(out).__enter__()
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # not even a lock file


# --- 2. published together ------------------------------------------------------------------------


def test_a_build_where_every_record_is_rejected_leaves_the_earlier_out_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(_jsonl(tmp_path / "old.jsonl", OLD), out)
    before = snapshot(out)
    result = CliRunner().invoke(app, ["build", str(_jsonl(tmp_path / "bad.jsonl", BAD)), "-o", str(out), "--template", "alpaca", "--no-cache"])
    assert result.exit_code == 1
    kept = out / ".ftdata-failed-rejects.jsonl"
    assert result.stderr.splitlines() == [
        f"error: every record was rejected (12 of 12); first: {tmp_path}/bad.jsonl:1: empty response; remove the record or "
        f"fill the response; the rejects of this build are in {kept}; {out} keeps its earlier build"
    ]
    after = snapshot(out)
    assert len(after.pop(kept.name).splitlines()) == 12  # type: ignore[union-attr]
    assert after == before
    ftdata.load(out)  # still the earlier build, consistent
    build(_jsonl(tmp_path / "new.jsonl", NEW), out)  # the next build drops the failed build's rejects
    assert not kept.exists()


class Killed(BaseException):
    """Stands for SIGKILL: nothing in ftdata catches it (a `finally` still runs, as it would not: see below)."""


def _kill_at(monkeypatch: pytest.MonkeyPatch, out: Path, n: int) -> list[int]:
    """Raise `Killed` at the `n`-th call that creates, renames or removes something inside `out`."""
    calls = [0]

    def counted(real):  # noqa: ANN001, ANN202
        def call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            if any(isinstance(a, (str, os.PathLike)) and os.fspath(a).startswith(str(out)) for a in args[:2]):
                calls[0] += 1
                if calls[0] == n:
                    raise Killed
            return real(*args, **kwargs)

        return call

    for name in ("open", "replace", "rename", "unlink", "mkdir", "rmdir"):
        monkeypatch.setattr(os, name, counted(getattr(os, name)))
    return calls


def test_a_build_killed_at_any_step_leaves_the_earlier_out_or_the_new_one_whole(tmp_path: Path) -> None:
    """Killed before its commit, a build leaves OUT byte for byte as it was; killed after, the
    next reader (`ftdata.load`) finishes publishing it and finds every file build.json lists.
    (A `finally` runs on `Killed`, not on SIGKILL: it removes only the hidden uncommitted stage,
    which the snapshot leaves out anyway.)"""
    old, new = _jsonl(tmp_path / "old.jsonl", OLD), _jsonl(tmp_path / "new.jsonl", NEW)
    reference = tmp_path / "reference"
    build(new, reference, output_format="jsonl")
    expected = snapshot(reference)
    outcomes = []
    for n in range(1, 200):
        out = tmp_path / f"out{n}"
        build(old, out, output_format="jsonl")
        before = snapshot(out)
        with pytest.MonkeyPatch.context() as patch:
            calls = _kill_at(patch, out, n)
            try:
                build(new, out, output_format="jsonl")
            except Killed:
                pass
        if calls[0] < n:  # the build ran to the end
            break
        if snapshot(out) == before:
            outcomes.append("old")
            continue
        loaded = ftdata.load(out)  # finishes publishing a committed build
        after = snapshot(out)
        assert {k: v for k, v in after.items() if k != "build.json"} == {k: v for k, v in expected.items() if k != "build.json"}
        assert (loaded.report.records, loaded.report.n_rejected) == (5, 2)
        outcomes.append("new")
        shutil.rmtree(out)
    assert n > 5 and outcomes.count("old") >= 3 and outcomes.count("new") >= 2, outcomes
    assert outcomes == sorted(outcomes, reverse=True)  # every kill before the commit leaves the old build, every one after the new


def test_load_checks_build_json_against_the_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(_jsonl(tmp_path / "old.jsonl", OLD), out, output_format="jsonl")
    rejects = out / "rejects.jsonl"
    good = rejects.read_text()
    rejects.write_text(good * 3)  # what issue 32 found: a rejects file that is not the build's
    with pytest.raises(OutputMismatch, match=rf"^{out}: rejects.jsonl holds \d+ bytes, build.json records \d+ bytes; the folder was changed after ftdata built it: build again$"):
        ftdata.load(out)
    rejects.write_text(good)
    manifest = json.loads((out / "build.json").read_text())
    manifest["counts"]["rejected"] = {}
    (out / "build.json").write_text(json.dumps(manifest))
    with pytest.raises(OutputMismatch, match=r"rejects.jsonl holds 1 lines, build.json counts 0 rejected, cut or filtered records"):
        ftdata.load(out)
    manifest["counts"]["rejected"] = {"empty_response": 1}
    manifest["counts"]["splits"] = {"train": 9}
    (out / "build.json").write_text(json.dumps(manifest))
    with pytest.raises(OutputMismatch, match=r"the dataset holds train 5 rows, build.json counts train 9 rows"):
        ftdata.load(out)


def test_a_build_stopped_while_publishing_is_finished_by_the_next_reader(tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(_jsonl(tmp_path / "old.jsonl", OLD), out, output_format="jsonl")
    with pytest.MonkeyPatch.context() as patch:
        real = safeio._publish
        patch.setattr(safeio, "_publish", lambda folder, stage: (_ for _ in ()).throw(Killed()))  # dies at the commit
        with pytest.raises(Killed):
            build(_jsonl(tmp_path / "new.jsonl", NEW), out, output_format="jsonl")
        assert safeio._committed(out)
        patch.setattr(safeio, "_publish", real)
    assert ftdata.load(out).report.records == 5  # the new build, published by the load
    assert not safeio._committed(out) and not list(out.glob(f"{safeio.TEMP_MARK}*"))


def test_a_load_during_a_publish_waits_for_it_and_reads_the_new_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    build(_jsonl(tmp_path / "old.jsonl", OLD), out, output_format="jsonl")
    aside, go = threading.Event(), threading.Event()
    real = safeio._publish

    def paused(folder: Path, stage: Path) -> None:  # the publish, stopped after its first step
        os.replace(folder / "build.json", stage / ".ftdata-old" / "build.json")
        aside.set()
        go.wait(30)
        real(folder, stage)

    monkeypatch.setattr(safeio, "_publish", paused)
    builder = threading.Thread(target=build, args=(_jsonl(tmp_path / "new.jsonl", NEW), out), kwargs={"output_format": "jsonl"})
    builder.start()
    assert aside.wait(60) and not (out / "build.json").exists()
    loaded: list[BuildResult] = []
    reader = threading.Thread(target=lambda: loaded.append(ftdata.load(out)))
    reader.start()
    reader.join(0.5)
    assert reader.is_alive()  # waits for the publish, never reads half of it
    go.set()
    builder.join(60)
    reader.join(60)
    assert [r.report.records for r in loaded] == [5]


# --- 3. disk full ---------------------------------------------------------------------------------


def _no_space(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_scratch_disk_is_one_error_and_the_scratch_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(ArrowRows, "write", _no_space)
    with pytest.raises(DiskFullError, match=rf"^no space left in {tmp_path} \(scratch space, \$TMPDIR\): the build needs more than [\d.]+ \w+ there, [\d.]+ \w+ is free; free space there or set TMPDIR to a folder with room$"):
        ftdata.prepare(str(_jsonl(tmp_path / "d.jsonl", OLD)), template="alpaca")
    assert not list(tmp_path.glob("ftdata-*"))


def test_a_full_output_folder_is_one_error_and_out_is_left_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    build(_jsonl(tmp_path / "old.jsonl", OLD), out)
    before = snapshot(out)
    monkeypatch.setattr("datasets.Dataset.save_to_disk", _no_space)
    result = CliRunner().invoke(app, ["build", str(_jsonl(tmp_path / "new.jsonl", NEW)), "-o", str(out), "--template", "alpaca", "--no-cache"])
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: no space left in {out} (the output folder): the build needs "), line
    assert line.endswith("free space there or give another output folder (this one is left as it was)")
    assert snapshot(out) == before and not list(out.glob(f"{safeio.TEMP_MARK}*"))


def test_a_full_cache_never_fails_the_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    real = shutil.copyfile
    monkeypatch.setattr(shutil, "copyfile", lambda src, dst: _no_space() if str(dst).startswith(str(cache)) else real(src, dst))
    with pytest.warns(FtdataWarning, match=rf"^the build cache {cache} is full \(this build needs about .+ there, .+ is free\): built without caching it; free space there, or build with cache_dir=None$"):
        result = ftdata.prepare(str(_jsonl(tmp_path / "d.jsonl", OLD)), template="alpaca", cache_dir=str(cache))
    assert len(result.dataset) == 5
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == []


def _tmpfs(path: Path, size: str) -> Path:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode}): the disk-full cases need one")
    return path


@pytest.fixture
def small_disk(tmp_path: Path):  # noqa: ANN201
    """A 256 KiB tmpfs at tmp_path/small (skipped where mounting is not allowed)."""
    disk = _tmpfs(tmp_path / "small", "256k")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)  # lazily: a failed test may leave a file open there


ROWS = [{"instruction": f"Say {i} and say why.", "output": f"Number {i} is the answer, said in words."} for i in range(3000)]


def test_a_real_full_disk_in_scratch_out_and_cache(tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _jsonl(tmp_path / "d.jsonl", ROWS)
    runner = CliRunner()
    # OUT on the small disk
    result = runner.invoke(app, ["build", str(data), "-o", str(small_disk / "out"), "--template", "alpaca", "--no-cache"])
    assert result.exit_code == 1 and result.stderr.startswith(f"error: no space left in {small_disk / 'out'} (the output folder)"), result.stderr
    assert sorted(p.name for p in (small_disk / "out").iterdir()) == [".ftdata-output.json", ".ftdata.lock"]
    # the scratch rows file on the small disk
    monkeypatch.setattr(tempfile, "tempdir", str(small_disk))
    result = runner.invoke(app, ["build", str(data), "-o", str(tmp_path / "out"), "--template", "alpaca", "--no-cache"])
    assert result.exit_code == 1 and result.stderr.startswith(f"error: no space left in {small_disk} (scratch space, $TMPDIR)"), result.stderr
    assert not list(small_disk.glob("ftdata-*"))
    monkeypatch.undo()
    # the cache on the small disk: built without it, and said
    cache = small_disk / "cache"
    result = runner.invoke(app, ["build", str(data), "-o", str(tmp_path / "out2"), "--template", "alpaca", "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    assert f"warning: the build cache {cache} is full" in result.stderr
    assert ftdata.load(tmp_path / "out2").report.records == 3000
    # a disk full before the build writes anything: still one line, with a rough need
    shutil.rmtree(cache)
    shutil.rmtree(small_disk / "out")
    fd = os.open(small_disk / "fill", os.O_WRONLY | os.O_CREAT)
    with pytest.raises(OSError):
        while True:
            os.write(fd, b"\0" * 4096)
    os.close(fd)
    result = runner.invoke(app, ["build", str(data), "-o", str(small_disk / "out"), "--template", "alpaca", "--no-cache"])
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: no space left in {small_disk / 'out'} (the output folder): the build needs about ")


def _fifo_of(path: Path, rows: list[dict[str, str]]) -> Path:
    """A FIFO at `path` that a thread fills with `rows` as JSONL (and gives up if no one reads to the end)."""
    os.mkfifo(path)

    def feed() -> None:
        try:
            with open(path, "w") as fh:
                fh.write("".join(json.dumps(r) + "\n" for r in rows))
        except BrokenPipeError:
            pass

    threading.Thread(target=feed, daemon=True).start()
    return path


def test_a_pipe_copied_into_full_scratch_is_one_line_naming_scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    real_open = Path.open

    def opened(path: Path, mode: str = "r", *args: object, **kwargs: object):  # noqa: ANN202 - a file object
        fh = real_open(path, mode, *args, **kwargs)
        if path.name == "stream" and "w" in mode:
            fh.write = _no_space  # type: ignore[method-assign]
        return fh

    monkeypatch.setattr(Path, "open", opened)
    result = CliRunner().invoke(app, ["build", str(_fifo_of(tmp_path / "63", ROWS)), "-o", str(tmp_path / "out"), "--template", "alpaca", "--no-cache"])
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1, result.output
    assert re.fullmatch(rf"error: no space left in {scratch} \(scratch space, \$TMPDIR\): the build needs more than [\d.]+ \w+ "
                        r"there, [\d.]+ \w+ is free; free space there or set TMPDIR to a folder with room\n", result.stderr)  # fmt: skip
    assert not list(scratch.glob("ftdata-*"))


def test_a_pipe_copied_into_a_really_full_scratch_is_one_line(tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(small_disk))
    with pytest.raises(DiskFullError, match=rf"^no space left in {small_disk} \(scratch space, \$TMPDIR\): the build needs more than"):
        list(read_records(str(_fifo_of(tmp_path / "63", ROWS))))
    assert not list(small_disk.glob("ftdata-*"))


def _to_uri(data: Path, uri: str) -> BuildResult:
    """A build into a URI OUT as engine=ray's driver writes it (a recipe's mixture: shards, rejects,
    build.json into `store.StoreOut`), run here on the local engine: no Ray cluster needed."""
    from ftdata.options import BuildOptions
    from ftdata.build import publish

    tok = tokenizer(None)
    facts = publish.Facts("smollm2", config=None)
    opts = BuildOptions.from_mapping({"template": "alpaca"})
    return publish._to_store(str(data), uri, tok, opts, fmt="parquet", sharded=False, facts=facts, progress=None)


def test_a_full_uri_output_is_one_line_naming_it_and_what_it_wrote_is_deleted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftdata.io import store

    out, data = tmp_path / "out", _jsonl(tmp_path / "d.jsonl", OLD)
    assert _to_uri(data, f"file://{tmp_path}/ok").report.records == 6  # the path works
    real = store.copy
    monkeypatch.setattr(store, "copy", lambda src, dst: _no_space() if dst[1].startswith(str(out)) else real(src, dst))
    with pytest.raises(DiskFullError) as raised:
        _to_uri(data, f"file://{out}")
    assert re.fullmatch(
        rf"no space left in file://{out} \(the output\): the build needs (about|more than) [\d.]+ \w+ there, [\d.]+ \w+ is free; "
        r"free space there or give another output \(what this build wrote there is deleted\)", str(raised.value)
    ), raised.value  # fmt: skip
    assert raised.value.folder == f"file://{out}" and not out.exists()  # a new prefix: removed again


def test_a_really_full_uri_output_is_one_line(tmp_path: Path, small_disk: Path) -> None:
    with open(small_disk / "fill", "wb") as fh:  # leave 8 KiB: less than the shards need
        fh.write(b"\0" * (shutil.disk_usage(small_disk).free - 8192))
    with pytest.raises(DiskFullError, match=rf"^no space left in file://{small_disk}/out \(the output\): the build needs "):
        _to_uri(_jsonl(tmp_path / "d.jsonl", ROWS), f"file://{small_disk}/out")
    assert not (small_disk / "out").exists()


def test_a_failed_build_into_a_new_uri_prefix_leaves_nothing_behind(tmp_path: Path) -> None:
    """Every record rejected: the new prefix, and the folders above it that the build made, are
    removed again (before: an empty prefix folder stayed); an existing empty prefix stays."""
    bad = _jsonl(tmp_path / "bad.jsonl", BAD)
    with pytest.raises(ftdata.FtdataError, match=r"^every record was rejected \(12 of 12\)"):
        _to_uri(bad, f"file://{tmp_path}/made/above/new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ftdata.FtdataError, match=r"^every record was rejected"):
        _to_uri(bad, f"file://{tmp_path}/empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "empty"] and not list((tmp_path / "empty").iterdir())


@pytest.mark.slow
def test_a_failed_ray_build_into_a_new_uri_prefix_leaves_nothing_behind(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    bad = _jsonl(tmp_path / "bad.jsonl", BAD)
    temp = Path(f"/tmp/uri-{os.getpid()}")  # short: Ray's socket paths must fit in 107 bytes
    temp.mkdir(exist_ok=True)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ftdata", "build", str(bad), "-o", f"file://{tmp_path}/runs/new", "--template", "alpaca",
             "--engine", "ray", "--num-workers", "1"],
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "TMPDIR": str(temp)},
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert done.returncode == 1 and "\nerror: every record was rejected (12 of 12)" in f"\n{done.stderr}", done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


def test_a_ray_shards_full_scratch_is_one_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ray worker's write path (`_shard_rows`, called here as the worker calls it: no cluster)
    with no space in its scratch: the shard's error is a DiskFullError naming $TMPDIR, which the
    worker saves for the driver to raise (an OSError would reach the driver wrapped by Ray,
    attributed to OUT)."""
    pytest.importorskip("ray")
    from ftdata.io import store
    from ftdata.options import BuildOptions
    from ftdata.build import shards

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setattr(ArrowRows, "write", _no_space)
    job = shards._ShardJob(options=BuildOptions.from_mapping({"template": "alpaca"}), tokenizer=tokenizer(None), sidecar=str(tmp_path / "side"))
    with pytest.raises(DiskFullError, match=rf"^no space left in {scratch} \(scratch space, \$TMPDIR\): the build needs "):
        shards._shard_rows(job, shards._stage("build", job), 0, str(_jsonl(tmp_path / "d.jsonl", OLD)), store.filesystem(str(tmp_path / "side")))
    assert [p.name for p in scratch.glob("ftdata-*")] == []  # the shard's scratch is dropped, failed or not


# --- 5. symbolic links and the sweep --------------------------------------------------------------


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_never_made(tmp_path: Path) -> None:
    out, victim = tmp_path / "out", tmp_path / "elsewhere" / "victim"
    out.mkdir()
    victim.parent.mkdir()
    (out / safeio.LOCK_FILE).symlink_to(victim)
    with pytest.raises(ConfigError, match=rf"^{out}/.ftdata.lock is a symbolic link; ftdata never follows a link for a file it creates or locks: remove it$"):
        build(_jsonl(tmp_path / "d.jsonl", OLD), out)
    assert not victim.exists() and not os.path.lexists(victim)


def test_temporary_files_are_never_opened_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    planted = tmp_path / "planted"
    planted.symlink_to(victim)
    with pytest.raises(FileExistsError):
        safeio.create(planted)
    assert victim.read_text() == "keep"


def test_an_owner_file_naming_paths_outside_out_deletes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(_jsonl(tmp_path / "old.jsonl", OLD), out)
    precious = tmp_path / "precious.txt"
    precious.write_text("keep")
    (out / safeio.OWNER_FILE).write_text(json.dumps({"written_by": "ftdata", "files": ["../precious.txt", "build.json", "dataset", "rejects.jsonl"]}))
    with pytest.raises(ConfigError, match=r"'../precious.txt' is not a file name ftdata writes; the output folder's .ftdata-output.json was changed"):
        build(_jsonl(tmp_path / "new.jsonl", NEW), out, output_format="jsonl")  # would drop dataset/, an earlier build's
    assert precious.read_text() == "keep"


def test_the_sweep_never_removes_a_users_folder(tmp_path: Path) -> None:
    project = tmp_path / "ftdata-myproject"  # a user's folder that happens to look like scratch (issue 32)
    project.mkdir()
    (project / ".lock").write_text("")
    (project / "work.txt").write_text("mine")
    lookalike = tmp_path / "ftdata-123-abcdefgh"  # ftdata's naming and an old-style lock, without ftdata's mark
    lookalike.mkdir()
    (lookalike / ".lock").write_text("")
    assert safeio.clean_stale_scratch(tmp_path) == 0
    assert (project / "work.txt").read_text() == "mine" and (lookalike / ".lock").exists()


def test_the_sweep_removes_a_dead_runs_scratch_and_follows_no_link(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; from ftdata.guard import safeio; print(safeio.scratch_dir()); os._exit(0)"],
        env={**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    dead = Path(done.stdout.strip())  # a run that died without cleaning up (os._exit: no atexit)
    elsewhere = tmp_path / "target"
    elsewhere.mkdir()
    (elsewhere / safeio.SCRATCH_MARK).write_bytes((dead / safeio.SCRATCH_MARK).read_bytes())  # marked, but reached by a link
    (tmp_path / "ftdata-124-abcdefgh").symlink_to(elsewhere)
    assert safeio.clean_stale_scratch(tmp_path) == 1
    assert not dead.exists()
    assert (elsewhere / safeio.SCRATCH_MARK).exists() and (tmp_path / "ftdata-124-abcdefgh").is_symlink()


def test_a_process_sweeps_at_its_first_scratch_folder_and_then_at_most_every_minute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead run's scratch is swept by the next scratch folder a running process makes once `SWEEP_EVERY_S` has
    passed, not before each one: a process that made a thousand folders no longer opens a thousand marks a build."""
    from ftdata.guard import scratch

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    monkeypatch.setattr(scratch, "_SWEPT", None)
    clock = [1000.0]
    monkeypatch.setattr(scratch.time, "monotonic", lambda: clock[0])
    done = subprocess.run(
        [sys.executable, "-c", "import os; from ftdata.guard import safeio; print(safeio.scratch_dir()); os._exit(0)"],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    dead = Path(done.stdout.strip())
    made = [scratch.scratch_dir()]  # this process's first: swept
    assert not dead.exists()
    shutil.copytree(made[0], dead)  # another dead run's scratch (its mark's lock held by nobody)
    clock[0] += scratch.SWEEP_EVERY_S - 1
    made.append(scratch.scratch_dir())
    assert dead.exists()  # within the minute: not swept
    clock[0] += 1
    made.append(scratch.scratch_dir())
    assert not dead.exists() and all(p.is_dir() for p in made)  # a minute on: swept, and this process's own kept
    for path in made:
        scratch.drop_scratch(path)
