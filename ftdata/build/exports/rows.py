"""A build's rows as the sequences an export writes: one token sequence, its labels, the record it came from.

Row layouts a build writes (`ftdata.run.rows`) and what an export makes of them:

    plain / split (history=inference)   as they are: one sequence per row, a split record's rows kept together
    packed (seq_lengths)                one sequence per document of a row (the stacks pack on their own)
    tree (tree_lengths)                 each tree's paths, every trained token once in its own context
                                        (`tokens.tree.paths`: the split rows' trained tokens exactly)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ftdata.tokens.tree import paths
from ftdata.types import IGNORE_INDEX

RECORD = "record"  # the record a row came from (`ftdata.run.rows.SOURCE`)
WEIGHTS = "loss_weights"  # per-token loss weights (`ftdata.run.rows.WEIGHTS`); an empty list: 1 for every token
SEQ_LENGTHS = "seq_lengths"
TREES = "tree_lengths"  # `ftdata.run.rows.TREES`
POSITIONS = "position_ids"


@dataclass(frozen=True)
class TokenRow:
    """One sequence an export writes: token ids, labels (-100: not trained; never shifted), the record's location
    (None in packed rows, which do not keep it) and per-token loss weights (None: 1 for every trained token)."""

    input_ids: list[int]
    labels: list[int]
    record: str | None = None
    weights: list[float] | None = None

    @property
    def loss_mask(self) -> list[int]:
        """1 where the token is trained (its label is itself), else 0."""
        return [int(label != IGNORE_INDEX) for label in self.labels]

    @property
    def trained(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def layout(columns: list[str]) -> str:
    """`plain`, `packed` or `tree`: how a build's rows hold their sequences."""
    if TREES in columns:
        return "tree"
    return "packed" if SEQ_LENGTHS in columns else "plain"


def token_rows(split: Any) -> Iterator[TokenRow]:
    """The sequences of one split of a build (a `datasets.Dataset` of SFT rows), in row order."""
    kind = layout(list(split.column_names))
    for row in split:
        ids, labels = list(row["input_ids"]), list(row["labels"])
        weights = list(row[WEIGHTS]) if row.get(WEIGHTS) else None
        if kind == "plain":
            yield TokenRow(ids, labels, row.get(RECORD), weights)
        elif kind == "packed":
            start = 0
            for n in row[SEQ_LENGTHS]:
                piece = weights[start : start + n] if weights else None
                yield TokenRow(ids[start : start + n], labels[start : start + n], None, piece)
                start += n
        else:
            start = 0
            for n in row[TREES]:
                end = start + n
                for path_ids, path_labels in paths(ids[start:end], labels[start:end], row[POSITIONS][start:end]):
                    yield TokenRow(path_ids, path_labels, row.get(RECORD))
                start = end


def has_weights(split: Any) -> bool:
    """Whether a split's rows carry per-token loss weights other than 1."""
    return WEIGHTS in split.column_names and any(split[WEIGHTS])
