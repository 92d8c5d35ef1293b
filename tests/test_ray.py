"""engine=ray gives what engine=local gives, on a local Ray cluster started (and stopped) here.

One cluster of 2 CPUs for the module: starting one takes seconds. The build joins it, as a
build on a real cluster joins the one at `ray_address`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from support import DATASETS
from ftdata import prepare
from ftdata.cli import app
from ftdata.errors import ConfigError, RecordError

ray = pytest.importorskip("ray")

ALPACA = DATASETS / "alpaca" / "llamafactory_alpaca_en_demo.json"
SHAREGPT = DATASETS / "sharegpt" / "fastchat_dummy_conversation.json"


@pytest.fixture(scope="module", autouse=True)
def cluster():
    import logging

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


def run(source: Any, tmp_path: Path, engine: str, **options: Any) -> tuple[dict, str, dict]:
    """(rows, rejects file text, report) of one build."""
    rejects = tmp_path / f"{engine}.jsonl"
    result = prepare(source, engine=engine, num_workers=2, rejects_path=str(rejects), **options)
    report = result.report.to_dict()
    for volatile in ("seconds", "rejects_path"):
        report.pop(volatile)
    dataset = result.dataset
    rows = {name: split.to_dict() for name, split in dataset.items()} if hasattr(dataset, "items") else dataset.to_dict()
    return rows, rejects.read_text(encoding="utf-8"), report


@pytest.mark.parametrize(
    ("source", "options"),
    [
        (ALPACA, dict(template="alpaca", max_length=192, limit=300, batch_size=32)),
        (ALPACA, dict(template="alpaca", max_length=192, limit=300, batch_size=32, packing=True, test_size=0.1)),
        (SHAREGPT, dict(max_length=256, batch_size=8, packing=True)),
    ],
    ids=["alpaca", "alpaca-packed-split", "sharegpt-packed"],
)
def test_ray_equals_local_on_real_files(tmp_path: Path, smol, source: Path, options: dict) -> None:
    local = run(source, tmp_path, "local", tokenizer=smol, **options)
    assert run(source, tmp_path, "ray", tokenizer=smol, **options) == local
    rows, rejects, report = local
    assert report["sequences"] > 0 and len(rejects.splitlines()) == sum(report["cut"].values()) + sum(report["rejected"].values())


def test_a_bad_record_raises_the_same_error_under_ray(tmp_path: Path, char_tok) -> None:
    records = [{"instruction": "Say hi.", "output": "Hi."}] * 3 + [{"question": "2+2?"}]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    errors = {}
    for engine in ("local", "ray"):
        with pytest.raises(RecordError) as caught:
            prepare(data, tokenizer=char_tok, template="alpaca", batch_size=2, engine=engine)
        errors[engine] = (str(caught.value), caught.value.location, caught.value.field)
    assert errors["ray"] == errors["local"]
    assert errors["local"][0].startswith(f"{data}:4: ")


def test_cli_build_and_stats_under_ray_count_what_local_counts(tmp_path: Path) -> None:
    runner = CliRunner()
    counts = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        args = [str(ALPACA), "--template", "alpaca", "--limit", "200", "--batch-size", "50", "--engine", engine]
        built = runner.invoke(app, ["build", *args, "-o", str(out), "--no-cache", "--no-color"])
        stats = runner.invoke(app, ["stats", *args, "--json"])
        assert built.exit_code == 0 and stats.exit_code == 0, built.output + stats.output
        report = json.loads((out / "build.json").read_text())["counts"]
        counts[engine] = ({k: report[k] for k in ("records", "sequences", "tokens", "trained_tokens", "cut", "rejected")},
                          json.loads(stats.stdout))  # fmt: skip
    assert counts["ray"] == counts["local"]


def test_engine_ray_without_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, char_tok) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"^engine=ray needs Ray: pip install 'ftdata\[ray\]'"):
        prepare([{"instruction": "a", "output": "b"}], tokenizer=char_tok, engine="ray")


def _pid(spec: int, batch: list[int]) -> tuple[int, int]:
    import os

    return os.getpid(), sum(batch) + spec


def test_batches_run_in_ray_workers_and_come_back_in_order() -> None:
    import os

    from ftdata.executors import RayExecutor

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import a test module
    results = list(RayExecutor(2).map(_pid, 100, [[i, i] for i in range(8)]))
    assert [s for _, s in results] == [100 + 2 * i for i in range(8)]
    assert os.getpid() not in {pid for pid, _ in results}
