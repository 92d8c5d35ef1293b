"""Processor folders (tests/media/processor_folders.py) as session fixtures, and real images.

Images: matplotlib's sample photos (`mpl-data/sample_data`: grace_hopper.jpg 512x600,
logo2.png 542x130), a chart rendered here, and files broken on purpose.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from processor_folders import (
    GEMMA3, GEMMA3_PROCESSOR, IDEFICS3, IDEFICS3_PROCESSOR, LLAVA, LLAVA_NEXT, LLAVA_NEXT_PROCESSOR, LLAVA_PROCESSOR, QWEN2_VL,
    SMOLVLM, SMOLVLM_PROCESSOR, TILE_TOKENS, make_processor_folder,
)  # fmt: skip


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
    return make_processor_folder(
        tmp_path_factory.mktemp("idefics3"), tokenizer="llama-3-8b-instruct", preprocessor=IDEFICS3,
        processor=IDEFICS3_PROCESSOR, added=["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>", *TILE_TOKENS],
        template="idefics3.jinja",
    )  # fmt: skip


@pytest.fixture(scope="session")
def smolvlm_dir(tmp_path_factory):
    """SmolVLM: the bundled SmolLM2 tokenizer (SmolVLM's language model) with its image tokens added, and the
    model's own chat template (TRL 1.16's smolvlm.jinja), which reads contents only as lists of parts."""
    from ftdata.io.resources import bundled_tokenizer_dir

    return make_processor_folder(
        tmp_path_factory.mktemp("smolvlm"), tokenizer=bundled_tokenizer_dir(), preprocessor=SMOLVLM, processor=SMOLVLM_PROCESSOR,
        added=["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>", *TILE_TOKENS],
        template=Path(__import__("trl").__file__).parent / "chat_templates" / "smolvlm.jinja",
    )  # fmt: skip


@pytest.fixture
def num2words(monkeypatch):
    """SmolVLM's processor wants num2words when it is built, for its video prompts only (ftdata reads no video):
    the real package when it is installed, else a stand-in that spells a number as its digits."""
    from transformers.models.smolvlm import processing_smolvlm

    if processing_smolvlm.num2words is None:
        monkeypatch.setattr(processing_smolvlm, "num2words", str)


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
