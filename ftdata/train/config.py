"""`TrainConfig`: every knob of `ftdata train`, one field per option.

The same names work in three places: keyword arguments of `TrainConfig(...)`, keys of a YAML
file (`ftdata train --config run.yaml`), and CLI flags (`--lora-r 16`). Each field carries its
help text in `metadata["help"]`; the CLI and `docs/training.md` read it from there.

This module imports neither torch nor transformers, so loading and validating a config is
instant; scheduler and optimizer names are checked when the trainer is built.
"""

from __future__ import annotations

import difflib
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ftdata.errors import ConfigError
from ftdata.types import _Choice


class Quantization(_Choice):
    """How the frozen base weights are stored during training."""

    NF4 = "4bit"  # bitsandbytes NF4 + double quantization: QLoRA
    INT8 = "8bit"  # bitsandbytes LLM.int8()
    NONE = "none"  # weights in the compute dtype (plain LoRA or full fine-tune)


Quantization.NF4.aliases = ("nf4", "qlora", "4")  # type: ignore[attr-defined]
Quantization.INT8.aliases = ("int8", "8")  # type: ignore[attr-defined]
Quantization.NONE.aliases = ("no", "off", "false")  # type: ignore[attr-defined]


class Precision(_Choice):
    """Compute dtype. `auto` = bf16 on a CUDA GPU that supports it, fp16 on older GPUs, fp32 on CPU."""

    AUTO = "auto"
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"


class Interval(_Choice):
    """When to evaluate, log or save (transformers' IntervalStrategy; `best` only for saving)."""

    NO = "no"
    STEPS = "steps"
    EPOCH = "epoch"
    BEST = "best"


def _opt(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field with its help text (and optional CLI hints) in the metadata."""
    meta = {"help": help, **extra}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Options of one fine-tuning run. Validated (and strings converted to enums) on creation.

    Example:
        >>> cfg = TrainConfig(data="alpaca.json", template="alpaca", max_steps=50)
        >>> cfg.quantization
        <Quantization.NF4: '4bit'>
    """

    # --- model -----------------------------------------------------------------------------
    model: str | None = _opt(
        None,
        "Local model folder (Hugging Face layout). Default: the bundled SmolLM2-135M-Instruct, "
        "materialised once from its GGUF into the ftdata cache. Nothing is downloaded.",
        group="model",
    )
    tokenizer: str | None = _opt(
        None, "Tokenizer folder. Default: the model's own tokenizer.", group="model"
    )
    # --- data (names and meaning as in ftdata.build_sft_dataset) ---------------------------
    data: str | None = _opt(
        None,
        "Training data: any file or folder `ftdata build` reads (passed to build_sft_dataset as "
        "`source`), or a dataset folder written by `ftdata build` / `save_to_disk`.",
        group="data",
    )
    template: str | None = _opt(
        None,
        "Prompt template (alpaca, instruction-response, question-answer, or a .jinja file). "
        "Default: the tokenizer's chat template.",
        group="data",
    )
    max_length: int = _opt(2048, "Longest token sequence (and packed row length).", group="data")
    packing: bool = _opt(
        False, "Pack several records per row (position_ids restart; trained padding-free).", group="data"
    )
    test_size: float | None = _opt(
        None,
        "Hold out a test split: a fraction in (0, 1) or a record count >= 1. Enables eval loss, "
        "perplexity and `ftdata eval`.",
        group="data",
    )
    data_options: dict[str, Any] = _opt(
        {},
        "Other build_sft_dataset options, e.g. {mask: last_assistant, truncation: keep_end}. "
        "CLI: --data-option KEY=VALUE (repeatable; VALUE is parsed as YAML).",
        group="data",
    )
    # --- adapter and quantization ----------------------------------------------------------
    lora: bool = _opt(True, "Train a LoRA adapter. --no-lora trains every weight (needs --quantization none).",
                      group="lora")
    lora_r: int = _opt(16, "LoRA rank (inner size of the low-rank update).", group="lora")
    lora_alpha: int = _opt(32, "LoRA alpha (the update is scaled by alpha / r).", group="lora")
    lora_dropout: float = _opt(0.05, "Dropout on the LoRA input.", group="lora")
    target_modules: str | list[str] = _opt(
        "all-linear",
        "Modules that get LoRA: all-linear (every linear layer but the output head), or names "
        "such as q_proj,v_proj (comma-separated on the CLI, a list in YAML).",
        group="lora",
    )
    quantization: Quantization = _opt(
        Quantization.NF4,
        "Base weights: 4bit (NF4 + double quantization = QLoRA), 8bit, or none.",
        group="lora",
        choices=[q.value for q in Quantization],
    )
    precision: Precision = _opt(
        Precision.AUTO,
        "Compute dtype: auto (bf16 on CUDA with bf16 support, fp16 on other GPUs, fp32 on CPU), "
        "bf16, fp16, fp32.",
        group="lora",
        choices=[p.value for p in Precision],
    )
    # --- optimisation ----------------------------------------------------------------------
    num_train_epochs: float = _opt(1.0, "Passes over the training split.", group="train")
    max_steps: int | None = _opt(None, "Stop after this many optimizer steps (overrides epochs).", group="train")
    learning_rate: float = _opt(2e-4, "Peak learning rate.", group="train")
    lr_scheduler_type: str = _opt(
        "cosine", "Scheduler: linear, cosine, constant, constant_with_warmup, ... (transformers names).",
        group="train",
    )
    warmup_steps: float = _opt(
        0.03, "Warmup: a fraction of the total steps when < 1, else a step count.", group="train"
    )
    per_device_train_batch_size: int = _opt(4, "Rows per device per step.", group="train")
    per_device_eval_batch_size: int = _opt(8, "Rows per device for eval loss.", group="train")
    gradient_accumulation_steps: int = _opt(1, "Micro-batches summed per optimizer step.", group="train")
    gradient_checkpointing: bool = _opt(
        False, "Recompute activations in the backward pass (less memory, ~30% slower).", group="train"
    )
    optim: str = _opt(
        "adamw_torch",
        "Optimizer (transformers names): adamw_torch, adamw_torch_fused, paged_adamw_8bit (CUDA), sgd, ...",
        group="train",
    )
    weight_decay: float = _opt(0.0, "AdamW weight decay.", group="train")
    max_grad_norm: float = _opt(1.0, "Gradient clipping norm.", group="train")
    group_by_length: bool = _opt(
        False, "Sample rows of similar length together (less padding; not with packing).", group="train"
    )
    seed: int = _opt(42, "Seed of the data split, the LoRA init and the data order.", group="train")
    # --- evaluation, logging, checkpoints --------------------------------------------------
    eval_strategy: Interval = _opt(
        Interval.EPOCH, "When to compute eval loss: no, steps, epoch (needs --test-size).", group="schedule",
        choices=["no", "steps", "epoch"],
    )
    eval_steps: int | None = _opt(None, "Eval every N steps (eval_strategy=steps). Default: logging_steps.",
                                  group="schedule")
    logging_strategy: Interval = _opt(Interval.STEPS, "When to log the train loss: no, steps, epoch.",
                                      group="schedule", choices=["no", "steps", "epoch"])
    logging_steps: int = _opt(10, "Log every N steps.", group="schedule")
    save_strategy: Interval = _opt(Interval.STEPS, "When to write a checkpoint: no, steps, epoch, best.",
                                   group="schedule", choices=["no", "steps", "epoch", "best"])
    save_steps: int = _opt(100, "Checkpoint every N steps (save_strategy=steps).", group="schedule")
    save_total_limit: int | None = _opt(2, "Keep at most N checkpoints (older ones are deleted).",
                                        group="schedule")
    load_best_model_at_end: bool = _opt(
        False, "Reload the checkpoint with the lowest eval loss at the end (needs an eval split).",
        group="schedule",
    )
    # --- outputs ---------------------------------------------------------------------------
    output_dir: str = _opt("runs", "Parent folder of the run folders.", group="output")
    run_name: str | None = _opt(None, "Run folder name. Default: a timestamp such as 20250101-120000.",
                                group="output")
    merge: bool = _opt(False, "Also save the base model with the adapter merged in (merged/).", group="output")

    def __post_init__(self) -> None:
        self.quantization = Quantization.parse(self.quantization, name="quantization")  # type: ignore[assignment]
        self.precision = Precision.parse(self.precision, name="precision")  # type: ignore[assignment]
        for name in ("eval_strategy", "logging_strategy", "save_strategy"):
            value = Interval.parse(getattr(self, name), name=name)
            if value is Interval.BEST and name != "save_strategy":
                raise ConfigError(f"{name} must be one of no, steps, epoch; got {name}='best'")
            setattr(self, name, value)
        self.target_modules = _modules(self.target_modules)
        self.test_size = _test_size(self.test_size)
        if not isinstance(self.data_options, dict):
            raise ConfigError(f"data_options must be a mapping, got data_options={self.data_options!r}")
        _check_numbers(self)
        _check_combinations(self)

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: dict[str, Any], *, origin: str = "config") -> TrainConfig:
        """Build a config from a dict (YAML document, CLI flags); unknown keys are errors.

        Raises:
            ConfigError: an unknown key (with the closest valid name) or a bad value.
        """
        if not isinstance(values, dict):
            raise ConfigError(f"{origin} must be a mapping of option: value, got {type(values).__name__}")
        names = [f.name for f in fields(cls)]
        for key in values:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f" (did you mean {close[0]}?)" if close else f"; valid options: {', '.join(names)}"
                raise ConfigError(f"{origin}: unknown option {key!r}{hint}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Load a YAML file of options; `overrides` (e.g. CLI flags) win over the file.

        Raises:
            ConfigError: the file is missing, is not valid YAML, or holds a bad option.
        """
        values = read_yaml(path)
        values.update(overrides)
        return cls.from_mapping(values, origin=str(path))

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-safe dict (enums as their string values)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, _Choice):
                out[key] = value.value
        return out

    def to_yaml(self, path: str | Path) -> None:
        """Write the config as YAML (the run folder keeps one for `--resume`)."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of options.

    Raises:
        ConfigError: the file is missing, unreadable, or not a mapping.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file not found: {file}")
    from ftdata.limits import load_yaml  # size and alias limits: no "billion laughs"

    values = load_yaml(file.read_text(encoding="utf-8"), source=str(file)) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{file} must hold a mapping of option: value, got {type(values).__name__}")
    return values


def field_help() -> dict[str, str]:
    """Help text of every option, by name (used by the CLI and the docs test)."""
    return {f.name: f.metadata["help"] for f in fields(TrainConfig)}


def field_defaults() -> dict[str, Any]:
    """Default value of every option, by name."""
    out: dict[str, Any] = {}
    for f in fields(TrainConfig):
        value = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
        out[f.name] = value.value if isinstance(value, _Choice) else value
    return out


# --- validation helpers ------------------------------------------------------------------------


def _number(cfg: TrainConfig, name: str, kind: type, *, low: float, inclusive: bool = True,
            optional: bool = False) -> None:
    """Coerce `cfg.name` to `kind` (YAML writes 2e-4 as a string) and check its lower bound."""
    value = getattr(cfg, name)
    if value is None and optional:
        return
    try:
        number = _coerce(value, kind)
    except (TypeError, ValueError, OverflowError):
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name} must be {what}, got {name}={value!r}") from None
    if number < low or (not inclusive and number == low):
        bound = f">= {low:g}" if inclusive else f"> {low:g}"
        raise ConfigError(f"{name} must be {bound}, got {name}={value!r}")
    setattr(cfg, name, number)


def _coerce(value: Any, kind: type) -> int | float:
    if isinstance(value, bool) or value is None:
        raise ValueError(value)
    number = float(value)
    if kind is int:
        if not number.is_integer():
            raise ValueError(value)
        return int(number)
    return number


def _check_numbers(cfg: TrainConfig) -> None:
    for name in ("max_length", "lora_r", "lora_alpha", "per_device_train_batch_size",
                 "per_device_eval_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps"):
        _number(cfg, name, int, low=1)
    for name in ("max_steps", "eval_steps", "save_total_limit"):
        _number(cfg, name, int, low=1, optional=True)
    _number(cfg, "seed", int, low=0)
    _number(cfg, "learning_rate", float, low=0, inclusive=False)
    _number(cfg, "num_train_epochs", float, low=0, inclusive=False)
    for name in ("warmup_steps", "weight_decay", "max_grad_norm"):
        _number(cfg, name, float, low=0)
    _number(cfg, "lora_dropout", float, low=0)
    if cfg.lora_dropout >= 1:
        raise ConfigError(f"lora_dropout must be in [0, 1), got lora_dropout={cfg.lora_dropout!r}")
    if cfg.warmup_steps >= 1 and not float(cfg.warmup_steps).is_integer():
        raise ConfigError(
            f"warmup_steps must be a fraction < 1 or a whole number of steps, got warmup_steps={cfg.warmup_steps!r}"
        )


def _check_combinations(cfg: TrainConfig) -> None:
    if not cfg.lora and cfg.quantization is not Quantization.NONE:
        raise ConfigError(
            f"quantized weights cannot be trained: --no-lora needs --quantization none, "
            f"got quantization={cfg.quantization.value!r}"
        )
    if cfg.group_by_length and cfg.packing:
        raise ConfigError("group_by_length and packing exclude each other: packed rows all have max_length tokens")
    if cfg.load_best_model_at_end and cfg.eval_strategy is Interval.NO:
        raise ConfigError("load_best_model_at_end needs eval_strategy steps or epoch, got eval_strategy='no'")


def _modules(value: Any) -> str | list[str]:
    """'all-linear', 'q_proj,v_proj' or a list -> 'all-linear' or a list of names."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if len(parts) == 1 and parts[0].replace("_", "-").lower() == "all-linear":
            return "all-linear"
        value = parts
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(
            f"target_modules must be 'all-linear' or a non-empty list of module names, got target_modules={value!r}"
        )
    return list(value)


def _test_size(value: Any) -> float | int | None:
    """None, a fraction in (0, 1), or a whole record count >= 1."""
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"test_size must be a fraction in (0, 1) or a record count, got test_size={value!r}"
        ) from None
    if 0 < number < 1:
        return number
    if number >= 1 and number.is_integer():
        return int(number)
    raise ConfigError(f"test_size must be a fraction in (0, 1) or a record count >= 1, got test_size={value!r}")
