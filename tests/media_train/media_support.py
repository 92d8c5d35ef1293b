"""Tiny random-weight models that read images, built from a config, real images, and rows in the
layout ftdata's builds with a processor write (`input_ids` with each image expanded to its pad
tokens, `labels`, `media` = [{kind, ref, start, tokens, width, height, seconds}])."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pyarrow as pa
import torch
import transformers
from PIL import Image

from ftdata.run.rows import ArrowRows, RowsFile, write_packed
from ftdata.media.column import MEDIA_TYPE
from ftdata.types import IGNORE_INDEX

SAMPLES = Path(matplotlib.get_data_path()) / "sample_data"
# Real photos and logos that ship with matplotlib: a portrait JPEG, a wide logo, a product shot.
PHOTOS = [SAMPLES / "grace_hopper.jpg", SAMPLES / "logo2.png", SAMPLES / "Minduka_Present_Blue_Pack.png"]

VOCAB = 1000
IMG, START, END = 997, 995, 996  # image pad, image start, image end (Qwen: vision_start/end; Gemma: boi/eoi)
GEMMA_TOKENS = 4  # features per image of the tiny Gemma 3 (mm_tokens_per_image)


def qwen_image_processor():
    """Qwen2-VL's PIL image processor (no torchvision), small pixel budget: 16-64 tokens a photo."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)


def gemma_image_processor():
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    return Gemma3ImageProcessorPil(size={"height": 56, "width": 56})


def qwen_config(**extra) -> transformers.Qwen2VLConfig:
    return transformers.Qwen2VLConfig(
        text_config=dict(
            vocab_size=extra.pop("vocab_size", VOCAB), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, bos_token_id=None, eos_token_id=None,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
        ),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2),
        **{"image_token_id": IMG, "vision_start_token_id": START, "vision_end_token_id": END, "video_token_id": 998,
           **extra},
    )  # fmt: skip


def gemma_config() -> transformers.Gemma3Config:
    """Two text layers, one sliding (window 6, shorter than every sequence) and one full."""
    return transformers.Gemma3Config(
        text_config=dict(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, sliding_window=6, query_pre_attn_scalar=16,
            layer_types=["sliding_attention", "full_attention"],
        ),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=56, patch_size=14),
        mm_tokens_per_image=GEMMA_TOKENS, boi_token_index=START, eoi_token_index=END, image_token_index=IMG,
    )  # fmt: skip


def qwen25_config() -> transformers.Qwen2_5_VLConfig:
    """Qwen2.5-VL: the same text model; a vision tower with window attention (window 28 px) and one full block."""
    text = qwen_config().text_config.to_dict()
    return transformers.Qwen2_5_VLConfig(
        text_config={k: text[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                          "num_attention_heads", "num_key_value_heads", "rope_parameters")},
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, out_hidden_size=64, num_heads=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, window_size=28, fullatt_block_indexes=[1]),
        image_token_id=IMG, vision_start_token_id=START, vision_end_token_id=END, video_token_id=998,
    )  # fmt: skip


FAMILIES = {
    "qwen2_vl": (qwen_config, "Qwen2VLForConditionalGeneration"),
    "qwen2_5_vl": (qwen25_config, "Qwen2_5_VLForConditionalGeneration"),
    "gemma3": (gemma_config, "Gemma3ForConditionalGeneration"),
}


def build(family: str, attn: str) -> transformers.PreTrainedModel:
    """The tiny model of `family` (a key of FAMILIES), eval, fp32, same weights on every call."""
    torch.manual_seed(0)
    make, cls = FAMILIES[family]
    config = make()
    config._attn_implementation = attn
    model = getattr(transformers, cls)(config).float().eval()
    assert model.config._attn_implementation == attn
    return model


def image_tokens(family: str, path: Path) -> int:
    """The processor's own count for an image, from its size alone (what a build stores)."""
    if family == "gemma3":
        return GEMMA_TOKENS
    with Image.open(path) as img:  # Qwen2-VL and Qwen2.5-VL: the same image processor
        width, height = img.size
    return qwen_image_processor().get_number_of_image_patches(height, width) // 4


def inline_copy(path: Path, folder: Path) -> str:
    """Store `path` as a build stores an inline image (OUT/images/<sha256>.<ext>); its `sha256:` ref."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, folder / f"{digest}{path.suffix}")
    return f"sha256:{digest}"


def make_row(family: str, *, prefix: int, images: list[Path], suffix: int, seed: int, refs: list[str] | None = None) -> dict:
    """prompt (random ids) + each image expanded as START IMG*n END + a trained reply."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 990, (prefix,), generator=g).tolist()
    spans = []
    for k, path in enumerate(images):
        n = image_tokens(family, path)
        ids.append(START)
        with Image.open(path) as img:
            width, height = img.size
        ref = refs[k] if refs else str(path)
        spans.append(image_item(ref, width, height, n, len(ids)))
        ids += [IMG] * n + [END] + torch.randint(1, 990, (2,), generator=g).tolist()
    prompt = len(ids)
    ids += torch.randint(1, 990, (suffix,), generator=g).tolist()
    labels = [IGNORE_INDEX] * prompt + ids[prompt:]
    return {"input_ids": ids, "labels": labels, "media": spans}


def image_item(ref: str, width: int, height: int, tokens: int, start: int) -> dict:
    """One image of a row's `media` column."""
    return {"kind": "image", "ref": ref, "start": start, "tokens": tokens, "width": width, "height": height, "seconds": None}


def pack(rows: list[dict], tmp: Path, *, max_length: int, seed: int = 0, multiple: int | None = None) -> list[dict]:
    """Pack `rows` with ftdata's own writer (rows file -> write_packed with the media column)."""
    rows_path, packed_path = tmp / "rows.arrow", tmp / "packed.arrow"
    writer = ArrowRows(rows_path)
    lengths = np.array([len(r["input_ids"]) for r in rows])
    writer.write(
        np.concatenate([r["input_ids"] for r in rows]).astype(np.int32),
        np.concatenate([r["labels"] for r in rows]).astype(np.int32),
        lengths,
        np.arange(len(rows)),
    )
    writer.close()
    media = pa.array([r["media"] for r in rows], type=MEDIA_TYPE)
    write_packed(RowsFile(rows_path), packed_path, max_length=max_length, seed=seed, media=media,
                 pad_to_multiple_of=multiple)  # fmt: skip
    with pa.ipc.open_stream(str(packed_path)) as reader:
        return reader.read_all().to_pylist()


# --- a tiny Qwen2-VL that `ftdata train` can load: model folder + processor folder -------------

QWEN_TOKENIZER = Path(__file__).resolve().parents[3] / "shared" / "tokenizers" / "qwen2.5-instruct"
PREPROCESSOR = {
    "processor_class": "Qwen2VLProcessor", "image_processor_type": "Qwen2VLImageProcessor",
    "min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 16, "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
}  # fmt: skip


def qwen_folders(tmp: Path) -> tuple[Path, Path]:
    """(model folder, processor folder): a random-weight Qwen2-VL sized for the real Qwen2.5
    tokenizer (which has the vision tokens), and a processor folder = that tokenizer + a
    preprocessor_config.json with a small pixel budget."""
    import json

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER))
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>")}
    processor = tmp / "processor"
    tokenizer.save_pretrained(str(processor))
    (processor / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    torch.manual_seed(0)
    config = qwen_config(
        vocab_size=len(tokenizer), image_token_id=ids["<|image_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], video_token_id=ids["<|video_pad|>"],
    )  # fmt: skip
    model = tmp / "model"
    transformers.Qwen2VLForConditionalGeneration(config).save_pretrained(str(model))
    return model, processor


CAPTIONS = [
    (PHOTOS[0], "Who is in the picture?", "A woman in a navy uniform."),
    (PHOTOS[1], "What does the logo say?", "It says matplotlib."),
    (PHOTOS[2], "What colour is the box?", "The box is blue."),
    (PHOTOS[0], "Is this a photo or a drawing?", "It is a photo."),
]


def chat_rows(processor_dir: Path) -> list[dict]:
    """One Qwen2.5 ChatML conversation per caption, with the image expanded to the processor's
    own count: -100 on the prompt and every image token, the reply and its <|im_end|> trained."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(processor_dir))
    processor = qwen_image_processor()
    pad, start, end = (tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>"))
    rows = []
    for path, question, answer in CAPTIONS:
        with Image.open(path) as img:
            width, height = img.size
        n = processor.get_number_of_image_patches(height, width) // 4
        head = tokenizer.encode("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
        prompt = head + [start] + [pad] * n + [end] + tokenizer.encode(f"{question}<|im_end|>\n<|im_start|>assistant\n")
        reply = tokenizer.encode(f"{answer}<|im_end|>")
        ids = prompt + reply + tokenizer.encode("\n")
        labels = [IGNORE_INDEX] * len(prompt) + reply + [IGNORE_INDEX]
        image = image_item(str(path), width, height, n, len(head) + 1)
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels, "media": [image]})
    return rows


# --- a tiny Gemma 3 for the real Gemma 3 tokenizer ----------------------------------------------

GEMMA_TOKENIZER = QWEN_TOKENIZER.parent / "gemma-3-it"


def gemma_folders(tmp: Path) -> tuple[Path, Path]:
    """(model folder, processor folder) of a random-weight Gemma 3 sized for the real Gemma 3
    tokenizer (<start_of_image>, <image_soft_token>, <end_of_image>), 4 tokens a 56x56 image."""
    import json

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(GEMMA_TOKENIZER))
    processor = tmp / "processor"
    tokenizer.save_pretrained(str(processor))
    (processor / "preprocessor_config.json").write_text(json.dumps({
        "processor_class": "Gemma3Processor", "image_processor_type": "Gemma3ImageProcessor", "image_seq_length": GEMMA_TOKENS,
        "size": {"height": 56, "width": 56}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "do_pan_and_scan": None,
    }))  # fmt: skip
    # the processor's own setting (Gemma3Processor reads it from processor_config.json): the model makes 4 a image
    (processor / "processor_config.json").write_text(json.dumps({"processor_class": "Gemma3Processor", "image_seq_length": GEMMA_TOKENS}))
    config = gemma_config()
    config.text_config.vocab_size = 262_208
    config.boi_token_index, config.eoi_token_index = tokenizer.convert_tokens_to_ids(["<start_of_image>", "<end_of_image>"])
    config.image_token_index = tokenizer.convert_tokens_to_ids("<image_soft_token>")
    torch.manual_seed(0)
    model = tmp / "model"
    transformers.Gemma3ForConditionalGeneration(config).save_pretrained(str(model))
    return model, processor


def gemma_chat_rows(processor_dir: Path) -> list[dict]:
    """One Gemma 3 turn pair per caption, the image expanded to 4 soft tokens; reply + <end_of_turn> trained."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(processor_dir))
    boi, pad, eoi = tokenizer.convert_tokens_to_ids(["<start_of_image>", "<image_soft_token>", "<end_of_image>"])
    rows = []
    for path, question, answer in CAPTIONS:
        with Image.open(path) as img:
            width, height = img.size
        head = tokenizer.encode("<start_of_turn>user\n")  # with <bos>
        prompt = head + [boi] + [pad] * GEMMA_TOKENS + [eoi] + tokenizer.encode(
            f"{question}<end_of_turn>\n<start_of_turn>model\n", add_special_tokens=False
        )
        reply = tokenizer.encode(f"{answer}<end_of_turn>", add_special_tokens=False)
        ids = prompt + reply
        image = image_item(str(path), width, height, GEMMA_TOKENS, len(head) + 1)
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [IGNORE_INDEX] * len(prompt) + reply,
                     "media": [image]})  # fmt: skip
    return rows
