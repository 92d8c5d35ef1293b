"""The LoRA targets of a model: `all-linear` resolved to the layers PEFT accepts on its architecture.

peft's `all-linear` takes every linear layer but the output head, and on some families PEFT then refuses its
own choice: Mamba-based models (nemotron_h, falcon_h1, ...) may not adapt `out_proj`; MoE models whose
experts are fused parameters (qwen3_next) get `lora.ParamWrapper`s that need `lora_dropout=0`. So the default
is resolved here, from the model: the names of its linear layers (attention, MLP, SSM and router projections),
less the output head and every name PEFT's own architecture check refuses. Those names go to PEFT as an
explicit list, which adapts `nn.Linear` modules only. A `--target-modules` list is used as given.

    qwen3_5_text: all-linear -> down_proj, gate_proj, in_proj_a, in_proj_b, in_proj_qkv, in_proj_z, k_proj, ...
    nemotron_h:   all-linear -> down_proj, in_proj, k_proj, o_proj, q_proj, up_proj, v_proj  (out_proj: refused)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

ALL_LINEAR = "all-linear"
LINEAR_CLASSES = ("Linear4bit", "Linear8bitLt")  # bitsandbytes' quantized linear layers


@dataclass(frozen=True, slots=True)
class LoraTargets:
    """The module names LoRA adapts, whether they were chosen from the model, and the names left out (why)."""

    modules: tuple[str, ...]
    chosen: bool  # True: `all-linear` resolved here; False: the user's list
    left_out: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"target_modules": list(self.modules), "chosen_from_model": self.chosen, "left_out": dict(self.left_out)}


def lora_targets(model: torch.nn.Module, requested: str | list[str]) -> LoraTargets:
    """The targets of `requested` on `model`: a list as given, `all-linear` resolved (see the module doc)."""
    if requested != ALL_LINEAR:
        return LoraTargets(tuple(requested), chosen=False)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if is_linear(m) and m is not head})
    left_out = {"lm_head": "the output head (TRL computes the loss from lm_head.weight)"} if head is not None else {}
    kept = []
    for name in names:
        refusal = peft_refuses(model, name)
        if refusal is None:
            kept.append(name)
        else:
            left_out[name] = refusal
    return LoraTargets(tuple(kept), chosen=True, left_out=left_out)


def peft_refuses(model: torch.nn.Module, name: str) -> str | None:
    """PEFT's own reason for refusing LoRA on modules named `name` in this architecture, else None."""
    from peft import LoraConfig

    try:
        from peft.tuners.tuners_utils import _check_lora_target_modules_mamba as check
    except ImportError:  # a peft without the check refuses nothing here
        return None
    try:
        check(LoraConfig(task_type="CAUSAL_LM"), model, name)
    except ValueError as exc:
        return str(exc).splitlines()[0]
    return None


def is_linear(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) or type(module).__name__ in LINEAR_CLASSES
