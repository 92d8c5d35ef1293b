"""docs/vision.md shows real output: the example build's rows and rejects are what a build makes now."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from support import TOKENIZERS

from ftdata.build.api import build

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "vision"


def test_documented_rows_and_rejects_are_real(tmp_path):
    folder = tmp_path / "qwen2-vl"
    shutil.copytree(EXAMPLE / "qwen2-vl", folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(TOKENIZERS / "qwen2.5-instruct" / name, folder / name)
    data = tmp_path / "vision"
    shutil.copytree(EXAMPLE, data, ignore=shutil.ignore_patterns("qwen2-vl"))
    out = tmp_path / "OUT"
    build(data / "chat.jsonl", out, processor=str(folder), output_format="jsonl")
    doc = (ROOT / "docs" / "vision.md").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    for row in rows:
        shown = json.dumps({k: row[k] for k in ("images", "trained")}).replace(f"{data}/", "/abs/examples/vision/")
        assert shown in doc
    for line in (out / "rejects.jsonl").read_text().splitlines():
        assert re.sub(re.escape(str(data)), "examples/vision", line) in doc
