"""Training a vision-language model: load it, put LoRA on its language model only, and hand
SFTTrainer the vision collator.

What differs from a text model (everything else is the text path: `ftdata train`, run folder,
checkpoints, run.json):

- The model loads with `AutoModelForImageTextToText` (Qwen2-VL, Qwen2.5-VL, Gemma 3, ...).
- LoRA goes on the language model's linear layers only; the vision tower and the projector
  get no adapter, so they stay frozen (peft freezes every base weight). With `--no-lora` they
  are frozen explicitly and only the language model trains. With `quantization: 4bit/8bit`
  they are left unquantized (`llm_int8_skip_modules`): QLoRA quantizes the language model.
- The rows carry `images` (references, never pixels): `VisionCollator` loads and processes
  them per batch, so SFTTrainer gets `data_collator=`, `remove_unused_columns=False` (the
  collator needs `images` and `seq_lengths`) and `padding_free=False` (TRL's padding-free
  collator knows nothing of images; the vision collator isolates packed rows itself).
- SFTTrainer wants a processor (not a tokenizer) once the data has an `images` column; the
  processor is built from the folder's parts, without the video processor (torchvision).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from ftdata.errors import ConfigError
from ftdata.train.config import Quantization, TrainConfig
from ftdata.train.model import (
    Device, LoadedModel, _is_linear, check_cpu_4bit_shapes, keep_cpu_4bit_trainable, quantization_config, sync_pad_token,
    with_pad_token,
)  # fmt: skip
from ftdata.train.vision import Family, ModelFacts, VisionCollator, rope_index_of

# Module names of the vision side in the families ftdata trains (kept unquantized and adapter-free).
VISION_MODULES = ("visual", "vision_tower", "multi_modal_projector", "vision_model", "mm_projector")


def is_vision_language(path: Path) -> bool:
    """True when the model folder's config has a vision part (`vision_config`)."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "vision_config" in config


def processor_folder(cfg: TrainConfig, model_path: Path) -> Path:
    """`processor:` of the run, else the model folder (a model repo ships its processor files).

    Raises:
        ConfigError: the folder has no preprocessor_config.json.
    """
    folder = Path(cfg.processor).expanduser() if cfg.processor is not None else model_path
    if not (folder / "preprocessor_config.json").is_file():
        raise ConfigError(
            f"processor folder {str(folder)!r} has no preprocessor_config.json: give --processor DIR (the folder the "
            "model repo ships: tokenizer files, preprocessor_config.json, chat template)"
        )
    return folder


def load_processor(folder: Path, tokenizer: Any) -> Any:
    """The model's processor from its folder, without torchvision (no video processor)."""
    try:  # ftdata.vision (the data side of vision builds) owns this when present
        from ftdata.vision.processors import load_processor as shared
    except ImportError:
        shared = None
    if shared is not None:
        return shared(str(folder), tokenizer=tokenizer)
    import transformers

    settings = {}
    for name in ("processor_config.json", "preprocessor_config.json"):
        if (folder / name).is_file():
            settings = {**json.loads((folder / name).read_text(encoding="utf-8")), **settings}
    cls = getattr(transformers, str(settings.get("processor_class")), None)
    if cls is None:
        raise ConfigError(f"processor folder {str(folder)!r}: set processor_class (e.g. Qwen2VLProcessor) in preprocessor_config.json")
    image_processor = transformers.AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    parts = {name: None for name in cls.get_attributes()}  # the video processor (torchvision) stays None
    parts.update(image_processor=image_processor, tokenizer=tokenizer)
    processor = cls.__new__(cls)
    processor.check_argument_for_proper_class = lambda name, value: None  # allow the missing video processor
    try:
        cls.__init__(processor, **parts, chat_template=tokenizer.chat_template)
    finally:
        del processor.check_argument_for_proper_class
    return processor


def save_parts_only(processor: Any) -> None:
    """Make `processor.save_pretrained` write its tokenizer and image processor only.

    transformers' `ProcessorMixin.save_pretrained` fails on the missing video processor, and
    the trainer saves the processor with every checkpoint and the adapter.
    """

    def save(save_directory: str, **kwargs: Any) -> list[str]:
        processor.tokenizer.save_pretrained(save_directory)
        processor.image_processor.save_pretrained(save_directory)
        return [save_directory]

    processor.save_pretrained = save


def language_targets(model: torch.nn.Module, targets: str | list[str]) -> list[str]:
    """The qualified names of the linear layers of the language model that get LoRA.

    `targets` is "all-linear" or short names (q_proj, v_proj). Never a vision or projector
    layer, never the output head.

    Raises:
        ConfigError: no language-model layer matches (with the names there are).
    """
    inner = model.get_decoder() if hasattr(model, "get_decoder") else None
    prefix = next((name for name, module in model.named_modules() if module is inner), None)
    if prefix is None:
        raise ConfigError(f"cannot find the language model inside {type(model).__name__} to put LoRA on")
    linear = [n for n, m in model.named_modules() if n.startswith(prefix + ".") and _is_linear(m)]
    if targets == "all-linear":
        return linear
    wanted = set(targets if isinstance(targets, list) else [targets])
    chosen = [n for n in linear if n.rsplit(".", 1)[-1] in wanted]
    if not chosen:
        names = sorted({n.rsplit(".", 1)[-1] for n in linear})
        raise ConfigError(f"target_modules={targets!r} match no layer of the language model; its linear layers are: {', '.join(names)}")
    return chosen


def freeze_vision(model: torch.nn.Module) -> int:
    """Switch off gradients of the vision tower and projector; returns the parameters frozen."""
    frozen = 0
    for name, param in model.named_parameters():
        if any(part in VISION_MODULES for part in name.split(".")):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def load_vision_for_training(cfg: TrainConfig, path: Path, device: Device) -> LoadedModel:
    """Load the vision-language model at `path` for LoRA / QLoRA on its language model, with its collator.

    Raises:
        ConfigError: no processor files, an unsupported family for the data, or bad LoRA targets.
    """
    from transformers import AutoModelForImageTextToText

    from ftdata.io.resources import load_tokenizer

    folder = processor_folder(cfg, path)
    processor = load_processor(folder, with_pad_token(load_tokenizer(cfg.tokenizer or str(folder))))
    save_parts_only(processor)
    quant = quantization_config(cfg.quantization, device.dtype)
    if quant is not None:
        # transformers matches these from the start of a module's full name (model.visual.blocks...)
        quant.llm_int8_skip_modules = [rf"(?:.*\.)?{name}" for name in VISION_MODULES] + ["lm_head"]
    device_map: Any = {"": device.index} if device.kind == "cuda" else ({"": "cpu"} if quant is not None else None)
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            str(path), dtype=torch.float32 if not cfg.lora else device.dtype, quantization_config=quant,
            device_map=device_map, local_files_only=True, trust_remote_code=False,
        )  # fmt: skip
    except ValueError as exc:
        raise ConfigError(f"cannot load {path} as a vision-language model: {str(exc).splitlines()[0]}") from None
    if quant is not None and device.kind == "cpu":
        if cfg.quantization is Quantization.NF4:
            check_cpu_4bit_shapes(model)
        keep_cpu_4bit_trainable(model)
    sync_pad_token(model, processor.tokenizer)
    text = model.config.get_text_config()  # the language model's own ids, which generation reads
    text.pad_token_id, text.eos_token_id = processor.tokenizer.pad_token_id, processor.tokenizer.eos_token_id
    facts = ModelFacts.of(model.config, pad_token_id=processor.tokenizer.pad_token_id)
    rope = rope_index_of(model) if facts.family is Family.MROPE else None
    if cfg.lora:
        model = _add_language_lora(model, cfg)
    else:
        freeze_vision(model)
    data = Path(cfg.data).expanduser() if cfg.data else None
    image_dir = getattr(cfg.data_options, "image_dir", None) or (data / "images" if data and (data / "images").is_dir() else None)
    collator = VisionCollator(
        processor.image_processor, facts, rope_index=rope, image_dir=Path(image_dir) if image_dir else None, dtype=device.dtype
    )
    return LoadedModel(model=model, tokenizer=processor.tokenizer, path=path, device=device, processor=processor,
                       collator=collator)


def _add_language_lora(model: Any, cfg: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import set_seed

    targets = language_targets(model, cfg.target_modules)
    if cfg.quantization is not Quantization.NONE:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    set_seed(cfg.seed)  # LoRA A matrices are drawn at random
    lora = LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias="none", task_type="CAUSAL_LM",
        target_modules="^(" + "|".join(re.escape(n) for n in targets) + ")$",
    )  # fmt: skip
    return get_peft_model(model, lora)


def adapt_args(args: Any) -> Any:
    """SFTConfig changes for rows with images (see the module docstring)."""
    args.padding_free = False
    args.remove_unused_columns = False
    return args
