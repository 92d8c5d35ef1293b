"""A build opens its source once (`ftdata.guard.opened`): the progress bar's count, the task's first record, the cache
digest and the rows all read the one descriptor the build holds. Opens are counted by Python's own audit event
(`open`, raised by `open`, `Path.open` and `os.open` alike), on the source's path."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ftdata
from ftdata.cli.app import app
from ftdata.guard.opened import opened_once, reopened
from ftdata.io.counter import count_records
from ftdata.guard.bounds import ReadBounds
from ftdata.options import DataOptions

_WATCHED: list[Counter[str]] = []  # the counter of the innermost `opens` block; none outside


def _hook(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and _WATCHED and args and isinstance(args[0], (str, os.PathLike)):
        _WATCHED[-1][os.path.abspath(os.fspath(args[0]))] += 1


sys.addaudithook(_hook)  # an audit hook cannot be removed: it counts only inside `opens`


@contextmanager
def opens() -> Iterator[Counter[str]]:
    counted: Counter[str] = Counter()
    _WATCHED.append(counted)
    try:
        yield counted
    finally:
        _WATCHED.pop()


CHATS = [
    {"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]}
    for i in range(6)
]
PAIRS = [{"prompt": f"Pick {i}.", "chosen": f"Yes {i}.", "rejected": f"No {i}."} for i in range(4)]


def _jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize("records", [CHATS, PAIRS], ids=["sft", "preference"])
def test_a_build_to_a_folder_opens_its_jsonl_source_once(tmp_path: Path, records: list[dict[str, object]]) -> None:
    data = _jsonl(tmp_path / "data.jsonl", records)
    with opens() as counted:
        result = ftdata.build(str(data), tmp_path / "out", max_length=128)  # task check, digest (cache key), rows
    assert result.report.records == len(records)
    assert counted[str(data)] == 1


def test_the_cli_build_opens_its_source_once_with_the_progress_bar_counting_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))  # the bar, and its count, are drawn
    data = _jsonl(tmp_path / "data.jsonl", CHATS)
    with opens() as counted:
        result = CliRunner().invoke(app, ["build", str(data), "-o", str(tmp_path / "out"), "--max-length", "128"])
    assert result.exit_code == 0, result.output
    assert counted[str(data)] == 1


def test_a_recipe_opens_each_source_once(tmp_path: Path) -> None:
    chats = _jsonl(tmp_path / "chats.jsonl", CHATS)
    more = tmp_path / "more.json"
    more.write_text(json.dumps(CHATS[:3]), encoding="utf-8")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "max_length: 128\nmix_by: records\nsources:\n  - data: chats.jsonl\n    weight: 0.5\n"
        "  - data: more.json\n    weight: 0.5\n",
        encoding="utf-8",
    )
    with opens() as counted:
        ftdata.build(str(recipe), tmp_path / "out")  # the shares' counts, the digests, the rows
    assert (counted[str(chats)], counted[str(more)]) == (1, 1)


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


def test_a_file_replaced_under_its_path_is_read_as_the_path_names_it_now(tmp_path: Path) -> None:
    data = _jsonl(tmp_path / "data.jsonl", CHATS)
    with opened_once([data]):
        _jsonl(tmp_path / "new.jsonl", CHATS[:1]).replace(data)  # a rename: the held descriptor is the old file's
        assert reopened(data) is None
        assert count_records(str(data), limit=None, bounds=ReadBounds.of(DataOptions())) == 1
