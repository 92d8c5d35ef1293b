"""Gemma 3, LLaVA, LLaVA-Next and Idefics3: each image expanded to the processor's own count, token for token
what the processor itself makes of the same text and pixels; model-config disagreement refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ftdata.errors import ConfigError
from ftdata.run.driver import build
from ftdata.types import IGNORE_INDEX
from ftdata.vision.expand import template_image_text
from ftdata.vision.processors import load_processor

SLOW = pytest.mark.slow  # 20-60 s each on two shared cores: tokenizer, processor and the pixels
FAMILIES = [pytest.param("gemma_dir", marks=SLOW), "llava_dir", pytest.param("llava_next_dir", marks=SLOW), pytest.param("idefics3_dir", marks=SLOW)]


def _records():
    return [
        {"messages": [{"role": "user", "content": [{"type": "image", "image": "grace_hopper.jpg"}, {"type": "text", "text": "Who is this?"}]},
                      {"role": "assistant", "content": "Grace Hopper."}]},
        {"messages": [{"role": "user", "content": "Compare <image> with <image>."}, {"role": "assistant", "content": "A chart and a logo."}],
         "images": ["chart.png", "logo2.png"]},
    ]  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_equal_the_processors_own_output(family, request, images):
    from PIL import Image

    folder = request.getfixturevalue(family)
    processor = load_processor(str(folder))
    data = images / f"{family}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    ds = build(data, processor=processor, max_length=8192).dataset  # a processor object: its own tokenizer
    assert len(ds) == 2
    tok = processor.tokenizer
    image_text = template_image_text(processor)
    for row, files in zip(ds, (["grace_hopper.jpg"], ["chart.png", "logo2.png"])):
        ids, labels = np.array(row["input_ids"]), np.array(row["labels"])
        # The same text with the images as the template writes them, through the processor with the pixels.
        text = tok.decode(_collapsed(ids, row["images"], tok, image_text, processor))
        pil = [Image.open(images / f).convert("RGB") for f in files]
        expected = processor(text=[text], images=[pil], add_special_tokens=False)["input_ids"][0]
        assert list(ids) == list(expected)
        counts = processor._get_num_multimodal_tokens(image_sizes=[[im.height, im.width] for im in pil]).num_image_tokens
        pads = [i["tokens"] for i in row["images"]]
        if "idefics3" in family:  # the count is the whole expansion; pads are image_seq_len per tile
            assert all(p % 169 == 0 for p in pads) and sum(counts) > sum(pads)
        else:
            assert pads == list(counts)
        media = np.isin(ids, [tok.convert_tokens_to_ids(t) for t in ("<image>", "<image_soft_token>", "<start_of_image>") if t in tok.get_vocab()])
        assert (labels[media] == IGNORE_INDEX).all()
        assert tok.decode(ids[labels != IGNORE_INDEX]).startswith(("Grace Hopper.", "A chart and a logo."))


def _collapsed(ids, images, tok, image_text, processor):
    """The row's ids with each image's expansion put back to the template's image text (the processor's input)."""
    out = tok.decode(ids)
    for image in images:
        replacement = processor.replace_image_token(
            __import__("ftdata.vision.processors", fromlist=["FAMILIES"]).FAMILIES[type(processor).__name__].image_inputs(processor, image["height"], image["width"]), 0
        )  # fmt: skip
        out = out.replace(image_text.replace(processor.image_token, replacement), image_text, 1)
    return tok(out, add_special_tokens=False)["input_ids"]


def test_llava_processor_that_disagrees_with_the_model_is_refused(tmp_path):
    from conftest import LLAVA, LLAVA_PROCESSOR, make_processor_folder

    small = {**LLAVA, "crop_size": {"height": 224, "width": 224}, "size": {"shortest_edge": 224}}
    processor = {k: v for k, v in LLAVA_PROCESSOR.items() if k != "num_additional_image_tokens"}  # the old default: 0
    model = {"image_seq_length": 256, "vision_feature_select_strategy": "default", "vision_config": {"image_size": 224, "patch_size": 14}}
    folder = make_processor_folder(tmp_path / "llava", tokenizer="llama-3-8b-instruct", preprocessor=small, processor=processor,
                                   added=["<image>"], model_config=model)  # fmt: skip
    with pytest.raises(ConfigError, match="the processor makes 255 tokens per image but the model config makes 256"):
        load_processor(str(folder))
    (folder / "processor_config.json").write_text(json.dumps({**processor, "num_additional_image_tokens": 1}))
    assert load_processor(str(folder)).image_token == "<image>"


def test_gemma_pan_and_scan_is_refused(tmp_path):
    from conftest import GEMMA3, GEMMA3_PROCESSOR, make_processor_folder

    folder = make_processor_folder(tmp_path / "g", tokenizer="gemma-3-it", preprocessor={**GEMMA3, "do_pan_and_scan": True}, processor=GEMMA3_PROCESSOR)
    with pytest.raises(ConfigError, match="do_pan_and_scan"):
        load_processor(str(folder))
