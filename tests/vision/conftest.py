"""Processor folders built on disk from the shared tokenizers, and real images.

Each folder is what a model repo ships: tokenizer files, `preprocessor_config.json`,
`processor_config.json` and a chat template. The settings are the values of the repos named
(templates/README.md); nothing comes from the hub.

Images: matplotlib's sample photos (`mpl-data/sample_data`: grace_hopper.jpg 512x600,
logo2.png 542x130), a chart rendered here, and files broken on purpose.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support import TOKENIZERS

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]

# Qwen/Qwen2-VL-7B-Instruct preprocessor_config.json (Qwen2.5-VL ships the same values), as the example folder holds it.
QWEN2_VL = json.loads((HERE.parents[1] / "examples" / "vision" / "qwen2-vl" / "preprocessor_config.json").read_text())
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


def make_processor_folder(
    folder: Path, *, tokenizer: str, preprocessor: dict, processor: dict | None = None, template: str | None = None,
    added: list[str] = (), model_config: dict | None = None,
) -> Path:  # fmt: skip
    """A processor folder: a shared tokenizer (with `added` special tokens), its settings and a chat template."""
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    if added:
        tok = AutoTokenizer.from_pretrained(str(TOKENIZERS / tokenizer))
        tok.add_special_tokens({"additional_special_tokens": list(added)})
        tok.save_pretrained(str(folder))
    else:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(TOKENIZERS / tokenizer / name, folder / name)
    if template is not None:
        shutil.copyfile(TEMPLATES / template, folder / "chat_template.jinja")
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=1))
    if processor is not None:
        (folder / "processor_config.json").write_text(json.dumps(processor, indent=1))
    if model_config is not None:
        (folder / "config.json").write_text(json.dumps(model_config, indent=1))
    return folder


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory):
    """Qwen2-VL: Qwen2.5's tokenizer (it holds the vision tokens) and the Qwen2-VL template."""
    return make_processor_folder(tmp_path_factory.mktemp("qwen2-vl"), tokenizer="qwen2.5-instruct", preprocessor=QWEN2_VL, template="qwen2_vl.jinja")


@pytest.fixture(scope="session")
def gemma_dir(tmp_path_factory):
    """Gemma 3: its tokenizer (with <start_of_image>, <image_soft_token>) and its own chat template."""
    return make_processor_folder(tmp_path_factory.mktemp("gemma3"), tokenizer="gemma-3-it", preprocessor=GEMMA3, processor=GEMMA3_PROCESSOR)


@pytest.fixture(scope="session")
def llava_dir(tmp_path_factory):
    """LLaVA-1.5 settings on Llama-3's tokenizer with an added <image> token, and Llama-3's template (string content)."""
    return make_processor_folder(
        tmp_path_factory.mktemp("llava"), tokenizer="llama-3-8b-instruct", preprocessor=LLAVA, processor=LLAVA_PROCESSOR, added=["<image>"],
    )  # fmt: skip


@pytest.fixture(scope="session")
def llava_next_dir(tmp_path_factory):
    """LLaVA-Next (llava-v1.6-mistral-7b-hf): Mistral-Nemo's tokenizer (the shared Mistral one: `</s>` is its EOS)
    with an added <image> token, and the model's own chat template, which reads contents only as lists of parts."""
    return make_processor_folder(
        tmp_path_factory.mktemp("llava-next"), tokenizer="mistral-nemo-instruct-2407", preprocessor=LLAVA_NEXT,
        processor=LLAVA_NEXT_PROCESSOR, added=["<image>"], template="llava_next.jinja",
    )  # fmt: skip


@pytest.fixture(scope="session")
def idefics3_dir(tmp_path_factory):
    """Idefics3: Llama-3's tokenizer with its image tokens (tiles' row/column tokens, <global-img>), and the
    model's own chat template, which reads contents only as lists of parts."""
    tiles = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    return make_processor_folder(
        tmp_path_factory.mktemp("idefics3"), tokenizer="llama-3-8b-instruct", preprocessor=IDEFICS3,
        processor=IDEFICS3_PROCESSOR, added=["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>", *tiles],
        template="idefics3.jinja",
    )  # fmt: skip


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> Path:
    """A folder of real images: two photos/logos from matplotlib, a chart drawn here, a truncated and a fake file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = tmp_path_factory.mktemp("images")
    sample = Path(matplotlib.get_data_path()) / "sample_data"
    for name in ("grace_hopper.jpg", "logo2.png"):
        shutil.copyfile(sample / name, folder / name)
    fig, ax = plt.subplots(figsize=(3.2, 2.4), dpi=100)  # 320 x 240
    ax.plot([1, 3, 2, 4])
    fig.savefig(folder / "chart.png")
    plt.close(fig)
    (folder / "not_an_image.png").write_bytes(b"this is text, not a PNG\n")
    (folder / "corrupt.png").write_bytes((folder / "logo2.png").read_bytes()[:30])  # the header cut in its IHDR chunk
    return folder
