"""How each row layout (`ftdata.tokens.layouts`) trains: its collator, its trainer, what it asks of the model and
the layout its rows fall back to. `training(layout)`: the layout's line in `TRAINING` (a layout with code of its own
to train), else TRL's collator as the layout declares it (`Layout.padding_free`, `probed`, `no_media`); `trainer.py`
and `run.py` ask it and never which layout rows are.

    layout     collated by                                   the model must                      else
    plain      TRL's collator, right-padded with a mask      -                                   -
    packed     TRL's, padding-free (restarting positions)    keep documents apart: attention, or documents
                                                             state layers with their CUDA kernels
                                                             (`architecture.py`, proven by `packing_probe.py`)
    tree       `TreeCollator` + the tree trainer             attend along a tree: full attention plain (its split rows,
                                                             only (`Layout.blocker`, config)      `tree.as_split_rows`)
    documents  TRL's collator, each packed row cut into     -                                   -
               its documents first (`DocumentsCollator`)

A tree's fallback changes the rows (before the run records its data: `fit`); a packed row's is only a collator
(after the model's probe: `trained_as`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ftdata.tokens.layers import SequenceLayers
from ftdata.tokens.layouts import DOCUMENTS, LAYOUTS, PACKED, TREE, Layout, layout_of
from ftdata.train.architecture import Route
from ftdata.train.documents import DocumentsCollator
from ftdata.train.tree import TreeCollator, as_split_rows, tree_trainer_class, use_tree_attention

__all__ = ["TRAINING", "LayoutTraining", "fit", "trained_as", "training"]


@dataclass(frozen=True)
class LayoutTraining:
    """What training a layout takes beyond TRL's collator as the layout declares it (`Layout.padding_free`,
    `probed`, `no_media`: read through here).

    `collator` (given the pad id) and `trainer`: its own, in place of TRL's; `wrap`: wraps TRL's collator (outside
    the loss weights' one); `prepare`: readies the model for it; `convert`: its rows as its fallback's, where the
    model cannot train it (`Layout.blocker`), and `fallback_note` the note then (`{model}`, `{why}`)."""

    layout: Layout
    collator: Callable[[int], Any] | None = None
    trainer: Callable[[], type] | None = None
    wrap: Callable[[Any], Any] | None = None
    prepare: Callable[[Any], None] | None = None
    convert: Callable[[Any], Any] | None = None
    fallback_note: str = ""

    @property
    def padding_free(self) -> bool:
        return self.layout.padding_free

    @property
    def probed(self) -> bool:
        return self.layout.probed

    @property
    def no_media(self) -> str | None:
        return self.layout.no_media


TRAINING: dict[str, LayoutTraining] = {  # the layouts with training code of their own; the rest: `training`
    TREE.name: LayoutTraining(
        TREE,
        collator=TreeCollator,
        trainer=tree_trainer_class,
        prepare=use_tree_attention,
        convert=as_split_rows,
        fallback_note="tree rows: {model} cannot attend along a tree ({why}); training their split rows instead "
        "(the same trained tokens in the same contexts, each shared prefix forwarded once per row)",
    ),
    DOCUMENTS.name: LayoutTraining(DOCUMENTS, wrap=DocumentsCollator),
}


def training(layout: Layout | str) -> LayoutTraining:
    """How `layout` (or the layout of that name) trains: its line in `TRAINING`, else TRL's collator as the layout
    declares it (padded, or end to end).

    >>> training("packed").padding_free, training("plain").padding_free, training("tree").collator is TreeCollator
    (True, False, True)
    """
    layout = LAYOUTS[layout] if isinstance(layout, str) else layout
    return TRAINING.get(layout.name) or LayoutTraining(layout)


def fit(splits: Any, model: Any) -> Any:
    """`splits` as `model` can train them: rows whose layout the model's config rules out (`Layout.blocker`) are
    converted to their fallback's (tree rows: their split rows), with a note; where it can, the model is readied
    for the layout (tree rows: the tree attention). Other rows unchanged."""
    how = training(layout_of(splits.train))
    if how.convert is None:
        return splits
    why = how.layout.blocker(SequenceLayers.read(model.config))
    if why is None:
        if how.prepare is not None:
            how.prepare(model)
        return splits
    warnings.warn(how.fallback_note.format(model=type(model).__name__, why=why), stacklevel=2)
    test = how.convert(splits.eval) if splits.eval is not None else None
    return replace(splits, train=how.convert(splits.train), eval=test)


def trained_as(loaded: Any, splits: Any) -> LayoutTraining:
    """The layout the rows train as on the loaded model: their own, or packed text rows regrouped per document
    where the model's probe chose that route (`loaded.packing`: `packing_probe.check_packed_rows`)."""
    layout = layout_of(splits.train)
    check = loaded.packing
    if layout is PACKED and loaded.media is None and check is not None and check.route is Route.DOCUMENTS:
        return training(layout.fallback or layout.name)
    return training(layout)
