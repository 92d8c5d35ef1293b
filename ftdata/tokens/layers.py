"""The one reader of a model's sequence layers from its config: what each layer does with the positions of a row.

A config declares its layers by name (`layer_types`, `layers_block_type`), by a pattern of letters (Nemotron-H's
`hybrid_override_pattern`), or only by the settings a state-carrying layer has (Mamba's `ssm_state_size`, LFM2's
`conv_L_cache`). Each word is one `Mixing`:

    full_attention, attention          attention   follows restarting positions, a mask, a tree
    sliding_attention                  window      attention through a window: no tree
    linear_attention                   linear      attends, but carries state along the row
    mamba, conv, hybrid, M, (unknown)  state       carries state along the row
    mlp, moe, dense, sparse, -, E      none        mixes no positions

Reads a `config.json` dict (a build, no torch) or a transformers config object (training) alike. What a row layout
asks of these layers is the layout's (`ftdata.tokens.layouts`); the modules themselves and their kernels are read
on the model (`ftdata.train.architecture`), which takes each layer's declared word from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = ["FEED_FORWARD", "Mixing", "SequenceLayers", "mixing"]


class Mixing(str, Enum):
    """What a layer does with the positions of a row."""

    ATTENTION = "attention"
    WINDOW = "window"
    LINEAR = "linear"
    STATE = "state"
    NONE = "none"

    @property
    def carries_state(self) -> bool:
        return self in (Mixing.LINEAR, Mixing.STATE)


# Declared layer types that mix no positions (feed-forward blocks).
FEED_FORWARD = ("mlp", "moe", "dense", "sparse")
# Nemotron-H's pattern letters: * attention, - MLP, E MoE, M Mamba-2 (any other letter: state, to be safe).
PATTERN = {"*": Mixing.ATTENTION, "-": Mixing.NONE, "E": Mixing.NONE, "M": Mixing.STATE}
# Config settings only a layer that carries state along the row has.
STATE_SETTINGS = (
    "mamba_d_conv",
    "mamba_d_state",
    "linear_conv_kernel_dim",
    "conv_L_cache",
    "ssm_state_size",
    "conv_kernel",
)
DECLARED = ("layer_types", "layers_block_type")


def mixing(word: str) -> Mixing:
    """What a declared layer type does with positions.

    >>> [mixing(w).value for w in ("full_attention", "sliding_attention", "linear_attention", "mamba", "moe")]
    ['attention', 'window', 'linear', 'state', 'none']
    """
    word = word.lower()
    if "linear" in word:
        return Mixing.LINEAR
    if word in FEED_FORWARD:
        return Mixing.NONE
    if "attention" in word:
        return Mixing.WINDOW if "sliding" in word else Mixing.ATTENTION
    return Mixing.STATE


def _get(config: Any, name: str, default: Any = None) -> Any:
    return config.get(name, default) if isinstance(config, dict) else getattr(config, name, default)


def _text(config: Any) -> Any:
    """The language model's part of a config (a media model's `text_config`)."""
    if isinstance(config, dict):
        text = config.get("text_config")
        return text if isinstance(text, dict) else config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


@dataclass(frozen=True, slots=True)
class SequenceLayers:
    """A model's sequence layers as its config declares them.

    `lists`: each declared list (`layer_types`, then `layers_block_type`) as it stands; `pattern`: Nemotron-H's
    letters; `settings`: the state-layer settings present (name, value); `window`: an attention window in use."""

    model_type: str
    lists: tuple[tuple[str, tuple[str, ...]], ...]
    pattern: str | None
    settings: tuple[tuple[str, Any], ...]
    window: int | None

    @classmethod
    def read(cls, config: Any) -> SequenceLayers:
        """From a `config.json` dict or a transformers config object."""
        text = _text(config)
        lists = tuple(
            (name, tuple(str(t) for t in declared))
            for name in DECLARED
            if isinstance(declared := _get(text, name), (list, tuple))
        )
        pattern = _get(text, "hybrid_override_pattern")
        window = _get(text, "sliding_window")
        in_use = _get(text, "use_sliding_window", True)
        return cls(
            model_type=str(_get(text, "model_type") or _get(config, "model_type") or "?"),
            lists=lists,
            pattern=pattern if isinstance(pattern, str) else None,
            settings=tuple((name, value) for name in STATE_SETTINGS if (value := _get(text, name)) is not None),
            window=window if window and in_use else None,
        )

    def declared(self, layers: int) -> list[str]:
        """Each of `layers` layers' declared type, "" where the config declares none of that length."""
        return next((list(kinds) for _, kinds in self.lists if len(kinds) == layers), [""] * layers)

    def state(self) -> str | None:
        """The state-carrying layers, e.g. 'linear_attention x3', 'Mamba x2' or the setting that shows them; None."""
        for _, kinds in self.lists:
            found = [kind for kind in kinds if mixing(kind).carries_state]
            if found:
                return ", ".join(f"{kind} x{found.count(kind)}" for kind in dict.fromkeys(found))
        if self.pattern is not None and "M" in self.pattern:
            return f"Mamba x{self.pattern.count('M')}"
        return next((f"{name}={value}" for name, value in self.settings), None)

    def not_attending(self) -> str | None:
        """Why a token of a row may see more than its ancestors through these layers (None: every layer is full
        attention or mixes nothing): what a tree needs."""
        kinds = next((kinds for _, kinds in self.lists if kinds), ())
        if kinds:
            other = sorted({k for k in kinds if mixing(k) not in (Mixing.ATTENTION, Mixing.NONE)})
            return f"its layers include {', '.join(other)}" if other else None
        if self.pattern and any(PATTERN.get(c, Mixing.STATE).carries_state for c in self.pattern):
            return f"its layer pattern {self.pattern!r} holds Mamba layers"
        if self.settings:
            name, value = self.settings[0]
            return f"its settings declare layers that carry state ({name}={value})"
        if self.window:
            return f"it attends through a sliding window of {self.window} tokens"
        return None
