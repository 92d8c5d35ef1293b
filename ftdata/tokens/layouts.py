"""Row layouts: how the rows of an SFT build hold their sequences. One table, read from build to train; nothing
else asks which columns a layout has.

    layout     its columns (beside input_ids,      a row holds                     a model that cannot     fallback
               attention_mask, labels)                                             keep it apart
    plain      -                                   one sequence                    -                       -
    packed     position_ids (0 at each document),  documents end to end            layers carrying state   documents
               seq_lengths                                                         (no seq_idx kernels)
    tree       position_ids (depth), tree_lengths  prefix trees (history=tree)     not all full attention  plain
    documents  (packed rows, never stored)         packed rows cut per document    -                       -
               in the collator

Here: the columns, how a layout is told from a table's column names (`layout_of`) or from a build's options
(`built_layout`), the Arrow schema it writes (`Layout.schema`), the sequences of one row (`Layout.lengths`,
`Layout.sequences`) and, from the model's config (`ftdata.tokens.layers`), why a model cannot train it as it is
(`Layout.blocker`). How a layout trains (its collator, trainer, the model check and fallback) is
`ftdata.train.layouts`.

Adding a layout: a `Layout` here (its module, if it needs code of its own) and one line in `LAYOUTS`. Rows that
TRL's collator takes as they are (padded, or end to end: `padding_free`) train with nothing more; a layout with a
collator or trainer of its own (tree rows) holds that code in the train/ module named for it, `ftdata.train.<name>`
(its `TRAINING`), which `ftdata.train.layouts.training` finds by the name: this table never names train/ code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ftdata.options import DataOptions
from ftdata.tokens.layers import SequenceLayers
from ftdata.tokens.tree import paths
from ftdata.types import HistoryMode

__all__ = [
    "DOCUMENTS",
    "LAYOUTS",
    "PACKED",
    "PLAIN",
    "POSITIONS",
    "SEQ_LENGTHS",
    "TOKENS",
    "TREE",
    "TREES",
    "WEIGHTS",
    "Layout",
    "built_layout",
    "layout_columns",
    "layout_of",
]

TOKENS = ("input_ids", "attention_mask", "labels")  # every layout's row columns
POSITIONS = "position_ids"  # per token: its position (packed: restarting per document; tree: its depth)
SEQ_LENGTHS = "seq_lengths"  # per packed row: the tokens of each document
TREES = "tree_lengths"  # per tree row: the tokens of each tree (not `seq_lengths`: a tree is not a chain)
WEIGHTS = "loss_weights"  # per token: its loss weight (`ftdata.chat.supervision`), in any layout that has them
INT_LIST = pa.list_(pa.int32())


def _none(layers: SequenceLayers) -> str | None:
    return None


def _state(layers: SequenceLayers) -> str | None:
    state = layers.state()
    return f"its layers carry state along the row ({state})" if state else None


def _not_attending(layers: SequenceLayers) -> str | None:
    return layers.not_attending()


@dataclass(frozen=True, slots=True)
class Layout:
    """One row layout.

    `marker`: the column that shows rows are in it (None: `plain`, the default, or a layout never stored);
    `columns`: its own columns; `lengths_column`: the column holding the tokens of each part of a row (None: the
    row is one part); `parts`: what a row's parts are called where they are shown apart (None: the row is shown
    whole); `blocker`: from the model's config, why a model cannot train the layout as it is (None: it can, or its
    training part decides on the model); `fallback`: the layout its rows train as on such a model.
    How TRL's collator takes its rows: `padding_free` (a batch's rows end to end, position_ids restarting, no mask;
    else right-padded with a mask); `probed`: the model is proven on its rows before step 1 (the route its kernels
    give them: `ftdata.train.packing_probe`); `no_media`: the fix, where its rows cannot carry media yet. A layout
    with code of its own to train (a collator, a trainer) holds it in `ftdata.train.<name>` (its `TRAINING`)."""

    name: str
    marker: str | None
    columns: tuple[str, ...]
    lengths_column: str | None
    parts: str | None
    blocker: Callable[[SequenceLayers], str | None]
    fallback: str | None = None
    padding_free: bool = False
    probed: bool = False
    no_media: str | None = None

    def lengths(self, row: Mapping[str, Any]) -> list[int]:
        """The tokens of each part of `row` (documents, trees; the whole row for a plain one).

        >>> PACKED.lengths({"input_ids": [1, 2, 3, 4, 5], "seq_lengths": [3, 2]})
        [3, 2]
        """
        held = row.get(self.lengths_column) if self.lengths_column else None
        return [int(n) for n in held] if held else [len(row["input_ids"])]

    def sequences(self, row: Mapping[str, Any]) -> Iterator[tuple[list[int], list[int]]]:
        """The (input_ids, labels) of each sequence `row` trains: the row, each document of a packed row, each path
        of a tree (`ftdata.tokens.tree.paths`: every trained token once, in its own context).

        >>> row = {"input_ids": [1, 2, 3, 4, 5], "labels": [-100, 2, 3, -100, 5], "seq_lengths": [3, 2]}
        >>> list(PACKED.sequences(row))
        [([1, 2, 3], [-100, 2, 3]), ([4, 5], [-100, 5])]
        """
        ids, labels, start = list(row["input_ids"]), list(row["labels"]), 0
        for n in self.lengths(row):
            end = start + n
            if self is TREE:
                yield from paths(ids[start:end], labels[start:end], list(row[POSITIONS][start:end]))
            else:
                yield ids[start:end], labels[start:end]
            start = end

    def schema(self, base: pa.Schema) -> pa.Schema:
        """`base` with this layout's columns: in place of another layout's marker where `base` holds one (a packed
        schema's `seq_lengths` becomes `tree_lengths`), the rest appended, each a list of int32."""
        if self.marker is not None:
            for other in LAYOUTS.values():
                if other.marker not in (None, self.marker) and other.marker in base.names:
                    base = base.set(base.get_field_index(other.marker), pa.field(self.marker, INT_LIST))
        for name in self.columns:
            if name not in base.names:
                base = base.append(pa.field(name, INT_LIST))
        return base


PLAIN = Layout("plain", None, (), None, None, _none)
PACKED = Layout(
    "packed", SEQ_LENGTHS, (POSITIONS, SEQ_LENGTHS), SEQ_LENGTHS, "sequence", _state, "documents", True, True
)
TREE = Layout(
    "tree", TREES, (POSITIONS, TREES), TREES, None, _not_attending, "plain", no_media="build with --history inference"
)
DOCUMENTS = Layout("documents", None, (POSITIONS, SEQ_LENGTHS), SEQ_LENGTHS, "sequence", _none)

LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (PLAIN, PACKED, TREE, DOCUMENTS)}


def layout_of(columns: Iterable[str] | Any) -> Layout:
    """The layout of rows with these columns (a table's `column_names`, a schema's `names`, a row's keys, or
    anything with `column_names`): the one whose marker they hold, else `plain`.

    >>> [layout_of(c).name for c in (["input_ids", "labels"], ["input_ids", "seq_lengths"], {"tree_lengths": [3]})]
    ['plain', 'packed', 'tree']
    """
    names = getattr(columns, "column_names", columns)
    have = set(names or ())
    return next((layout for layout in LAYOUTS.values() if layout.marker is not None and layout.marker in have), PLAIN)


def built_layout(options: DataOptions) -> Layout:
    """The layout a build of `options` writes: trees (history=tree, packed or not), packed rows, or plain rows."""
    if options.history is HistoryMode.TREE:
        return TREE
    return PACKED if options.packing else PLAIN


def layout_columns() -> frozenset[str]:
    """Every column a layout adds to the token columns."""
    return frozenset(name for layout in LAYOUTS.values() for name in layout.columns)
