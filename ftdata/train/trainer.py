"""The one trainer builder of every method, and SFT's part in it.

`build_trainer` makes the trainer of the rows' method: TRL's SFTTrainer (here), DPOTrainer /
KTOTrainer (`preference.py`) or GRPOTrainer (`grpo.py`). What a method adds to the steps they all
share (the settings of `args.common_args`, the model, the rows, the callbacks, the progress display)
is one row of `METHODS`: its TRL config, its trainer class with the arguments only it takes, and
what run.json says of it.

SFT: ftdata's rows are final: already tokenized, masked (`labels` = -100 off the responses),
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

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftdata.errors import ConfigError
from ftdata.train import record
from ftdata.train.args import Parts, common_args, trainer_config
from ftdata.train.config import Method, TrainConfig
from ftdata.train.data import Splits
from ftdata.train.grpo import grpo_args, grpo_parts, grpo_record
from ftdata.train.layouts import LayoutTraining, trained_as, training
from ftdata.train.model import Device, LoadedModel
from ftdata.train.preference import preference_args, preference_parts, preference_record

if TYPE_CHECKING:
    from transformers import Trainer, TrainerCallback
    from trl import SFTConfig


def sft_args(
    cfg: TrainConfig,
    *,
    run_dir: Path,
    device: Device,
    splits: Splits,
    resuming: bool = False,
    layout: LayoutTraining | None = None,
) -> SFTConfig:
    """The `SFTConfig` of a run; checkpoints go to `run_dir/checkpoint-N`. `layout`: the layout the rows train as
    (`layouts.trained_as`; None: their own): whether TRL's collator puts a batch's rows end to end (padding-free).

    A new run with an eval split is also evaluated before the first step, so run.json holds
    the base model's eval loss next to the fine-tuned one.

    Raises:
        ConfigError: an option needs an eval split that is missing, or transformers rejects a
            value (unknown scheduler or optimizer name, inconsistent strategies).
    """
    from trl import SFTConfig

    return trainer_config(
        SFTConfig,
        common_args(cfg, run_dir=run_dir, device=device, splits=splits, resuming=resuming),
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,
        packing=False,
        padding_free=(layout or training(splits.layout)).padding_free,
    )


def sft_config(
    cfg: TrainConfig, method: Method, *, run_dir: Path, loaded: LoadedModel, splits: Splits, resuming: bool = False
) -> SFTConfig:
    """`sft_args`, adapted to a model that reads media (`media_model.py`)."""
    args = sft_args(
        cfg,
        run_dir=run_dir,
        device=loaded.device,
        splits=splits,
        resuming=resuming,
        layout=trained_as(loaded, splits),
    )
    return loaded.media.adapt(args) if loaded.media is not None else args


def sft_parts(cfg: TrainConfig, method: Method, *, args: Any, loaded: LoadedModel, splits: Splits) -> Parts:
    """SFTTrainer, or its token-weighted subclass (`weighting.py`) for rows with loss weights or added chat
    tokens; for rows with media, the media model's trainer, collator and processor; for a layout with a collator
    and trainer of its own (tree rows), those; for a layout that wraps TRL's collator (packed rows regrouped per
    document), the wrap (`layouts.training`)."""
    from trl import SFTTrainer

    from ftdata.train.weighting import WEIGHTS, WeightedCollator, weighted_trainer_class

    media = loaded.media  # rows with media: its collator batches them, its trainer counts their tokens (media_model.py)
    weighted = WEIGHTS in (getattr(splits.train, "column_names", None) or ())
    # Added chat tokens train through peft's trainable-token rows, which TRL's fused LM head (it reads
    # lm_head.weight itself) would bypass: the loss then comes from the model's own logits.
    trainer_class = (
        weighted_trainer_class(logits_loss=bool(loaded.new_tokens)) if weighted or loaded.new_tokens else SFTTrainer
    )
    collator = None
    if media is not None:  # SFTTrainer's num_tokens miscounts Qwen-VL's (4, B, L) positions: count the rows
        trainer_class, collator = media.trainer(trainer_class)

    layout = trained_as(loaded, splits)
    if media is not None and layout.no_media is not None:
        raise ConfigError(f"{layout.layout.name} rows train without media yet; {layout.no_media}")
    if layout.collator is not None and layout.trainer is not None:  # tree rows: the tree mask, tokens scored from
        # their parents; loss weights: its loss weighs each label; added chat tokens: it scores the model's logits
        pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
        own = layout.collator(pad)
        return Parts(
            layout.trainer(),
            {"data_collator": WeightedCollator(own, padding_free=False) if weighted else own},
        )

    def finish(trainer: Trainer) -> None:
        if weighted:  # rows with loss weights: token-weighted cross-entropy (`weighting.py`)
            trainer.data_collator = WeightedCollator(trainer.data_collator, padding_free=layout.padding_free)
        if layout.wrap is not None:  # e.g. packed rows cut into their documents first (`documents.py`)
            trainer.data_collator = layout.wrap(trainer.data_collator)

    return Parts(
        trainer_class,
        {"data_collator": collator},
        processing_class=media.processor if media is not None else None,
        finish=finish if weighted or layout.wrap is not None else None,
    )


@dataclass(frozen=True)
class MethodSetup:
    """What one method adds to the trainer every method builds the same way.

    `args(cfg, method, *, run_dir, loaded, splits, resuming)`: the method's TRL config (the shared settings
    and its own); `parts(cfg, method, *, args, loaded, splits)`: its trainer class and the arguments only it
    takes; `record(cfg, method, splits)`: what run.json says of the method; `summary(log_history)`: the
    metrics of its rewards; `media`: whether it trains models that read media (and the rows of
    `add_chat_tokens`).
    """

    args: Callable[..., Any]
    parts: Callable[..., Parts]
    record: Callable[[TrainConfig, Method, Splits], dict[str, Any]] = field(
        default=lambda cfg, method, splits: {"name": method.value}
    )
    summary: Callable[[list[dict[str, Any]]], dict[str, Any]] = field(default=lambda history: {})
    media: bool = False


METHODS: dict[Method, MethodSetup] = {
    Method.SFT: MethodSetup(sft_config, sft_parts, media=True),
    Method.DPO: MethodSetup(preference_args, preference_parts, preference_record, record.summarize_rewards),
    Method.KTO: MethodSetup(preference_args, preference_parts, preference_record, record.summarize_rewards),
    Method.GRPO: MethodSetup(grpo_args, grpo_parts, grpo_record, record.summarize_sampled_rewards),
}


def method_record(cfg: TrainConfig, splits: Splits) -> dict[str, Any]:
    """What run.json says of the rows' method: its name and, for DPO/KTO/GRPO, its settings."""
    return METHODS[splits.method].record(cfg, splits.method, splits)


def build_trainer(
    cfg: TrainConfig,
    *,
    loaded: LoadedModel,
    splits: Splits,
    run_dir: Path,
    callbacks: list[TrainerCallback] | None = None,
    resuming: bool = False,
    display: TrainerCallback | None = None,
) -> Trainer:
    """The trainer of the rows' method (`splits.method`, a row of `METHODS`) for the loaded (LoRA-wrapped)
    model and ftdata's rows: SFTTrainer, DPOTrainer, KTOTrainer or GRPOTrainer.

    `display` (e.g. `progress.TrainingDisplay`) replaces transformers' raw-dict log printer.

    Raises:
        ConfigError: a model that reads media or `add_chat_tokens` with a method that trains text rows only,
            or a bad option of the method (see its `args` and `parts`).
    """
    from ftdata.train.progress import replace_printers

    method = splits.method
    setup = METHODS[method]
    if not setup.media and loaded.media is not None:
        raise ConfigError(f"--method {method.value} trains text models; {loaded.path} is a model that reads media")
    if not setup.media and loaded.new_tokens:  # TRL's losses read lm_head.weight, bypassing peft's trained token rows
        raise ConfigError(
            f"add_chat_tokens works with sft only; --method {method.value} cannot train the added tokens' rows"
        )
    args = setup.args(cfg, method, run_dir=run_dir, loaded=loaded, splits=splits, resuming=resuming)
    parts = setup.parts(cfg, method, args=args, loaded=loaded, splits=splits)
    trainer = parts.trainer_class(
        model=loaded.model,
        args=args,
        train_dataset=splits.train,
        eval_dataset=splits.eval,
        processing_class=parts.processing_class if parts.processing_class is not None else loaded.tokenizer,
        callbacks=callbacks,
        **parts.kwargs,
    )
    if parts.finish is not None:
        parts.finish(trainer)
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


def trainer_metrics(trainer: Any) -> dict[str, Any]:
    """Step, epoch and total FLOPs as counted by the trainer state."""
    state = trainer.state
    return {"global_step": state.global_step, "epoch": state.epoch, "trainer_total_flos": state.total_flos}
