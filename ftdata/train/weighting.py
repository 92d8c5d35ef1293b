"""Token-weighted cross-entropy for rows with a `loss_weights` column (`ftdata.chat.supervision`).

    loss = sum_i w_i * ce_i / N        N = tokens with a label and a weight > 0 (over the whole
                                           accumulated batch: transformers' `num_items_in_batch`)

With every weight 1 this is exactly TRL's loss (mean cross-entropy over trained tokens), so a
weights column of ones changes nothing. A weight-0 token is masked outright (its label becomes
-100 in the collator, so N does not count it): weight 0 is masking, gradients included. The
normaliser does not depend on the weights, so a turn's weight scales its share of the gradient
linearly: 0.5 halves it, whatever it is batched with.

LLaMA-Factory v1 divides by sum(w) instead (per micro-batch, rescaled by the step's valid
tokens): there a weight only counts relative to the other tokens of its batch, and lowering
one turn's weight raises every other token's share. ftdata keeps weights absolute (the same
turn weighs the same in any batch) and unweighted training unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ftdata.tokens.layouts import WEIGHTS
from ftdata.types import IGNORE_INDEX


def weighted_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, *, num_items: Any = None
) -> torch.Tensor:
    """sum(w * ce) / N over the shifted positions (the model predicts token t+1 at t).

    `num_items`: the trained-token count of the whole accumulated batch (transformers passes
    it); None counts this batch's labels. Tokens with a weight of 0 must already carry label
    -100 (`WeightedCollator` does it) for N to exclude them.
    """
    logits = logits[..., :-1, :].float()
    target = labels[..., 1:].to(logits.device)
    w = weights[..., 1:].to(logits.device, torch.float32)
    ce = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    )
    n = (target != IGNORE_INDEX).sum() if num_items is None else num_items
    return (ce * w.reshape(-1)).sum() / torch.as_tensor(n, device=ce.device).clamp(min=1)


class WeightedCollator:
    """Wraps TRL's collator: takes `loss_weights` off each row, collates the rest, then lays the
    weights out as the collator laid out the tokens (one row each, right-padded with 0; or, padding-free,
    all rows end to end in one) and masks the labels of weight-0 tokens."""

    def __init__(self, inner: Any, *, padding_free: bool):
        self.inner = inner
        self.padding_free = padding_free

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        weights = [
            torch.as_tensor(e[WEIGHTS], dtype=torch.float32) if e.get(WEIGHTS) is not None else None for e in examples
        ]
        batch = self.inner([{k: v for k, v in e.items() if k != WEIGHTS} for e in examples])
        rows = [w if w is not None else torch.ones(len(e["input_ids"])) for w, e in zip(weights, examples)]
        shape = batch["input_ids"].shape
        out = torch.zeros(shape, dtype=torch.float32)
        if self.padding_free:
            flat = torch.cat(rows)
            out[0, : len(flat)] = flat
        else:
            for i, w in enumerate(rows):
                out[i, : len(w)] = w
        batch["labels"] = batch["labels"].masked_fill(out == 0, IGNORE_INDEX)
        batch[WEIGHTS] = out
        return batch


def weighted_trainer_class(*, logits_loss: bool = False) -> type:
    """An `SFTTrainer` whose loss is `weighted_loss` on batches with `loss_weights` (others: TRL's own,
    or with `logits_loss` `weighted_loss` with every weight 1: the mean cross-entropy from the model's logits).

    `logits_loss` is for models whose output rows are replaced by peft's trainable tokens
    (`add_chat_tokens`): TRL's fused LM head multiplies by `lm_head.weight` itself and would
    train and score with the base rows.
    """
    from trl import SFTTrainer

    class WeightedSFTTrainer(SFTTrainer):
        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            if self._signature_columns is not None and WEIGHTS not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, WEIGHTS]

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            weights = inputs.pop(WEIGHTS, None)
            if weights is None and logits_loss:
                weights = torch.ones(inputs["labels"].shape)
            if weights is None:
                return super().compute_loss(
                    model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
                )
            labels = inputs["labels"]
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False)
            loss = weighted_loss(outputs.logits, labels, weights, num_items=num_items_in_batch)
            # As TRL and `Trainer.compute_loss`: `num_items_in_batch` counts every rank's tokens, and DDP averages
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

    return WeightedSFTTrainer


__all__ = ["WEIGHTS", "WeightedCollator", "weighted_loss", "weighted_trainer_class"]
