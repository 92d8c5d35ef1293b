"""Training data from a folder `ftdata build` wrote: trained as built, not rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ftdata
from ftdata.cli.app import app
from ftdata.train import TrainConfig
from ftdata.train.data import load_splits

QA = [{"question": f"What is {n} plus {n}?", "answer": f"{n} plus {n} is {2 * n}."} for n in range(10)]


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_a_build_folder_gives_its_own_splits(tmp_path: Path, fmt: str) -> None:
    data, out = tmp_path / "qa.jsonl", tmp_path / "out"
    data.write_text("".join(json.dumps(r) + "\n" for r in QA), encoding="utf-8")
    args = ["build", str(data), "-o", str(out), "--template", "question-answer", "--test-size", "3", "--no-cache"]
    result = CliRunner().invoke(app, [*args, "--output-format", fmt])
    assert result.exit_code == 0, result.output
    built = ftdata.load(out).dataset
    # The build's template and test split hold, whatever TrainConfig's own data defaults say.
    splits = load_splits(TrainConfig(data=str(out)), tokenizer=None)
    assert splits.train.to_list() == built["train"].to_list() and splits.eval.to_list() == built["test"].to_list()
    assert (splits.train.num_rows, splits.eval.num_rows, splits.packed) == (7, 3, False)
