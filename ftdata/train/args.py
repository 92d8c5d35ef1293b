"""What every method's trainer shares (SFT, DPO, KTO, GRPO): the settings, as keyword arguments of
TRL's config classes (`common_args`), the one place transformers' and TRL's rejections of them become
`ConfigError`s (`trainer_config`), and the shape of what a method adds to them (`Parts`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError
from ftdata.train.config import Interval, Precision, TrainConfig
from ftdata.train.data import Splits
from ftdata.train.model import Device


@dataclass(frozen=True)
class Parts:
    """What a method hands `trainer.build_trainer`: its trainer class, the keyword arguments only it takes
    (SFT's collator, DPO's reference model, GRPO's reward functions), the processing class when it is not the
    tokenizer, and a step run on the trainer once it is made."""

    trainer_class: type
    kwargs: dict[str, Any] = field(default_factory=dict)
    processing_class: Any = None
    finish: Callable[[Any], None] | None = None


def common_args(
    cfg: TrainConfig, *, run_dir: Path, device: Device, splits: Splits, resuming: bool = False
) -> dict[str, Any]:
    """The trainer settings every method shares (SFT, DPO, KTO, GRPO): schedule, optimizer, precision,
    evaluation, logging and checkpoints, as keyword arguments of TRL's config classes.

    Raises:
        ConfigError: an option needs an eval split that is missing.
    """
    from transformers import TrainingArguments

    has_eval = splits.eval is not None
    wants_best = cfg.load_best_model_at_end or cfg.save_strategy is Interval.BEST
    if wants_best and not has_eval:
        what = "load_best_model_at_end" if cfg.load_best_model_at_end else "save_strategy=best"
        raise ConfigError(f"{what} needs an eval split: set test_size (e.g. --test-size 0.1)")
    eval_strategy = cfg.eval_strategy.value if has_eval else "no"
    # transformers 5.23 renamed gradient_checkpointing (the old name still works there, with a warning)
    renamed = "activation_checkpointing" in TrainingArguments.__dataclass_fields__
    checkpointing = {"activation_checkpointing" if renamed else "gradient_checkpointing": cfg.gradient_checkpointing}
    return dict(
        output_dir=str(run_dir),
        run_name=run_dir.name,
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=_max_steps(cfg, splits),
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        **checkpointing,
        optim=cfg.optim,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        eval_strategy=eval_strategy,
        eval_on_start=eval_strategy != "no" and not resuming,
        eval_steps=cfg.eval_steps,
        logging_strategy=cfg.logging_strategy.value,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,  # the loss before any update, for run.json and loss.png
        save_strategy=cfg.save_strategy.value,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=cfg.load_best_model_at_end,
        metric_for_best_model="eval_loss" if wants_best else None,
        greater_is_better=False if wants_best else None,
        bf16=device.precision is Precision.BF16,
        fp16=device.precision is Precision.FP16,
        use_cpu=device.kind == "cpu",
        # Every LoRA weight takes part in every forward pass: DDP need not search the graph
        # for unused ones after each step (and warn that it found none).
        ddp_find_unused_parameters=False if cfg.lora else None,
    )


def trainer_config(kind: type, common: dict[str, Any], **own: Any) -> Any:
    """`kind(**common, **own)` (SFTConfig, DPOConfig, KTOConfig, GRPOConfig: `own` wins), transformers' and TRL's
    rejections as one-line `ConfigError`s.

    Raises:
        ConfigError: e.g. an unknown scheduler or optimizer name, inconsistent strategies.
    """
    try:
        return kind(**{**common, **own})
    except ValueError as exc:
        raise ConfigError(f"invalid training option: {first_line(exc)}") from None


def _max_steps(cfg: TrainConfig, splits: Splits) -> int:
    """`max_steps`, or for streamed rows (no length for the Trainer) the steps of `num_train_epochs`."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    if splits.streamed is None:
        return -1
    from ftdata.train.dist import process_state
    from ftdata.train.stream import epoch_steps

    return epoch_steps(cfg, rows=splits.streamed["rows"], processes=process_state().num_processes)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
