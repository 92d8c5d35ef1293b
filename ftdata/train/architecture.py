"""Which sequence layers a model has, and what packed rows need to stay isolated in each.

Attention keeps the documents of a packed row apart through the restarting `position_ids` alone. A layer
that carries state along the row (Gated DeltaNet and other linear attention, Mamba / Mamba-2 SSMs, LFM2's
short convolution, RecurrentGemma's RG-LRU) keeps them apart only when it is given `seq_idx` /
`cu_seq_lens_*` and its kernel honours them: in transformers 5.24 only the CUDA kernels (causal-conv1d,
mamba-ssm, flash-linear-attention) do; the torch paths either raise or ignore them.

The kinds are read from the model's own modules, never from a list of model names: each decoder layer's
children are inspected, and a child carries state when it holds a `Conv1d` (the causal short convolution
every one of those layers has) or its forward takes `seq_idx` / `cu_seqlens`, or when its layer is declared
linear attention (`ftdata.tokens.layers`, the one reader of a config's layers: MiniMax's lightning attention is
linear attention with neither a Conv1d nor seq_idx). The kernels a kind needs
are the kernel packages its modeling module imports.

    layers   [GDN, GDN, GDN, attention]   ->  kinds {Qwen3_5GatedDeltaNet: 3 (state), Qwen3_5Attention: 1}
    on CPU   ->  route `documents`: each packed row regrouped per document into a padded batch
    on CUDA with causal-conv1d + flash-linear-attention  ->  route `packed` (seq_idx / cu_seq_lens)
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

from ftdata.tokens.layers import Mixing, SequenceLayers, mixing
from ftdata.types import _Choice

# The kernel packages that honour packed sequences, as a modeling module imports them, and what to install.
KERNELS = {"causal_conv1d": "causal-conv1d", "mamba_ssm": "mamba-ssm", "fla": "flash-linear-attention"}
# Forward parameters through which a layer is told where the documents of a packed row start.
PACKED_PARAMETERS = ("seq_idx", "cu_seqlens", "cu_seq_lens", "cu_seq_lens_q")


class Route(_Choice):
    """How packed rows reach the model."""

    PACKED = "packed"  # one row, restarting position_ids (+ seq_idx / cu_seq_lens): every layer honours them
    DOCUMENTS = "documents"  # each packed row regrouped per document into a right-padded batch: exact anywhere


@dataclass(frozen=True, slots=True)
class LayerKind:
    """One kind of sequence layer: its class, how many decoder layers hold it, whether it carries state
    along the row, and the kernel packages (pip names) that make it honour `seq_idx` / `cu_seq_lens`."""

    name: str
    layers: int
    carries_state: bool
    kernels: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layers": self.layers,
            "carries_state": self.carries_state,
            "kernels": list(self.kernels),
        }


@dataclass(frozen=True, slots=True)
class Architecture:
    """The sequence layers of a model and the route its packed rows take on a device."""

    model_type: str
    kinds: tuple[LayerKind, ...]
    device: str  # "cuda" or "cpu"
    installed: tuple[str, ...]  # the kernel packages importable here

    @property
    def state_kinds(self) -> tuple[LayerKind, ...]:
        return tuple(k for k in self.kinds if k.carries_state)

    @property
    def kernels(self) -> tuple[str, ...]:
        """Every kernel package the state-carrying layers need."""
        return tuple(dict.fromkeys(p for k in self.state_kinds for p in k.kernels))

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(p for p in self.kernels if p not in self.installed)

    @property
    def route(self) -> Route:
        """`packed` where every layer honours packed rows (attention only, or CUDA with the kernels), else
        `documents`."""
        if not self.state_kinds:
            return Route.PACKED
        kernels_cover = all(k.kernels for k in self.state_kinds) and not self.missing
        return Route.PACKED if self.device == "cuda" and kernels_cover else Route.DOCUMENTS

    def why(self) -> str:
        """Why the route was chosen, in one clause."""
        if not self.state_kinds:
            return "attention layers only: restarting position_ids keep documents apart"
        names = ", ".join(f"{k.name} x{k.layers}" for k in self.state_kinds)
        if self.route is Route.PACKED:
            kernels = ", ".join(self.kernels)
            return f"{names} carry state; {kernels} on CUDA keep documents apart (seq_idx / cu_seq_lens)"
        need = ", ".join(self.kernels) or "a kernel that honours seq_idx"
        missing = ", ".join(self.missing) or need
        where = "on CPU the torch paths" if self.device != "cuda" else f"without {missing} the torch paths"
        return (
            f"{names} carry state along the row and {where} do not honour seq_idx / cu_seq_lens "
            f"(install {need} on a CUDA GPU)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "route": self.route.value,
            "why": self.why(),
            "layer_kinds": [k.to_dict() for k in self.kinds],
            "kernels_needed": list(self.kernels),
            "kernels_installed": [p for p in self.kernels if p in self.installed],
        }


def inspect_model(model: Any, *, device: str) -> Architecture:
    """The sequence-layer kinds of `model` (a causal LM, a peft wrapper of one, or a model that reads media:
    its language model) and the kernel packages importable here."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    layers = decoder_layers(base)
    declared = SequenceLayers.read(config).declared(len(layers)) if config is not None else [""] * len(layers)
    counts: Counter[tuple[str, bool, tuple[str, ...]]] = Counter()
    for layer, declared_type in zip(layers, declared):
        for child in layer.children():
            kind = _kind(child, linear=mixing(declared_type) is Mixing.LINEAR)
            if kind is not None:
                counts[kind] += 1
    kinds = tuple(LayerKind(name, n, state, kernels) for (name, state, kernels), n in counts.items())
    text = getattr(config, "text_config", None)
    model_type = str(getattr(text, "model_type", None) or getattr(config, "model_type", "?"))
    installed = tuple(pip for module, pip in KERNELS.items() if importlib.util.find_spec(module) is not None)
    return Architecture(model_type=model_type, kinds=kinds, device=device, installed=installed)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The layers of the language model: the longest `ModuleList` named `layers` outside a media tower
    (`model.layers`, `backbone.layers`, `model.language_model.layers`)."""
    towers = ("vision", "visual", "audio")
    found: list[torch.nn.ModuleList] = []
    for name, module in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.ModuleList) and last == "layers" and not any(w in name for w in towers):
            found.append(module)
    longest = max(found, key=lambda layers: sum(1 for _ in layers.children()), default=None)
    return list(longest) if longest is not None else []


def _kind(child: torch.nn.Module, *, linear: bool) -> tuple[str, bool, tuple[str, ...]] | None:
    """(class name, carries state, kernels) of a decoder layer's child that mixes positions, else None.
    `linear`: the config declares the layer linear attention."""
    conv = any(isinstance(m, torch.nn.Conv1d) for m in child.modules()) or _takes_packed(child)
    attends = _attends(child)
    if not conv and not attends:
        return None
    state = conv or (linear and attends)
    return type(child).__name__, state, _kernels(type(child)) if state else ()


def _takes_packed(module: torch.nn.Module) -> bool:
    return any(p in _parameters(m) for m in module.modules() for p in PACKED_PARAMETERS)


def _attends(module: torch.nn.Module) -> bool:
    """An attention module: its forward takes the rotary `position_embeddings` or an `attention_mask` and
    it has no submodule that would make it a whole decoder block."""
    params = _parameters(module)
    return ("position_embeddings" in params or "attention_mask" in params) and "Attention" in type(module).__name__


def _parameters(module: torch.nn.Module) -> tuple[str, ...]:
    try:
        return tuple(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return ()


def _kernels(cls: type) -> tuple[str, ...]:
    """The kernel packages the class's modeling module loads (by import or by name), in KERNELS order."""
    module = sys.modules.get(cls.__module__)
    try:
        source = inspect.getsource(module) if module is not None else ""
    except (OSError, TypeError):
        source = ""
    return tuple(
        pip
        for name, pip in KERNELS.items()
        if f'"{name}"' in source or f"{name}." in source or f"import {name}" in source or f"'{name}'" in source
    )
