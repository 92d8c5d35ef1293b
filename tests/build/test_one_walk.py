"""A build opens each file it reads once (`ftdata.guard.opened`): the progress bar's count, the task's first record,
the cache digest and the rows all read the one descriptor the build holds, whatever the source's kind (JSON, JSONL,
Parquet, CSV, a folder of them, another tool's declaration); a recipe or a declaration's own file is read once too,
and the bytes parsed are the bytes digested.

Opens are counted twice over, on the file's path: by Python's audit event (`open`, raised by `open`, `Path.open` and
`os.open` alike) and, on Linux, by the kernel (inotify), which sees what pyarrow opens in C++ as well. Each count can
only miss an open (the kernel merges an event with the same one queued unread before it; reads and closes are
watched too, so they keep two opens apart): the larger of the two is the count."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import struct
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import ftdata
from ftdata.cli.app import app
from ftdata.guard.opened import opened_once, reopened
from ftdata.io.counter import count_records
from ftdata.io.readers import read_records
from ftdata.guard.bounds import ReadBounds
from ftdata.guard.inputs import InputKind
from ftdata.options import DataOptions

_WATCHED: list[Counter[str]] = []  # the counter of the innermost `opens` block; none outside


def _hook(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and _WATCHED and args and isinstance(args[0], (str, os.PathLike)):
        _WATCHED[-1][os.path.abspath(os.fspath(args[0]))] += 1


sys.addaudithook(_hook)  # an audit hook cannot be removed: it counts only inside `opens`

_IN_ACCESS, _IN_CLOSE, _IN_OPEN = 0x01, 0x18, 0x20  # inotify's masks (IN_CLOSE: written or not)


@contextmanager
def _kernel_opens(folders: tuple[Path, ...]) -> Iterator[Counter[str]]:
    """The opens the kernel saw of the files in `folders` (not their subfolders) inside the block; none off Linux."""
    counted: Counter[str] = Counter()
    if not sys.platform.startswith("linux") or not folders:
        yield counted
        return
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    try:
        names = {libc.inotify_add_watch(fd, os.fsencode(f), _IN_OPEN | _IN_ACCESS | _IN_CLOSE): f for f in folders}
        assert min(names) >= 0, os.strerror(ctypes.get_errno())
        yield counted
        while True:
            try:
                events = os.read(fd, 1 << 20)
            except BlockingIOError:
                break
            at = 0
            while at < len(events):  # struct inotify_event: wd, mask, cookie, len, then the name (NUL-padded)
                wd, mask, _, size = struct.unpack_from("iIII", events, at)
                name = events[at + 16 : at + 16 + size].rstrip(b"\0")
                if mask & _IN_OPEN and name:
                    counted[os.path.abspath(os.path.join(names[wd], os.fsdecode(name)))] += 1
                at += 16 + size
    finally:
        os.close(fd)


@contextmanager
def opens(*folders: Path) -> Iterator[Counter[str]]:
    """Opens by path inside the block: Python's, and the kernel's of the files in `folders` (the larger count)."""
    counted: Counter[str] = Counter()
    _WATCHED.append(counted)
    try:
        with _kernel_opens(folders) as kernel:
            yield counted
    finally:
        _WATCHED.pop()
    for path, n in kernel.items():
        counted[path] = max(counted[path], n)


CHATS = [
    {"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]}
    for i in range(6)
]
PAIRS = [{"prompt": f"Pick {i}.", "chosen": f"Yes {i}.", "rejected": f"No {i}."} for i in range(4)]
ALPACA = [{"instruction": f"Do {i}.", "input": "", "output": f"Done {i}."} for i in range(5)]


def _jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _parquet(path: Path, records: list[dict[str, object]]) -> Path:
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def _csv(path: Path, records: list[dict[str, str]]) -> Path:
    lines = [",".join(records[0])] + [",".join(r.values()) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _folder(path: Path, *, readme: bool = True) -> list[Path]:
    """A folder of data files of two kinds (and a README, which a folder source passes over): its data files."""
    path.mkdir()
    if readme:
        (path / "README.md").write_text("Six chats.\n", encoding="utf-8")
    return [_jsonl(path / "a.jsonl", CHATS[:3]), _parquet(path / "b.parquet", CHATS[3:])]


@pytest.mark.parametrize("records", [CHATS, PAIRS], ids=["sft", "preference"])
def test_a_build_to_a_folder_opens_its_jsonl_source_once(tmp_path: Path, records: list[dict[str, object]]) -> None:
    data = _jsonl(tmp_path / "data.jsonl", records)
    with opens(tmp_path) as counted:
        result = ftdata.build(str(data), tmp_path / "out", max_length=128)  # task check, digest (cache key), rows
    assert result.report.records == len(records)
    assert counted[str(data)] == 1


def test_the_cli_build_opens_its_source_once_with_the_progress_bar_counting_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))  # the bar, and its count, are drawn
    data = _jsonl(tmp_path / "data.jsonl", CHATS)
    with opens(tmp_path) as counted:
        result = CliRunner().invoke(app, ["build", str(data), "-o", str(tmp_path / "out"), "--max-length", "128"])
    assert result.exit_code == 0, result.output
    assert counted[str(data)] == 1


def test_the_cli_build_reads_its_config_once_and_keys_the_build_by_those_bytes(tmp_path: Path) -> None:
    """`--config` is parsed once; the bytes parsed are the bytes build.json's key takes (a comment added to the
    file is a new key: a rebuild, never a stale hit)."""
    data = _jsonl(tmp_path / "data.jsonl", CHATS)
    config = tmp_path / "build.yaml"
    config.write_text("max_length: 128\n", encoding="utf-8")
    args = ["build", str(data), "-o", str(tmp_path / "out"), "--config", str(config)]
    with opens(tmp_path) as counted:
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (counted[str(config)], counted[str(data)]) == (1, 1)
    recorded = json.loads((tmp_path / "out" / "build.json").read_text(encoding="utf-8"))
    assert hashlib.sha256(config.read_bytes()).hexdigest() in json.dumps(recorded)
    assert "cached: reused build" in CliRunner().invoke(app, args).output
    config.write_text("max_length: 128  # the same options\n", encoding="utf-8")
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "cached: reused build" not in again.output, again.output


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_build_opens_its_parquet_or_csv_source_once(tmp_path: Path, kind: str) -> None:
    data = _parquet(tmp_path / "chats.parquet", CHATS) if kind == "parquet" else _csv(tmp_path / "do.csv", ALPACA)
    with opens(tmp_path) as counted:
        result = ftdata.build(str(data), tmp_path / "out", max_length=128)  # Parquet: count, task, digest, rows
    assert result.report.records == (len(CHATS) if kind == "parquet" else len(ALPACA))
    assert counted[str(data)] == 1


def test_a_folder_source_opens_each_of_its_data_files_once(tmp_path: Path) -> None:
    files = _folder(tmp_path / "chats")
    with opens(tmp_path / "chats") as counted:
        result = ftdata.build(str(tmp_path / "chats"), tmp_path / "out", max_length=128)
    assert result.report.records == len(CHATS)
    assert [counted[str(f)] for f in files] == [1, 1]


def test_a_llamafactory_folder_opens_its_dataset_info_and_each_data_file_once(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    info = folder / "dataset_info.json"
    info.write_text(
        json.dumps(
            {
                "do": {"file_name": "do.json"},  # alpaca, LLaMA-Factory's default formatting
                "chats": {"file_name": "chats", "formatting": "openai", "columns": {"messages": "messages"}},
            }
        ),
        encoding="utf-8",
    )
    alpaca = folder / "do.json"
    alpaca.write_text(json.dumps(ALPACA), encoding="utf-8")
    files = [info, alpaca, *_folder(folder / "chats", readme=False)]  # LLaMA-Factory reads every file of a folder
    with opens(folder, folder / "chats") as counted:
        result = ftdata.build(f"{folder}#do,chats", tmp_path / "out", max_length=128)
    assert result.report.records == len(ALPACA) + len(CHATS)
    assert [counted[str(f)] for f in files] == [1, 1, 1, 1]


def test_an_axolotl_config_is_read_once(tmp_path: Path) -> None:
    chats = _jsonl(tmp_path / "chats.jsonl", CHATS)
    config = tmp_path / "axolotl.yml"
    config.write_text(f"datasets:\n  - path: {chats}\n    type: chat_template\n", encoding="utf-8")
    with opens(tmp_path) as counted:
        result = ftdata.build(str(config), tmp_path / "out", max_length=128)  # what it is, its datasets, its digest
    assert result.report.records == len(CHATS)
    assert (counted[str(config)], counted[str(chats)]) == (1, 1)


RECIPE = (
    "max_length: 128\nmix_by: records\nngram: 3\ndecontaminate: [eval.jsonl]\nsources:\n"
    "  - data: chats.jsonl\n    weight: 0.25\n  - data: more.json\n    weight: 0.25\n"
    "  - data: chats.parquet\n    name: parquet\n    weight: 0.25\n  - data: folder\n    weight: 0.25\n"
)


def _recipe(root: Path) -> list[Path]:
    """A recipe of JSONL, JSON, Parquet and a folder, with an evaluation set: the files it reads, itself first."""
    more = root / "more.json"
    more.write_text(json.dumps(CHATS[:3]), encoding="utf-8")
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE, encoding="utf-8")
    evaluation = _jsonl(root / "eval.jsonl", [{"question": "What is the capital of Mars?", "answer": "None."}])
    sources = [_jsonl(root / "chats.jsonl", CHATS), more, _parquet(root / "chats.parquet", CHATS)]
    return [recipe, *sources, *_folder(root / "folder"), evaluation]


def test_a_recipe_is_read_once_and_each_of_its_files_once(tmp_path: Path) -> None:
    files = _recipe(tmp_path)
    with opens(tmp_path, tmp_path / "folder") as counted:
        ftdata.build(str(files[0]), tmp_path / "out")  # what it is, its options, its digest; the shares' counts, rows
    assert {f.name: counted[str(f)] for f in files} == {f.name: 1 for f in files}


def test_the_bytes_a_recipe_is_parsed_from_are_the_bytes_its_key_digests(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path)[0]

    def digest(result: ftdata.BuildResult) -> str:
        return next(i.digest for i in result.inputs if i.kind is InputKind.RECIPE)

    first = ftdata.build(str(recipe), tmp_path / "out")
    recipe.write_text(RECIPE + "# a comment: other bytes, the same recipe\n", encoding="utf-8")
    again = ftdata.build(str(recipe), tmp_path / "out")
    assert again.cached_from is None and digest(again) != digest(first)
    hit = ftdata.build(str(recipe), tmp_path / "out")
    assert hit.cached_from is not None and digest(hit) == digest(again)


@pytest.mark.parametrize("command", ["build", "stats"])
def test_the_cli_opens_a_folders_data_files_and_a_recipe_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    from rich.console import Console

    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))  # the bar, and its count, are drawn
    files = _folder(tmp_path / "chats")
    out = ["-o", str(tmp_path / "out")] if command == "build" else []
    with opens(tmp_path / "chats") as counted:
        result = CliRunner().invoke(app, [command, str(tmp_path / "chats"), *out, "--max-length", "128"])
    assert result.exit_code == 0, result.output
    assert [counted[str(f)] for f in files] == [1, 1]
    (tmp_path / "mix").mkdir()
    recipe, *files = _recipe(tmp_path / "mix")
    out = ["-o", str(tmp_path / "mixed")] if command == "build" else []
    with opens(tmp_path / "mix", tmp_path / "mix" / "folder") as counted:
        result = CliRunner().invoke(app, [command, str(recipe), *out])
    assert result.exit_code == 0, result.output
    read = [recipe, *files] if command == "build" else [recipe, *files[:-1]]  # stats leaves the evaluation set
    assert {f.name: counted[str(f)] for f in read} == {f.name: 1 for f in read}


def test_passes_over_a_held_file_read_it_whole_each_at_its_own_offset(tmp_path: Path) -> None:
    data = _jsonl(tmp_path / "data.jsonl", CHATS)
    whole, bounds = data.read_bytes(), ReadBounds.of(DataOptions())
    assert reopened(data) is None  # outside a scope: the caller opens the path
    with opens() as counted, opened_once([data, tmp_path / "missing.jsonl", tmp_path]):
        first, second = reopened(data), reopened(data)
        assert first is not None and second is not None
        assert first.readline() == whole.splitlines(keepends=True)[0]
        assert second.read() == whole  # from its start, whatever the first pass read
        assert first.read() == whole[len(whole.splitlines(keepends=True)[0]) :]
        assert count_records(str(data), limit=None, bounds=bounds) == len(CHATS)
        with opened_once([data]):  # an inner scope leaves the outer one's descriptor held
            pass
        assert reopened(data) is not None
    assert counted[str(data)] == 1  # the scope's open
    assert reopened(data) is None


@pytest.mark.parametrize(
    ("write", "name"), [(_jsonl, "data.jsonl"), (_parquet, "data.parquet")], ids=["jsonl", "parquet"]
)
def test_a_file_replaced_under_its_path_is_read_as_the_path_names_it_now(
    tmp_path: Path, write: Callable[[Path, list[dict[str, object]]], Path], name: str
) -> None:
    data = write(tmp_path / name, CHATS)
    with opened_once([data]):
        write(tmp_path / f"new-{name}", CHATS[:1]).replace(data)  # a rename: the held descriptor is the old file's
        assert reopened(data) is None
        assert count_records(str(data), limit=None, bounds=ReadBounds.of(DataOptions())) == 1
        assert [row for _, row in read_records(data)] == CHATS[:1]
