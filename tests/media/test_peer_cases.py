"""The peers' own VLM test cases, run through ftdata: each one names where it comes from and what the peer
expects, and ftdata must agree. The processor's own output is the oracle for every row (its chat template on
the parts the peer gives it, then `processor(text=..., images=...)` on the pixels).

Sources (read, not copied; the cases are restated here with their numbers):
- LLaMA-Factory `tests/data/test_mm_plugin.py`: MM_MESSAGES ("<image>What is in this image?" / "A cat.") with
  one 32x32 white image; the expansion each plugin writes (test_qwen2_vl_plugin: 4 pads between the vision
  markers; test_llava_plugin: 576; test_llava_next_plugin, llava-v1.6-vicuna-7b-hf: 1176; test_gemma3_plugin:
  "\\n\\n<start_of_image>" + 256 soft tokens + "<end_of_image>\\n\\n"); TEXT_MESSAGES unchanged (test_base_plugin).
- TRL `tests/test_data_utils.py` TestPrepareMultimodalMessages (six cases), with TRL's own
  `prepare_multimodal_messages` as the oracle; TRL's VLM SFT test rows (`messages` with string contents and an
  `images` column, as trl-internal-testing/zen-image's conversational_language_modeling config holds them).
- transformers `tests/models/llava_next/test_processing_llava_next.py` test_image_token_filling (a 503x316 image,
  image_grid_pinpoints [[672, 336]], the processor's default num_additional_image_tokens 0: 1525 tokens) and the
  llava-v1.6-vicuna-7b-hf processor's (500x316: 1526 tokens); Qwen2-VL's `smart_resize` ("absolute aspect ratio
  must be smaller than 200"); SmolVLMProcessor, which wants num2words; `image_utils.load_image`, which applies a
  photo's EXIF orientation (datasets' `Image` feature does too); Gemma3Processor's chat template, which trims each
  text part.
- Axolotl `src/axolotl/processing_strategies.py` ProcessingStrategy: string contents and an image column train
  (Axolotl appends the image to the first message; ftdata places it as TRL does, before the first user text),
  every image token masked (Gemma3ProcessingStrategy.process_labels).

The cases that were defects (issue 37): TRL's rows without placeholders were rejected `media_mismatch`; a 10000x20
PNG crashed a Qwen2-VL build; SmolVLM did not build (and without num2words gave a traceback); a LLaVA-Next
processor one token off its model was built; Gemma 3 kept "Compare " where the processor trims it; an
EXIF-rotated photo was counted unrotated.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from trl.data_utils import prepare_multimodal_messages
from typer.testing import CliRunner

from ftdata.build.api import build
from ftdata.chat.contents import to_parts
from ftdata.cli.app import app
from ftdata.errors import ConfigError, Location
from ftdata.media.images import ImageMedium, load_image
from ftdata.media.processors import load_processor
from ftdata.outcomes import NoteCode
from ftdata.records.media import MEDIA, attach_columns
from ftdata.types import IGNORE_INDEX, Example, Message

HERE = Location("data.jsonl", 1)
MM_MESSAGES = [{"role": "user", "content": "<image>What is in this image?"}, {"role": "assistant", "content": "A cat."}]
TEXT_MESSAGES = [{"role": "user", "content": "How are you"}, {"role": "assistant", "content": "I am fine!"}]


@pytest.fixture(scope="module")
def white(tmp_path_factory) -> Path:
    """LLaMA-Factory's IMAGES: one 32x32 white RGB image (as a file: ftdata reads references)."""
    path = tmp_path_factory.mktemp("lf") / "white.png"
    Image.new("RGB", (32, 32), (255, 255, 255)).save(path)
    return path


@pytest.fixture(scope="module")
def llava_next_llama(llava_dir, tmp_path_factory) -> Path:
    """LLaVA-Next settings (llava-v1.6-*) on the LLaVA folder's tokenizer (Llama-3 with <image>): counts only."""
    from processor_folders import LLAVA_NEXT, LLAVA_NEXT_PROCESSOR

    folder = tmp_path_factory.mktemp("llava-next") / "llama"
    shutil.copytree(llava_dir, folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(LLAVA_NEXT))
    (folder / "processor_config.json").write_text(json.dumps(LLAVA_NEXT_PROCESSOR))
    return folder


def jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def oracle(processor, messages, images) -> list[int]:
    """The processor's own row: its chat template on `messages` as given, then its __call__ on the pixels."""
    text = processor.tokenizer.apply_chat_template(messages, chat_template=processor.chat_template, tokenize=False)
    pixels = [load_image(str(p)) for p in images]
    return list(processor(text=[text], images=[pixels] if pixels else None, add_special_tokens=False)["input_ids"][0])


def parts(messages: list[dict]) -> list[dict]:
    """LLaMA-Factory's string messages as the parts a processor's template gets at inference (`<image>` -> an image part)."""
    return [{**m, "content": to_parts(m["content"].replace("<image>", MEDIA))} for m in messages]


# --- LLaMA-Factory: each plugin's expansion of MM_MESSAGES with one 32x32 white image ----------------------

LF_PLUGINS = [  # fixture, the image token, the tokens LLaMA-Factory's test expects, the template reads parts
    ("qwen_dir", "<|image_pad|>", 4, True), ("llava_dir", "<image>", 576, False),
    ("llava_next_llama", "<image>", 1176, False), ("gemma_dir", "<image_soft_token>", 256, True),
]  # fmt: skip


@pytest.mark.parametrize(("folder", "token", "expected", "reads_parts"), LF_PLUGINS, ids=[p[0] for p in LF_PLUGINS])
def test_llamafactory_mm_plugin_expansion(folder, token, expected, reads_parts, request, white, tmp_path):
    directory = request.getfixturevalue(folder)
    processor = load_processor(str(directory))
    data = jsonl(tmp_path / "lf.jsonl", [{"messages": MM_MESSAGES, "images": [str(white)]}])
    (row,) = build(data, processor=processor, max_length=4096).dataset
    assert row["input_ids"] == oracle(processor, parts(MM_MESSAGES) if reads_parts else MM_MESSAGES, [white])
    ids = np.array(row["input_ids"])
    assert int((ids == processor.tokenizer.convert_tokens_to_ids(token)).sum()) == expected
    assert [(m["kind"], m["width"], m["height"], m["tokens"]) for m in row["media"]] == [("image", 32, 32, expected)]
    trained = processor.tokenizer.decode(ids[np.array(row["labels"]) != IGNORE_INDEX])
    assert trained.startswith("A cat.")


def test_llamafactory_text_messages_build_as_text(qwen_dir, tmp_path):
    """test_base_plugin: TEXT_MESSAGES go through unchanged: the same row with the processor as without it."""
    data = jsonl(tmp_path / "text.jsonl", [{"messages": TEXT_MESSAGES}])
    with_processor = build(data, processor=str(qwen_dir)).dataset[0]
    text = build(data, tokenizer=str(qwen_dir)).dataset[0]  # the folder's tokenizer and chat_template.jinja
    assert (with_processor["input_ids"], with_processor["labels"], with_processor["media"]) == (text["input_ids"], text["labels"], [])


# --- TRL: prepare_multimodal_messages, the oracle of where images go in rows without placeholders ---------

def _blue():
    return Image.new("RGB", (10, 10), color="blue")


TRL_CASES = {  # TestPrepareMultimodalMessages: the messages and how many images
    "basic_user_assistant_conversation": ([{"role": "user", "content": "What color is the sky?"},
                                           {"role": "assistant", "content": "It is blue."}], 1),
    "first_user_message_gets_image": ([{"role": "user", "content": "What color is the sky?"},
                                       {"role": "assistant", "content": "It is blue."},
                                       {"role": "user", "content": "How about the grass?"}], 1),
    "multiple_images": ([{"role": "user", "content": "What color is the sky?"}, {"role": "assistant", "content": "It is blue."}], 3),
    "system_message_transformation": ([{"role": "system", "content": "You are a helpful assistant"},
                                       {"role": "user", "content": "What color is the sky?"}], 1),
    "already_prepared_messages_unchanged": ([{"role": "system", "content": [{"type": "text", "text": "You are a helpful assistant"}]},
                                             {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is the sky?"}]},
                                             {"role": "assistant", "content": [{"type": "text", "text": "It is blue."}]}], 1),
    "mixed_prepared_and_unprepared_messages": ([{"role": "user", "content": "What color is the sky?"},
                                                {"role": "assistant", "content": [{"type": "text", "text": "It is blue."}]},
                                                {"role": "user", "content": "What about the grass?"}], 1),
}  # fmt: skip


def _message(m: dict) -> Message:
    from ftdata.records.media import content_parts

    if isinstance(m["content"], list):
        text, media = content_parts(m["content"], location=HERE, field="messages")
        return Message(m["role"], text, media=media)
    return Message(m["role"], m["content"])


@pytest.mark.parametrize("case", sorted(TRL_CASES))
def test_trl_prepare_multimodal_messages(case):
    """ftdata puts the column's images where TRL does: before the first user text when the messages hold no
    placeholder, into the bare {"type": "image"} parts otherwise (and notes the placement)."""
    messages, n = TRL_CASES[case]
    images = [_blue() for _ in range(n)]
    example = Example(tuple(_message(m) for m in messages), source=HERE)
    (placed,) = attach_columns((example,), {"messages": messages, "images": images}, HERE)
    ours = []
    for m in placed.messages:
        content = to_parts(m.content)
        refs = iter(m.media)
        ours.append({"role": m.role, "content": [{**p, "image": next(refs).value} if p["type"] == "image" else p for p in content]})
    assert ours == prepare_multimodal_messages(messages, images=images)
    bare = not any(isinstance(m["content"], list) for m in messages if m["role"] == "user")
    assert [n.code for n in placed.notes] == ([NoteCode.MEDIA_PLACED] if bare else [])


def test_trl_vlm_sft_rows_build(qwen_dir, tmp_path):
    """TRL's VLM SFT test rows (string contents, an `images` column of datasets Image values) all build, each row
    the processor's own output on TRL's prepared messages; the report notes the placement."""
    import datasets

    zen = [("What is better than ugly?", "Beautiful."), ("What is better than implicit?", "Explicit."),
           ("What is better than complex?", "Simple.")]  # fmt: skip
    files = []
    for k, size in enumerate([(64, 48), (30, 90), (200, 120)]):
        files.append(tmp_path / f"zen{k}.png")
        Image.new("RGB", size, (40 * k, 90, 200)).save(files[-1])
    rows = {"messages": [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in zen],
            "images": [[str(f)] for f in files]}  # fmt: skip
    ds = datasets.Dataset.from_dict(rows).cast_column("images", datasets.Sequence(datasets.Image()))
    result = build(ds, processor=str(qwen_dir))
    processor = load_processor(str(qwen_dir))
    assert len(result.dataset) == 3 and not result.report.rejected
    assert result.report.notes[NoteCode.MEDIA_PLACED] == 3
    for row, messages, image in zip(result.dataset, rows["messages"], files):
        prepared = prepare_multimodal_messages(messages, images=[str(image)])
        assert row["input_ids"] == oracle(processor, [{**m, "content": [{k: v for k, v in p.items() if k != "image"} for p in m["content"]]}
                                                      for m in prepared], [image])  # fmt: skip


# --- transformers: the processors' own counts and refusals ----------------------------------------------

def test_transformers_llava_next_token_filling(llava_next_llama):
    """llava-v1.6-vicuna-7b-hf's processor: a 500x316 image is 1526 tokens; test_image_token_filling's processor
    (image_grid_pinpoints [[672, 336]], num_additional_image_tokens left at its default 0): 503x316 is 1525."""
    processor = load_processor(str(llava_next_llama))
    assert ImageMedium(processor, store=None, max_pixels=None).expansion(316, 500).pads == 1526
    processor.image_processor.image_grid_pinpoints = [[672, 336]]
    processor.num_additional_image_tokens = 0
    assert ImageMedium(processor, store=None, max_pixels=None).expansion(316, 503).pads == 1525


def test_llava_next_processor_one_token_off_its_model_is_refused(tmp_path):
    """The 1525 processor above against its model (a 336-px CLIP tower with 14-px patches, CLS dropped: 576 features
    per base image): transformers' model fails later with "Image features and image tokens do not match"."""
    from processor_folders import LLAVA_NEXT, LLAVA_NEXT_PROCESSOR, make_processor_folder

    model = {"model_type": "llava_next", "vision_feature_select_strategy": "default", "image_grid_pinpoints": LLAVA_NEXT["image_grid_pinpoints"],
             "vision_config": {"image_size": 336, "patch_size": 14}}  # fmt: skip
    processor = {k: v for k, v in LLAVA_NEXT_PROCESSOR.items() if k != "num_additional_image_tokens"}
    folder = make_processor_folder(tmp_path / "ln", tokenizer="llama-3-8b-instruct", preprocessor=LLAVA_NEXT, processor=processor,
                                   added=["<image>"], model_config=model)  # fmt: skip
    with pytest.raises(ConfigError, match="the processor makes 575 tokens per base image but the model config makes 576"):
        load_processor(str(folder))
    (folder / "processor_config.json").write_text(json.dumps(LLAVA_NEXT_PROCESSOR))
    assert load_processor(str(folder)).num_additional_image_tokens == 1


def test_an_image_the_processor_refuses_is_one_reject(qwen_dir, images, tmp_path):
    """Qwen2-VL's smart_resize raises for an aspect ratio over 200: that record is one `media_refused` reject with
    the processor's reason; the build goes on."""
    Image.new("RGB", (10000, 20), "white").save(tmp_path / "strip.png")
    shutil.copyfile(images / "chart.png", tmp_path / "chart.png")
    ask = [{"role": "assistant", "content": "A strip."}]
    data = jsonl(tmp_path / "strip.jsonl", [
        {"messages": [{"role": "user", "content": [{"type": "image", "image": "strip.png"}, {"type": "text", "text": "What?"}]}, *ask]},
        {"messages": [{"role": "user", "content": [{"type": "image", "image": "chart.png"}, {"type": "text", "text": "What?"}]}, *ask]},
    ])  # fmt: skip
    result = build(data, tmp_path / "out", processor=str(qwen_dir), output_format="jsonl", max_reject_ratio=1.0)
    assert len(result.dataset) == 1 and result.report.rejected == {"media_refused": 1}
    reject = json.loads((tmp_path / "out" / "rejects.jsonl").read_text())
    assert reject["code"] == "media_refused" and reject["stage"] == "render"
    assert reject["reason"].startswith("image 0: the processor refuses image ")
    assert reject["reason"].endswith("(10000x20): absolute aspect ratio must be smaller than 200, got 500.0")


def test_smolvlm_rows_equal_the_processors_own_output(smolvlm_dir, num2words, images, tmp_path):
    """SmolVLM builds (its processor has no count of its own: the expansion's tokens are the count), token for
    token what SmolVLMProcessor makes of the parts and the pixels."""
    processor = load_processor(str(smolvlm_dir))
    messages = [{"role": "user", "content": [{"type": "image", "image": str(images / "grace_hopper.jpg")}, {"type": "text", "text": "Who is this?"}]},
                {"role": "assistant", "content": "Grace Hopper."}]  # fmt: skip
    (row,) = build(jsonl(tmp_path / "smol.jsonl", [{"messages": messages}]), processor=processor, max_length=8192).dataset
    given = [{**messages[0], "content": [{"type": "image"}, messages[0]["content"][1]]}, {**messages[1], "content": [{"type": "text", "text": "Grace Hopper."}]}]
    assert row["input_ids"] == oracle(processor, given, [images / "grace_hopper.jpg"])
    assert [(m["width"], m["height"], m["tokens"]) for m in row["media"]] == [(512, 600, 17 * 64)]  # 4x4 tiles + the global image
    ids = np.array(row["input_ids"])
    assert processor.tokenizer.decode(ids[np.array(row["labels"]) != IGNORE_INDEX]) == " Grace Hopper.<end_of_utterance>"


def test_smolvlm_without_num2words_is_one_line_naming_it(smolvlm_dir, monkeypatch, tmp_path):
    from transformers.models.smolvlm import processing_smolvlm

    monkeypatch.setattr(processing_smolvlm, "num2words", None)
    data = jsonl(tmp_path / "t.jsonl", [{"messages": TEXT_MESSAGES}])
    result = CliRunner().invoke(app, ["build", str(data), "--processor", str(smolvlm_dir), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: processor SmolVLMProcessor needs a package that is not installed: Package `num2words` is required to run "
        "SmolVLM processor. Install it with `pip install num2words`."
    )


def test_an_exif_rotated_photo_is_counted_as_the_processor_sees_it(llava_next_llama, tmp_path):
    """A 600x400 JPEG whose EXIF orientation (6) turns it a quarter: transformers' load_image (and datasets' Image
    feature) give the processor a 400x600 photo, and LLaVA-Next's grid depends on the orientation."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (600, 400), (120, 60, 30)).save(tmp_path / "turned.jpg", exif=exif)
    processor = load_processor(str(llava_next_llama))
    record = {"messages": [{"role": "user", "content": "<image>What is this?"}, {"role": "assistant", "content": "A photo."}],
              "images": ["turned.jpg"]}  # fmt: skip
    (row,) = build(jsonl(tmp_path / "exif.jsonl", [record]), processor=processor, max_length=4096).dataset
    assert (row["media"][0]["width"], row["media"][0]["height"]) == (400, 600) == load_image(str(tmp_path / "turned.jpg")).size
    assert row["input_ids"] == oracle(processor, record["messages"], [tmp_path / "turned.jpg"])
    medium = ImageMedium(processor, store=None, max_pixels=None)
    assert medium.expansion(400, 600).pads != medium.expansion(600, 400).pads  # the orientation changes the count


def test_gemma3_rows_are_the_templates_rendering_of_the_parts(gemma_dir, images, tmp_path):
    """Gemma 3's template trims each text part: "Compare " + an image renders "Compare<start_of_image>", which is
    what the model sees at inference (TRL and Axolotl give it parts too); the row is that rendering, expanded."""
    processor = load_processor(str(gemma_dir))
    record = {"messages": [{"role": "user", "content": "Compare <image> with <image>."}, {"role": "assistant", "content": "A person and a logo."}],
              "images": ["grace_hopper.jpg", "logo2.png"]}  # fmt: skip
    (row,) = build(jsonl(images / "gemma-trim.jsonl", [record]), processor=processor, max_length=4096).dataset
    assert row["input_ids"] == oracle(processor, parts(record["messages"]), [images / "grace_hopper.jpg", images / "logo2.png"])
    before = processor.tokenizer.decode(row["input_ids"][: row["media"][0]["start"]])
    assert before.endswith("user\nCompare\n\n<start_of_image>")  # no space after "Compare": the part is trimmed


def test_axolotl_string_messages_with_an_image_column_train_with_images_masked(gemma_dir, images, tmp_path):
    """Axolotl's ProcessingStrategy trains string contents with an image column and masks every image token
    (Gemma3ProcessingStrategy: <start_of_image>, the soft tokens): so does ftdata."""
    processor = load_processor(str(gemma_dir))
    record = {"messages": [{"role": "user", "content": "Describe the image."}, {"role": "assistant", "content": "A woman in uniform."}],
              "image": "grace_hopper.jpg"}  # fmt: skip
    (row,) = build(jsonl(images / "axolotl.jsonl", [record]), processor=processor, max_length=4096).dataset
    tok = processor.tokenizer
    ids, labels = np.array(row["input_ids"]), np.array(row["labels"])
    media = np.isin(ids, tok.convert_tokens_to_ids(["<start_of_image>", "<image_soft_token>", "<end_of_image>"]))
    assert media.sum() == 258 and (labels[media] == IGNORE_INDEX).all()
    assert tok.decode(ids[labels != IGNORE_INDEX]) == "A woman in uniform.<end_of_turn>"
