"""Packed rows with images are isolated: tiny random-weight Qwen2-VL, Qwen2.5-VL and Gemma 3 (CPU, fp32).

Rows in the vision build layout (real photos from matplotlib's sample data) are packed by
ftdata's own writer (`write_packed(media=...)`), batched by `MediaCollator`, and run through
the model; the logits of every sequence inside a packed row must equal those of the sequence
run alone through the model's own path (its processor output, its own positions and masks).
Negative controls show the comparison catches a leak: Qwen2-VL given only the 3 mRoPE rows
(no text row), Gemma 3 given its own masks (transformers' sliding layers misplace the image
overlay in packed rows).
"""

from __future__ import annotations

from functools import cache

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("PIL")
pytest.importorskip("matplotlib")

from media_support import PHOTOS, IMG, build, gemma_image_processor, make_row, pack, qwen_image_processor  # noqa: E402

from ftdata.train.media_collator import ModelFacts, MediaCollator, load_items, rope_index_of  # noqa: E402

ATOL = 1e-4
LEAK = 1e-2
model = cache(build)


def rows_for(family: str) -> list[dict]:
    """Five sequences: one image each (different prompt lengths, so image spans sit at different
    offsets), one with two images, one text only."""
    return [
        make_row(family, prefix=5, images=[PHOTOS[0]], suffix=7, seed=1),
        make_row(family, prefix=9, images=[PHOTOS[1]], suffix=4, seed=2),
        make_row(family, prefix=3, images=[PHOTOS[2], PHOTOS[1]], suffix=6, seed=3),
        make_row(family, prefix=11, images=[], suffix=8, seed=4),
        make_row(family, prefix=2, images=[PHOTOS[2]], suffix=9, seed=5),
    ]


def collator(family: str, attn: str) -> MediaCollator:
    m = model(family, attn)
    processor = gemma_image_processor() if family == "gemma3" else qwen_image_processor()
    rope = None if family == "gemma3" else rope_index_of(m)
    return MediaCollator(processor, ModelFacts.of(m.config), rope_index=rope)


def alone(family: str, attn: str, row: dict) -> torch.Tensor:
    """The sequence run alone, through the model's own path: its processor, positions and masks."""
    m = model(family, attn)
    ids = torch.tensor([row["input_ids"]])
    kwargs = {}
    if family != "gemma3":  # Qwen2-VL, Qwen2.5-VL
        kwargs["mm_token_type_ids"] = (ids == IMG).int()
        if row["media"]:
            kwargs.update(qwen_image_processor()(images=load_items("image", [i["ref"] for i in row["media"]], None),
                                                 return_tensors="pt"))  # fmt: skip
    else:
        kwargs["token_type_ids"] = (ids == IMG).long()
        if row["media"]:
            kwargs.update(gemma_image_processor()(images=load_items("image", [i["ref"] for i in row["media"]], None),
                                                  return_tensors="pt"))  # fmt: skip
        kwargs.pop("num_crops", None)
    with torch.no_grad():
        return m(input_ids=ids, use_cache=False, **kwargs).logits[0]


def segment_errors(family: str, attn: str, rows: list[dict], packed: list[dict], **overrides) -> list[float]:
    """Max |packed - alone| per sequence, over every packed row of the batch."""
    batch = collator(family, attn)([{k: p[k] for k in ("input_ids", "labels", "seq_lengths", "media")} for p in packed])
    batch.pop("labels")
    batch.update(overrides)
    with torch.no_grad():
        logits = model(family, attn)(**batch, use_cache=False).logits
    by_ids = {tuple(r["input_ids"]): r for r in rows}
    errors = []
    for b, row in enumerate(packed):
        begin = 0
        for n in row["seq_lengths"]:
            real = [t for t, keep in zip(row["input_ids"][begin : begin + n], row["attention_mask"][begin : begin + n]) if keep]
            source = by_ids[tuple(real)]
            seg = logits[b, begin : begin + len(real)]
            errors.append((seg - alone(family, attn, source)).abs().max().item())
            begin += n
    return errors


# eager with pad_to_multiple_of adds nothing the other cases do not cover (and the suite must stay fast)
@pytest.mark.parametrize(("attn", "multiple"), [("sdpa", None), ("sdpa", 4), ("eager", None)])
@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "gemma3"])
def test_packed_sequences_with_images_equal_each_alone(family, attn, multiple, tmp_path):
    rows = rows_for(family)
    packed = pack(rows, tmp_path, max_length=64, multiple=multiple)
    # really packed, and over several rows of different lengths (the collator pads the batch)
    assert len(rows) > len(packed) > 1 and max(len(p["seq_lengths"]) for p in packed) >= 2
    errors = segment_errors(family, attn, rows, packed)
    assert len(errors) == len(rows)
    assert max(errors) < ATOL, errors


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_qwen_without_the_text_row_leaks(family, tmp_path):
    # The text row (row 0 of the 4) is what tells transformers where sequences begin; with the
    # 3 mRoPE rows alone it builds one causal mask over the whole row.
    rows = rows_for(family)
    packed = pack(rows, tmp_path, max_length=64)
    c = collator(family, "sdpa")
    four = c([{k: p[k] for k in ("input_ids", "labels", "seq_lengths", "media")} for p in packed])["position_ids"]
    assert four.shape[0] == 4
    errors = segment_errors(family, "sdpa", rows, packed, position_ids=four[1:])
    assert max(errors) > LEAK
    assert sorted(errors)[: len(packed)] == pytest.approx([0.0] * len(packed), abs=ATOL)  # each row's first sequence


def test_gemma_with_its_own_masks_leaks(tmp_path):
    # What the model builds from position_ids + token_type_ids: the sliding layer indexes the
    # image overlay by the position inside the sequence, so later sequences go wrong.
    rows = rows_for("gemma3")
    packed = pack(rows, tmp_path, max_length=64)
    errors = segment_errors("gemma3", "sdpa", rows, packed, attention_mask=None)
    assert max(errors) > LEAK
