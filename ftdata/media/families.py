"""The one family table: per processor class, what ftdata must know of a model family to build and train its media.

    family(processor)          -> Family (refuses a class with no row, with the supported list)
    by_model_type("qwen2_vl")  -> Family (the collator's side: what it sends the model)

A row says, for one processor class:
- which model types and image processor types name it (a folder whose configs name no processor class);
- per medium, how an item is counted and expanded: for images, what `replace_image_token` reads of an
  image of a given size (computed from the size with the image processor's own helpers, never from
  pixels), what the processor's own count counts (`Counts`), and the image text a template that
  writes none stands in;
- what the training collator sends the model (`Collate`), which is also whether packed rows are
  proven isolated (tests/media_train/test_media_isolation.py);
- the settings that must agree with the model's config.json (`checks`): the processor's tokens per
  item against the model's features.

Adding a family is one row here and its tests (tests/media/test_families.py, test_peer_cases.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from ftdata.errors import ConfigError
from ftdata.media.audio_families import UNSUPPORTED, AudioFamily, AudioRule, gemma3n_rule, phi4_rule, whisper_rule


class Counts(Enum):
    """What the processor's own count of an item counts, checked against the tokenized row."""

    PADS = "pads"  # the placeholder tokens the features fill (`_get_num_multimodal_tokens`)
    SPAN = "span"  # every token of the item's expansion, tile markers included (Idefics3)
    EXPANSION = "expansion"  # the processor has no count of its own: the expansion's placeholder tokens (SmolVLM)


class Collate(Enum):
    """What the training collator sends the model for a batch (ftdata/train/media_collator.py)."""

    MROPE = (
        "mrope"  # (4, B, L) positions: a text row restarting per sequence + the model's 3 mRoPE rows (Qwen2-VL, 2.5-VL)
    )
    BLOCKS = "blocks"  # positions restarting, token_type_ids, explicit masks with each image a block (Gemma 3)
    PLAIN = "plain"  # the padding mask, unpacked rows only: packed rows are not proven isolated


@dataclass(frozen=True, slots=True)
class ImageRule:
    """How a family counts and expands an image: `inputs(processor, height, width)` is what its
    `replace_image_token` reads of a processed image of that size."""

    inputs: Callable[[Any, int, int], dict[str, Any]]
    counts: Counts = Counts.PADS
    text: str = (
        ""  # what the model's template writes for an image, for a template that writes none ("": the image token)
    )


@dataclass(frozen=True, slots=True)
class AudioCounting:
    """How a family counts and expands a clip: `rule(processor)` is its count from the clip's length
    (`ftdata.media.audio_families`), `inputs(tokens)` what its `replace_audio_token` reads of a clip of
    that many placeholder tokens."""

    rule: Callable[[Any], AudioRule]
    inputs: Callable[[int], dict[str, Any]]
    text: str = ""  # what the row writes for a clip where the template writes nothing tellable ("": the audio token)


@dataclass(frozen=True, slots=True)
class Check:
    """One setting of the processor against the model's config: `ours` must equal `model`."""

    what: str
    ours: int
    model: int


@dataclass(frozen=True, slots=True)
class Family:
    """One processor class: its names, how each medium is counted, what the collator sends, what must agree."""

    name: str
    processor: str  # the transformers processor class
    model_types: tuple[str, ...]  # config.json model_type
    image_processors: tuple[str, ...] = ()  # preprocessor_config.json image_processor_type (without Fast/Pil)
    image: ImageRule | None = None
    collate: Collate = Collate.PLAIN
    checks: Callable[[Any, dict[str, Any]], list[Check]] = field(default=lambda processor, config: [])
    refused: Callable[[Any], str] = field(default=lambda processor: "")  # why a processor's settings cannot be counted
    audio: AudioCounting | None = None

    @property
    def packable(self) -> bool:
        """Packed rows are proven isolated: each sequence's logits equal to it alone."""
        return self.collate is not Collate.PLAIN


# --- what replace_image_token reads, per family -------------------------------------------------


def _zeros(*shape: int) -> Any:
    """An array of `shape` that holds no memory (a broadcast view): a processor reads only its shape."""
    return np.broadcast_to(np.zeros(1, dtype=np.uint8), shape)


def _qwen(p: Any, h: int, w: int) -> dict[str, Any]:
    patches = p.image_processor.get_number_of_image_patches(h, w, {})
    return {"image_grid_thw": np.array([[1, 1, patches]])}  # replace_image_token reads prod(grid) / merge**2


def _idefics3(p: Any, h: int, w: int) -> dict[str, Any]:
    _, rows, cols = p.image_processor.get_number_of_image_patches(h, w, {})
    return {"rows": [[rows]], "cols": [[cols]]}


def _gemma3(p: Any, h: int, w: int) -> dict[str, Any]:
    return {"num_crops": [0]}  # pan-and-scan is refused: one image, one sequence


def _llava(p: Any, h: int, w: int) -> dict[str, Any]:
    crop = p.image_processor.crop_size
    return {"pixel_values": [_zeros(3, crop["height"], crop["width"])]}


def _llava_next(p: Any, h: int, w: int) -> dict[str, Any]:
    size = p.image_processor.size
    side = size.get("shortest_edge") or min(size["height"], size["width"])
    return {"image_sizes": [[h, w]], "pixel_values": [[_zeros(3, side, side)]]}


# --- what replace_audio_token reads, per family -------------------------------------------------

_QWEN2_AUDIO = AudioCounting(
    whisper_rule(AudioFamily.QWEN2_AUDIO),
    lambda n: {"num_audio_tokens": [n]},
    text="<|audio_bos|><|AUDIO|><|audio_eos|>",
)
_QWEN2_5_OMNI = AudioCounting(whisper_rule(AudioFamily.QWEN2_5_OMNI), lambda n: {"num_audio_tokens": [n]})
_GEMMA3N = AudioCounting(gemma3n_rule, lambda n: {})  # full_audio_sequence: the same for every clip
_PHI4 = AudioCounting(phi4_rule, lambda n: {"audio_embed_sizes": [n]})


# --- what must agree with the model's config.json ------------------------------------------------


def _vision(config: dict[str, Any]) -> dict[str, Any]:
    return config.get("vision_config") or {}


def _clip_features(what: str) -> Callable[[Any, dict[str, Any]], list[Check]]:
    """LLaVA, LLaVA-Next: the features of one (base) image of the CLIP tower, its CLS token kept or not."""

    def checks(p: Any, config: dict[str, Any]) -> list[Check]:
        vision = _vision(config)
        if vision.get("image_size") and vision.get("patch_size"):
            full = config.get("vision_feature_select_strategy", "default") == "full"
            model = (vision["image_size"] // vision["patch_size"]) ** 2 + full
        elif config.get("image_seq_length"):
            model = int(config["image_seq_length"])
        else:
            return []
        crop = p.image_processor.crop_size
        if not p.patch_size or not crop:
            return []
        ours = (crop["height"] // p.patch_size) * (crop["width"] // p.patch_size) + p.num_additional_image_tokens
        return [Check(what, ours - (p.vision_feature_select_strategy == "default"), model)]

    return checks


def _gemma3_checks(p: Any, config: dict[str, Any]) -> list[Check]:
    model = config.get("mm_tokens_per_image")
    return [Check("tokens per image", int(p.image_seq_length), int(model))] if model else []


def _idefics3_checks(p: Any, config: dict[str, Any]) -> list[Check]:
    vision = _vision(config)
    if not (vision.get("image_size") and vision.get("patch_size")):
        return []
    model = int((vision["image_size"] // vision["patch_size"]) ** 2 / config.get("scale_factor", 2) ** 2)
    return [Check("image tokens per tile (image_seq_len)", int(p.image_seq_len), model)]


def _qwen_checks(p: Any, config: dict[str, Any]) -> list[Check]:
    vision, image = _vision(config), p.image_processor
    pairs = (
        ("spatial merge size", image.merge_size, vision.get("spatial_merge_size")),
        ("pixels per patch side", image.patch_size, vision.get("patch_size")),
    )
    return [Check(what, int(ours), int(model)) for what, ours, model in pairs if model]


def _pan_and_scan(p: Any) -> str:
    if getattr(p.image_processor, "do_pan_and_scan", False):
        return (
            "Gemma 3 processor with do_pan_and_scan=true: its crop count per image is not counted by ftdata yet; "
            "set do_pan_and_scan to false in preprocessor_config.json"
        )
    return ""


_QWEN_IMAGE = ImageRule(
    _qwen, text="<|vision_start|><|image_pad|><|vision_end|>"
)  # Qwen-VL's template for an image part
_IDEFICS3_IMAGE = ImageRule(_idefics3, counts=Counts.SPAN)

FAMILIES: dict[str, Family] = {
    f.processor: f
    for f in (
        Family(
            "qwen2-vl",
            "Qwen2VLProcessor",
            ("qwen2_vl",),
            ("Qwen2VLImageProcessor",),
            _QWEN_IMAGE,
            Collate.MROPE,
            _qwen_checks,
        ),
        Family("qwen2.5-vl", "Qwen2_5_VLProcessor", ("qwen2_5_vl",), (), _QWEN_IMAGE, Collate.MROPE, _qwen_checks),
        Family("qwen3-vl", "Qwen3VLProcessor", ("qwen3_vl",), (), _QWEN_IMAGE, Collate.PLAIN, _qwen_checks),
        Family(
            "gemma3",
            "Gemma3Processor",
            ("gemma3",),
            ("Gemma3ImageProcessor",),
            ImageRule(_gemma3),
            Collate.BLOCKS,
            _gemma3_checks,
            _pan_and_scan,
        ),
        Family(
            "llava",
            "LlavaProcessor",
            ("llava",),
            (),
            ImageRule(_llava),
            Collate.PLAIN,
            _clip_features("tokens per image"),
        ),
        Family(
            "llava-next",
            "LlavaNextProcessor",
            ("llava_next",),
            ("LlavaNextImageProcessor",),
            ImageRule(_llava_next),
            Collate.PLAIN,
            _clip_features("tokens per base image"),
        ),
        Family(
            "idefics3",
            "Idefics3Processor",
            ("idefics3",),
            ("Idefics3ImageProcessor",),
            _IDEFICS3_IMAGE,
            Collate.PLAIN,
            _idefics3_checks,
        ),
        Family(
            "smolvlm",
            "SmolVLMProcessor",
            ("smolvlm",),
            ("SmolVLMImageProcessor",),
            ImageRule(_idefics3, counts=Counts.EXPANSION),
            Collate.PLAIN,
            _idefics3_checks,
        ),
        # Audio: packed rows are not proven isolated for any audio family (no tiny-model test yet): Collate.PLAIN.
        Family("qwen2-audio", "Qwen2AudioProcessor", ("qwen2_audio",), audio=_QWEN2_AUDIO),
        Family("qwen2.5-omni", "Qwen2_5OmniProcessor", ("qwen2_5_omni",), audio=_QWEN2_5_OMNI),
        Family("gemma3n", "Gemma3nProcessor", ("gemma3n",), audio=_GEMMA3N),
        Family("phi4-multimodal", "Phi4MultimodalProcessor", ("phi4_multimodal",), audio=_PHI4),
    )
}


def supported() -> str:
    return ", ".join(sorted(FAMILIES))


def family(processor: Any) -> Family:
    """The family of a processor object.

    Raises:
        ConfigError: a processor class with no row here (with the supported list), or settings its
            row cannot count (Gemma 3's pan-and-scan).
    """
    name = type(processor).__name__
    found = FAMILIES.get(name)
    if found is None:
        raise ConfigError(f"processor {name} is not supported for media counting; supported: {supported()}")
    why = found.refused(processor)
    if why:
        raise ConfigError(why)
    return found


def audio_rule(processor: Any) -> AudioRule:
    """The audio count rule of a loaded processor, read from its own settings (its family's row).

    Raises:
        ConfigError: a processor with no audio rule here (the supported classes are listed).
    """
    name = type(processor).__name__
    found = FAMILIES.get(name)
    if found is None or found.audio is None:
        why = UNSUPPORTED.get(name, "it has no audio count rule in ftdata")
        counted = ", ".join(sorted(f.processor for f in FAMILIES.values() if f.audio is not None))
        raise ConfigError(f"processor {name}: {why}; audio is counted for {counted}")
    return found.audio.rule(processor)


def by_model_type(model_type: str) -> Family | None:
    """The family of a model's config.json `model_type`, or None."""
    return next((f for f in FAMILIES.values() if model_type in f.model_types), None)


def packable_model_types() -> list[str]:
    """The model types whose packed rows are proven isolated."""
    return sorted(t for f in FAMILIES.values() if f.packable for t in f.model_types)


def processor_class(preprocessor: dict[str, Any], config: dict[str, Any]) -> str | None:
    """The processor class of a folder whose configs do not name it: from config.json's model type,
    else from the image processor's type."""
    by_type = by_model_type(str(config.get("model_type", "")))
    if by_type is not None:
        return by_type.processor
    kind = str(preprocessor.get("image_processor_type", "")).removesuffix("Fast").removesuffix("Pil")
    return next((f.processor for f in FAMILIES.values() if kind in f.image_processors), None)


def check_model_config(processor: Any, config: Any) -> None:
    """Refuse a processor whose tokens per item differ from what the model makes of it.

    `config`: the model's config (a dict from config.json, or a transformers config).

    Raises:
        ConfigError: with both numbers (LLaVA's default processor makes 255 where the model makes 256).
    """
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    for check in family(processor).checks(processor, cfg):
        if check.ours != check.model:
            raise ConfigError(
                f"the processor makes {check.ours} {check.what} but the model config makes {check.model}: every item "
                "would be misaligned with its features; fix the processor settings (processor_config.json / "
                "preprocessor_config.json) to match the model"
            )


__all__ = [
    "FAMILIES",
    "AudioCounting",
    "Check",
    "Collate",
    "Counts",
    "Family",
    "ImageRule",
    "audio_rule",
    "by_model_type",
    "check_model_config",
    "family",
    "packable_model_types",
    "processor_class",
    "supported",
]
