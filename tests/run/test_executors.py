"""engine=processes gives what engine=local gives: the same rows, labels, rejects file, report and errors.

Every test forces the pool with `IN_PROCESS_BELOW = 0` (a real input this small would stay in
process) and a small batch size, so the records cross several workers and batches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from support import DATASETS
from ftdata import prepare
from ftdata.run import executors
from ftdata.cli.app import app
from ftdata.errors import ConfigError, FtdataError, RecordError
from ftdata.run.executors import LocalExecutor, ProcessExecutor
from ftdata.options import BuildOptions

ALPACA = DATASETS / "alpaca" / "llamafactory_alpaca_en_demo.json"


@pytest.fixture(autouse=True)
def always_a_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executors, "IN_PROCESS_BELOW", 0)


def both_engines(source: Any, tmp_path: Path, **options: Any) -> dict[str, tuple[dict, str, dict]]:
    """{engine: (rows, rejects file text, report)} of the same build under each engine."""
    out = {}
    for engine in ("local", "processes"):
        rejects = tmp_path / f"{engine}.jsonl"
        result = prepare(source, engine=engine, num_workers=2, rejects_path=str(rejects), **options)
        report = result.report.to_dict()
        for volatile in ("seconds", "rejects_path"):
            report.pop(volatile)
        out[engine] = (result.dataset.to_dict(), rejects.read_text(encoding="utf-8"), report)
    return out


@pytest.mark.parametrize("packing", [False, True])
def test_processes_equal_local_on_a_real_file(tmp_path: Path, smol, packing: bool) -> None:
    runs = both_engines(
        ALPACA, tmp_path, tokenizer=smol, template="alpaca", max_length=192, limit=300, batch_size=32, packing=packing
    )
    assert runs["processes"] == runs["local"]
    rows, rejects, report = runs["local"]
    assert report["records"] == 300 and sum(report["cut"].values()) > 0  # cut records crossed the workers too
    assert len(rejects.splitlines()) == sum(report["cut"].values()) + sum(report["rejected"].values())
    assert ("position_ids" in rows) == packing


RECORDS = [
    {"instruction": "Say hi.", "output": "Hi."},
    {"instruction": "skip me", "output": "never built"},  # filtered
    {"instruction": "Name a colour.", "output": ""},  # rejected: empty response
    {"instruction": "Repeat: " + "abc " * 40, "output": "ok"},  # cut: prompt trimmed to fit
    {"question": "2+2?"},  # malformed: no answer (skipped with on_error=skip)
    {"instruction": "Count to three.", "output": "1, 2, 3."},
    {"instruction": "Last one.", "output": "Done."},
]


@pytest.mark.parametrize("packing", [False, True])
def test_processes_equal_local_on_rejected_cut_and_filtered_records(tmp_path: Path, char_tok, packing: bool) -> None:
    runs = both_engines(
        RECORDS, tmp_path, tokenizer=char_tok, template="alpaca", max_length=200, batch_size=2, packing=packing,
        on_error="skip", filter="instruction is not defined or instruction != 'skip me'",
    )  # fmt: skip
    assert runs["processes"] == runs["local"]
    rows, rejects, report = runs["local"]
    assert [(r["location"], r["stage"], r["kept"]) for r in map(json.loads, rejects.splitlines())] == [
        ("<records>[1]", "filter", False), ("<records>[2]", "format", False),  # batch 1: records 0, 2
        ("<records>[3]", "truncate", True), ("<records>[4]", "format", False),  # batch 2: records 3, 4
    ]  # fmt: skip
    assert (report["records"], report["sequences"], report["filtered"]) == (7, 4, 1)
    assert len(rows["input_ids"]) == 4 and ("position_ids" in rows) == packing  # ~150-200 tokens each: one per row


def test_a_bad_record_raises_the_same_error_under_both_engines(tmp_path: Path, char_tok) -> None:
    # Line 3 is malformed; line 6 is broken JSON, read (by the pool's read-ahead) before line 3's
    # batch comes back: the error is still line 3's, as in a local run.
    lines = [json.dumps(r) for r in (RECORDS[0], RECORDS[5], {"question": "2+2?"}, RECORDS[6], RECORDS[0])] + ["{oops"]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    errors = {}
    for engine in ("local", "processes"):
        with pytest.raises(RecordError) as caught:
            prepare(data, tokenizer=char_tok, template="alpaca", batch_size=2, engine=engine, num_workers=2)
        errors[engine] = (type(caught.value), str(caught.value), caught.value.location, caught.value.field)
    assert errors["processes"] == errors["local"]
    assert errors["local"][1].startswith(f"{data}:3: ")


def test_cli_prints_the_worker_error_as_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text(json.dumps([RECORDS[0], RECORDS[5], {"question": "2+2?"}]), encoding="utf-8")
    runner = CliRunner()
    outputs = {}
    for engine in ("local", "processes"):
        args = ["build", str(data), "-o", str(tmp_path / engine), "--template", "alpaca", "--batch-size", "1"]
        result = runner.invoke(app, [*args, "--engine", engine, "--num-workers", "2", "--no-cache"])
        outputs[engine] = (result.exit_code, result.stderr)
    assert outputs["processes"] == outputs["local"]
    exit_code, stderr = outputs["local"]
    assert exit_code == 4 and stderr.count("\n") == 1 and f"{data}[2]" in stderr and "Traceback" not in stderr


def test_engine_typo_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^engine must be one of local, processes, ray; got engine='proceses'$"):
        BuildOptions(engine="proceses")
    with pytest.raises(ConfigError, match=r"^num_workers must be an integer >= 1, got num_workers=0$"):
        BuildOptions(engine="processes", num_workers=0)
    result = CliRunner().invoke(app, ["stats", str(ALPACA), "--engine", "proceses"])
    assert result.exit_code == 2
    assert result.stderr.strip().endswith("--engine must be one of local, processes, ray; got --engine proceses")


def _pid(spec: Any, batch: list[int]) -> tuple[int, int]:
    return os.getpid(), sum(batch) + spec


def test_small_inputs_stay_in_process_and_results_keep_batch_order() -> None:
    batches = [[i, i] for i in range(6)]
    local = list(LocalExecutor().map(_pid, 100, batches))
    assert [s for _, s in local] == [100, 102, 104, 106, 108, 110]
    stays = list(ProcessExecutor(2, in_process_below=13).map(_pid, 100, batches))
    assert stays == local  # 12 records < 13: no pool, this process
    pooled = list(ProcessExecutor(2, in_process_below=12).map(_pid, 100, batches))
    assert [s for _, s in pooled] == [s for _, s in local]
    assert os.getpid() not in {pid for pid, _ in pooled}


def _text_pid(spec: Any, batch: Any) -> tuple[int, int]:
    return os.getpid(), batch.chars


def test_a_few_long_records_go_to_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three records are far below the record bound, but their text is seconds of work: the pool takes them."""
    from ftdata.run.loop import Batch

    monkeypatch.setattr(executors, "IN_PROCESS_CHARS", 1000)
    session = {"messages": [{"role": "user", "content": "x" * 300}, {"role": "assistant", "content": "y" * 100}]}
    batches = [Batch([(f"s.jsonl:{n}", session)], read=1) for n in (1, 2, 3)]
    assert [b.chars for b in batches] == [413, 413, 413]  # its strings: the contents and the roles
    pooled = list(ProcessExecutor(2, in_process_below=5000).map(_text_pid, 0, batches))
    assert [chars for _, chars in pooled] == [413, 413, 413]
    assert os.getpid() not in {pid for pid, _ in pooled}  # 1,239 characters >= 1,000: workers
    stays = list(ProcessExecutor(2, in_process_below=5000).map(_text_pid, 0, batches[:2]))
    assert {pid for pid, _ in stays} == {os.getpid()}  # 826 < 1,000 and 2 records < 5,000: this process


def _dies(spec: Any, batch: list[int]) -> int:
    os._exit(9)  # a worker killed mid-batch (the kernel's OOM killer)


def test_a_worker_that_dies_is_a_one_line_error_and_its_spec_file_is_removed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(FtdataError, match=r"^a worker process died \(killed for memory\?\); lower num_workers"):
        list(ProcessExecutor(2, in_process_below=0).map(_dies, 0, [[1], [2], [3]]))
    assert not list(tmp_path.glob("ftdata-*"))  # the scratch folder that held the spec


SCRIPT = """
import sys
import ftdata
from ftdata.run import executors
executors.IN_PROCESS_BELOW = 0  # the pool even for a small input
{call}
"""
BUILD = "ftdata.build(sys.argv[1], sys.argv[2], engine='processes', num_workers=2, batch_size=16, cache=False)"


@pytest.mark.parametrize("guarded", [False, True])
def test_a_script_without_the_main_guard_is_told_so_not_left_hanging(tmp_path: Path, guarded: bool) -> None:
    """Spawned workers run the main script again: at its top level, the build would start again in each.
    Each refuses it, and the build says why in one line. Before, it hung two ways: on OUT's lock, which
    the workers' builds waited for, and on the spec it was writing into the spawn pipe of a worker that
    had died (megabytes: the tokenizer).

    The guarded build runs under a TMPDIR too long for the fork server's socket (over 75 bytes): its workers are
    spawned (before: `OSError: AF_UNIX path too long`, and a traceback)."""
    script = tmp_path / "prep.py"
    call = f"if __name__ == '__main__':\n    {BUILD}" if guarded else BUILD
    script.write_text(SCRIPT.format(call=call), encoding="utf-8")
    temp = tmp_path / ("t" * 80 if guarded else "tmp")
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, str(script), str(ALPACA), str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=240,
    )  # fmt: skip
    assert not list(temp.glob("ftdata-*"))
    if guarded:
        assert done.returncode == 0, done.stderr[-2000:]
        assert (tmp_path / "out" / "build.json").is_file()
        return
    last = done.stderr.strip().splitlines()[-1]
    guard = 'put the build under `if __name__ == "__main__":`, or use engine=local'
    assert done.returncode == 1 and last == (
        f"ftdata.errors.ConfigError: a worker process died: engine=processes starts workers that run {script} again, "
        f"and its top level starts a build; {guard}"
    )  # fmt: skip
    # Each worker refused the build it was started into, before reading or locking OUT (before: it waited
    # for OUT's lock, held by the build waiting for it). The workers print their tracebacks at once, and unbuffered
    # (PYTHONUNBUFFERED) the last line goes out as four writes, the type, ": ", the message and "\n": another
    # worker's lines can fall between them. The message is one write (atomic on a pipe, under 4,096 bytes).
    refused = f"a worker process started with spawn runs {script} again, and its top level starts a build; {guard}"
    assert refused in done.stderr and "ConfigError" in done.stderr
    assert not (tmp_path / "out" / "build.json").exists()


def _where(spec: Any, batch: list[int]) -> tuple[str | None, str, int]:
    return os.environ.get("FTDATA_TEST_MARK"), os.getcwd(), os.getppid()


def test_workers_see_the_environment_and_folder_of_their_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A fork server started by an earlier build holds that build's environment and folder: each build's workers
    get their own build's. On Linux both builds' workers come from that one server (started once, not by this
    process's builds each time)."""
    parents = set()
    for k, mark in enumerate(("first", "second")):
        folder = tmp_path / mark
        folder.mkdir()
        monkeypatch.setenv("FTDATA_TEST_MARK", mark)
        monkeypatch.chdir(folder)
        seen = set(ProcessExecutor(2, in_process_below=0).map(_where, k, [[1], [2], [3], [4]]))
        assert {(m, f) for m, f, _ in seen} == {(mark, str(folder))}
        parents |= {p for _, _, p in seen}
    if sys.platform.startswith("linux"):
        assert len(parents) == 1 and parents != {os.getpid()}
    else:
        assert parents == {os.getpid()}


def _late_first(spec: Any, batch: list[int]) -> tuple[str, int]:
    time.sleep(0.02 * (5 - batch[0]))  # the later batches finish first
    return threading.current_thread().name, batch[0] ** 2 + spec


def test_threads_keep_batch_order_and_a_read_error_comes_after_the_batches_before_it() -> None:
    def batches():
        for i in range(5):
            yield [i]
        raise RecordError("line 6 is not JSON")

    got = []
    with pytest.raises(RecordError, match="line 6 is not JSON"):
        for item in LocalExecutor(threads=3).map(_late_first, 1, batches()):
            got.append(item)
    assert [value for _, value in got] == [1, 2, 5, 10, 17]
    assert all(name.startswith("ftdata") for name, _ in got)  # on the pool's threads, not this one


def test_threads_run_later_batches_while_the_oldest_is_still_running() -> None:
    """Two batches per thread are read ahead: a slow first batch does not leave the other thread idle."""
    third_done = threading.Event()

    def work(spec: Any, batch: list[int]) -> bool:
        if batch[0] == 0:
            return third_done.wait(timeout=120)  # batches 1-3 all run on the other thread meanwhile
        if batch[0] == 3:
            third_done.set()
        return True

    assert list(LocalExecutor(threads=2).map(work, None, [[i] for i in range(6)])) == [True] * 6


def _bad_batch(spec: Any, batch: list[int]) -> int:
    if batch[0] == 2:
        raise RecordError("record 2: no response", field="output")
    return batch[0]


def test_a_threads_error_is_raised_as_itself_after_the_batches_before_it() -> None:
    got = []
    with pytest.raises(RecordError, match="record 2: no response") as raised:
        for item in LocalExecutor(threads=3).map(_bad_batch, None, [[i] for i in range(5)]):
            got.append(item)
    assert got == [0, 1] and raised.value.field == "output"


def test_threads_run_the_tokenizer_single_threaded_and_restore_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    seen = list(LocalExecutor(threads=2).map(lambda spec, batch: os.environ["TOKENIZERS_PARALLELISM"], None, [[1], [2]]))
    assert seen == ["false", "false"]
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"


@pytest.fixture
def unfrozen_heap(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The heap of a caller that froze nothing (the suite freezes what collection made alive: conftest)."""
    import gc

    gc.unfreeze()
    monkeypatch.setattr(executors, "_frozen_seen", None)  # an earlier build's finding that it was frozen
    yield
    gc.collect()
    gc.freeze()


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_leave_the_heap_to_the_garbage_collector_again_after_the_build(unfrozen_heap: None, threads: int) -> None:
    import gc

    before = gc.get_threshold()
    seen = list(LocalExecutor(threads=threads).map(lambda spec, batch: (gc.get_freeze_count() > 0, gc.get_threshold()), None, [[1], [2]]))
    # Full collections skipped what was alive before the build; young ones came every 50,000 allocations.
    assert seen == [(True, (executors.YOUNG_COLLECTION_EVERY, *before[1:]))] * 2
    assert gc.get_freeze_count() == 0 and gc.isenabled() and gc.get_threshold() == before


def _collector_calls(monkeypatch: pytest.MonkeyPatch, frozen: list[int]) -> list[str]:
    """The calls builds make to the collector's freezing, with `frozen[0]` objects frozen by the caller."""
    import gc

    calls: list[str] = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(gc, "unfreeze", lambda: calls.append("unfreeze"))
    monkeypatch.setattr(gc, "get_freeze_count", lambda: calls.append("count") or frozen[0])
    monkeypatch.setattr(executors, "_frozen_seen", None)
    return calls


def test_a_callers_frozen_heap_is_left_as_the_caller_froze_it_and_asked_about_once_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither frozen again nor unfrozen by the build. (What ftdata calls, not the frozen count: a frozen object that
    another thread frees meanwhile leaves the count, whatever the build does.) Asking walks every frozen object, so a
    heap found frozen is taken as frozen for `FROZEN_CHECK_EVERY_S`; one found not frozen is asked about each time."""
    frozen, clock = [1000], [500.0]
    calls = _collector_calls(monkeypatch, frozen)
    monkeypatch.setattr(executors.time, "monotonic", lambda: clock[0])
    for _ in range(3):
        list(LocalExecutor(threads=2).map(lambda spec, batch: None, None, [[1], [2]]))
    assert calls == ["count"]  # asked once; never frozen or unfrozen
    frozen[0], clock[0] = 0, clock[0] + executors.FROZEN_CHECK_EVERY_S - 1  # the caller unfroze it
    list(LocalExecutor(threads=2).map(lambda spec, batch: None, None, [[1], [2]]))
    assert calls == ["count"]  # within the minute: still taken as frozen (the build ran unfrozen)
    clock[0] += 1
    for _ in range(2):
        list(LocalExecutor(threads=2).map(lambda spec, batch: None, None, [[1], [2]]))
    assert calls == ["count"] + ["count", "freeze", "unfreeze"] * 2  # asked again; not frozen: asked each build


def _two_builds_at_once(read: Callable[[], Any], meanwhile: Callable[[], None]) -> list[list[Any]]:
    """Two builds whose first batches meet (both running at once): `meanwhile()` is called then; each batch returns
    `read()`, after both are released."""
    started, release = threading.Barrier(3), threading.Event()

    def build(spec: Any, batch: list[int]) -> Any:
        if batch == [0]:
            started.wait(timeout=10)
            release.wait(timeout=10)
        return read()

    results: list[list[Any]] = []
    builds = [
        threading.Thread(target=lambda: results.append(list(LocalExecutor(threads=2).map(build, None, [[0], [1]]))))
        for _ in range(2)
    ]  # fmt: skip
    for thread in builds:
        thread.start()
    try:
        started.wait(timeout=10)
        meanwhile()
    finally:
        release.set()
        for thread in builds:
            thread.join(timeout=10)
    return results


def test_builds_at_once_share_one_freeze_and_the_last_restores_the_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    calls = _collector_calls(monkeypatch, [0])
    before = gc.get_threshold()

    def meanwhile() -> None:
        assert calls == ["count", "freeze"]  # the second build found the first's freeze: not asked, not frozen again

    results = _two_builds_at_once(gc.get_threshold, meanwhile)
    assert results == [[(executors.YOUNG_COLLECTION_EVERY, *before[1:])] * 2] * 2
    assert calls == ["count", "freeze", "unfreeze"] and gc.get_threshold() == before  # once, when the last ended


def test_one_batch_runs_in_the_callers_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing to overlap: no pool (the collector is quieted all the same). A read error after the batch comes
    after it."""
    calls = _collector_calls(monkeypatch, [0])
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    here = threading.current_thread().name
    one = lambda spec, batch: (threading.current_thread().name, os.environ["TOKENIZERS_PARALLELISM"], batch[0] + spec)  # noqa: E731

    assert list(LocalExecutor(threads=2).map(one, 10, [[1]])) == [(here, "false", 11)]
    assert calls == ["count", "freeze", "unfreeze"]

    def then_bad():
        yield [1]
        raise RecordError("line 2 is not JSON")

    got = []
    with pytest.raises(RecordError, match="line 2 is not JSON"):
        for item in LocalExecutor(threads=2).map(one, 10, then_bad()):
            got.append(item)
    assert got == [(here, "false", 11)] and os.environ["TOKENIZERS_PARALLELISM"] == "true"
    assert list(LocalExecutor(threads=2).map(one, 10, [])) == []
    assert [name for name, _, _ in LocalExecutor(threads=2).map(one, 0, [[1], [2]])] != [here, here]  # two: the pool


def test_threads_take_longer_turns_on_the_gil_while_builds_run_and_give_the_callers_interval_back() -> None:
    caller = sys.getswitchinterval()
    assert caller < executors.SWITCH_INTERVAL  # Python's default, 5 ms

    def meanwhile() -> None:
        assert sys.getswitchinterval() == executors.SWITCH_INTERVAL

    assert _two_builds_at_once(sys.getswitchinterval, meanwhile) == [[executors.SWITCH_INTERVAL] * 2] * 2
    assert sys.getswitchinterval() == caller  # restored once, when the last build ended

    def fails(spec: Any, batch: list[int]) -> None:
        raise RecordError("bad record", location=None)

    with pytest.raises(RecordError):
        list(LocalExecutor(threads=2).map(fails, None, [[1], [2]]))
    assert sys.getswitchinterval() == caller


def test_threaded_local_gives_what_one_thread_gives_on_a_real_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, smol) -> None:
    """Rows, labels, the rejects file and the report: cut records included (max_length 96)."""
    out = {}
    for threads in (1, 4):
        monkeypatch.setattr(executors, "local_threads", lambda: threads)
        rejects = tmp_path / f"{threads}.jsonl"
        result = prepare(
            ALPACA, tokenizer=smol, template="alpaca", max_length=96, truncation="drop", batch_size=37,
            rejects_path=str(rejects),
        )  # fmt: skip
        report = result.report.to_dict()
        for volatile in ("seconds", "rejects_path"):
            report.pop(volatile)
        out[threads] = (result.dataset.to_dict(), rejects.read_text(encoding="utf-8"), report)
    assert out[1][2]["records"] > 37 * 4 and out[1][2]["rejected"] == {"too_long": 704}
    assert out[4] == out[1]


def test_freed_memory_is_handed_back_with_malloc_trim_and_nothing_is_done_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes

    from ftdata.run import executors

    calls: list[int] = []

    class Glibc:
        def malloc_trim(self, pad: int) -> int:
            calls.append(pad)
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Glibc())
    executors.hand_back_freed_memory()
    assert calls == [0]  # everything free, no padding kept
    monkeypatch.setattr(ctypes, "CDLL", lambda name: object())  # a C library without malloc_trim (not glibc)
    executors.hand_back_freed_memory()
    assert calls == [0]
