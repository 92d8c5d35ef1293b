"""engine=ray builds the preference rows engine=local builds: batches as Ray tasks, and shard files as a Ray
Data job into Parquet shards (one local cluster of 2 CPUs for the module, as in tests/run/test_ray.py)."""

from __future__ import annotations

import json

import pytest
from support import DATASETS
from typer.testing import CliRunner

import ftdata
from ftdata.cli.app import app

ray = pytest.importorskip("ray")
from test_ray import cluster  # noqa: E402,F401  - the module's local cluster (autouse), as tests/run/test_ray.py starts it

pytestmark = pytest.mark.skipif(not DATASETS.is_dir(), reason=f"shared data not found at {DATASETS}")
DPO = DATASETS / "preference" / "llamafactory_dpo_en_demo.json"


def test_engine_ray_builds_the_pairs_of_engine_local(smol) -> None:
    def run(engine: str):
        result = ftdata.prepare(DPO, tokenizer=smol, engine=engine, num_workers=2, limit=40, batch_size=8, max_length=1024)
        return result.dataset.to_list(), result.report.sequences, dict(result.report.cut)

    assert run("ray") == run("local")


def test_a_sharded_ray_build_writes_the_pairs_of_a_local_build(tmp_path) -> None:
    records = json.loads(DPO.read_text(encoding="utf-8"))[:60]
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(3):
        (shards / f"part-{i}.json").write_text(json.dumps(records[20 * i : 20 * (i + 1)]), encoding="utf-8")
    for engine in ("local", "ray"):
        args = ["build", str(shards), "-o", str(tmp_path / engine), "--engine", engine, "--max-length", "1024", "--no-cache"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    local, sharded = ftdata.load(tmp_path / "local"), ftdata.load(tmp_path / "ray")
    assert sorted(map(json.dumps, sharded.dataset.to_list())) == sorted(map(json.dumps, local.dataset.to_list()))
    assert sharded.dataset.column_names == ["prompt_ids", "chosen_ids", "rejected_ids"]
    assert (sharded.report.task, sharded.report.sequences, sharded.report.cut) == ("preference", 60, local.report.cut)
