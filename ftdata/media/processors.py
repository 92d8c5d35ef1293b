"""A processor from a local folder, without torchvision: what every medium is counted and expanded with.

    load_processor("models/qwen2-vl")
    ->  Qwen2VLProcessor(image_processor=<PIL backend>, tokenizer, video_processor=None)

The folder is what a model repo ships: tokenizer files, `preprocessor_config.json` (the image
processor), `processor_config.json` (processor settings such as Gemma 3's `image_seq_length`),
the chat template, and optionally the model's `config.json`. transformers 5 ships a PIL
backend for every image processor, so no torchvision is needed to count; the Qwen and SmolVLM
processors also want a video processor, which imports torchvision: ftdata builds those
processors from their parts with no video processor (videos are not read). What torchvision
adds: video inputs and the faster torch image backend the training collator may use.

The processor class is the key of the family table (`families.py`): a folder whose configs name
none gets it from config.json's model type or the image processor's type. A processor that needs
a package that is not installed (SmolVLM: num2words) is one line naming it; one whose tokens per
item disagree with the folder's model config.json is refused with both numbers.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError
from ftdata.media.families import FAMILIES, check_model_config, family, processor_class, supported

PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


def processor_tokenizer(processor: Any) -> Any:
    """The tokenizer a build with media uses: the processor folder (its tokenizer files) or the processor's own.

    Raises:
        ConfigError: a folder that does not exist (named as the processor, not as a tokenizer).
    """
    if not isinstance(processor, (str, Path)):
        return processor.tokenizer
    if not Path(processor).expanduser().is_dir():
        raise ConfigError(
            f"processor {str(processor)!r}: no such folder; give the model's folder (tokenizer files, "
            "preprocessor_config.json, chat template)"
        )
    return processor


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None


def load_processor(spec: Any, *, tokenizer: Any = None) -> Any:
    """A transformers processor from a folder (built from its parts, without torchvision), or `spec` as given.

    `tokenizer`: the tokenizer already loaded from the same folder (loaded here when None).

    Raises:
        ConfigError: no such folder, no preprocessor_config.json, an unknown processor class, a
            package the processor needs that is not installed, or a processor whose tokens per
            item disagree with the folder's model config.json.
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
        raise ConfigError(
            f"processor {folder!r} is not a folder; give the folder a model repo ships (tokenizer, "
            "preprocessor_config.json, chat template)"
        )
    pre = _json(path / "preprocessor_config.json")
    settings = {**_json(path / "processor_config.json")}
    if not pre and not settings:
        raise ConfigError(
            f"processor folder {folder!r} has no preprocessor_config.json (the image processor's settings)"
        )
    name = (
        settings.get("processor_class")
        or pre.get("processor_class")
        or processor_class(pre, _json(path / "config.json"))
    )
    cls = getattr(transformers, str(name), None) if name else None
    if cls is None or name not in FAMILIES:
        raise ConfigError(
            f"processor folder {folder!r}: processor_class {name!r} is not supported; supported: {supported()} "
            "(set processor_class in preprocessor_config.json or processor_config.json)"
        )
    go_offline()
    if FAMILIES[str(name)].audio is not None:
        return _load_audio(folder, str(name), tokenizer)
    if not pre:
        raise ConfigError(
            f"processor folder {folder!r} has no preprocessor_config.json (the image processor's settings)"
        )
    image_processor = transformers.AutoImageProcessor.from_pretrained(folder, backend="pil", local_files_only=True)
    tok = tokenizer if tokenizer is not None else load_tokenizer(folder)
    params = inspect.signature(cls.__init__).parameters
    kwargs = {
        k: v
        for k, v in settings.items()
        if k in params and k not in ("image_processor", "tokenizer", "video_processor")
    }
    parts = {"image_processor": image_processor, "tokenizer": tok}
    for attribute in cls.get_attributes():
        if attribute not in parts:
            parts[attribute] = None  # the video processor (imports torchvision): ftdata reads no video
    processor = cls.__new__(cls)
    processor.check_argument_for_proper_class = lambda name, value: None  # allow the missing video processor
    try:
        cls.__init__(processor, **parts, chat_template=folder_chat_template(path) or tok.chat_template, **kwargs)
    except ImportError as exc:  # SmolVLM's needs num2words: transformers' message names the package and the install
        raise ConfigError(
            f"processor {name} needs a package that is not installed: {str(exc).strip().splitlines()[0]}"
        ) from None
    finally:
        processor.__dict__.pop("check_argument_for_proper_class", None)
    family(processor)
    if (path / "config.json").is_file():
        check_model_config(processor, _json(path / "config.json"))
    return processor


def _load_audio(folder: str, name: str, tokenizer: Any) -> Any:
    """An audio-language processor (Qwen2-Audio, Gemma 3n, Phi-4-multimodal) as its folder saves it: its feature
    extractor runs on numpy (no torchaudio); an image processor that needs torchvision is refused in one line.
    `tokenizer`, when loaded from this folder, is the processor's own (`_holding`)."""
    import transformers

    try:
        if tokenizer is not None and _same_folder(tokenizer, folder):
            processor = _holding(getattr(transformers, name), folder, tokenizer)
        else:
            processor = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
    except ImportError as exc:
        raise ConfigError(
            f"processor {name} needs a package that is not installed: {str(exc).strip().splitlines()[0]}"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"processor folder {folder!r}: cannot load {name}: {str(exc).strip().splitlines()[0]}"
        ) from None
    family(processor)
    if (Path(folder) / "config.json").is_file():
        check_model_config(processor, _json(Path(folder) / "config.json"))
    return processor


def _same_folder(tokenizer: Any, folder: str) -> bool:
    """Whether `tokenizer` was loaded from `folder` (its `name_or_path`)."""
    name = getattr(tokenizer, "name_or_path", None)
    return bool(name) and Path(str(name)).expanduser().resolve() == Path(folder)


def _holding(cls: Any, folder: str, tokenizer: Any) -> Any:
    """`cls.from_pretrained(folder)` holding `tokenizer` (loaded from `folder`) as its tokenizer: every other part
    and setting as transformers loads them, without parsing the folder's tokenizer files a second time (0.4 s for
    Qwen2.5's, 2.5 s for Gemma's). The loading subclass only hands over the tokenizer; the processor is `cls`'s."""

    class Loading(cls):  # cls: a transformers processor class, known at run time
        @classmethod
        def _load_tokenizer_from_pretrained(loader: Any, sub_processor_type: str, *args: Any, **kwargs: Any) -> Any:
            if sub_processor_type == "tokenizer":
                return tokenizer
            return super()._load_tokenizer_from_pretrained(sub_processor_type, *args, **kwargs)

    processor = Loading.from_pretrained(folder, local_files_only=True)
    processor.__class__ = cls
    return processor


def folder_chat_template(path: Path) -> str | None:
    """The processor's own chat template in a model folder: `chat_template.jinja`, else `chat_template.json`
    (the older processor file); None when the folder has neither (the tokenizer's is used)."""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    template = _json(path / "chat_template.json").get("chat_template")
    return template if isinstance(template, str) else None


__all__ = ["folder_chat_template", "load_processor", "processor_tokenizer"]
