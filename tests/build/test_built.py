"""`ftdata.load(OUT)` reads back what `ftdata build -o OUT` wrote: the dataset and its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from test_cli import cached_tokenizers  # noqa: F401  - the fixture, re-used here
import ftdata
from ftdata.cli.app import app
from ftdata.errors import ConfigError

RECORDS = [{"instruction": f"Say {word}.", "output": f"{word.title()}!"} for word in ("hi", "bye", "yes", "no", "ok")]
RECORDS.append({"instruction": "Say nothing.", "output": ""})  # rejected: empty response


def build(tmp_path: Path, *args: str) -> tuple[Path, str]:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["build", str(data), "-o", str(out), "--no-cache", *args])
    assert result.exit_code == 0, result.output
    return out, result.stdout


@pytest.mark.parametrize("fmt", ["arrow", "parquet", "jsonl"])
def test_load_gives_the_built_rows_and_the_report(tmp_path: Path, fmt: str) -> None:
    out, _ = build(tmp_path, "--output-format", fmt, "--test-size", "2")
    expected = ftdata.prepare(RECORDS, tokenizer=None, test_size=2)
    loaded = ftdata.load(out)
    assert set(loaded.dataset) == {"train", "test"}
    for split in ("train", "test"):  # the same rows; each names its record where it was read (the file, the list)
        assert loaded.dataset[split].remove_columns("record").to_list() == expected.dataset[split].remove_columns("record").to_list()
    records = [*loaded.dataset["train"]["record"], *loaded.dataset["test"]["record"]]
    assert sorted(records) == [f"{tmp_path / 'data.jsonl'}:{line}" for line in range(1, 6)]  # line 6 was rejected
    report = loaded.report
    assert (report.records, report.sequences, dict(report.rejected)) == (6, 5, {"empty_response": 1})
    assert report.splits == {"train": 3, "test": 2}


def test_a_build_without_test_split_loads_as_one_dataset(tmp_path: Path) -> None:
    out, _ = build(tmp_path, "--output-format", "parquet")
    dataset = ftdata.load(out).dataset
    assert dataset.num_rows == 5 and dataset.column_names == ["input_ids", "attention_mask", "labels", "record"]


def test_arrow_output_also_loads_with_datasets(tmp_path: Path) -> None:
    import datasets

    out, stdout = build(tmp_path)
    assert datasets.load_from_disk(str(out / "dataset")).to_list() == ftdata.load(out).dataset.to_list()
    hint = f'load it with ftdata.load("{out}"), or datasets.load_from_disk("{out}/dataset"); train on it with `ftdata train {out}`'
    assert stdout.splitlines()[-1] == hint


def test_not_a_build_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^{tmp_path} has no build.json: give a folder written by `ftdata build -o OUT`$"):
        ftdata.load(tmp_path)
    with pytest.raises(ConfigError, match=r"nope does not exist"):
        ftdata.load(tmp_path / "nope")
    (tmp_path / "build.json").write_text('{"output": {}}', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"build.json is not a build record \(no output format, files or counts\)"):
        ftdata.load(tmp_path)


def test_missing_dataset_files_are_named(tmp_path: Path) -> None:
    import shutil

    out, _ = build(tmp_path)
    shutil.rmtree(out / "dataset")
    with pytest.raises(ConfigError, match=rf"build.json lists {out}/dataset, which is missing; build again"):
        ftdata.load(out)
