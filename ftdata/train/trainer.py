"""Turn a `TrainConfig` into TRL's `SFTConfig` and an `SFTTrainer` over ftdata's rows.

ftdata's rows are final: already tokenized, masked (`labels` = -100 off the responses),
truncated and, when asked, packed. So the trainer gets them untouched:

- `dataset_kwargs={"skip_prepare_dataset": True}`: no second tokenization, truncation or packing.
- `max_length=None`: TRL would otherwise refuse padding-free batches without its own packing.
- packed rows train with `padding_free=True`: TRL's collator concatenates the rows of a batch
  and rebuilds `position_ids` from `seq_lengths`, restarting at 0 for every sequence, with no
  attention mask; attention then stays inside each sequence (sdpa, eager and flash-attention
  all derive the boundaries from the restarting positions).

      seq_lengths [3, 2]  ->  position_ids 0 1 2 0 1   (the label at each 0 is set to -100)

- unpacked rows are right-padded per batch with an attention mask; `labels` are used as is.
- rows with a `loss_weights` column (per-message loss weights) train with token-weighted
  cross-entropy, normalised by the trained-token count (`ftdata.train.weighting`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftdata.errors import ConfigError
from ftdata.train.config import Interval, Precision, TrainConfig
from ftdata.train.data import Splits
from ftdata.train.model import Device, LoadedModel

if TYPE_CHECKING:
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer


def sft_args(cfg: TrainConfig, *, run_dir: Path, device: Device, splits: Splits, resuming: bool = False) -> SFTConfig:
    """The `SFTConfig` of a run; checkpoints go to `run_dir/checkpoint-N`.

    A new run with an eval split is also evaluated before the first step, so run.json holds
    the base model's eval loss next to the fine-tuned one.

    Raises:
        ConfigError: an option needs an eval split that is missing, or transformers rejects a
            value (unknown scheduler or optimizer name, inconsistent strategies).
    """
    from trl import SFTConfig

    return trainer_config(
        SFTConfig, common_args(cfg, run_dir=run_dir, device=device, splits=splits, resuming=resuming),
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,
        packing=False,
        padding_free=splits.packed,
    )  # fmt: skip


def common_args(cfg: TrainConfig, *, run_dir: Path, device: Device, splits: Splits, resuming: bool = False) -> dict[str, Any]:
    """The trainer settings every method shares (SFT, DPO, KTO): schedule, optimizer, precision,
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
    """`kind(**common, **own)` (SFTConfig, DPOConfig, KTOConfig: `own` wins), transformers' and TRL's
    rejections as one-line `ConfigError`s.

    Raises:
        ConfigError: e.g. an unknown scheduler or optimizer name, inconsistent strategies.
    """
    try:
        return kind(**{**common, **own})
    except ValueError as exc:
        raise ConfigError(f"invalid training option: {_first_line(exc)}") from None


def _max_steps(cfg: TrainConfig, splits: Splits) -> int:
    """`max_steps`, or for streamed rows (no length for the Trainer) the steps of `num_train_epochs`."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    if splits.streamed is None:
        return -1
    from ftdata.train.dist import process_state
    from ftdata.train.stream import epoch_steps

    return epoch_steps(cfg, rows=splits.streamed["rows"], processes=process_state().num_processes)


def build_trainer(
    cfg: TrainConfig,
    *,
    loaded: LoadedModel,
    splits: Splits,
    run_dir: Path,
    callbacks: list[TrainerCallback] | None = None,
    resuming: bool = False,
    display: TrainerCallback | None = None,
) -> SFTTrainer:
    """An `SFTTrainer` for the loaded (LoRA-wrapped) model and ftdata's prepared rows.

    `display` (e.g. `progress.TrainingDisplay`) replaces transformers' raw-dict log printer.
    """
    from trl import SFTTrainer

    from ftdata.train.progress import replace_printers
    from ftdata.train.weighting import WEIGHTS, WeightedCollator, weighted_trainer_class

    args = sft_args(cfg, run_dir=run_dir, device=loaded.device, splits=splits, resuming=resuming)
    media = loaded.media  # rows with media: its collator batches them, its trainer counts their tokens (media_model.py)
    if media is not None:
        args = media.adapt(args)
    weighted = WEIGHTS in (getattr(splits.train, "column_names", None) or ())
    # Added chat tokens train through peft's trainable-token rows, which TRL's fused LM head (it reads
    # lm_head.weight itself) would bypass: the loss then comes from the model's own logits.
    trainer_class = weighted_trainer_class(logits_loss=bool(loaded.new_tokens)) if weighted or loaded.new_tokens else SFTTrainer
    collator = None
    if media is not None:  # SFTTrainer's num_tokens miscounts Qwen-VL's (4, B, L) positions: count the rows
        trainer_class, collator = media.trainer(trainer_class)
    trainer = trainer_class(
        model=loaded.model,
        args=args,
        data_collator=collator,
        train_dataset=splits.train,
        eval_dataset=splits.eval,
        processing_class=media.processor if media is not None else loaded.tokenizer,
        callbacks=callbacks,
    )
    if weighted:  # rows with loss weights: token-weighted cross-entropy (`ftdata.train.weighting`)
        trainer.data_collator = WeightedCollator(trainer.data_collator, padding_free=splits.packed)
    if display is not None:
        replace_printers(trainer, display)
    return trainer


def last_checkpoint(run_dir: Path) -> Path | None:
    """The `checkpoint-N` folder with the highest N in `run_dir`, or None."""
    best: tuple[int, Path] | None = None
    for child in run_dir.glob("checkpoint-*"):
        step = child.name.removeprefix("checkpoint-")
        if child.is_dir() and step.isdigit() and (best is None or int(step) > best[0]):
            best = (int(step), child)
    return best[1] if best else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def trainer_metrics(trainer: Any) -> dict[str, Any]:
    """Step, epoch and total FLOPs as counted by the trainer state."""
    state = trainer.state
    return {"global_step": state.global_step, "epoch": state.epoch, "trainer_total_flos": state.total_flos}
