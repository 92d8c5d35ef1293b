"""A build's rows as the sequences an export writes: one token sequence, its labels, the record it came from.

Row layouts a build writes (`ftdata.tokens.layouts`) and what an export makes of them (`Layout.sequences`):

    plain / split (history=inference)   as they are: one sequence per row, a split record's rows kept together
    packed (seq_lengths)                one sequence per document of a row (the stacks pack on their own)
    tree (tree_lengths)                 each tree's paths, every trained token once in its own context
                                        (`tokens.tree.paths`: the split rows' trained tokens exactly)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ftdata.tokens.layouts import PACKED, PLAIN, WEIGHTS, layout_of
from ftdata.types import IGNORE_INDEX

RECORD = "record"  # the record a row came from (`ftdata.run.rows.SOURCE`)


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


def token_rows(split: Any) -> Iterator[TokenRow]:
    """The sequences of one split of a build (a `datasets.Dataset` of SFT rows), in row order: each sequence its
    layout trains (`Layout.sequences`). Loss weights follow a plain row and a packed row's documents; a packed row
    keeps no record."""
    layout = layout_of(split)
    for row in split:
        weights = list(row[WEIGHTS]) if row.get(WEIGHTS) and layout in (PLAIN, PACKED) else None
        start = 0
        for ids, labels in layout.sequences(row):
            piece = weights[start : start + len(ids)] if weights else None
            yield TokenRow(ids, labels, None if layout is PACKED else row.get(RECORD), piece)
            start += len(ids)


def has_weights(split: Any) -> bool:
    """Whether a split's rows carry per-token loss weights other than 1."""
    return WEIGHTS in split.column_names and any(split[WEIGHTS])
