"""Training on tree rows (history=tree, `ftdata.tokens.tree`): one record's split rows, each shared prefix once.

A tree row is exact on attention layers when each token attends to its ancestors only, and each trained token is
scored from its parent's logits:

    position_ids  0 1 2 3 2          token i sees j <= i while every token after j up to i sits deeper than j
    parent        - 0 1 2 1          mask (1 = sees)  1 . . . .
    labels        - - - x y                           1 1 . . .
                                                      1 1 1 . .
    loss: ce(logits[2], x) + ce(logits[1], y)         1 1 1 1 .
                                                      1 1 . . 1

The mask goes to the model as an explicit 4D attention mask (boolean for sdpa, additive for eager): no kernel to
download, on CPU and GPU alike. Transformers hands a 4D mask to every layer as is, so a layer that does not attend
(linear attention, SSM, short convolution: the hybrids of docs/packing.md) or attends through a window cannot honour
it: for those models the trees are taken apart into their split rows again (`as_split_rows`), with a note.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F

from ftdata.tokens.tree import paths
from ftdata.types import IGNORE_INDEX

__all__ = [
    "TREES", "TreeCollator", "as_split_rows", "fitted", "is_tree", "tree_blocker", "tree_forward", "tree_loss", "tree_mask",
    "tree_trainer_class",
]

TREES = "tree_lengths"  # the column that marks tree rows (`ftdata.run.rows.TREES`)
PARENTS = "tree_parents"  # the collator's per-token parent index (-1: a root or a pad)
# Layer kinds that honour the mask: full attention, and the layers that mix no tokens (Nemotron-H's MLP/MoE blocks).
ATTENDING = ("full_attention", "attention", "mlp", "moe")


def is_tree(dataset: Any) -> bool:
    """Whether `dataset` holds tree rows."""
    return TREES in (getattr(dataset, "column_names", None) or ())


def tree_blocker(config: Any) -> str | None:
    """Why a model of `config` cannot train tree rows exactly (None: it can): layers that are not plain attention,
    read from the config's own layer list (`layer_types`, `layers_block_type`, Nemotron-H's pattern) or a window."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    kinds = getattr(config, "layer_types", None) or getattr(config, "layers_block_type", None)
    if kinds:
        other = sorted({str(k) for k in kinds} - set(ATTENDING))
        return f"its layers include {', '.join(other)}" if other else None
    pattern = getattr(config, "hybrid_override_pattern", None)
    if pattern and set(pattern) - {"*", "-"}:  # Nemotron-H: * attention, - MLP, M Mamba-2
        return f"its layer pattern {pattern!r} holds Mamba layers"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return f"it attends through a sliding window of {config.sliding_window} tokens"
    return None


def as_split_rows(dataset: Any) -> Any:
    """Tree rows taken apart into plain rows (`tokens.tree.paths`): every trained token once, in its own context."""
    from datasets import Dataset

    rows: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for row in dataset:
        for ids, labels in _tree_paths(row["input_ids"], row["labels"], row["position_ids"], row[TREES]):
            rows["input_ids"].append(ids)
            rows["attention_mask"].append([1] * len(ids))
            rows["labels"].append(labels)
    return Dataset.from_dict(rows)


def _tree_paths(ids: list[int], labels: list[int], positions: list[int], lengths: list[int]) -> list[tuple[list[int], list[int]]]:
    out: list[tuple[list[int], list[int]]] = []
    start = 0
    for n in lengths:  # each tree of a packed row alone
        out.extend(paths(ids[start : start + n], labels[start : start + n], positions[start : start + n]))
        start += n
    return out


def _ends(positions: list[int]) -> tuple[list[int], list[int]]:
    """Per token of a tree row: the end of its subtree (the first later token not deeper) and its parent."""
    n = len(positions)
    ends, up = [n] * n, [-1] * n
    stack: list[int] = []
    for i, depth in enumerate(positions):
        while stack and positions[stack[-1]] >= depth:
            ends[stack.pop()] = i
        up[i] = stack[-1] if stack and depth else -1
        stack.append(i)
    return ends, up


def tree_mask(positions: list[list[int]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (B, 1, L, L) boolean attention mask of tree rows padded to `length` (True: query i sees key j), and
    the (B, L) parent of each token (-1 at roots and pads). A pad sees only itself (a row of no keys would be NaN)."""
    ends = torch.zeros((len(positions), length), dtype=torch.long)
    parents = torch.full((len(positions), length), -1, dtype=torch.long)
    index = torch.arange(length)
    for b, row in enumerate(positions):
        e, up = _ends(row)
        ends[b, : len(row)] = torch.tensor(e, dtype=torch.long)
        ends[b, len(row) :] = index[len(row) :] + 1  # a pad's subtree is itself
        parents[b, : len(row)] = torch.tensor(up, dtype=torch.long)
    query, key = index[None, :, None], index[None, None, :]
    mask = (key <= query) & (query < ends[:, None, :])
    return mask[:, None], parents


class TreeCollator:
    """Batches tree rows: right-padded ids, labels and position_ids, the 4D tree mask and each token's parent."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        length = max(len(e["input_ids"]) for e in examples)

        def padded(key: str, fill: int) -> torch.Tensor:
            return torch.tensor([list(e[key]) + [fill] * (length - len(e[key])) for e in examples], dtype=torch.long)

        mask, parents = tree_mask([list(e["position_ids"]) for e in examples], length)
        return {
            "input_ids": padded("input_ids", self.pad_id), "labels": padded("labels", IGNORE_INDEX),
            "position_ids": padded("position_ids", 0), "attention_mask": mask, PARENTS: parents,
        }  # fmt: skip


def scored(labels: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
    """The positions whose logits a batch of tree rows needs (the parents of its trained tokens), sorted: what
    the model is asked for (`logits_to_keep`), so no logits of the rest of the row are ever made."""
    keep = (labels != IGNORE_INDEX) & (parents >= 0)
    return torch.unique(parents[keep])


def tree_loss(
    logits: torch.Tensor, labels: torch.Tensor, parents: torch.Tensor, *, kept: torch.Tensor | None = None,
    num_items: Any = None,
) -> torch.Tensor:  # fmt: skip
    """sum of ce(logits[parent(i)], labels[i]) over trained tokens, / N (`num_items`: the accumulated batch's
    trained-token count, as transformers passes it; None: this batch's). The split rows' loss, term for term.
    `kept`: the positions `logits` holds (`scored`), None for every position."""
    parents = parents.to(logits.device)
    labels = labels.to(logits.device)
    keep = (labels != IGNORE_INDEX) & (parents >= 0)
    b, i = keep.nonzero(as_tuple=True)
    at = parents[b, i] if kept is None else torch.searchsorted(kept.to(logits.device), parents[b, i])
    ce = F.cross_entropy(logits[b, at].float(), labels[b, i], reduction="sum")
    n = keep.sum() if num_items is None else num_items
    return ce / torch.as_tensor(n, device=ce.device).clamp(min=1)


def tree_forward(model: Any, batch: dict[str, Any], *, num_items: Any = None) -> tuple[torch.Tensor, Any]:
    """The model on a collated batch of tree rows (`TreeCollator`) and its `tree_loss`; logits are made only
    where a trained token is scored (`scored`). The mask is boolean for sdpa, additive for eager."""
    inputs = dict(batch)
    parents, labels = inputs.pop(PARENTS), inputs.pop("labels")
    mask = inputs["attention_mask"]
    if getattr(model.config, "_attn_implementation", "sdpa") == "eager":  # eager adds the mask to the scores
        dtype = next(model.parameters()).dtype
        inputs["attention_mask"] = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
    kept = scored(labels, parents)
    try:
        outputs = model(**inputs, use_cache=False, logits_to_keep=kept.to(inputs["input_ids"].device))
    except TypeError:  # a model without logits_to_keep: every position's logits
        outputs, kept = model(**inputs, use_cache=False), None
    return tree_loss(outputs.logits, labels, parents, kept=kept, num_items=num_items), outputs


def tree_trainer_class(base: type) -> type:
    """`base` (an SFTTrainer) whose batches are tree rows: the model gets the tree mask, the loss is `tree_loss`."""

    class TreeTrainer(base):  # type: ignore[misc, valid-type]
        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            if self._signature_columns is not None and "position_ids" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "position_ids"]

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
            loss, outputs = tree_forward(model, inputs, num_items=num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:  # as TRL: DDP averages
                loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

    return TreeTrainer


def use_tree_attention(model: Any) -> None:
    """Attention that takes an explicit 4D mask: sdpa, unless the model runs eager (flash and flex take none)."""
    if getattr(model.config, "_attn_implementation", "sdpa") not in ("sdpa", "eager"):
        warnings.warn(f"tree rows: attention {model.config._attn_implementation} -> sdpa with the tree mask", stacklevel=2)
        model.set_attn_implementation("sdpa")


def fitted(splits: Any, model: Any) -> Any:
    """`splits` as `model` can train them: tree rows stay trees where its layers honour the tree mask, and are taken
    apart into their split rows where they cannot (`tree_blocker`), with a note; other rows unchanged."""
    from dataclasses import replace

    if not is_tree(splits.train):
        return splits
    why = tree_blocker(model.config)
    if why is None:
        use_tree_attention(model)
        return splits
    warnings.warn(
        f"tree rows: {type(model).__name__} cannot attend along a tree ({why}); training their split rows instead "
        "(the same trained tokens in the same contexts, each shared prefix forwarded once per row)", stacklevel=2,
    )  # fmt: skip
    test = as_split_rows(splits.eval) if splits.eval is not None else None
    return replace(splits, train=as_split_rows(splits.train), eval=test)
