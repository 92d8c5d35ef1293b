"""SFTConfig wiring: ftdata's rows go to SFTTrainer untouched; packed rows train padding-free."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftdata.errors import ConfigError
from ftdata.train.config import Precision, TrainConfig
from ftdata.train.data import Splits
from ftdata.train.model import load_for_training, resolve_device
from ftdata.train.trainer import build_trainer, last_checkpoint, sft_args

torch = pytest.importorskip("torch")


def _splits(rows, *, eval_rows=None) -> Splits:  # the rows' layout (plain, packed) is read from their columns
    from datasets import Dataset

    return Splits(Dataset.from_list(rows), Dataset.from_list(eval_rows) if eval_rows else None)


def test_rows_are_not_prepared_again(tmp_path: Path, make_row) -> None:
    args = sft_args(TrainConfig(max_steps=3), run_dir=tmp_path, device=resolve_device(Precision.AUTO),
                    splits=_splits([make_row("a?", "b.")]))
    assert args.dataset_kwargs == {"skip_prepare_dataset": True}
    assert args.max_length is None and args.packing is False and args.padding_free is False
    assert args.eval_strategy == "no"  # no eval split: the epoch default is switched off
    assert args.max_steps == 3 and args.report_to == [] and args.logging_first_step


def test_packed_rows_train_padding_free(tmp_path: Path, make_row, pack_rows) -> None:
    row = pack_rows([make_row("a?", "b."), make_row("c?", "d.")])
    args = sft_args(TrainConfig(), run_dir=tmp_path, device=resolve_device(Precision.AUTO),
                    splits=_splits([row]))
    assert args.padding_free is True


@pytest.mark.parametrize("on", [True, False])
def test_gradient_checkpointing_reaches_the_trainer(tmp_path: Path, make_row, on: bool) -> None:
    args = sft_args(TrainConfig(gradient_checkpointing=on), run_dir=tmp_path, device=resolve_device(Precision.AUTO),
                    splits=_splits([make_row("a?", "b.")]))
    # transformers >= 5.23 calls it activation_checkpointing; older 5.x only knows gradient_checkpointing
    name = "activation_checkpointing" if hasattr(args, "activation_checkpointing") else "gradient_checkpointing"
    assert getattr(args, name) is on


def test_best_model_needs_an_eval_split(tmp_path: Path, make_row) -> None:
    device = resolve_device(Precision.AUTO)
    cfg = TrainConfig(load_best_model_at_end=True, eval_strategy="steps", save_strategy="steps")
    with pytest.raises(ConfigError, match="load_best_model_at_end needs an eval split: set test_size"):
        sft_args(cfg, run_dir=tmp_path, device=device, splits=_splits([make_row("a?", "b.")]))


def test_transformers_rejections_become_config_errors(tmp_path: Path, make_row) -> None:
    device = resolve_device(Precision.AUTO)
    splits = _splits([make_row("a?", "b.")])
    scheduler = r"invalid training option: cosine_typo is not a valid SchedulerType.*'linear'"
    with pytest.raises(ConfigError, match=scheduler):
        sft_args(TrainConfig(lr_scheduler_type="cosine_typo"), run_dir=tmp_path, device=device, splits=splits)
    with pytest.raises(ConfigError, match=r"invalid training option: adamw_typo is not a valid OptimizerNames"):
        sft_args(TrainConfig(optim="adamw_typo"), run_dir=tmp_path, device=device, splits=splits)


def test_last_checkpoint_is_the_highest_step(tmp_path: Path) -> None:
    assert last_checkpoint(tmp_path) is None
    for name in ("checkpoint-9", "checkpoint-10", "checkpoint-x", "other"):
        (tmp_path / name).mkdir()
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-10"


def test_packed_batch_loss_equals_unpacked(tmp_path: Path, tiny_model_dir: Path, make_row, pack_rows) -> None:
    """The same sequences, packed into one row or padded as three rows, give the same loss."""
    rows = [make_row("What colour is the sky?", "The sky is blue."), make_row("Name a fruit.", "An apple."),
            make_row("Which animal barks?", "A dog barks, loudly.")]
    cfg = TrainConfig(model=str(tiny_model_dir), quantization="none", lora_r=4, per_device_train_batch_size=3)
    loaded = load_for_training(cfg)
    losses = {}
    for name, data, packed in (("unpacked", rows, False), ("packed", [pack_rows(rows)], True)):
        trainer = build_trainer(cfg, loaded=loaded, splits=_splits(data), run_dir=tmp_path / name)
        batch = next(iter(trainer.get_train_dataloader()))
        assert ("position_ids" in batch) is packed and ("attention_mask" in batch) is not packed
        with torch.no_grad():
            losses[name] = trainer.compute_loss(loaded.model, batch).item()
    assert losses["packed"] == pytest.approx(losses["unpacked"], abs=1e-5)
