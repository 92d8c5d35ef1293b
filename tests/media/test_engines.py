"""engine=local, processes and ray give the same rows, images column included; workers read the headers.

Slow (each worker imports transformers and loads the processor folder again): `pytest -m slow`.
"""

from __future__ import annotations

import json

import pytest
from audio_support import CLIPS, qwen2_audio

import ftdata
from ftdata.run import executors
from ftdata.build.api import build

pytestmark = pytest.mark.slow
__all__ = ["qwen2_audio"]  # a session fixture used by name below


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


def _audio_data(root):
    """12 audio chats over the shared clips (every format), one clip missing: as parts, tags and input_audio."""
    import base64
    import shutil

    shutil.copytree(CLIPS, root / "clips", dirs_exist_ok=True)
    clips = ["1.mp3", "2.wav", "3.flac", "4.mp3"]
    records = []
    for i in range(12):
        clip = f"clips/{clips[i % 4]}"
        if i % 3 == 0:
            records.append({"messages": [{"role": "user", "content": f"<audio>Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}], "audios": [clip]})
        elif i % 3 == 1:
            records.append({"messages": [{"role": "user", "content": [{"type": "audio", "path": clip}, {"type": "text", "text": f"Question {i}?"}]},
                                         {"role": "assistant", "content": f"Answer {i}."}]})  # fmt: skip
        else:
            data = base64.b64encode((root / clip).read_bytes()).decode()
            part = {"type": "input_audio", "input_audio": {"data": data, "format": clip.rsplit(".", 1)[1]}}
            records.append({"messages": [{"role": "user", "content": [part, {"type": "text", "text": f"Question {i}?"}]},
                                         {"role": "assistant", "content": f"Answer {i}."}]})  # fmt: skip
    records.append({"messages": [{"role": "user", "content": [{"type": "audio", "path": "missing.wav"}]}, {"role": "assistant", "content": "x"}]})
    path = root / "audio.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_audio_rows_are_equal_on_every_engine(qwen2_audio, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from typer.testing import CliRunner

    from ftdata.cli.app import app

    folder = tmp_path / "qwen2-audio"
    qwen2_audio.save_pretrained(str(folder))
    data = _audio_data(tmp_path)
    store = str(tmp_path / "store")
    local = build(data, processor=str(folder), batch_size=4, image_dir=store)
    assert len(local.dataset) == 12 and local.report.rejected == {"media_missing": 1}
    monkeypatch.setattr(executors, "IN_PROCESS_BELOW", 0)  # spawn workers even for a few records
    procs = build(data, processor=str(folder), batch_size=4, engine="processes", num_workers=2, image_dir=store)
    assert _rows(procs.dataset) == _rows(local.dataset) and procs.report.rejected == local.report.rejected
    args = ["build", str(data), "--processor", str(folder), "-o", str(tmp_path / "ray"), "--engine", "ray", "--no-cache",
            "--num-workers", "2", "--image-dir", store]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(map(str, _rows(ftdata.load(tmp_path / "ray").dataset))) == sorted(map(str, _rows(local.dataset)))
