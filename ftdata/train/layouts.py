"""How each row layout (`ftdata.tokens.layouts`) trains: its collator, its trainer, what it asks of the model and
the layout its rows fall back to. `training(layout)`: the `TRAINING` of the train/ module named for the layout (a
layout with code of its own to train: `ftdata.train.tree`, `ftdata.train.documents`), else TRL's collator as the
layout declares it (`Layout.padding_free`, `probed`, `no_media`); `trainer.py` and `run.py` ask it and never which
layout rows are. So a layout is its line in `ftdata.tokens.layouts.LAYOUTS` and, where it trains with code of its
own, its module here.

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

import importlib
import importlib.util
import warnings
from dataclasses import replace
from typing import Any

from ftdata.tokens.layers import SequenceLayers
from ftdata.tokens.layouts import LAYOUTS, PACKED, Layout, layout_of
from ftdata.train.architecture import Route
from ftdata.train.layout_training import LayoutTraining

__all__ = ["LayoutTraining", "fit", "module_of", "trained_as", "training"]


def module_of(layout: Layout) -> str:
    """The train/ module that holds a layout's training code, where it has any: `ftdata.train.` and its name. Found
    by the name, not imported here, so no table of this module lists the layouts that have code of their own.

    >>> module_of(LAYOUTS["tree"])
    'ftdata.train.tree'
    """
    return f"ftdata.train.{layout.name}"


def training(layout: Layout | str) -> LayoutTraining:
    """How `layout` (or the layout of that name) trains: the `TRAINING` of its module (`module_of`) where it has one,
    else TRL's collator as the layout declares it (padded, or end to end).

    >>> from ftdata.train.tree import TreeCollator
    >>> training("packed").padding_free, training("plain").padding_free, training("tree").collator is TreeCollator
    (True, False, True)
    """
    layout = LAYOUTS[layout] if isinstance(layout, str) else layout
    name = module_of(layout)
    own = getattr(importlib.import_module(name), "TRAINING", None) if importlib.util.find_spec(name) else None
    return own or LayoutTraining(layout)


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
