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
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    try:  # ftdata.media (the data side of vision builds) owns this when present
        from ftdata.media.processors import load_processor as shared
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


def save_parts_only(processor: Any, source: Path | None = None) -> None:
    """Make `processor.save_pretrained` write its tokenizer and image processor only (and the
    `source` folder's `processor_config.json`, which holds Gemma 3's `image_seq_length` and LLaVA's
    `patch_size`), so the saved folder loads again as `--processor`.

    transformers' `ProcessorMixin.save_pretrained` fails on the missing video processor, and
    the trainer saves the processor with every checkpoint, the adapter and the merged model.
    """
    extra = source / "processor_config.json" if source is not None else None

    def save(save_directory: str, **kwargs: Any) -> list[str]:
        processor.tokenizer.save_pretrained(save_directory)
        processor.image_processor.save_pretrained(save_directory)
        if extra is not None and extra.is_file():
            shutil.copyfile(extra, Path(save_directory) / extra.name)
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
    from ftdata.io.resources import load_tokenizer

    folder = processor_folder(cfg, path)
    processor = load_processor(folder, with_pad_token(load_tokenizer(cfg.tokenizer or str(folder))))
    save_parts_only(processor, folder)
    model = load_vision_model(path, quantization=cfg.quantization, device=device,
                              dtype=torch.float32 if not cfg.lora else device.dtype, tokenizer=processor.tokenizer)  # fmt: skip
    if cfg.quantization is not Quantization.NONE and device.kind == "cpu":
        keep_cpu_4bit_trainable(model)
    collator = collator_for(model, processor, image_dir=image_folder(cfg), dtype=device.dtype)
    if cfg.lora:
        model = _add_language_lora(model, cfg)
    else:
        freeze_vision(model)
    return LoadedModel(model=model, tokenizer=processor.tokenizer, path=path, device=device, processor=processor,
                       collator=collator)


def load_vision_model(path: Path, *, quantization: Quantization, device: Device, dtype: torch.dtype, tokenizer: Any) -> Any:
    """The vision-language model at `path` (`AutoModelForImageTextToText`), its language model quantized
    as asked (the vision tower and projector never), its pad and end ids those of `tokenizer`.

    Raises:
        ConfigError: the folder is not a vision-language model transformers knows.
    """
    from transformers import AutoModelForImageTextToText

    quant = quantization_config(quantization, device.dtype)
    if quant is not None:
        # transformers matches these from the start of a module's full name (model.visual.blocks...)
        quant.llm_int8_skip_modules = [rf"(?:.*\.)?{name}" for name in VISION_MODULES] + ["lm_head"]
    device_map: Any = {"": device.index} if device.kind == "cuda" else ({"": "cpu"} if quant is not None else None)
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            str(path), dtype=dtype, quantization_config=quant, device_map=device_map, local_files_only=True,
            trust_remote_code=False,
        )  # fmt: skip
    except ValueError as exc:
        raise ConfigError(f"cannot load {path} as a vision-language model: {str(exc).splitlines()[0]}") from None
    if quantization is Quantization.NF4 and device.kind == "cpu":
        check_cpu_4bit_shapes(model)
    sync_pad_token(model, tokenizer)
    text = model.config.get_text_config()  # the language model's own ids, which generation reads
    text.pad_token_id, text.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    generation, eos = getattr(model, "generation_config", None), tokenizer.eos_token_id
    if generation is not None and eos is not None:  # generation stops there too (and the trainer does not warn)
        ids = generation.eos_token_id
        held = [t for t in (ids if isinstance(ids, list) else [ids]) if t is not None]
        if eos not in held:
            generation.eos_token_id = [eos, *held] if held else eos
    return model


def collator_for(model: Any, processor: Any, *, image_dir: Path | None, dtype: torch.dtype) -> VisionCollator:
    """The `VisionCollator` of `model` (before LoRA wraps it) with `processor`'s image processor."""
    facts = ModelFacts.of(model.config, pad_token_id=processor.tokenizer.pad_token_id)
    rope = rope_index_of(model) if facts.family is Family.MROPE else None
    return VisionCollator(processor.image_processor, facts, rope_index=rope, image_dir=image_dir, dtype=dtype)


def image_folder(cfg: TrainConfig) -> Path:
    """Where the run's `sha256:` images live: `image_dir` of the data options, else the build folder's
    `images/`, else the image store a build of raw data writes them to (`~/.cache/ftdata/images`)."""
    from ftdata.media.images import default_store

    data = Path(cfg.data).expanduser() if cfg.data else None
    if cfg.data_options.data.image_dir:
        return Path(cfg.data_options.data.image_dir).expanduser()
    return data / "images" if data is not None and (data / "images").is_dir() else default_store()


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


# --- the tokens SFTTrainer logs ------------------------------------------------------------------

TOKENS = "ftdata_num_tokens"  # a batch key the trainer pops before the model runs


@dataclass
class CountingCollator:
    """The vision collator plus, under `TOKENS`, the batch's real tokens (the rows' lengths, no pads).

    SFTTrainer's `num_tokens` counts `attention_mask.sum()`, or `position_ids.size(1)` without a
    mask: for Qwen-VL's (4, B, L) positions that is B a batch, and Gemma 3's mask dict counts the
    pads. `vision_trainer_class` pops this count and logs it instead.
    """

    collator: VisionCollator

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        batch[TOKENS] = torch.tensor(sum(len(e["input_ids"]) for e in examples))
        return batch


def vision_trainer_class(base: type) -> type:
    """`base` (SFTTrainer or a subclass) logging `num_tokens` from `CountingCollator`'s count."""

    class VisionSFTTrainer(base):  # type: ignore[misc, valid-type]
        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
            tokens = inputs.pop(TOKENS, None)
            before = self._total_train_tokens or self._logged_tokens()
            out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
            if tokens is not None and self.model.training:  # TRL counts train batches only, as here
                gathered = self.accelerator.gather_for_metrics(tokens.reshape(1).to(self.accelerator.device))
                self._total_train_tokens = before + int(gathered.sum())
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return out

        def _logged_tokens(self) -> int:
            """After a resume TRL's counter restarts at 0: go on from the checkpoint's last logged count."""
            if self.state.global_step == 0:
                return 0
            logged = [e["num_tokens"] for e in self.state.log_history if "num_tokens" in e and e.get("step", 0) <= self.state.global_step]
            return int(logged[-1]) if logged else 0

    return VisionSFTTrainer


# --- merging the adapter --------------------------------------------------------------------------


def merge_vision_adapter(loaded: LoadedModel, adapter_dir: Path, target: Path) -> Path:
    """Save the vision-language base with the adapter merged in, plus the processor files, to `target`.

    The base is reloaded unquantized (merging into 4-bit weights would round the update away);
    `target` loads with `AutoModelForImageTextToText.from_pretrained` and as `--processor`.
    """
    from peft import PeftModel

    dtype = loaded.device.dtype if loaded.device.kind == "cuda" else torch.float32
    base = load_vision_model(loaded.path, quantization=Quantization.NONE, device=loaded.device, dtype=dtype,
                             tokenizer=loaded.tokenizer)  # fmt: skip
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(target))
    loaded.processor.save_pretrained(str(target))
    return target
