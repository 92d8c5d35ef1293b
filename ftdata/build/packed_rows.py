"""What build.json says of packed rows: what a trainer must pass for them per layer kind, and a note when the
tokenizer folder sits beside the config.json of a model whose layers carry state along the row.

Reads config.json only (no model, no torch), through the one reader of a model's sequence layers
(`ftdata.tokens.layers`): the layers a packed row needs `seq_idx` / `cu_seq_lens` for. The proof on the model
itself is `ftdata check-packing --model M OUT` (train/packing_check.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftdata.tokens.layers import SequenceLayers
from ftdata.tokens.layouts import PACKED

# What each layer kind needs to keep the documents of a packed row apart, and what honours it.
CONTRACT = {
    "attention": "position_ids restarting at 0 per document and no attention mask (sdpa, eager, flash-attention "
                 "varlen); or cu_seq_lens_q/k + max_length_q/k for flash-attention",
    "linear_attention": "seq_idx and cu_seq_lens (Gated DeltaNet and other linear attention): honoured only by the "
                        "CUDA kernels flash-linear-attention + causal-conv1d; the torch path refuses or ignores them",
    "mamba": "seq_idx and cu_seq_lens (Mamba / Mamba-2 mixers): honoured only by the CUDA kernels mamba-ssm + "
             "causal-conv1d; the torch path refuses or ignores them",
    "short_conv": "seq_idx (LFM2-style short convolutions): honoured only by the CUDA kernel causal-conv1d",
    "otherwise": "regroup each packed row per document into a right-padded batch (what `ftdata train` does: route "
                 "documents), or build without --packing",
}  # fmt: skip


def packing_record(*, packing: bool, tokenizer_name: str) -> dict[str, Any]:
    """build.json's `packing` entry: {} for unpacked rows."""
    if not packing:
        return {}
    record: dict[str, Any] = {
        "columns": ["input_ids", "labels", *PACKED.columns],
        "trainer_must_pass": CONTRACT,
    }
    note = hybrid_note(Path(tokenizer_name))
    return {"packing": {**record, **({"note": note} if note else {})}}


def hybrid_note(folder: Path) -> str | None:
    """A note when `folder/config.json` describes a model with layers that carry state along the row, else None."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    layers = SequenceLayers.read(config)
    if PACKED.blocker(layers) is None:  # the packed layout asks nothing of these layers
        return None
    return (
        f"the model beside the tokenizer ({layers.model_type}) has layers that carry state along the row "
        f"({layers.state()}): a packed row keeps its documents apart there only with seq_idx / cu_seq_lens and the "
        f"CUDA kernels (see trainer_must_pass); check it with `ftdata check-packing --model {folder} OUT`"
    )


def state_layers(config: dict[str, Any]) -> str | None:
    """The state-carrying layers config.json declares, e.g. 'linear_attention x3', or the setting that shows them
    (`ftdata.tokens.layers`: the one reader of a model's sequence layers)."""
    return SequenceLayers.read(config).state()
