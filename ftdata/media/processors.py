"""A vision-language processor from a local folder, without torchvision, and its per-image token rule.

    load_processor("models/qwen2-vl")  ->  Qwen2VLProcessor(image_processor=<PIL backend>, tokenizer, video_processor=None)

The folder is what a model repo ships: tokenizer files, `preprocessor_config.json` (the image
processor), `processor_config.json` (processor settings such as Gemma 3's `image_seq_length`),
the chat template, and optionally the model's `config.json`. transformers 5 ships a PIL
backend for every image processor, so no torchvision is needed to count; the Qwen and SmolVLM
processors also want a video processor, which imports torchvision: ftdata builds those
processors from their parts with no video processor (videos are not read). What torchvision
adds: video inputs and the faster torch image backend the training collator may use.

Counting uses the processor's own rules, never a re-derivation:

    tokens  = processor._get_num_multimodal_tokens(image_sizes=[(h, w)]).num_image_tokens[0]
    text    = processor.replace_image_token(<what its image processor reports for an image of that size>, 0)

`Family` holds the one per-family fact: what `replace_image_token` reads of the processed
image (Qwen's patch grid, Idefics3's rows and columns, Gemma 3's crop count, LLaVA's
resized shape), computed from the size with the image processor's own helpers
(`get_number_of_image_patches`). The two rules must agree, and `expand.py` checks the count
again on the tokenized text.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ftdata.errors import ConfigError

PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


def processor_tokenizer(processor: Any) -> Any:
    """The tokenizer a vision build uses: the processor folder (its tokenizer files) or the processor's own.

    Raises:
        ConfigError: a folder that does not exist (named as the processor, not as a tokenizer).
    """
    if not isinstance(processor, (str, Path)):
        return processor.tokenizer
    if not Path(processor).expanduser().is_dir():
        raise ConfigError(
            f"processor {str(processor)!r}: no such folder; give the vision-language model's folder (tokenizer files, "
            "preprocessor_config.json, chat template)"
        )
    return processor


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
    return {"num_crops": [0]}  # pan-and-scan is refused at load: one image, one sequence


def _llava(p: Any, h: int, w: int) -> dict[str, Any]:
    crop = p.image_processor.crop_size
    return {"pixel_values": [_zeros(3, crop["height"], crop["width"])]}


def _llava_next(p: Any, h: int, w: int) -> dict[str, Any]:
    size = p.image_processor.size
    side = size.get("shortest_edge") or min(size["height"], size["width"])
    return {"image_sizes": [[h, w]], "pixel_values": [[_zeros(3, side, side)]]}


@dataclass(frozen=True)
class Family:
    """What a processor class's `replace_image_token` reads of a processed image of a given size."""

    name: str
    image_inputs: Callable[[Any, int, int], dict[str, Any]]
    counts: str = "pads"  # what the processor's token count counts: image-pad tokens, or the whole expansion ("span")
    image_text: str = ""  # what the model's template writes for an image, when a template writes none ("": the image token)


_QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"  # Qwen-VL's template for an image part
FAMILIES: dict[str, Family] = {
    "Qwen2VLProcessor": Family("qwen2-vl", _qwen, image_text=_QWEN_IMAGE),
    "Qwen2_5_VLProcessor": Family("qwen2.5-vl", _qwen, image_text=_QWEN_IMAGE),
    "Qwen3VLProcessor": Family("qwen3-vl", _qwen, image_text=_QWEN_IMAGE),
    "Gemma3Processor": Family("gemma3", _gemma3),
    "LlavaProcessor": Family("llava", _llava),
    "LlavaNextProcessor": Family("llava-next", _llava_next),
    "Idefics3Processor": Family("idefics3", _idefics3, counts="span"),
    "SmolVLMProcessor": Family("smolvlm", _idefics3, counts="span"),
}


_PAN_AND_SCAN = (
    "Gemma 3 processor with do_pan_and_scan=true: its crop count per image is not counted by ftdata yet; "
    "set do_pan_and_scan to false in preprocessor_config.json"
)


def family(processor: Any) -> Family:
    """The family of a processor object.

    Raises:
        ConfigError: a processor class ftdata does not know how to count for (with the supported list).
    """
    name = type(processor).__name__
    found = FAMILIES.get(name)
    if found is None:
        raise ConfigError(
            f"processor {name} is not supported for image counting; supported: {', '.join(sorted(FAMILIES))}"
        )
    if found.name == "gemma3" and getattr(processor.image_processor, "do_pan_and_scan", False):
        raise ConfigError(_PAN_AND_SCAN)
    return found


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None


def load_processor(spec: Any, *, tokenizer: Any = None) -> Any:
    """A transformers processor from a folder (built from its parts, without torchvision), or `spec` as given.

    `tokenizer`: the tokenizer already loaded from the same folder (loaded here when None).

    Raises:
        ConfigError: no such folder, no preprocessor_config.json, an unknown processor class, or a
            processor whose per-image count disagrees with the folder's model config.json.
    """
    if not isinstance(spec, (str, Path)):
        family(spec)
        return spec
    return _load(str(Path(spec).expanduser().resolve()), tokenizer)


def _load(folder: str, tokenizer: Any) -> Any:
    import transformers

    from ftdata.io.resources import go_offline, load_tokenizer

    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"processor {folder!r} is not a folder; give the folder a model repo ships (tokenizer, preprocessor_config.json, chat template)")
    pre = _json(path / "preprocessor_config.json")
    settings = {**_json(path / "processor_config.json")}
    if not pre:
        raise ConfigError(f"processor folder {folder!r} has no preprocessor_config.json (the image processor's settings)")
    if pre.get("do_pan_and_scan"):
        raise ConfigError(_PAN_AND_SCAN)
    name = settings.get("processor_class") or pre.get("processor_class") or _infer_class(pre, _json(path / "config.json"))
    cls = getattr(transformers, str(name), None) if name else None
    if cls is None or name not in FAMILIES:
        raise ConfigError(
            f"processor folder {folder!r}: processor_class {name!r} is not supported; supported: {', '.join(sorted(FAMILIES))} "
            "(set processor_class in preprocessor_config.json or processor_config.json)"
        )
    go_offline()
    image_processor = transformers.AutoImageProcessor.from_pretrained(folder, backend="pil", local_files_only=True)
    tok = tokenizer if tokenizer is not None else load_tokenizer(folder)
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in settings.items() if k in params and k not in ("image_processor", "tokenizer", "video_processor")}
    parts = {"image_processor": image_processor, "tokenizer": tok}
    for attribute in cls.get_attributes():
        if attribute not in parts:
            parts[attribute] = None  # the video processor (imports torchvision): ftdata reads no video
    processor = cls.__new__(cls)
    processor.check_argument_for_proper_class = lambda name, value: None  # allow the missing video processor
    try:
        cls.__init__(processor, **parts, chat_template=folder_chat_template(path) or tok.chat_template, **kwargs)
    finally:
        del processor.check_argument_for_proper_class
    family(processor)
    if (path / "config.json").is_file():
        check_model_config(processor, _json(path / "config.json"))
    return processor


# Folders whose configs name no processor class: the image processor's type, or the model's type.
_BY_IMAGE_PROCESSOR = {
    "Qwen2VLImageProcessor": "Qwen2VLProcessor", "Gemma3ImageProcessor": "Gemma3Processor",
    "LlavaNextImageProcessor": "LlavaNextProcessor", "Idefics3ImageProcessor": "Idefics3Processor",
    "SmolVLMImageProcessor": "SmolVLMProcessor",
}  # fmt: skip
_BY_MODEL_TYPE = {
    "qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen3_vl": "Qwen3VLProcessor",
    "gemma3": "Gemma3Processor", "llava": "LlavaProcessor", "llava_next": "LlavaNextProcessor",
    "idefics3": "Idefics3Processor", "smolvlm": "SmolVLMProcessor",
}  # fmt: skip


def _infer_class(pre: dict[str, Any], config: dict[str, Any]) -> str | None:
    """The processor class of a folder whose configs do not name it: from config.json's model type, else the image processor's."""
    if config.get("model_type") in _BY_MODEL_TYPE:
        return _BY_MODEL_TYPE[config["model_type"]]
    kind = str(pre.get("image_processor_type", "")).removesuffix("Fast").removesuffix("Pil")
    return _BY_IMAGE_PROCESSOR.get(kind)


def folder_chat_template(path: Path) -> str | None:
    """The processor's own chat template in a model folder: `chat_template.jinja`, else `chat_template.json`
    (the older processor file); None when the folder has neither (the tokenizer's is used)."""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    template = _json(path / "chat_template.json").get("chat_template")
    return template if isinstance(template, str) else None


def check_model_config(processor: Any, config: Any) -> None:
    """Refuse a processor whose tokens per image differ from what the model makes of an image.

    `config`: the model's config (a dict from config.json, or a transformers config).

    Raises:
        ConfigError: with both numbers (LLaVA's default processor makes 255 where the model makes 256).
    """
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    fam = family(processor)
    vision = cfg.get("vision_config") or {}
    model: int | None = None
    ours: int | None = None
    what = "tokens per image"
    if fam.name in ("llava",) and cfg.get("image_seq_length"):
        crop = processor.image_processor.crop_size
        model = int(cfg["image_seq_length"])
        if vision.get("image_size") and vision.get("patch_size"):
            model = (vision["image_size"] // vision["patch_size"]) ** 2
            if cfg.get("vision_feature_select_strategy", "default") == "full":
                model += 1
        ours = int(processor._get_num_multimodal_tokens(image_sizes=[[crop["height"], crop["width"]]]).num_image_tokens[0])
    elif fam.name == "gemma3" and cfg.get("mm_tokens_per_image"):
        model, ours = int(cfg["mm_tokens_per_image"]), int(processor.image_seq_length)
    elif fam.name in ("idefics3", "smolvlm") and vision.get("image_size") and vision.get("patch_size"):
        scale = cfg.get("scale_factor", 2)
        model, ours = int((vision["image_size"] // vision["patch_size"]) ** 2 / scale**2), int(processor.image_seq_len)
        what = "image tokens per tile (image_seq_len)"
    elif fam.name.startswith("qwen") and vision.get("spatial_merge_size"):
        model, ours = int(vision["spatial_merge_size"]), int(processor.image_processor.merge_size)
        what = "spatial merge size"
    if model is not None and ours is not None and model != ours:
        raise ConfigError(
            f"the processor makes {ours} {what} but the model config makes {model}: every image would be "
            "misaligned with its features; fix the processor settings (processor_config.json / "
            "preprocessor_config.json) to match the model"
        )


@dataclass(frozen=True)
class Expansion:
    """What one image becomes in the text: the processor's replacement of its placeholder token."""

    text: str  # the replacement of the processor's image token
    tokens: int  # the processor's own count (`_get_num_multimodal_tokens`)
    pads: int  # image-pad tokens in `text`


class Counter:
    """Counts and expands images of any size with one processor; a few microseconds an image, no pixels."""

    def __init__(self, processor: Any):
        self.processor = processor
        self.family = family(processor)
        tok = processor.tokenizer
        self.placeholder: str = processor.image_token  # what the processor replaces in the text
        candidates = [t for t in (getattr(tok, "image_token", None), processor.image_token) if isinstance(t, str)]
        probe = self._replacement(224, 224)
        self.pad: str = max(candidates, key=probe.count)  # the token repeated per image feature
        self.pad_id: int = tok.convert_tokens_to_ids(self.pad)
        self._sizes: dict[tuple[int, int], Expansion] = {}

    def _replacement(self, height: int, width: int) -> str:
        return str(self.processor.replace_image_token(self.family.image_inputs(self.processor, height, width), 0))

    def expansion(self, width: int, height: int) -> Expansion:
        """The processor's expansion of an image of `width` x `height` (cached per size)."""
        key = (width, height)
        found = self._sizes.get(key)
        if found is None:
            tokens = int(self.processor._get_num_multimodal_tokens(image_sizes=[[height, width]]).num_image_tokens[0])
            text = self._replacement(height, width)
            found = Expansion(text, tokens, text.count(self.pad))
            if len(self._sizes) < 65536:
                self._sizes[key] = found
        return found


__all__ = ["FAMILIES", "Counter", "Expansion", "Family", "check_model_config", "family", "load_processor"]
