"""engine=local, processes and ray give the same rows, images column included; workers read the headers.

Slow (each worker imports transformers and loads the processor folder again): `pytest -m slow`.
"""

from __future__ import annotations

import json

import pytest

import ftdata
from ftdata.run import executors
from ftdata.build.api import build

pytestmark = pytest.mark.slow


def _data(images):
    records = []
    for i in range(12):
        name = ("grace_hopper.jpg", "logo2.png", "chart.png")[i % 3]
        records.append({"messages": [{"role": "user", "content": [{"type": "image", "image": name}, {"type": "text", "text": f"Question {i}?"}]},
                                     {"role": "assistant", "content": f"Answer {i}."}]})  # fmt: skip
    records.append({"messages": [{"role": "user", "content": [{"type": "image", "image": "missing.png"}]}, {"role": "assistant", "content": "x"}]})
    path = images / "engines.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _rows(dataset):
    return [(r["input_ids"], r["labels"], r["media"]) for r in dataset]


def test_processes_equal_local(qwen_dir, images, monkeypatch):
    data = _data(images)
    local = build(data, processor=str(qwen_dir), batch_size=4)
    monkeypatch.setattr(executors, "IN_PROCESS_BELOW", 0)  # spawn workers even for a few records
    procs = build(data, processor=str(qwen_dir), batch_size=4, engine="processes", num_workers=2)
    assert _rows(procs.dataset) == _rows(local.dataset)
    assert procs.report.rejected == local.report.rejected == {"media_missing": 1}


def test_ray_shards_equal_local(qwen_dir, images, tmp_path):
    pytest.importorskip("ray")
    from typer.testing import CliRunner

    from ftdata.cli.app import app

    data = _data(images)
    built = {}
    for engine in ("local", "ray"):
        args = ["build", str(data), "--processor", str(qwen_dir), "-o", str(tmp_path / engine), "--engine", engine, "--no-cache", "--num-workers", "2"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        built[engine] = ftdata.load(tmp_path / engine)
    assert sorted(map(str, _rows(built["ray"].dataset))) == sorted(map(str, _rows(built["local"].dataset)))
