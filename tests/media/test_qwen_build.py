"""Qwen2-VL end to end: `ftdata build DATA --processor DIR` on real images, checked against the processor itself."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ftdata.cli.app import app
from ftdata.build.api import build
from ftdata.types import IGNORE_INDEX


PAD, START, END = "<|image_pad|>", "<|vision_start|>", "<|vision_end|>"


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def ask(image_part, question="What is this?", answer="A picture."):
    return {"messages": [{"role": "user", "content": [image_part, {"type": "text", "text": question}]},
                         {"role": "assistant", "content": answer}]}  # fmt: skip


@pytest.fixture(scope="module")
def processor(qwen_dir):
    from ftdata.media.processors import load_processor

    return load_processor(str(qwen_dir))


def reference_ids(processor, record, images):
    """What the Qwen2-VL processor itself makes of the record: its chat template on content parts, then its __call__ on the pixels."""
    from PIL import Image

    text = processor.apply_chat_template(record["messages"], tokenize=False)
    pil = [Image.open(images / name).convert("RGB") for name in record["_files"]]
    return processor(text=[text], images=pil or None)["input_ids"][0]


def test_rows_equal_the_processors_own_output(qwen_dir, images, processor):
    records = [
        {**ask({"type": "image", "image": "grace_hopper.jpg"}, "Who is this?", "Grace Hopper."), "_files": ["grace_hopper.jpg"]},
        {**ask({"type": "image_url", "image_url": {"url": "logo2.png"}}, "Which logo?", "Matplotlib's."), "_files": ["logo2.png"]},
        {"messages": [{"role": "user", "content": [{"type": "image", "image": "chart.png"}, {"type": "text", "text": "Trend?"},
                                                    {"type": "image", "image": "logo2.png"}]},
                      {"role": "assistant", "content": "Up, then down, then up."}], "_files": ["chart.png", "logo2.png"]},
    ]  # fmt: skip
    data = write_jsonl(images / "rows.jsonl", [{k: v for k, v in r.items() if k != "_files"} for r in records])
    ds = build(data, processor=str(qwen_dir)).dataset
    tok = processor.tokenizer
    pad = tok.convert_tokens_to_ids(PAD)
    assert len(ds) == 3
    for row, record in zip(ds, records):
        assert row["input_ids"] == reference_ids(processor, record, images)  # token for token, image spans included
        ids, labels = np.array(row["input_ids"]), np.array(row["labels"])
        trained = tok.decode(ids[labels != IGNORE_INDEX])
        assert trained == record["messages"][-1]["content"] + "<|im_end|>"
        for image, name in zip(row["media"], record["_files"]):
            assert image["ref"] == str((images / name).resolve())
            assert (ids[image["start"] : image["start"] + image["tokens"]] == pad).all()
            assert ids[image["start"] - 1] == tok.convert_tokens_to_ids(START)
            assert ids[image["start"] + image["tokens"]] == tok.convert_tokens_to_ids(END)
        assert sum(i["tokens"] for i in row["media"]) == int((ids == pad).sum())
    sizes = [(i["width"], i["height"], i["tokens"]) for i in ds[2]["media"]]
    assert sizes == [(320, 240, 99), (542, 130, 95)]  # smart_resize: 320x240 -> 308x252 = 22x18 patches, / 2x2 merge


def test_counts_are_the_processors(processor, images):
    from PIL import Image

    from ftdata.media.images import ImageMedium

    counter = ImageMedium(processor, store=None, max_pixels=None)
    for name in ("grace_hopper.jpg", "logo2.png", "chart.png"):
        with Image.open(images / name) as im:
            grid = processor.image_processor(images=[im.convert("RGB")])["image_grid_thw"][0]
            w, h = im.size
        assert counter.expansion(w, h).pads == int(np.prod(grid)) // 4


def test_bad_images_are_rejected_with_reasons(qwen_dir, images, tmp_path):
    png = base64.b64encode((images / "logo2.png").read_bytes()).decode()
    records = [
        ask({"type": "image", "image": "missing.png"}),
        ask({"type": "image", "image": "https://example.com/cat.png"}),
        ask({"type": "image", "image": "not_an_image.png"}),
        ask({"type": "image", "image": "corrupt.png"}),
        {"messages": [{"role": "user", "content": "<image> and <image>?"}, {"role": "assistant", "content": "One."}], "images": ["logo2.png"]},
        {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}, {"role": "assistant", "content": "No image."}]},
        {"messages": [{"role": "user", "content": "Look."}, {"role": "assistant", "content": [{"type": "image", "image": "logo2.png"}]}]},
        ask({"type": "image", "image": "grace_hopper.jpg"}),  # over the pixel budget below
        ask({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}),  # kept
        {"messages": [{"role": "user", "content": "Plain text."}, {"role": "assistant", "content": "Still built."}]},  # kept
        {"messages": [{"role": "user", "content": "<image><image>"}, {"role": "assistant", "content": "Two."}], "images": ["logo2.png", "chart.png"]},
    ]  # fmt: skip
    data = write_jsonl(images / "bad.jsonl", records)
    out = tmp_path / "out"
    result = build(data, out, processor=str(qwen_dir), output_format="jsonl", max_image_pixels=200_000, max_images=1)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    codes = [(r["location"].rsplit(":", 1)[1], r["code"]) for r in rejects]
    assert codes == [
        ("1", "media_missing"), ("2", "media_url"), ("3", "media_unreadable"), ("4", "media_unreadable"),
        ("5", "media_mismatch"), ("6", "media_mismatch"), ("7", "media_in_response"), ("8", "media_too_large"),
        ("11", "media_too_many"),
    ]  # fmt: skip
    assert "512x600 = 307200 pixels > max_image_pixels 200000" in rejects[7]["reason"]
    assert result.report.rejected == {c: n for c, n in [("media_missing", 1), ("media_url", 1), ("media_unreadable", 2), ("media_mismatch", 2), ("media_in_response", 1), ("media_too_large", 1), ("media_too_many", 1)]}  # fmt: skip
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    inline, text_only = rows
    digest = inline["media"][0]["ref"].removeprefix("sha256:")
    assert (out / "images" / f"{digest}.png").read_bytes() == (images / "logo2.png").read_bytes()
    assert text_only["media"] == [] and text_only["trained"] == ["Still built.<|im_end|>"]
    assert "pixel" not in json.dumps(rows)  # references and sizes only
    # OUT/images is published with the build and is the build's own: building again into OUT takes it over.
    assert "images" in json.loads((out / "build.json").read_text())["output"]["files"]
    build(data, out, processor=str(qwen_dir), output_format="jsonl", max_image_pixels=200_000)
    assert (out / "images" / f"{digest}.png").read_bytes() == (images / "logo2.png").read_bytes()


def test_without_a_processor_image_records_are_rejected_text_records_build(images, tmp_path):
    """A text build: image parts and an `images` column's items are rejected (never dropped in silence); `<image>` in
    the text of a row with no images column is text."""
    data = write_jsonl(images / "noproc.jsonl", [
        ask({"type": "image", "image": "logo2.png"}),
        {"messages": [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}], "images": ["logo2.png"]},
        {"messages": [{"role": "user", "content": "Write <image> in HTML."}, {"role": "assistant", "content": "<img>"}]},
    ])  # fmt: skip
    result = build(data)
    assert len(result.dataset) == 1 and "media" not in result.dataset.column_names
    assert result.report.rejected == {"media_no_processor": 2}


def test_short_max_length_never_leaves_part_of_an_image(qwen_dir, images, tmp_path):
    """Oldest exchanges (with their images) go first; the last exchange's image stays whole or the record goes."""
    turns = [
        {"role": "user", "content": [{"type": "image", "image": "grace_hopper.jpg"}, {"type": "text", "text": "Who?"}]},
        {"role": "assistant", "content": "Grace Hopper."},
        {"role": "user", "content": [{"type": "image", "image": "chart.png"}, {"type": "text", "text": "And this chart? " + "Please look closely. " * 40}]},
        {"role": "assistant", "content": "A line chart."},
    ]  # fmt: skip
    text = {"messages": [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}]}
    data = write_jsonl(images / "long.jsonl", [{"messages": turns}, {"messages": turns[:2]}, text])
    for policy in ("keep_response", "keep_end", "split", "keep_start"):
        result = build(data, processor=str(qwen_dir), max_length=200, truncation=policy)
        pad = 151655
        for row in result.dataset:
            ids = np.array(row["input_ids"])
            assert len(ids) <= 200
            assert sum(i["tokens"] for i in row["media"]) == int((ids == pad).sum())
            for image in row["media"]:
                s = image["start"]
                assert ids[s - 1] == 151652 and ids[s + image["tokens"]] == 151653  # whole: start and end markers
        codes = dict(result.report.rejected)
        assert codes.get("media_too_long", 0) >= 1, (policy, codes)  # Grace Hopper alone is 378 tokens
    kept = build(data, processor=str(qwen_dir), max_length=200).dataset
    assert [[i["ref"].rsplit("/", 1)[1] for i in row["media"]] for row in kept] == [["chart.png"], []]  # exchange 1 dropped


def test_spliced_pad_runs_equal_tokenizing_the_whole_expanded_text(qwen_dir, images, monkeypatch):
    """Each run of image pads is tokenized as one pad and spliced back: the rows (cut ones too) are those
    of tokenizing the whole expanded text, which is what a tokenizer failing the splice check gets."""
    turns = [
        {"role": "user", "content": [{"type": "image", "image": "grace_hopper.jpg"}, {"type": "text", "text": "Who?"}]},
        {"role": "assistant", "content": "Grace Hopper."},
        {"role": "user", "content": [{"type": "text", "text": "And these? " + "Look closely. " * 30}, {"type": "image", "image": "chart.png"},
                                     {"type": "image", "image": "logo2.png"}]},
        {"role": "assistant", "content": "A chart and a logo."},
    ]  # fmt: skip
    data = write_jsonl(images / "splice.jsonl", [{"messages": turns}, {"messages": turns[:2]}, {"messages": turns[2:]}])
    options = [{}, {"max_length": 400}, {"max_length": 400, "truncation": "keep_start"}, {"max_length": 300, "truncation": "keep_end"}]
    spliced = [build(data, processor=str(qwen_dir), **o) for o in options]
    monkeypatch.setattr("ftdata.media.splice.atomic", lambda *a: False)
    whole = [build(data, processor=str(qwen_dir), **o) for o in options]
    for a, b in zip(spliced, whole):
        assert a.dataset.to_list() == b.dataset.to_list() and len(a.dataset) >= 1
        assert a.report.rejected == b.report.rejected and a.report.cut == b.report.cut


def test_images_that_cannot_fit_are_rejected_before_any_trial(qwen_dir, images, tmp_path, monkeypatch):
    """The last exchange's image tokens and response already pass max_length: no shorter conversation can
    fit, so none is rendered (a trial re-tokenizes the image's pads)."""
    from ftdata.tokens.truncation import Truncator

    def no_trial(*args, **kwargs):
        raise AssertionError("a truncation trial ran")

    monkeypatch.setattr(Truncator, "_fit", no_trial)
    text = {"messages": [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}]}
    data = write_jsonl(images / "big.jsonl", [ask({"type": "image", "image": "grace_hopper.jpg"}, "Who?", "Grace Hopper."), text])
    result = build(data, tmp_path / "out", processor=str(qwen_dir), output_format="jsonl", max_length=300, max_reject_ratio=1.0)
    assert result.report.rejected == {"media_too_long": 1}
    reject = json.loads((tmp_path / "out" / "rejects.jsonl").read_text().splitlines()[0])
    assert reject["reason"] == (
        "media too long: the last exchange's media items take 380 tokens, which are never cut, and with the response's 5 tokens "
        "they do not fit max_length 300; raise max_length, lower the processor's max_pixels or shorten the clips (407 tokens > max_length 300)"
    )


def test_cli_build_jsonl(qwen_dir, images, tmp_path):
    data = write_jsonl(images / "cli.jsonl", [ask({"type": "image", "image": "chart.png"}, "Trend?", "Rising.")])
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["build", str(data), "--processor", str(qwen_dir), "-o", str(out), "--output-format", "jsonl"])
    assert result.exit_code == 0, result.output
    row = json.loads((out / "train.jsonl").read_text())
    assert row["media"] == [{"kind": "image", "ref": str((images / "chart.png").resolve()), "start": 15, "tokens": 99, "width": 320,
                             "height": 240, "seconds": None}]  # fmt: skip
    assert row["trained"] == ["Rising.<|im_end|>"]


def test_folder_variants_chat_template_json_and_no_processor_class(images, tmp_path):
    """A model folder with the older chat_template.json, no processor_class (inferred from config.json's
    model_type), and one with only the text model's template: images still get Qwen's vision markers."""
    from processor_folders import QWEN2_VL, TEMPLATES, make_processor_folder

    pre = {k: v for k, v in QWEN2_VL.items() if k != "processor_class"}
    legacy = make_processor_folder(tmp_path / "legacy", tokenizer="qwen2.5-instruct", preprocessor=pre, model_config={"model_type": "qwen2_vl"})
    (legacy / "chat_template.json").write_text(json.dumps({"chat_template": (TEMPLATES / "qwen2_vl.jinja").read_text()}))
    text_only = make_processor_folder(tmp_path / "text", tokenizer="qwen2.5-instruct", preprocessor=QWEN2_VL)
    data = write_jsonl(images / "variants.jsonl", [ask({"type": "image", "image": "chart.png"}, "Trend?", "Rising.")])
    for folder, system in ((legacy, "You are a helpful assistant."), (text_only, "You are Qwen, created by Alibaba Cloud.")):
        row = build(data, processor=str(folder)).dataset[0]
        ids = np.array(row["input_ids"])
        (image,) = row["media"]
        assert (image["tokens"], ids[image["start"] - 1], ids[image["start"] + image["tokens"]]) == (99, 151652, 151653)
        from ftdata.io.resources import load_tokenizer

        assert system in load_tokenizer(str(folder)).decode(ids)


def test_a_missing_processor_folder_is_one_line_naming_the_processor(tmp_path):
    """It was "tokenizer '/x': no such folder; ... or omit --tokenizer": the user gave --processor, not --tokenizer."""
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n")
    missing = tmp_path / "no-such-model"
    result = CliRunner().invoke(app, ["build", str(data), "--processor", str(missing), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: processor '{missing}': no such folder; give the model's folder (tokenizer files, "
        "preprocessor_config.json, chat template)"
    )
    assert not (tmp_path / "out").exists()
