"""`ftdata build DATA --processor DIR --packing` on real images: rows packed with their images.

Every image of a packed row is its processor's run of image-pad tokens at its shifted `start`,
none trained; the packed rows hold exactly the sequences (and images) of the unpacked build.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ftdata.cli.app import app
from ftdata.errors import ConfigError
from ftdata.build.api import build
from ftdata.types import IGNORE_INDEX

PAD, START, END = "<|image_pad|>", "<|vision_start|>", "<|vision_end|>"
FILES = ("chart.png", "logo2.png", "grace_hopper.jpg")


def _data(images, n=9):
    records = []
    for i in range(n):
        parts = [{"type": "image", "image": FILES[i % 3]}, {"type": "text", "text": f"Question {i}?"}]
        if i % 4 == 3:  # a record with two images
            parts.append({"type": "image", "image": "logo2.png"})
        records.append({"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": f"Answer {i}."}]})
    records.append({"messages": [{"role": "user", "content": "No image here."}, {"role": "assistant", "content": "Fine."}]})
    path = images / "packed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _ids(qwen_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(qwen_dir))
    return tok.convert_tokens_to_ids(PAD), tok.convert_tokens_to_ids(START), tok.convert_tokens_to_ids(END)


def _sequences(row):
    """A packed row cut back into its sequences: (ids, labels without the first, images with start in the sequence)."""
    ends = np.cumsum(row["seq_lengths"])
    out = []
    for begin, end in zip(np.concatenate([[0], ends[:-1]]), ends):
        images = [{**im, "start": im["start"] - int(begin)} for im in row["media"] if begin <= im["start"] < end]
        out.append((row["input_ids"][begin:end], row["labels"][begin + 1 : end], images))
    return out


def test_cli_packed_build_keeps_every_image_whole_and_untrained(qwen_dir, images, tmp_path):
    data = _data(images)
    out = tmp_path / "out"
    args = ["build", str(data), "--processor", str(qwen_dir), "-o", str(out), "--packing", "--max-length", "1024",
            "--output-format", "jsonl", "--no-cache"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    pad, start, end = _ids(qwen_dir)
    assert 1 < len(rows) < 10  # packed: fewer rows than sequences
    tokens = {"chart.png": 99, "logo2.png": 95, "grace_hopper.jpg": 378}
    seen = []
    for row in rows:
        ids, labels = np.array(row["input_ids"]), np.array(row["labels"])
        assert len(ids) <= 1024 and sum(row["seq_lengths"]) == len(ids)
        assert (ids == pad).sum() == sum(im["tokens"] for im in row["media"])  # no pad outside a span
        for im in row["media"]:
            s, n = im["start"], im["tokens"]
            assert n == tokens[im["ref"].rsplit("/", 1)[-1]]
            assert (ids[s : s + n] == pad).all() and ids[s - 1] == start and ids[s + n] == end
            assert (labels[s - 1 : s + n + 1] == IGNORE_INDEX).all()
            seen.append(im["ref"].rsplit("/", 1)[-1])
        # positions restart at each sequence, so every image's start is shifted by the sequences before it
        assert row["position_ids"] == [p for n in row["seq_lengths"] for p in range(n)]
    assert sorted(seen) == sorted([FILES[i % 3] for i in range(9)] + ["logo2.png"] * 2)
    # the same sequences as the unpacked build, each with its images at its own start
    plain = build(data, processor=str(qwen_dir)).dataset
    alone = sorted((r["input_ids"], r["labels"][1:], r["media"]) for r in plain)
    assert sorted(s for row in rows for s in _sequences(row)) == alone


@pytest.mark.slow  # workers import transformers and load the processor again
def test_packed_rows_equal_across_engines(qwen_dir, images, monkeypatch):
    from ftdata.run import executors

    data = _data(images)
    local = build(data, processor=str(qwen_dir), packing=True, max_length=1024, batch_size=3).dataset
    monkeypatch.setattr(executors, "IN_PROCESS_BELOW", 0)  # spawn workers even for a few records
    procs = build(data, processor=str(qwen_dir), packing=True, max_length=1024, batch_size=3, engine="processes", num_workers=2)
    assert procs.dataset.to_list() == local.to_list()


def test_padding_keeps_images_and_moves_them_on_the_left(qwen_dir, images):
    data = _data(images, n=3)
    plain = build(data, processor=str(qwen_dir)).dataset
    for side in ("right", "left"):
        padded = build(data, processor=str(qwen_dir), padding="max_length", max_length=512, padding_side=side).dataset
        for row, ref in zip(padded, plain):
            shift = 512 - len(ref["input_ids"]) if side == "left" else 0
            assert len(row["input_ids"]) == 512
            assert row["media"] == [{**im, "start": im["start"] + shift} for im in ref["media"]]


def test_packing_refused_for_a_family_not_proven_isolated(llava_dir, images):
    data = _data(images, n=1)
    with pytest.raises(ConfigError, match="proven isolated .* only for qwen2-vl, qwen2.5-vl, gemma3"):
        build(data, processor=str(llava_dir), packing=True)
