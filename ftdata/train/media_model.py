"""Training a model that reads media: load it, put LoRA on its language model only, and hand
SFTTrainer the media collator. `run.load_model` chooses this or the causal LM (`model.py`) once.

What differs from a text model (everything else is the text path: `ftdata train`, run folder,
checkpoints, run.json):

- The model loads with `AutoModelForMultimodalLM` (Qwen2-VL, Qwen2.5-VL, Gemma 3, ..., Qwen2-Audio).
- LoRA goes on the language model's linear layers only; the vision (or audio) tower and the projector
  get no adapter, so they stay frozen (peft freezes every base weight). With `--no-lora` they
  are frozen explicitly and only the language model trains. With `quantization: 4bit/8bit`
  they are left unquantized (`llm_int8_skip_modules`): QLoRA quantizes the language model.
- The rows carry a `media` column (references, never pixels): `MediaCollator` loads and processes
  them per batch, so SFTTrainer gets `data_collator=`, `remove_unused_columns=False` (the
  collator needs `media` and `seq_lengths`) and `padding_free=False` (TRL's padding-free
  collator knows nothing of media; the media collator isolates packed rows itself). All of it
  reaches the trainer through `LoadedModel.media` (`MediaTraining`): trainer.py imports nothing here.
- SFTTrainer wants a processor (not a tokenizer) for such rows; the processor is built from the
  folder's parts, without the video processor (torchvision). An audio model's processor (its
  preprocessor_config.json names a feature extractor) loads with `AutoProcessor`: no family of the
  image table, its counts checked per batch by the collator.
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
from ftdata.media.families import Collate, check_model_config
from ftdata.media.processors import load_processor
from ftdata.train.config import Quantization, TrainConfig
from ftdata.train.media_collator import MediaCollator, ModelFacts, model_inputs, rope_index_of
from ftdata.train.model import (
    Device,
    LoadedModel,
    _is_linear,
    check_cpu_4bit_shapes,
    keep_cpu_4bit_trainable,
    quantization_config,
    sync_pad_token,
    with_pad_token,
    with_run_template,
)

# Module names of the media side (vision and audio towers, projectors) in the families ftdata trains: kept
# unquantized and adapter-free.
MEDIA_MODULES = ("visual", "vision_tower", "multi_modal_projector", "vision_model", "mm_projector", "audio_tower")
# A model config's part that reads media (the tower's own config).
MEDIA_CONFIGS = ("vision_config", "audio_config")


def takes_media(path: Path) -> bool:
    """True when the model folder's config has a part that reads media (`vision_config`)."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and any(key in config for key in MEDIA_CONFIGS)


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
        for part in ("image_processor", "feature_extractor"):
            if getattr(processor, part, None) is not None:
                getattr(processor, part).save_pretrained(save_directory)
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
    inner = decoder() if (decoder := getattr(model, "get_decoder", None)) is not None else None
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
        raise ConfigError(
            f"target_modules={targets!r} match no layer of the language model; its linear layers are: "
            f"{', '.join(names)}"
        )
    return chosen


def freeze_media_modules(model: torch.nn.Module) -> int:
    """Switch off gradients of the vision tower and projector; returns the parameters frozen."""
    frozen = 0
    for name, param in model.named_parameters():
        if any(part in MEDIA_MODULES for part in name.split(".")):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


@dataclass
class MediaTraining:
    """What training changes for rows with media (`LoadedModel.media`): the processor (SFTTrainer's
    `processing_class`), the collator, SFTConfig's settings and the trainer that counts tokens."""

    processor: Any
    collator: MediaCollator

    def adapt(self, args: Any) -> Any:
        """SFTConfig changes for rows with media (see the module docstring)."""
        args.padding_free = False
        args.remove_unused_columns = False
        return args

    def trainer(self, base: type) -> tuple[type, CountingCollator]:
        """(`base` logging `num_tokens` from the rows' lengths, the collator that counts them)."""
        return media_trainer_class(base), CountingCollator(self.collator)


def load_media_for_training(cfg: TrainConfig, path: Path, device: Device) -> LoadedModel:
    """Load the model at `path` (one that reads media) for LoRA / QLoRA on its language model, with its collator.

    Raises:
        ConfigError: no processor files, a processor that disagrees with the model's config, an
            unsupported family for the data, or bad LoRA targets.
    """
    from ftdata.io.resources import load_tokenizer

    folder = processor_folder(cfg, path)
    tokenizer = with_pad_token(with_run_template(load_tokenizer(cfg.tokenizer or str(folder)), cfg))
    processor = media_processor(folder, tokenizer)
    if (
        cfg.data_options.data.chat_template is not None
    ):  # the run's template over the folder's (saved with the tokenizer)
        processor.chat_template = tokenizer.chat_template
    save_parts_only(processor, folder)
    model = load_media_model(
        path,
        quantization=cfg.quantization,
        device=device,
        dtype=torch.float32 if not cfg.lora else device.dtype,
        tokenizer=processor.tokenizer,
    )
    if not reads_audio(processor):  # the image family table's checks; audio counts are checked per batch
        check_model_config(processor, model.config)  # the model's own config, where the processor folder holds none
    if cfg.quantization is not Quantization.NONE and device.kind == "cpu":
        keep_cpu_4bit_trainable(model)
    collator = collator_for(
        model, processor, image_dir=image_folder(cfg), dtype=device.dtype, audio_dir=image_folder(cfg)
    )  # one media store
    if cfg.lora:
        model = _add_language_lora(model, cfg)
    else:
        freeze_media_modules(model)
    return LoadedModel(
        model=model, tokenizer=processor.tokenizer, path=path, device=device, media=MediaTraining(processor, collator)
    )


def reads_audio(processor: Any) -> bool:
    """True for a processor with a feature extractor (Qwen2-Audio's, ...)."""
    return getattr(processor, "feature_extractor", None) is not None


def media_processor(folder: Path, tokenizer: Any) -> Any:
    """The processor of `folder`: an audio model's (its preprocessor_config.json names a feature
    extractor) with `AutoProcessor` and `tokenizer` in it, else an image family's (`load_processor`).

    Raises:
        ConfigError: the folder's processor cannot be loaded.
    """
    try:
        pre = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pre = {}
    if not (isinstance(pre, dict) and "feature_extractor_type" in pre and "image_processor_type" not in pre):
        return load_processor(str(folder), tokenizer=tokenizer)
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, ImportError) as exc:
        raise ConfigError(
            f"cannot load the audio processor of {str(folder)!r}: {str(exc).strip().splitlines()[0]}"
        ) from None
    if not reads_audio(processor) or getattr(processor, "audio_token", None) is None:
        raise ConfigError(
            f"processor {type(processor).__name__} in {str(folder)!r} names no feature extractor and audio token"
        )
    processor.tokenizer = tokenizer
    return processor


def load_media_model(
    path: Path, *, quantization: Quantization, device: Device, dtype: torch.dtype, tokenizer: Any
) -> Any:
    """The model at `path` (`AutoModelForMultimodalLM`), its language model quantized as asked (the
    vision or audio tower and projector never), its pad and end ids those of `tokenizer`.

    Raises:
        ConfigError: the folder is not a model transformers knows as reading media.
    """
    from transformers import AutoModelForMultimodalLM

    quant = quantization_config(quantization, device.dtype)
    if quant is not None:
        # transformers matches these from the start of a module's full name (model.visual.blocks...)
        quant.llm_int8_skip_modules = [rf"(?:.*\.)?{name}" for name in MEDIA_MODULES] + ["lm_head"]
    device_map: Any = {"": device.index} if device.kind == "cuda" else ({"": "cpu"} if quant is not None else None)
    try:
        model = AutoModelForMultimodalLM.from_pretrained(
            str(path),
            dtype=dtype,
            quantization_config=quant,
            device_map=device_map,
            local_files_only=True,
            trust_remote_code=False,
        )
    except ValueError as exc:
        raise ConfigError(f"cannot load {path} as a model that reads media: {str(exc).splitlines()[0]}") from None
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


def collator_for(
    model: Any, processor: Any, *, image_dir: Path | None, dtype: torch.dtype, audio_dir: Path | None = None
) -> MediaCollator:
    """The `MediaCollator` of `model` (before LoRA wraps it) with `processor`'s image processor, or the
    whole processor for audio (the model's forward names pick what of its output the model gets)."""
    facts = ModelFacts.of(model.config, pad_token_id=processor.tokenizer.pad_token_id)
    rope = rope_index_of(model) if facts.collate is Collate.MROPE else None
    audio = processor if reads_audio(processor) else None
    return MediaCollator(
        getattr(processor, "image_processor", None),
        facts,
        rope_index=rope,
        image_dir=image_dir,
        dtype=dtype,
        audio_processor=audio,
        audio_inputs=model_inputs(model) if audio is not None else frozenset(),
        audio_dir=audio_dir,
    )


def image_folder(cfg: TrainConfig) -> Path:
    """Where the run's `sha256:` images and clips live (one media store): `image_dir` of the data options, else
    the build folder's `images/`, else the store a build of raw data writes them to (`~/.cache/ftdata/images`)."""
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
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules="^(" + "|".join(re.escape(n) for n in targets) + ")$",
    )
    return get_peft_model(model, lora)


# --- the tokens SFTTrainer logs ------------------------------------------------------------------

TOKENS = "ftdata_num_tokens"  # a batch key the trainer pops before the model runs


@dataclass
class CountingCollator:
    """The media collator plus, under `TOKENS`, the batch's real tokens (the rows' lengths, no pads).

    SFTTrainer's `num_tokens` counts `attention_mask.sum()`, or `position_ids.size(1)` without a
    mask: for Qwen-VL's (4, B, L) positions that is B a batch, and Gemma 3's mask dict counts the
    pads. `media_trainer_class` pops this count and logs it instead.
    """

    collator: MediaCollator

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        batch[TOKENS] = torch.tensor(sum(len(e["input_ids"]) for e in examples))
        return batch


def media_trainer_class(base: type) -> type:
    """`base` (SFTTrainer or a subclass) logging `num_tokens` from `CountingCollator`'s count."""

    class MediaSFTTrainer(base):  # a class chosen at run time
        _total_train_tokens: int  # TRL's count, set in its __init__

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            tokens = inputs.pop(TOKENS, None)
            before = self._total_train_tokens or self._logged_tokens()
            out = super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
            if tokens is not None and self.model.training:  # TRL counts train batches only, as here
                gathered = self.accelerator.gather_for_metrics(tokens.reshape(1).to(self.accelerator.device))
                self._total_train_tokens = before + int(gathered.sum())
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return out

        def _logged_tokens(self) -> int:
            """After a resume TRL's counter restarts at 0: go on from the checkpoint's last logged count."""
            if self.state.global_step == 0:
                return 0
            logged = [
                e["num_tokens"]
                for e in self.state.log_history
                if "num_tokens" in e and e.get("step", 0) <= self.state.global_step
            ]
            return int(logged[-1]) if logged else 0

    return MediaSFTTrainer


# --- merging the adapter --------------------------------------------------------------------------


def merge_media_adapter(loaded: LoadedModel, adapter_dir: Path, target: Path) -> Path:
    """Save the base (a model that reads media) with the adapter merged in, plus the processor files, to `target`.

    The base is reloaded unquantized (merging into 4-bit weights would round the update away);
    `target` loads with `AutoModelForImageTextToText.from_pretrained` and as `--processor`.
    """
    from peft import PeftModel

    dtype = loaded.device.dtype if loaded.device.kind == "cuda" else torch.float32
    base = load_media_model(
        loaded.path, quantization=Quantization.NONE, device=loaded.device, dtype=dtype, tokenizer=loaded.tokenizer
    )
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(target))
    loaded.media.processor.save_pretrained(str(target))
    return target
