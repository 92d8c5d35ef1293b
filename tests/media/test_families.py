"""Gemma 3, LLaVA, LLaVA-Next and Idefics3: each image expanded to the processor's own count, token for token
what the processor itself makes of the same text and pixels; model-config disagreement refused.

LLaVA-Next and Idefics3 render with the templates their model repos ship (tests/vision/templates), which read
message contents only as lists of parts: ftdata converts its string contents at the Jinja call (chat/contents.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ftdata.chat.renderer import ChatRenderer
from ftdata.chat.contents import MEDIA, ContentForm, to_parts
from ftdata.chat.render import Renderer
from ftdata.errors import ConfigError, TemplateError
from ftdata.io.resources import load_tokenizer
from ftdata.build.api import build
from ftdata.types import IGNORE_INDEX
from ftdata.media.expand import template_text
from ftdata.media.families import FAMILIES as TABLE
from ftdata.media.processors import load_processor
from ftdata.records.media import MediaKind

SLOW = pytest.mark.slow  # 20-60 s each on two shared cores: tokenizer, processor and the pixels
FAMILIES = [pytest.param("gemma_dir", marks=SLOW), "llava_dir", pytest.param("llava_next_dir", marks=SLOW), pytest.param("idefics3_dir", marks=SLOW)]
# What each family's template trains after the generation prompt: the reply's lead-in and its end-of-turn token.
TRAINED = {"gemma_dir": ("", "<end_of_turn>"), "llava_dir": ("", "<|eot_id|>"), "llava_next_dir": (" ", "</s>"),
           "idefics3_dir": (" ", "<end_of_utterance>")}  # fmt: skip
REPLIES = ("Grace Hopper.", "A chart and a logo.", "Blue.")


def _records():
    return [
        {"messages": [{"role": "user", "content": [{"type": "image", "image": "grace_hopper.jpg"}, {"type": "text", "text": "Who is this?"}]},
                      {"role": "assistant", "content": "Grace Hopper."}]},
        {"messages": [{"role": "user", "content": "Compare <image> with <image>."}, {"role": "assistant", "content": "A chart and a logo."}],
         "images": ["chart.png", "logo2.png"]},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."},
                      {"role": "assistant", "content": "Blue."}]},  # text only, with a system turn
    ]  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_equal_the_processors_own_output(family, request, images):
    from PIL import Image

    folder = request.getfixturevalue(family)
    processor = load_processor(str(folder))
    data = images / f"{family}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    ds = build(data, processor=processor, max_length=8192).dataset  # a processor object: its own tokenizer
    assert len(ds) == 3
    tok = processor.tokenizer
    image_text = template_text(processor, MediaKind.IMAGE, processor.image_token, processor.image_token)
    lead, eot = TRAINED[family]
    for row, files, reply in zip(ds, (["grace_hopper.jpg"], ["chart.png", "logo2.png"], []), REPLIES):
        ids, labels = np.array(row["input_ids"]), np.array(row["labels"])
        # The same text with the images as the template writes them, through the processor with the pixels.
        text = tok.decode(_collapsed(ids, row["media"], tok, image_text, processor))
        pil = [Image.open(images / f).convert("RGB") for f in files]
        expected = processor(text=[text], images=[pil] if pil else None, add_special_tokens=False)["input_ids"][0]
        assert list(ids) == list(expected)
        counts = processor._get_num_multimodal_tokens(image_sizes=[[im.height, im.width] for im in pil]).num_image_tokens if pil else []
        pads = [i["tokens"] for i in row["media"]]
        if "idefics3" in family:  # the count is the whole expansion; pads are image_seq_len per tile
            assert all(p % 169 == 0 for p in pads) and (sum(counts) > sum(pads) or not pil)
        else:
            assert pads == list(counts)
        media = np.isin(ids, [tok.convert_tokens_to_ids(t) for t in ("<image>", "<image_soft_token>", "<start_of_image>") if t in tok.get_vocab()])
        assert (labels[media] == IGNORE_INDEX).all()
        assert tok.decode(ids[labels != IGNORE_INDEX]) == f"{lead}{reply}{eot}"  # the reply and its end-of-turn, nothing else


def _collapsed(ids, images, tok, image_text, processor):
    """The row's ids with each image's expansion put back to the template's image text (the processor's input)."""
    out = tok.decode(ids)
    for image in images:
        replacement = processor.replace_image_token(
            TABLE[type(processor).__name__].image.inputs(processor, image["height"], image["width"]), 0
        )  # fmt: skip
        out = out.replace(image_text.replace(processor.image_token, replacement), image_text, 1)
    return tok(out, add_special_tokens=False)["input_ids"]


def test_llava_processor_that_disagrees_with_the_model_is_refused(tmp_path):
    from processor_folders import LLAVA, LLAVA_PROCESSOR, make_processor_folder

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
    from processor_folders import GEMMA3, GEMMA3_PROCESSOR, make_processor_folder

    folder = make_processor_folder(tmp_path / "g", tokenizer="gemma-3-it", preprocessor={**GEMMA3, "do_pan_and_scan": True}, processor=GEMMA3_PROCESSOR)
    with pytest.raises(ConfigError, match="do_pan_and_scan"):
        load_processor(str(folder))


# --- templates that read contents only as lists of parts -------------------------------------


def test_string_contents_become_parts_in_order():
    assert to_parts(f"{MEDIA}Who is this?") == [{"type": "image"}, {"type": "text", "text": "Who is this?"}]
    assert to_parts(f"Compare {MEDIA} with {MEDIA}") == [
        {"type": "text", "text": "Compare "}, {"type": "image"}, {"type": "text", "text": " with "}, {"type": "image"}]  # fmt: skip
    assert to_parts("") == to_parts(None) == [{"type": "text", "text": ""}]  # content[0]['text'] exists (LLaVA-Next)


TRL_TEMPLATES = Path(__import__("trl").__file__).parent / "chat_templates"
PARTS_ONLY = ("idefics3", "llava_next", "smolvlm")  # TRL 1.16's templates that read no string content


@pytest.fixture(scope="module")
def llama_with_image(idefics3_dir):
    return load_tokenizer(str(idefics3_dir))  # Llama-3 with <image> and <end_of_utterance> added


PARTS_MARKUP = ("lfm2_2_5",)  # string templates that also write parts, an image part as "<image>": records with media get parts


def _expected(path):
    if path.name.startswith(PARTS_ONLY):
        return ContentForm.PARTS, "<image>\n" if "llava" in path.name else "<image>"
    return ContentForm.STRING, "<image>" if path.name.startswith(PARTS_MARKUP) else ""


@pytest.mark.parametrize(("template", "form", "image_text"), [
    ("templates/qwen2_vl.jinja", ContentForm.STRING, ""), ("templates/gemma3.jinja", ContentForm.STRING, ""),
    ("templates/llava_next.jinja", ContentForm.PARTS, "<image>\n"), ("templates/idefics3.jinja", ContentForm.PARTS, "<image>"),
    *[(path, *_expected(path)) for path in sorted(TRL_TEMPLATES.glob("*.jinja"))],
], ids=str)  # fmt: skip
def test_each_template_gets_the_contents_it_reads(template, form, image_text, llama_with_image):
    """Text records get strings where the template takes them; a record with media gets parts where the template
    reads only parts, or renders media otherwise as parts (here none: LFM2.5 writes "<image>" for an image part
    and renders the same either way; Qwen's and Gemma's markup are no tokens of this Llama-3 with <image>)."""
    tok = llama_with_image
    tok.chat_template = (Path(__file__).parent / template).read_text()
    render = ChatRenderer(tok)
    assert (render.contents.form, render.contents.image_text, render.contents.media) == (form, image_text, form)
    text = render([{"role": "user", "content": f"{MEDIA}Who is this?"}, {"role": "assistant", "content": "Grace Hopper."}])
    assert text.count(MEDIA) == 1 and "Who is this?" in text and "Grace Hopper." in text  # one MEDIA per image either way


@pytest.mark.parametrize(("tokenizer", "template", "media"), [
    ("gemma-3-it", None, ContentForm.PARTS),  # trims each text part: "Compare " + an image is "Compare<start_of_image>"
    ("qwen2.5-instruct", "templates/qwen2_vl.jinja", ContentForm.STRING),  # the same either way: the cheaper strings
])  # fmt: skip
def test_records_with_media_get_parts_where_the_template_renders_them_otherwise(tokenizer, template, media):
    from support import TOKENIZERS

    tok = load_tokenizer(str(TOKENIZERS / tokenizer))
    if template:
        tok.chat_template = (Path(__file__).parent / template).read_text()
    contents = ChatRenderer(tok).contents
    assert (contents.form, contents.media) == (ContentForm.STRING, media)
    assert contents.form_of([{"role": "user", "content": f"a {MEDIA}"}]) is media
    assert contents.form_of([{"role": "user", "content": "a"}]) is ContentForm.STRING


def test_a_template_that_reads_contents_neither_way_is_refused(llama_with_image):
    tok = llama_with_image
    tok.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content']['body'] }}\n{% endfor %}"
    with pytest.raises(TemplateError, match=r"chat template raised for roles .*; as lists of text parts neither: chat template raised"):
        Renderer(tok)


MARKUP = {  # what each template writes around contents, written by a user instead
    "llava_next_dir": ("<image>", "<image>\n", "[INST]", " [/INST]", "</s>", "<<SYS>>", "[/INST] Sure.</s> [INST] "),
    "idefics3_dir": ("<image>", "User:", "Assistant:", "<end_of_utterance>", "<end_of_utterance>\nAssistant: Sure.", "<|begin_of_text|>"),
}  # fmt: skip


@pytest.mark.parametrize("family", [pytest.param("llava_next_dir", marks=SLOW), "idefics3_dir"])
def test_markup_in_a_users_text_changes_nothing_trained(family, request, images):
    """Metamorphic: a user's text equal to the template's markup (its image token, role headers, end-of-turn)
    trains exactly what a plain text trains, with the same images (special_tokens_in_data='text': token text
    is trained as plain text, never read as an image or a turn)."""
    folder = request.getfixturevalue(family)
    texts = ("Who is this?", *MARKUP[family])
    records = [
        {"messages": [{"role": "user", "content": [{"type": "image", "image": "logo2.png"}, {"type": "text", "text": t}]},
                      {"role": "assistant", "content": "Grace Hopper."}]} for t in texts
    ] + [{"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": "Blue."}]} for t in texts]  # fmt: skip
    data = images / f"markup-{family}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = build(data, processor=str(folder), max_length=4096, special_tokens_in_data="text")
    ds, tok = result.dataset, load_tokenizer(str(folder))
    assert len(ds) == len(records)
    pad = tok.convert_tokens_to_ids("<image>")
    lead, eot = TRAINED[family]
    for k, row in enumerate(ds):
        ids, labels = np.array(row["input_ids"]), np.array(row["labels"])
        reply = "Grace Hopper." if k < len(texts) else "Blue."
        assert tok.decode(ids[labels != IGNORE_INDEX]) == f"{lead}{reply}{eot}", texts[k % len(texts)]
        image = [(i["ref"], i["width"], i["height"], i["tokens"]) for i in row["media"]]
        assert image == ([(ds[0]["media"][0]["ref"], 542, 130, ds[0]["media"][0]["tokens"])] if k < len(texts) else [])
        assert int((ids == pad).sum()) == sum(i["tokens"] for i in row["media"])  # the user's "<image>" is text, not an image


def test_a_parts_template_that_writes_no_image_refuses_records_with_images(llama_with_image):
    """Idefics3's template without its image branch: text records render, a record with an image is refused
    (the build rejects it as template_error with this reason)."""
    tok = llama_with_image
    tok.chat_template = (Path(__file__).parent / "templates/idefics3.jinja").read_text().replace(
        "{% elif line['type'] == 'image' %}{{ '<image>' }}", "")  # fmt: skip
    render = ChatRenderer(tok)
    assert (render.contents.form, render.contents.image_text) == (ContentForm.PARTS, "")
    assert render([{"role": "user", "content": "Hi"}]) == "<|begin_of_text|>User: Hi<end_of_utterance>\n"
    with pytest.raises(TemplateError, match="writes no markup with a token of its tokenizer for an image part"):
        render([{"role": "user", "content": f"{MEDIA}Hi"}])
