"""`MediaCollator` without a model: images resolved by path or digest, the batch it builds,
and the typed errors when an image's span, its features and its `tokens` disagree."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("PIL")
pytest.importorskip("matplotlib")

from media_support import IMG, PHOTOS, gemma_config, inline_copy, make_row, qwen_config, qwen_image_processor  # noqa: E402

from ftdata.errors import ConfigError, RecordError  # noqa: E402
from ftdata.media.families import Collate  # noqa: E402
from ftdata.train.media_collator import FeatureMismatch, MediaCollator, ModelFacts  # noqa: E402


def fake_rope(seq, *, mm_token_type_ids, image_grid_thw):
    # stands in for the model's get_rope_index: marks each sequence's rope rows with its image count
    return torch.full((3, 1, seq.shape[1]), 100 * len(image_grid_thw)), None


def qwen_collator(**kwargs) -> MediaCollator:
    return MediaCollator(qwen_image_processor(), ModelFacts.of(qwen_config()), rope_index=fake_rope, **kwargs)


def test_facts_and_families_from_configs():
    qwen, gemma = ModelFacts.of(qwen_config()), ModelFacts.of(gemma_config())
    assert (qwen.collate, qwen.image_token_id, qwen.merge_size) == (Collate.MROPE, IMG, 2)
    assert (gemma.collate, gemma.image_token_id, gemma.tokens_per_image, gemma.sliding_window) == (Collate.BLOCKS, IMG, 4, 6)


def test_batch_of_packed_and_plain_rows(tmp_path):
    a = make_row("qwen2_vl", prefix=3, images=[PHOTOS[0]], suffix=4, seed=1)
    b = make_row("qwen2_vl", prefix=2, images=[], suffix=3, seed=2)
    packed = {"input_ids": a["input_ids"] + b["input_ids"], "labels": a["labels"] + b["labels"],
              "seq_lengths": [len(a["input_ids"]), len(b["input_ids"])], "media": a["media"]}  # fmt: skip
    batch = qwen_collator()([packed, b])
    n, m = len(a["input_ids"]), len(b["input_ids"])
    assert batch["input_ids"].shape == (2, n + m)
    assert batch["image_grid_thw"].tolist() == [[1, 8, 6]]  # grace_hopper.jpg under the 16-token budget: 48 patches
    assert a["media"][0]["tokens"] == 12
    text = batch["position_ids"][0]
    assert text[0].tolist() == [*range(n), *range(m)]
    assert text[1].tolist() == [*range(m), *range(m, n + m)]  # the plain row's pads continue its positions
    rope = batch["position_ids"][1:]
    assert (rope[:, 0, :n] == 100).all() and rope[:, 0, n:].tolist() == [list(range(m))] * 3
    assert "attention_mask" not in batch
    # first label of every sequence masked; pads masked; the rest as built
    assert batch["labels"][0, n].item() == -100 and batch["labels"][1, m:].eq(-100).all()
    assert batch["labels"][0, :n].tolist() == a["labels"]


def test_inline_images_resolve_under_the_image_folder(tmp_path):
    ref = inline_copy(PHOTOS[1], tmp_path / "images")
    row = make_row("qwen2_vl", prefix=3, images=[PHOTOS[1]], suffix=4, seed=1, refs=[ref])
    batch = qwen_collator(image_dir=tmp_path / "images")([row])
    assert batch["image_grid_thw"].tolist() == [[1, 2, 16]]  # logo2.png is wide
    with pytest.raises(RecordError, match=rf"inline image {ref} not found in no image folder"):
        qwen_collator()([row])


def test_mismatches_are_typed_errors_naming_row_and_image(tmp_path):
    row = make_row("qwen2_vl", prefix=3, images=[PHOTOS[0], PHOTOS[1]], suffix=4, seed=1)
    wrong_tokens = {**row, "media": [row["media"][0], {**row["media"][1], "tokens": 7}]}
    with pytest.raises(FeatureMismatch, match=r"row 0 of the batch: media.*image 1 .*logo2.png.*should span 7 placeholder tokens from token 20, but the row holds a run of 8"):
        qwen_collator()([wrong_tokens])
    # the span is right but this processor makes more features (a larger pixel budget than the build's)
    big = MediaCollator(type(qwen_image_processor())(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64),
                         ModelFacts.of(qwen_config()), rope_index=fake_rope)  # fmt: skip
    with pytest.raises(FeatureMismatch, match=r"image 0 \(.*grace_hopper.jpg, 512x600\) makes \d+ features .* holds 12 tokens"):
        big([{**row, "location": "data.jsonl:3"}])
    lost = {**row, "media": row["media"][:1]}
    with pytest.raises(FeatureMismatch, match=r"8 image tokens lie outside every recorded image span"):
        qwen_collator()([lost])
    missing = {**row, "media": [{**row["media"][0], "ref": str(tmp_path / "gone.jpg")}, row["media"][1]]}
    with pytest.raises(RecordError, match=r"image file .*gone.jpg is missing"):
        qwen_collator()([missing])


def test_unproven_family_refuses_packed_rows():
    facts = ModelFacts(model_type="llava", image_token_id=IMG, tokens_per_image=4)
    row = {"input_ids": [1, 2, 3, 4], "labels": [-100, 2, 3, 4], "seq_lengths": [2, 2], "media": []}
    with pytest.raises(ConfigError, match="packed rows are not proven isolated for model type 'llava'.*build without --packing"):
        MediaCollator(qwen_image_processor(), facts)([row])
    batch = MediaCollator(qwen_image_processor(), facts)([{**row, "seq_lengths": None}, {**row, "input_ids": [5, 6], "labels": [5, 6], "seq_lengths": None}])
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]


def test_images_load_as_the_processor_sees_them(tmp_path):
    """A photo whose EXIF orientation turns it a quarter loads turned (transformers' load_image does the same),
    so its pixels match the size the build counted from the header."""
    from PIL import Image

    from ftdata.media.images import Headers
    from ftdata.train.media_collator import load_items

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (60, 40), (200, 10, 10)).save(tmp_path / "turned.jpg", exif=exif)
    (pixels,) = load_items("image", [str(tmp_path / "turned.jpg")], None)
    info = Headers(store=None, max_pixels=None).info("turned.jpg", base=tmp_path, field="f")
    assert pixels.size == (info.width, info.height) == (40, 60) and pixels.mode == "RGB"
