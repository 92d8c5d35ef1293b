"""preview shows an image as one marker; stats counts media items and their tokens; an HF `Image` feature builds."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from ftdata.cli.app import app
from ftdata.build.api import build


def _data(images):
    path = images / "inspect.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": [{"type": "image", "image": "chart.png"}, {"type": "text", "text": "Trend?"}]},
                      {"role": "assistant", "content": "Rising."}]},
        {"messages": [{"role": "user", "content": "<image><image>Both?"}, {"role": "assistant", "content": "Yes."}], "images": ["chart.png", "logo2.png"]},
        {"messages": [{"role": "user", "content": "No image."}, {"role": "assistant", "content": "Fine."}]},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_preview_shows_one_marker_per_image(qwen_dir, images):
    args = ["preview", str(_data(images)), "--processor", str(qwen_dir), "-n", "2", "--no-color"]
    out = CliRunner().invoke(app, args).output
    assert "[image 320x240, 99 tokens: chart.png]Trend?<|im_end|>" in out
    assert "[image 320x240, 99 tokens: chart.png][image 542x130, 95 tokens: logo2.png]Both?" in out
    assert "<|image_pad|>" not in out and "⟦Rising.<|im_end|>⟧" in out
    rows = [json.loads(line) for line in CliRunner().invoke(app, [*args, "--json", "--tokens"]).output.splitlines()]
    record = next(r for r in rows if r["type"] == "record")
    assert [t["text"] for t in record["tokens"] if t["id"] == -1] == ["[image 320x240, 99 tokens: chart.png]"]
    assert len(record["tokens"]) == record["counts"]["tokens"] - 100  # 99 pads + start + end: one row


def test_stats_count_media_items_and_their_tokens(qwen_dir, images):
    out = CliRunner().invoke(app, ["stats", str(_data(images)), "--processor", str(qwen_dir), "--json"]).output
    stats = json.loads(out)
    assert stats["media"]["total"] == 3 and stats["media"]["kinds"] == {"image": 3}
    assert stats["media"]["per_example"]["max"] == 2
    assert stats["media"]["tokens_per_example"]["max"] == 99 + 95


def test_hf_dataset_with_an_image_feature(qwen_dir, images):
    import datasets

    ds = datasets.Dataset.from_dict(
        {"messages": [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},
                       {"role": "assistant", "content": [{"type": "text", "text": "A logo."}]}]], "images": [[str(images / "logo2.png")]]},
    ).cast_column("images", datasets.Sequence(datasets.Image()))  # fmt: skip
    row = build(ds, processor=str(qwen_dir)).dataset[0]
    assert [(i["width"], i["height"], i["tokens"]) for i in row["media"]] == [(542, 130, 95)]


def test_stats_media_tokens_per_pack_match_the_packed_build(qwen_dir, images):
    import numpy as np

    from ftdata.run.stats import describe

    data = _data(images)
    args = ["stats", str(data), "--processor", str(qwen_dir), "--max-length", "300", "--json"]
    per_pack = json.loads(CliRunner().invoke(app, args).output)["epoch"]["media_per_pack"]
    rows = build(data, processor=str(qwen_dir), packing=True, max_length=300).dataset
    pad = 151655  # <|image_pad|>
    counts = np.array([sum(t == pad for t in r["input_ids"]) for r in rows])
    assert len(rows) >= 2 and counts.sum() == 99 + 99 + 95
    assert per_pack == describe(counts)
    out = CliRunner().invoke(app, args[:-1]).output
    assert f"media/pack    media tokens per packed row p50 {per_pack['p50']:,}" in out
