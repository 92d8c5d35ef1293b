"""The `documents` route of packed rows: each row regrouped per document into a right-padded batch.

A model whose layers carry state along the row (linear attention, SSMs, short convolutions) keeps the
documents of a packed row apart only with kernels that honour `seq_idx` (`architecture.py`). Where they are
missing, the rows of a batch are cut back into their documents before TRL's collator pads them:

    packed rows   [a a a b b | c c c c]  seq_lengths [[3, 2], [4]]
    documents     [a a a . .]  [b b . . .]  [c c c c .]   (right-padded, attention_mask 0 on the pads)

Every document then runs alone, as in an unpacked run; right padding comes after a document's tokens, so no
causal layer lets it reach them. The loss is the same mean over the same trained tokens: each document's first
label is -100, as TRL's padding-free collator sets it for a packed row, and a document's first token is never
predicted in a padded row either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ftdata.tokens.layouts import DOCUMENTS, PACKED, WEIGHTS
from ftdata.train.layout_training import LayoutTraining
from ftdata.types import IGNORE_INDEX

# Row columns that hold one value per token, cut with the documents; the packed layout's own columns are dropped.
PER_TOKEN = ("input_ids", "labels", "attention_mask", WEIGHTS)


def split_documents(example: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The documents of one packed row (a row without `seq_lengths` is one document).

    >>> split_documents({"input_ids": [1, 2, 3, 4, 5], "labels": [-100, 2, 3, -100, 5], "seq_lengths": [3, 2]})
    [{'input_ids': [1, 2, 3], 'labels': [-100, 2, 3]}, {'input_ids': [4, 5], 'labels': [-100, 5]}]
    """
    lengths = PACKED.lengths(example)
    rest = {k: v for k, v in example.items() if k not in PER_TOKEN and k not in PACKED.columns}
    documents, start = [], 0
    for length in lengths:
        doc = {k: list(example[k][start : start + length]) for k in PER_TOKEN if example.get(k) is not None}
        if doc.get("labels"):
            doc["labels"][0] = IGNORE_INDEX
        documents.append({**doc, **rest})
        start += length
    return documents


class DocumentsCollator:
    """Wraps a collator of unpacked rows (TRL's, `padding_free=False`): cuts each packed row into its documents
    (`split_documents`) and collates those."""

    def __init__(self, inner: Any):
        self.inner = inner

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return self.inner([doc for example in examples for doc in split_documents(example)])


TRAINING = LayoutTraining(DOCUMENTS, wrap=DocumentsCollator)  # how the documents route trains (`layouts.training`)
