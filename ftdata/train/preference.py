"""DPO and KTO on ftdata's rows: TRL 1.16's `DPOTrainer` / `KTOTrainer`, given the rows untouched.

ftdata's preference rows are final (docs/preference-research.md): `prompt_ids` hold the template's
BOS and the generation prompt, each completion ends with its stop token, nothing is cut. TRL 1.16
has no switch that skips its preparation of text data (which reads `chosen`/`rejected` text and
tokenizes again), so the trainers here are subclasses whose `_prepare_dataset` returns the rows:

- DPO: `prompt_ids`, `chosen_ids`, `rejected_ids`, exactly as built.
- KTO: `prompt_ids`, `completion_ids`, `label`, plus TRL's KL rows made as TRL makes them: each
  row's `KL_completion_ids` is the completion of the row before it within each batch of
  `per_device_train_batch_size` rows (the first takes the batch's last one), so the KL estimate
  pairs every prompt with another row's completion. The sampler is sequential, as TRL requires.

      batch  (x1, y1) (x2, y2) (x3, y3)   ->   KL  (x1, y3) (x2, y1) (x3, y2)

- `max_length=None`: TRL's collators would cut the end of a completion past it; ftdata already cut
  the shared prompt, never a completion.
- A completion of several messages (an agent trajectory after the divergence, `run.trajectory_pairs`): TRL's
  collators set `completion_mask` to 1 on every completion token, tool results included (TRL's DPO on
  conversational data does the same: the completion is everything `apply_chat_template(prompt + chosen)` writes
  after the prompt, and its log-probability sums over all of it). The rows carry `chosen_mask` / `rejected_mask`
  (KTO: `completion_mask`, and the KL rows' `KL_completion_mask`); `MaskedCompletions` writes them into the
  batch's completion masks, so the log-probabilities sum over the tokens the model writes, as SFT trains them.

The reference model: with LoRA (QLoRA), the model with its adapter switched off, TRL's
`use_adapter(model, None)` (TRL would otherwise copy the adapter into a frozen "ref" adapter: for
ftdata's fresh adapter that is the base at a second adapter's cost, saved beside the trained one).
For full fine-tuning, a frozen copy of the model as loaded, made in this process (TRL would reload
`config._name_or_path`, which a model built from a config does not have).
"""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftdata.errors import ConfigError
from ftdata.train.config import DEFAULT_LOSS, Method, TrainConfig
from ftdata.train.data import Splits
from ftdata.train.model import LoadedModel
from ftdata.train.args import Parts, common_args, trainer_config

if TYPE_CHECKING:
    from collections.abc import Sequence


KL_COLUMN = "KL_completion_ids"
MASK_COLUMNS = {Method.DPO: ("chosen_mask", "rejected_mask"), Method.KTO: ("completion_mask", "KL_completion_mask")}


class MaskedCompletions:
    """TRL's preference collator (`inner`), its completion masks replaced by the rows' own where a row has one:
    a completion of several messages trains its assistant turns, not the tool results between them."""

    def __init__(self, inner: Any, method: Method):
        self.inner = inner
        self.method = method

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        names = MASK_COLUMNS[self.method]
        masks = [{name: example.pop(name) for name in names if name in example} for example in examples]
        out = self.inner(examples)
        n = len(examples)
        if self.method is Method.DPO:  # rows [chosen of each example, then rejected of each]
            places = [("completion_mask", half * n, names[half]) for half in (0, 1)]
        else:
            places = [("completion_mask", 0, names[0]), ("KL_completion_mask", 0, names[1])]
        for key, offset, name in places:
            if key not in out:
                continue
            for i, (example, mask) in enumerate(zip(examples, masks)):
                if mask.get(name) is not None:
                    start = len(example["prompt_ids"])
                    out[key][offset + i, start : start + len(mask[name])] = torch.tensor(mask[name])
        return out


def loss_types(method: Method) -> tuple[str, ...]:
    """The loss types the installed TRL offers for `method`: KTOConfig's declared choices; for DPO and GRPO
    the names DPOConfig's / GRPOConfig's `loss_type` help lists (TRL declares no choices there).

    >>> loss_types(Method.KTO)  # doctest: +SKIP
    ('kto', 'apo_zero_unpaired')
    """
    from trl import DPOConfig, GRPOConfig, KTOConfig

    if method is Method.KTO:
        return tuple(KTOConfig.__dataclass_fields__["loss_type"].metadata["choices"])
    if method is Method.GRPO:
        text = GRPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
        listed = re.findall(r"'(\w+)'", text.split("Supported values are")[1].split(". ")[0])
        # luspo needs importance_sampling_level='sequence', which ftdata does not set: TRL would refuse it at the start
        return tuple(name for name in listed if name != "luspo")
    text = DPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    return tuple(re.findall(r"`'(\w+)'`", text.split("If multiple")[0]))


def loss_type(cfg: TrainConfig, method: Method) -> str:
    """`cfg.loss_type`, or TRL's default for `method`, checked against the installed TRL.

    Raises:
        ConfigError: a loss type TRL does not offer for `method`, listing those it does.
    """
    chosen = cfg.loss_type or DEFAULT_LOSS[method]
    offered = loss_types(method)
    if chosen not in offered:
        from trl import __version__

        raise ConfigError(
            f"loss_type must be one of {', '.join(offered)} for --method {method.value} (TRL {__version__}); "
            f"got loss_type={chosen!r}"
        )
    return chosen


def preference_record(cfg: TrainConfig, method: Method, splits: Splits) -> dict[str, Any]:
    """What run.json says of a DPO/KTO run: the method, loss type, beta, the KTO weights and what the
    reference model is."""
    out = {"name": method.value, "loss_type": cfg.loss_type or DEFAULT_LOSS[method], "beta": cfg.beta}
    if method is Method.KTO:
        out |= {"desirable_weight": cfg.desirable_weight, "undesirable_weight": cfg.undesirable_weight}
    return {**out, "reference": reference_model(cfg)}


def reference_model(cfg: TrainConfig) -> str:
    """What the reference model of a run is, in run.json's words."""
    return "the base model (adapter disabled)" if cfg.lora else "a frozen copy of the base model"


def preference_args(
    cfg: TrainConfig, method: Method, *, run_dir: Path, loaded: LoadedModel, splits: Splits, resuming: bool = False
) -> Any:
    """The `DPOConfig` / `KTOConfig` of a run: the settings every method shares (`common_args`) and the
    method's own; `max_length=None` (the rows are final).

    Raises:
        ConfigError: an unknown loss type, KTO's KL term with batches of one row, or a rejected value.
    """
    from trl import DPOConfig, KTOConfig

    common = common_args(cfg, run_dir=run_dir, device=loaded.device, splits=splits, resuming=resuming)
    loss = loss_type(cfg, method)
    if method is Method.DPO:
        return trainer_config(DPOConfig, common, max_length=None, beta=cfg.beta, loss_type=[loss])
    with_kl = loss != "apo_zero_unpaired"  # TRL estimates the KL term for every other KTO loss
    if with_kl and cfg.per_device_train_batch_size < 2:
        raise ConfigError(
            "--method kto needs per_device_train_batch_size >= 2: its KL term pairs each row with another row's "
            f"completion in the same batch; got per_device_train_batch_size={cfg.per_device_train_batch_size}"
        )
    return trainer_config(
        KTOConfig,
        common,
        max_length=None,
        beta=cfg.beta,
        loss_type=loss,
        desirable_weight=cfg.desirable_weight,
        undesirable_weight=cfg.undesirable_weight,
        train_sampling_strategy="sequential" if with_kl else "random",
    )


def preference_parts(cfg: TrainConfig, method: Method, *, args: Any, loaded: LoadedModel, splits: Splits) -> Parts:
    """DPOTrainer / KTOTrainer on the rows as built (`rows_trainer_class`), against the model with its
    adapter off (LoRA) or a frozen copy of it (full fine-tuning); KTO's advice on unbalanced labels."""
    if method is Method.KTO:
        warn_label_balance(splits.train["label"], cfg)
    return Parts(rows_trainer_class(method), {"ref_model": None if cfg.lora else frozen_copy(loaded.model)})


def frozen_copy(model: Any) -> Any:
    """The reference of a full fine-tune: a copy of the model as loaded, in eval mode, without gradients."""
    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    return reference


def drop_reference_adapter(trainer: Any) -> None:
    """Remove the frozen "ref" adapter TRL copies from a PEFT model's fresh adapter: TRL then computes
    the reference with the adapter disabled (`use_adapter(model, None)`)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")


def kl_rows(dataset: Any, *, batch_size: int) -> Any:
    """`dataset` with TRL's KL rows (`KL_completion_ids`): the completions rotated by one within each
    batch of `batch_size` rows, as TRL 1.16's `KTOTrainer._prepare_dataset` adds them.

    Added as one Arrow column taken from `completion_ids`, not by `Dataset.map`, which would write its
    result as a cache file beside the dataset's own files: into the build folder the run reads.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    order: list[int] = []
    for start in range(0, len(dataset), batch_size):
        size = min(batch_size, len(dataset) - start)
        order += [start + (i - 1) % size for i in range(size)]
    rows = dataset.with_format("arrow")
    take = pa.array(order, type=pa.int64())
    out = dataset.add_column(KL_COLUMN, pc.take(rows["completion_ids"], take))
    if "completion_mask" in dataset.column_names:  # each KL completion's mask travels with it
        out = out.add_column("KL_completion_mask", pc.take(rows["completion_mask"], take))
    return out


def rows_trainer_class(method: Method) -> type:
    """TRL's `DPOTrainer` or `KTOTrainer` on ftdata's rows as built (KTO: with TRL's KL rows), the
    reference being the model with its adapter off (LoRA) or the `ref_model` given."""
    from trl import DPOTrainer, KTOTrainer

    base = DPOTrainer if method is Method.DPO else KTOTrainer

    class RowsTrainer(base):  # type: ignore[misc, valid-type]  # a trainer class chosen at run time
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            drop_reference_adapter(self)
            self.data_collator: Any = MaskedCompletions(self.data_collator, method)

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            columns: list[str] = self._signature_columns  # type: ignore[has-type]  # TRL's attribute, set just now
            self._signature_columns = [*columns, *MASK_COLUMNS[method]]  # the rows' masks reach the collator

        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            if method is Method.DPO or not self.calculate_KL or KL_COLUMN in dataset.column_names:
                return dataset
            return kl_rows(dataset, batch_size=args.per_device_train_batch_size)

    RowsTrainer.__name__ = RowsTrainer.__qualname__ = f"Rows{base.__name__}"
    return RowsTrainer


def warn_label_balance(labels: Sequence[bool], cfg: TrainConfig) -> None:
    """TRL's advice when desirable and undesirable rows are unbalanced (its preparation, which ftdata's
    rows skip, would give it): weights in the range of the KTO paper's Eq. (8), one line."""
    desirable = max(sum(map(bool, labels)), 1)
    undesirable = max(len(labels) - desirable, 1)
    if desirable == undesirable:
        return
    low, high = (
        undesirable * cfg.undesirable_weight / desirable,
        undesirable * cfg.undesirable_weight / desirable * 1.33,
    )
    low_u, high_u = (
        desirable * cfg.desirable_weight / undesirable / 1.33,
        desirable * cfg.desirable_weight / undesirable,
    )
    if not (low <= cfg.desirable_weight <= high or low_u <= cfg.undesirable_weight <= high_u):
        warnings.warn(
            f"ftdata: {desirable} desirable and {undesirable} undesirable rows: set desirable_weight in "
            f"[{low:.2f}, {high:.2f}] or undesirable_weight in [{low_u:.2f}, {high_u:.2f}] (not both), as the KTO "
            "paper advises",
            stacklevel=4,
        )
