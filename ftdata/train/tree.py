"""Training on tree rows (history=tree, `ftdata.tokens.tree`): one record's split rows, each shared prefix once.

A tree row is exact on attention layers when each token attends to its ancestors only, and each trained token is
scored from its parent's logits:

    position_ids  0 1 2 3 2          token i sees j <= i while every token after j up to i sits deeper than j
    parent        - 0 1 2 1          mask (1 = sees)  1 . . . .
    labels        - - - x y                           1 1 . . .
                                                      1 1 1 . .
    loss: ce(logits[2], x) + ce(logits[1], y)         1 1 1 1 .
                                                      1 1 . . 1

Attention runs as `tree_attention`, an attention implementation registered with transformers: each chain of the
tree attends to its path with torch's scaled_dot_product_attention (flash kernels on CPU and GPU, no kernel to
download, memory linear in the path rather than quadratic in the row). A layer that does not attend (linear
attention, SSM, short convolution: the hybrids of docs/packing.md) or attends through a window cannot follow a
tree: for those models the trees are taken apart into their split rows again (`as_split_rows`), with a note. Which
models those are, and when, is the layout's (`ftdata.tokens.layouts.TREE`, `ftdata.train.layouts`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ftdata.tokens.layers import SequenceLayers
from ftdata.tokens.layouts import TREE, WEIGHTS
from ftdata.tokens.tree import parents
from ftdata.train.layout_training import LayoutTraining
from ftdata.types import IGNORE_INDEX

__all__ = [
    "TRAINING",
    "TreeCollator",
    "as_split_rows",
    "segments",
    "tree_attention",
    "tree_blocker",
    "tree_forward",
    "tree_loss",
    "tree_trainer_class",
]

PARENTS = "tree_parents"  # the collator's per-token parent index (-1: a root or a pad)
SEGMENTS = "tree_segments"  # the collator's chains of each row, for `tree_attention`
ATTENTION = "ftdata_tree"  # the attention implementation tree rows train with


def tree_blocker(config: Any) -> str | None:
    """Why a model of `config` cannot train tree rows exactly (None: it can): the tree layout's blocker over the
    one reader of a model's sequence layers (`ftdata.tokens.layers`): layers that are not full attention, a window."""
    return TREE.blocker(SequenceLayers.read(config))


def as_split_rows(dataset: Any) -> Any:
    """Tree rows taken apart into plain rows (`TREE.sequences`: each tree's paths, `tokens.tree.paths`): every
    trained token once, in its own context."""
    from datasets import Dataset

    rows: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for row in dataset:
        for ids, labels in TREE.sequences(row):
            rows["input_ids"].append(ids)
            rows["attention_mask"].append([1] * len(ids))
            rows["labels"].append(labels)
    return Dataset.from_dict(rows)


def segments(positions: list[int]) -> list[tuple[int, int, list[int] | None]]:
    """A tree row as chains: (start, end, path) per maximal run of tokens that each continue the one before,
    `path` the indices its keys are (the run's ancestors, then the run itself), None for a run from a root.

        segments([0, 1, 2, 2, 3]) -> [(0, 3, None), (3, 5, [0, 1, 3, 4])]
    """
    up = parents(positions)
    out: list[tuple[int, int, list[int] | None]] = []
    start = 0
    for i in range(1, len(positions) + 1):
        if i < len(positions) and positions[i] == positions[i - 1] + 1:
            continue
        if up[start] < 0:
            out.append((start, i, None))
        else:
            above = [up[start]]
            while up[above[-1]] >= 0:
                above.append(up[above[-1]])
            out.append((start, i, [*reversed(above), *range(start, i)]))
        start = i
    return out


def tree_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention along a tree (registered with transformers as `ATTENTION`): each chain of a row (`segments`)
    attends to its path's keys with torch's scaled_dot_product_attention, causal within the path. A chain no
    shorter than the path above it runs causal over its whole path (its ancestors' outputs recomputed, no mask:
    the flash kernels on CPU and GPU); a short chain under a long path gets a (chain x path) mask. O(tokens x
    path) memory, never (row x row); no kernel to download. Inputs (B, H, L, D); output (B, L, H, D)."""
    rows = kwargs.pop(SEGMENTS, None)
    if rows is None:  # no tree rows (generation, an eval of plain rows): the model's usual sdpa attention
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    gqa = query.shape[1] != key.shape[1]
    drop = dropout if module.training else 0.0
    out = torch.empty_like(query)
    for b, chains in enumerate(rows):
        for start, end, path in chains:
            if path is None:
                q, k, v, mask, causal = query[b, :, start:end], key[b, :, start:end], value[b, :, start:end], None, True
            else:
                at = torch.as_tensor(path, device=query.device)
                above, n = len(path) - (end - start), end - start
                causal = above <= n
                q = query[b, :, at] if causal else query[b, :, start:end]
                k, v = key[b, :, at], value[b, :, at]
                keys = torch.arange(len(path), device=query.device)
                mask = None if causal else keys[None, :] <= torch.arange(n, device=query.device)[:, None] + above
            o = F.scaled_dot_product_attention(
                q[None],
                k[None],
                v[None],
                attn_mask=mask,
                dropout_p=drop,
                is_causal=causal,
                scale=scaling,
                enable_gqa=gqa,
            )[0]
            out[b, :, start:end] = o[:, -(end - start) :]
    return out.transpose(1, 2).contiguous(), None


def register_tree_attention() -> None:
    """Make `ATTENTION` an attention implementation transformers knows: tree rows through `tree_attention`, with no
    mask built; other inputs (generation after training) as sdpa runs them."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def mask(*args: Any, **kwargs: Any) -> Any:
        # a batch of tree rows comes without a 2D mask and gets none; anything else the sdpa mask it would get
        return None if kwargs.get("attention_mask") is None else sdpa_mask(*args, **kwargs)

    AttentionInterface.register(ATTENTION, tree_attention)
    AttentionMaskInterface.register(ATTENTION, mask)


class TreeCollator:
    """Batches tree rows: right-padded ids, labels and position_ids, each row's chains (`segments`; the pads one
    more chain of their own) and each token's parent. Rows with loss weights: wrapped in `WeightedCollator`
    (`padding_free=False`: the rows are right-padded), which lays their weights out beside the tokens."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        length = max(len(e["input_ids"]) for e in examples)

        def padded(key: str, fill: int) -> torch.Tensor:
            return torch.tensor([list(e[key]) + [fill] * (length - len(e[key])) for e in examples], dtype=torch.long)

        up = torch.full((len(examples), length), -1, dtype=torch.long)
        chains = []
        for b, e in enumerate(examples):
            positions = list(e["position_ids"])
            up[b, : len(positions)] = torch.tensor(parents(positions), dtype=torch.long)
            chains.append(segments(positions) + ([(len(positions), length, None)] if len(positions) < length else []))
        return {
            "input_ids": padded("input_ids", self.pad_id),
            "labels": padded("labels", IGNORE_INDEX),
            "position_ids": padded("position_ids", 0),
            PARENTS: up,
            SEGMENTS: chains,
        }


def scored(labels: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
    """The positions whose logits a batch of tree rows needs (the parents of its trained tokens), sorted: what
    the model is asked for (`logits_to_keep`), so no logits of the rest of the row are ever made."""
    keep = (labels != IGNORE_INDEX) & (parents >= 0)
    return torch.unique(parents[keep])


def tree_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    parents: torch.Tensor,
    *,
    kept: torch.Tensor | None = None,
    num_items: Any = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """sum of w_i * ce(logits[parent(i)], labels[i]) over trained tokens, / N (`num_items`: the accumulated
    batch's trained-token count, as transformers passes it; None: this batch's; `weights`: the loss weights, each
    token's own, as `weighting.weighted_loss` weighs a label; None: 1). The split rows' loss, term for term.
    `kept`: the positions `logits` holds (`scored`), None for every position."""
    parents = parents.to(logits.device)
    labels = labels.to(logits.device)
    keep = (labels != IGNORE_INDEX) & (parents >= 0)
    b, i = keep.nonzero(as_tuple=True)
    at = parents[b, i] if kept is None else torch.searchsorted(kept.to(logits.device), parents[b, i])
    ce = F.cross_entropy(logits[b, at].float(), labels[b, i], reduction="none")
    if weights is not None:
        ce = ce * weights.to(ce.device, torch.float32)[b, i]
    ce = ce.sum()
    n = keep.sum() if num_items is None else num_items
    return ce / torch.as_tensor(n, device=ce.device).clamp(min=1)


def tree_forward(model: Any, batch: dict[str, Any], *, num_items: Any = None) -> tuple[torch.Tensor, Any]:
    """The model (attention: `ATTENTION`, see `use_tree_attention`) on a collated batch of tree rows
    (`TreeCollator`) and its `tree_loss`; logits are made only where a trained token is scored (`scored`)."""
    inputs = dict(batch)
    parents, labels, weights = inputs.pop(PARENTS), inputs.pop("labels"), inputs.pop(WEIGHTS, None)
    kept = scored(labels, parents)
    at: torch.Tensor | None = kept
    try:
        outputs = model(**inputs, use_cache=False, logits_to_keep=kept.to(inputs["input_ids"].device))
    except TypeError:  # a model without logits_to_keep: every position's logits
        outputs, at = model(**inputs, use_cache=False), None
    return tree_loss(outputs.logits, labels, parents, kept=at, num_items=num_items, weights=weights), outputs


def tree_trainer_class() -> type:
    """An SFTTrainer whose batches are tree rows (`TreeCollator`): the model attends along the tree
    (`tree_attention`), the loss is `tree_loss`."""
    from trl import SFTTrainer

    class TreeTrainer(SFTTrainer):
        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            if self._signature_columns is not None:
                wanted = ("position_ids", WEIGHTS)
                self._signature_columns = [
                    *self._signature_columns,
                    *(c for c in wanted if c not in self._signature_columns),
                ]

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            loss, outputs = tree_forward(model, inputs, num_items=num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:  # as TRL: DDP averages
                loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

    return TreeTrainer


def use_tree_attention(model: Any) -> None:
    """Train `model` with `tree_attention` (every layer: `tree_blocker` said they all attend)."""
    register_tree_attention()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.set_attn_implementation(ATTENTION)


TRAINING = LayoutTraining(  # how tree rows train (`ftdata.train.layouts.training`)
    TREE,
    collator=TreeCollator,
    trainer=tree_trainer_class,
    prepare=use_tree_attention,
    convert=as_split_rows,
    fallback_note="tree rows: {model} cannot attend along a tree ({why}); training their split rows instead "
    "(the same trained tokens in the same contexts, each shared prefix forwarded once per row)",
)
