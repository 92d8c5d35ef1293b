"""`TrainConfig`: every knob of `ftdata train`, one field per option.

The same names work in three places: keyword arguments of `TrainConfig(...)`, keys of a YAML
file (`ftdata train --config run.yaml`), and CLI flags (`--lora-r 16`). Each field carries its
help text in `metadata["help"]`; the CLI and `docs/training.md` read it from there.

The data options are not copied here: `data_options` is a `BuildOptions`, the options of
`ftdata build`, with its names, types and checks. In YAML they sit under `data_options:`; the
six that have their own `train` flags (`FLAT_DATA_KEYS`: `template`, `chat_template`, `max_length`,
`packing`, `test_size`, `seed`) may also be written at the top level. `processor` is the run's own option
(the collator's image processor), passed on to the build of raw data:

    data: alpaca.json
    max_length: 512                     # the same as data_options: {max_length: 512}
    data_options: {mask: last_assistant, limit: 1000}

This module imports neither torch nor transformers, so loading and validating a config is
instant; scheduler and optimizer names are checked when the trainer is built.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from ftdata.io.config_files import check_names, load_config_file, read_yaml, resolve_paths
from ftdata.errors import ConfigError
from ftdata.options import FIELDS as BUILD_FIELDS
from ftdata.options import check_type
from ftdata.options import BuildOptions, plain
from ftdata.run.task import check_options
from ftdata.train.rewards import check_reward_names
from ftdata.types import Task, _Choice

__all__ = ["FLAT_DATA_KEYS", "Interval", "Method", "Precision", "Quantization", "TrainConfig", "read_yaml"]

# Data options with their own `train` flags (`--max-length`), also written flat in a YAML config.
FLAT_DATA_KEYS = ("template", "chat_template", "max_length", "packing", "test_size", "seed")


class Quantization(_Choice):
    """How the frozen base weights are stored during training."""

    NF4 = "4bit"  # bitsandbytes NF4 + double quantization: QLoRA
    INT8 = "8bit"  # bitsandbytes LLM.int8()
    NONE = "none"  # weights in the compute dtype (plain LoRA or full fine-tune)


Quantization.NF4.aliases = ("nf4", "qlora", "4")  # type: ignore[attr-defined]  # aliases: an attribute set on enum members after the class
Quantization.INT8.aliases = ("int8", "8")  # type: ignore[attr-defined]  # as above
Quantization.NONE.aliases = ("no", "off", "false")  # type: ignore[attr-defined]  # as above


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


class Method(_Choice):
    """What a run optimises, and on which rows (the build's task): SFT on `input_ids`/`labels`,
    DPO on pairs (`prompt_ids`/`chosen_ids`/`rejected_ids`), KTO on unpaired rows
    (`prompt_ids`/`completion_ids`/`label`), GRPO on prompt sets (`prompt`/`prompt_ids` and the
    reward columns: the completions are sampled during training and scored by `rewards`)."""

    SFT = "sft"
    DPO = "dpo"
    KTO = "kto"
    GRPO = "grpo"

    @property
    def task(self) -> Task:
        """The build task whose rows this method trains on."""
        return _TASKS[self]

    @classmethod
    def of(cls, task: Task) -> Method:
        """The method a build's task implies: preference -> dpo, kto -> kto, prompts -> grpo, sft -> sft."""
        return next(method for method, trained in _TASKS.items() if trained is task)


_TASKS = {Method.SFT: Task.SFT, Method.DPO: Task.PREFERENCE, Method.KTO: Task.KTO, Method.GRPO: Task.PROMPTS}
# TRL's own defaults (DPOConfig.loss_type, KTOConfig.loss_type, GRPOConfig.loss_type):
# what runs when loss_type is not given.
DEFAULT_LOSS = {Method.DPO: "sigmoid", Method.KTO: "kto", Method.GRPO: "dapo"}
# The rewards of a GRPO run that names none (`ftdata.train.rewards`).
DEFAULT_REWARDS = ("exact", "format")


def _opt(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field with its help text (and optional CLI hints) in the metadata."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    """Options of one fine-tuning run. Validated (and strings converted to enums) on creation.

    Example:
        >>> cfg = TrainConfig(data="alpaca.json", data_options={"template": "alpaca"}, max_steps=50)
        >>> cfg.quantization, cfg.data_options.data.max_length
        (<Quantization.NF4: '4bit'>, 2048)
    """

    # --- model -----------------------------------------------------------------------------
    model: str | None = _opt(
        None,
        "Local model folder (Hugging Face layout). Default: the bundled SmolLM2-135M-Instruct, "
        "materialised once from its GGUF into the ftdata cache. Nothing is downloaded.",
        group="model",
    )
    tokenizer: str | None = _opt(None, "Tokenizer folder. Default: the model's own tokenizer.", group="model")
    processor: str | None = _opt(
        None,
        "Models that read media: the processor folder (preprocessor_config.json, tokenizer, chat template). "
        "Default: the model folder. Its image processor turns each batch's images into pixels.",
        group="model",
    )
    # --- data ------------------------------------------------------------------------------
    data: str | None = _opt(
        None,
        "Training data: any file or folder `ftdata build` reads, or a recipe file (built by `ftdata.build`, "
        "the driver of `ftdata build`), or a dataset folder written by `ftdata build` / `save_to_disk` (trained as "
        "built).",
        group="data",
    )
    data_options: BuildOptions = field(
        default_factory=BuildOptions,
        metadata={
            "help": "The options of `ftdata build` (BuildOptions: same names, types and checks), e.g. "
            "{mask: last_assistant, limit: 1000}. CLI: --data-option KEY=VALUE (-D, repeatable; VALUE "
            "as the build flag --KEY takes it).",
            "group": "data",
        },
    )
    streaming: bool = _opt(
        False,
        "Stream the train rows of a Parquet build (ftdata build --output-format parquet, or engine=ray) "
        "instead of loading them: memory stays flat as the corpus grows.",
        group="data",
    )
    shuffle_buffer: int = _opt(
        1000, "With --streaming: rows held (decoded) in the shuffle buffer, shuffled with the seed.", group="data"
    )
    # --- preference training ---------------------------------------------------------------
    method: Method | None = _opt(
        None,
        "Training method: sft (TRL's SFTTrainer), dpo (DPOTrainer, on preference pairs), kto (KTOTrainer, on "
        "unpaired rows with a label) or grpo (GRPOTrainer, on a prompt set: completions sampled and scored by "
        "--rewards). Default: the one the data's task implies (a build of pairs trains dpo, of kto rows kto, of "
        "prompts grpo, anything else sft).",
        group="preference",
        choices=[m.value for m in Method],
    )
    loss_type: str | None = _opt(
        None,
        "DPO/KTO/GRPO loss, named as TRL's DPOConfig/KTOConfig/GRPOConfig name it and checked against the installed "
        "TRL: dpo: sigmoid (default), hinge, ipo, robust, bco_pair, apo_zero, sft, ...; kto: kto (default), "
        "apo_zero_unpaired; grpo: dapo (default), grpo, dr_grpo, bnpo, cispo, sapo, vespo.",
        group="preference",
    )
    beta: float = _opt(
        0.1,
        "DPO/KTO: how far the policy may move from the reference model (higher = closer to it). GRPO: the "
        "weight of the KL penalty against the reference model; 0 (with --method grpo) drops the penalty and the "
        "reference model's forward pass.",
        group="preference",
    )
    desirable_weight: float = _opt(1.0, "KTO: weight of the loss of desirable rows (label true).", group="preference")
    undesirable_weight: float = _opt(
        1.0, "KTO: weight of the loss of undesirable rows (label false).", group="preference"
    )
    rewards: str | list[str] | None = _opt(
        None,
        "GRPO: how each sampled completion is scored (comma-separated on the CLI, a list in YAML): exact (its final "
        "answer equals the reference's: GSM8K '#### 72', MATH \\boxed{...}, else its last number; the column "
        "answer, solution, reference, ground_truth, ... or exact:COLUMN), format (one reasoning block, closed, then "
        "an answer), or package.module:function (your own TRL reward function; needs --allow-code). "
        "Default: exact,format.",
        group="preference",
    )
    num_generations: int = _opt(
        4,
        "GRPO: completions sampled per prompt (the group whose rewards are compared). A step's batch, "
        "per_device_train_batch_size x gradient_accumulation_steps x processes completions, holds whole groups.",
        group="preference",
    )
    max_completion_length: int = _opt(512, "GRPO: longest sampled completion, in tokens.", group="preference")
    temperature: float = _opt(1.0, "GRPO: sampling temperature of the completions.", group="preference")
    # --- adapter and quantization ----------------------------------------------------------
    lora: bool = _opt(
        True, "Train a LoRA adapter. --no-lora trains every weight (needs --quantization none).", group="lora"
    )
    lora_r: int = _opt(16, "LoRA rank (inner size of the low-rank update).", group="lora")
    lora_alpha: int = _opt(32, "LoRA alpha (the update is scaled by alpha / r).", group="lora")
    lora_dropout: float = _opt(0.05, "Dropout on the LoRA input.", group="lora")
    target_modules: str | list[str] = _opt(
        "all-linear",
        "Modules that get LoRA: all-linear (every linear layer but the output head, less those PEFT refuses on "
        "the model's architecture, e.g. Mamba's out_proj; the names chosen are in run.json), or names "
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
        "Compute dtype: auto (bf16 on CUDA with bf16 support, fp16 on other GPUs, fp32 on CPU), bf16, fp16, fp32.",
        group="lora",
        choices=[p.value for p in Precision],
    )
    # --- optimisation ----------------------------------------------------------------------
    num_train_epochs: float = _opt(1.0, "Passes over the training split.", group="train")
    max_steps: int | None = _opt(None, "Stop after this many optimizer steps (overrides epochs).", group="train")
    learning_rate: float = _opt(2e-4, "Peak learning rate.", group="train")
    lr_scheduler_type: str = _opt(
        "cosine",
        "Scheduler: linear, cosine, constant, constant_with_warmup, ... (transformers names).",
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
    # --- evaluation, logging, checkpoints --------------------------------------------------
    eval_strategy: Interval = _opt(
        Interval.EPOCH,
        "When to compute eval loss: no, steps, epoch (needs --test-size).",
        group="schedule",
        choices=["no", "steps", "epoch"],
    )
    eval_steps: int | None = _opt(
        None, "Eval every N steps (eval_strategy=steps). Default: logging_steps.", group="schedule"
    )
    logging_strategy: Interval = _opt(
        Interval.STEPS,
        "When to log the train loss: no, steps, epoch.",
        group="schedule",
        choices=["no", "steps", "epoch"],
    )
    logging_steps: int = _opt(10, "Log every N steps.", group="schedule")
    save_strategy: Interval = _opt(
        Interval.STEPS,
        "When to write a checkpoint: no, steps, epoch, best.",
        group="schedule",
        choices=["no", "steps", "epoch", "best"],
    )
    save_steps: int = _opt(100, "Checkpoint every N steps (save_strategy=steps).", group="schedule")
    save_total_limit: int | None = _opt(2, "Keep at most N checkpoints (older ones are deleted).", group="schedule")
    load_best_model_at_end: bool = _opt(
        False,
        "Reload the checkpoint with the lowest eval loss at the end (needs an eval split).",
        group="schedule",
    )
    # --- outputs ---------------------------------------------------------------------------
    output_dir: str = _opt("runs", "Parent folder of the run folders (-o on the command line).", group="output")
    run_name: str | None = _opt(None, "Run folder name. Default: a timestamp such as 20250101-120000.", group="output")
    merge: bool = _opt(False, "Also save the base model with the adapter merged in (merged/).", group="output")

    def __post_init__(self) -> None:
        self.data_options = _data_options(self.data_options)
        self.quantization = Quantization.parse(self.quantization, name="quantization")
        self.precision = Precision.parse(self.precision, name="precision")
        for name in ("eval_strategy", "logging_strategy", "save_strategy"):
            value = Interval.parse(getattr(self, name), name=name)
            if value is Interval.BEST and name != "save_strategy":
                raise ConfigError(f"{name} must be one of no, steps, epoch; got {name}='best'")
            setattr(self, name, value)
        self.target_modules = _modules(self.target_modules)
        if self.method is not None:
            self.method = Method.parse(self.method, name="method")
        if self.loss_type is not None and (not isinstance(self.loss_type, str) or not self.loss_type.strip()):
            raise ConfigError(f"loss_type must be a loss name such as sigmoid, got loss_type={self.loss_type!r}")
        self.loss_type = self.loss_type.strip().lower() if self.loss_type is not None else None
        self.rewards = _rewards(self.rewards)
        _check_numbers(self)
        _check_combinations(self)

    @property
    def seed(self) -> int:
        """The run's one seed, `data_options.seed`: it splits, shuffles and packs the data and
        also seeds the LoRA init and the order of the training rows."""
        return self.data_options.data.seed

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, origin: str = "config") -> TrainConfig:
        """Build a config from a dict (YAML document, CLI flags); unknown keys are errors.

        Raises:
            ConfigError: an unknown key (with the closest valid name) or a bad value.
        """
        return cls.from_layers((origin, values))

    @classmethod
    def from_layers(cls, *layers: tuple[str, Mapping[str, Any]]) -> TrainConfig:
        """Build a config from `(origin, mapping)` layers, later ones winning (defaults <- YAML
        <- flags). Each layer is checked on its own, so an error names where it came from; data
        options merge key by key (a flag `--max-length` keeps the file's `data_options: {mask: ...}`).

        Raises:
            ConfigError: an unknown key (with the closest valid name), a data option set twice
                in one layer, or a bad value.
        """
        merged: dict[str, Any] = {}
        data: dict[str, Any] = {}
        for origin, values in layers:
            layer = normalize(values, origin=origin)
            data.update(layer.pop("data_options"))
            merged.update(layer)
        return cls(**merged, data_options=data)  # type: ignore[arg-type]  # a dict: __post_init__ reads it as BuildOptions

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Load a YAML config file (relative paths in it are relative to its folder, as in every
        ftdata config); `overrides` (e.g. CLI flags) win over the file.

        Raises:
            ConfigError: the file is missing, is not valid YAML, or holds a bad option.
        """
        return cls.from_layers((str(path), load_config_file(path)), ("overrides", overrides))

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-safe dict (enums as their string values, every data option nested)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def to_yaml(self, path: str | Path) -> None:
        """Write the config as YAML (the run folder keeps one for `--resume`). Paths are written
        absolute: a config file's relative paths would be read relative to the file."""
        values = resolve_paths(self.to_dict(), Path.cwd())
        Path(path).write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")


def normalize(values: Mapping[str, Any], *, origin: str) -> dict[str, Any]:
    """One layer of options (a YAML document, the flags) in `TrainConfig`'s shape: names
    checked, the flat data keys moved into `data_options`, data option values type-checked
    as `ftdata build` checks its YAML.

        {"max_length": 512, "lora_r": 8, "data_options": {"mask": "last_assistant"}}
        -> {"lora_r": 8, "data_options": {"mask": "last_assistant", "max_length": 512}}

    Raises:
        ConfigError: not a mapping, an unknown name (with the closest valid one), a data
            option set both flat and under data_options, or a value of the wrong type.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{origin} must be a mapping of option: value, got {type(values).__name__}")
    for key in values:
        if key in BUILD_FIELDS and key not in FLAT_DATA_KEYS and key != "processor":  # processor: the run's, forwarded
            raise ConfigError(
                f"{origin}: {key} is a data option: put it under data_options: (on the command line, "
                f"--data-option {key}=...)"
            )
    check_names(values, [*(f.name for f in fields(TrainConfig)), *FLAT_DATA_KEYS], origin=origin)
    out = dict(values)
    data = out.pop("data_options", None)
    data = _plain(data) if isinstance(data, BuildOptions) else {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{origin}: data_options must be a mapping like {{mask: last_assistant}}, got {data!r:.60}")
    data = dict(data)
    check_names(data, BUILD_FIELDS, origin=f"{origin}: data_options")
    for key in FLAT_DATA_KEYS:
        if key in out:
            value = out.pop(key)
            if key in data and data[key] != value:
                raise ConfigError(
                    f"{origin}: {key} is set twice ({key}={value!r} and data_options.{key}={data[key]!r}); keep one"
                )
            data[key] = value
    for key, value in data.items():
        check_type(origin, key, value)
    return {**out, "data_options": data}


def changed_options(before: TrainConfig, after: TrainConfig, names: Iterable[str]) -> list[tuple[str, Any, Any]]:
    """`(name, before, after)` for each option of `names` whose value differs; `data_options`
    is compared option by option, over the ones that change the rows (not `engine`):
    `[("max_length", 64, 512)]`."""
    old, new = before.to_dict(), after.to_dict()
    changed = []
    for name in names:
        if name == "data_options":
            shaping = before.data_options.data.fingerprint()
            changed += [(key, old[name][key], new[name][key]) for key in shaping if new[name][key] != old[name][key]]
        elif old[name] != new[name]:
            changed.append((name, old[name], new[name]))
    return changed


def field_help() -> dict[str, str]:
    """Help text of every option, by name (used by the CLI and the docs test)."""
    return {f.name: f.metadata["help"] for f in fields(TrainConfig)}


def field_defaults() -> dict[str, Any]:
    """Default value of every option, by name (data_options: a dict of the BuildOptions defaults)."""
    out: dict[str, Any] = {}
    for f in fields(TrainConfig):
        value = f.default_factory() if f.default_factory is not MISSING else f.default
        out[f.name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    """Enums as their values, a `BuildOptions` as a dict: what YAML and JSON hold."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, BuildOptions):
        return plain(value)
    if isinstance(value, (list, dict)):
        return type(value)(value)
    return value


def _data_options(value: Any) -> BuildOptions:
    """A `BuildOptions` (or a mapping of its fields, checked by it) that a run can save as YAML."""
    if isinstance(value, Mapping):
        value = BuildOptions.from_mapping(value)
    if not isinstance(value, BuildOptions):
        raise ConfigError(
            f"data_options must be a mapping of build options or a BuildOptions, got data_options={value!r}"
        )
    check_options(value.data)  # what a given task refuses (packing for task=preference), before a model loads
    if value.data.filter is not None and not isinstance(value.data.filter, str):
        raise ConfigError(
            "data_options.filter must be a Jinja expression such as 'not input' (a run saves its options as YAML), "
            f"got filter={value.data.filter!r}"
        )
    return value


# --- validation helpers ------------------------------------------------------------------------


def _number(
    cfg: TrainConfig, name: str, kind: type, *, low: float, inclusive: bool = True, optional: bool = False
) -> None:
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
    for name in (
        "lora_r",
        "lora_alpha",
        "per_device_train_batch_size",
        "shuffle_buffer",
        "per_device_eval_batch_size",
        "gradient_accumulation_steps",
        "logging_steps",
        "save_steps",
    ):
        _number(cfg, name, int, low=1)
    for name in ("max_steps", "eval_steps", "save_total_limit"):
        _number(cfg, name, int, low=1, optional=True)
    _number(cfg, "learning_rate", float, low=0, inclusive=False)
    _number(cfg, "num_train_epochs", float, low=0, inclusive=False)
    for name in ("warmup_steps", "weight_decay", "max_grad_norm"):
        _number(cfg, name, float, low=0)
    # beta 0 (no KL penalty, no reference model) only where it is meaningful: a run stated to be GRPO.
    _number(cfg, "beta", float, low=0, inclusive=cfg.method is Method.GRPO)
    for name in ("desirable_weight", "undesirable_weight", "temperature"):
        _number(cfg, name, float, low=0, inclusive=False)
    _number(cfg, "num_generations", int, low=2)
    _number(cfg, "max_completion_length", int, low=1)
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
    if cfg.group_by_length and cfg.streaming:
        raise ConfigError("group_by_length and streaming exclude each other: a stream has no lengths to sort by")
    if cfg.group_by_length and cfg.data_options.data.packing:
        raise ConfigError("group_by_length and packing exclude each other: packed rows all have max_length tokens")
    if cfg.load_best_model_at_end and cfg.eval_strategy is Interval.NO:
        raise ConfigError("load_best_model_at_end needs eval_strategy steps or epoch, got eval_strategy='no'")
    if cfg.method is not None:
        check_method(cfg, cfg.method)


def check_method(cfg: TrainConfig, method: Method) -> None:
    """The options `method` rules out. Checked on creation when `method` is given, and again once the
    data has decided the method (`method: null`, the default).

    Raises:
        ConfigError: a DPO/KTO/GRPO option on an SFT run, GRPO's rewards on another method's run, or an
            SFT-only option on a DPO/KTO/GRPO run.
    """
    if cfg.rewards is not None and method is not Method.GRPO:
        raise ConfigError(
            f"rewards is an option of --method grpo; this run trains {method.value} rows, got "
            f"rewards={','.join(cfg.rewards)!r}"
        )
    if method is Method.SFT:
        if cfg.loss_type is not None:
            raise ConfigError(
                "loss_type is an option of --method dpo, kto or grpo; this run trains sft rows, got "
                f"loss_type={cfg.loss_type!r}"
            )
        return
    data = cfg.data_options.data
    for name, on in (("streaming", cfg.streaming), ("group_by_length", cfg.group_by_length), ("packing", data.packing)):
        if on:
            raise ConfigError(f"{name} works on sft rows only and this run trains {method.value}: drop {name}")


def _rewards(value: Any) -> list[str] | None:
    """'exact,format' or a list -> ['exact', 'format'] (each name
    checked by `rewards.check_reward_names`); None stays None.

    Raises:
        ConfigError: not a list of names, an empty list, a name given twice, or a name that is no reward.
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = [p.strip() for p in value.split(",") if p.strip()]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(
            f"rewards must be a non-empty list of reward names such as exact,format, got rewards={value!r}"
        )
    names = [v.strip() for v in value]
    check_reward_names(names)
    return names


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
