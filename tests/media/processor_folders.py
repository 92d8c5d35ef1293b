"""Processor folders built on disk from the shared tokenizers (or the bundled SmolLM2 one): the settings of
each family and `make_processor_folder`. A module of its own, not conftest.py: `from conftest import ...` finds
whichever conftest a pytest worker imported first (tests/train has one too).

Each folder is what a model repo ships: tokenizer files, `preprocessor_config.json`,
`processor_config.json` and a chat template. The settings are the values of the repos named
(templates/README.md); nothing comes from the hub.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from support import TOKENIZERS

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]

# Qwen/Qwen2-VL-7B-Instruct preprocessor_config.json (Qwen2.5-VL ships the same values), as the example folder holds it.
QWEN2_VL = json.loads((HERE.parents[1] / "examples" / "media" / "qwen2-vl" / "preprocessor_config.json").read_text())
# google/gemma-3-4b-it preprocessor_config.json and processor_config.json.
GEMMA3 = {
    "do_normalize": True, "do_pan_and_scan": None, "do_rescale": True, "do_resize": True, "image_mean": [0.5] * 3,
    "image_std": [0.5] * 3, "image_processor_type": "Gemma3ImageProcessor", "image_seq_length": 256,
    "processor_class": "Gemma3Processor", "resample": 2, "rescale_factor": 1 / 255, "size": {"height": 896, "width": 896},
}  # fmt: skip
GEMMA3_PROCESSOR = {"image_seq_length": 256, "processor_class": "Gemma3Processor"}
# llava-hf/llava-1.5-7b-hf preprocessor_config.json and processor_config.json.
LLAVA = {
    "crop_size": {"height": 336, "width": 336}, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True,
    "do_rescale": True, "do_resize": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
    "image_processor_type": "CLIPImageProcessor", "processor_class": "LlavaProcessor", "resample": 3,
    "rescale_factor": 1 / 255, "size": {"shortest_edge": 336},
}  # fmt: skip
LLAVA_PROCESSOR = {
    "image_token": "<image>", "num_additional_image_tokens": 1, "patch_size": 14, "processor_class": "LlavaProcessor",
    "vision_feature_select_strategy": "default",
}  # fmt: skip
# llava-hf/llava-v1.6-mistral-7b-hf preprocessor_config.json and processor_config.json.
LLAVA_NEXT = {
    **LLAVA, "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
    "image_processor_type": "LlavaNextImageProcessor", "processor_class": "LlavaNextProcessor",
}  # fmt: skip
LLAVA_NEXT_PROCESSOR = {**LLAVA_PROCESSOR, "processor_class": "LlavaNextProcessor"}
# HuggingFaceM4/Idefics3-8B-Llama3 preprocessor_config.json and processor_config.json.
IDEFICS3 = {
    "do_convert_rgb": True, "do_image_splitting": True, "do_normalize": True, "do_pad": True, "do_rescale": True,
    "do_resize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "image_processor_type": "Idefics3ImageProcessor",
    "max_image_size": {"longest_edge": 364}, "processor_class": "Idefics3Processor", "resample": 1,
    "rescale_factor": 1 / 255, "size": {"longest_edge": 1456},
}  # fmt: skip
IDEFICS3_PROCESSOR = {"image_seq_len": 169, "processor_class": "Idefics3Processor"}
# HuggingFaceTB/SmolVLM-256M-Instruct: 512-px tiles of an image up to 2048 px, 64 tokens a tile.
SMOLVLM = {
    **IDEFICS3, "image_processor_type": "SmolVLMImageProcessor", "max_image_size": {"longest_edge": 512},
    "processor_class": "SmolVLMProcessor", "size": {"longest_edge": 2048},
}  # fmt: skip
SMOLVLM_PROCESSOR = {"image_seq_len": 64, "processor_class": "SmolVLMProcessor"}
TILE_TOKENS = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]


def make_processor_folder(
    folder: Path, *, tokenizer: str | Path, preprocessor: dict, processor: dict | None = None, template: str | Path | None = None,
    added: list[str] = (), model_config: dict | None = None,
) -> Path:  # fmt: skip
    """A processor folder: a shared tokenizer (a name under ../shared/tokenizers, or a folder) with `added`
    special tokens, its settings and a chat template (a name under templates/, or a file)."""
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    source = TOKENIZERS / tokenizer if isinstance(tokenizer, str) else tokenizer
    if added:
        tok = AutoTokenizer.from_pretrained(str(source))
        tok.add_special_tokens({"additional_special_tokens": list(added)})
        tok.save_pretrained(str(folder))
    else:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(source / name, folder / name)
    if template is not None:
        shutil.copyfile(TEMPLATES / template if isinstance(template, str) else template, folder / "chat_template.jinja")
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=1))
    if processor is not None:
        (folder / "processor_config.json").write_text(json.dumps(processor, indent=1))
    if model_config is not None:
        (folder / "config.json").write_text(json.dumps(model_config, indent=1))
    return folder
