"""The LoRA targets of a model: `all-linear` resolved to the layers PEFT accepts on its architecture.

peft's `all-linear` takes every linear layer but the output head, and on some families PEFT then refuses its
own choice: Mamba-based models (nemotron_h, falcon_h1, ...) may not adapt `out_proj`; MoE models whose
experts are fused parameters (qwen3_next) get `lora.ParamWrapper`s that need `lora_dropout=0`. So the default
is resolved here, from the model: the names of its linear layers (attention, MLP, SSM and router projections),
less the output head and every name PEFT's own architecture check refuses. Those names go to PEFT as an
explicit list. A `--target-modules` list is used as given.

PEFT maps the MLP names of an MoE whose experts transformers 5 fuses (qwen3_next, mixtral, ...) onto the fused
expert parameters (`target_parameters`: `gate_up_proj`, `down_proj`), which it adapts through
`lora.ParamWrapper`; that wrapper refuses any `lora_dropout` but 0, so such a run trains with `lora_dropout=0`
and run.json says so (`lora_targets.lora_dropout`).

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
    parameters: tuple[str, ...] = ()  # fused expert parameters PEFT adapts for these names (lora.ParamWrapper)

    def dropout(self, requested: float) -> float:
        """The LoRA dropout the run uses: 0 where PEFT adapts fused expert parameters, else `requested`."""
        return 0.0 if self.parameters else requested

    def to_dict(self, *, requested_dropout: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "target_modules": list(self.modules),
            "chosen_from_model": self.chosen,
            "left_out": dict(self.left_out),
            "target_parameters": list(self.parameters),
        }
        if requested_dropout is not None:
            out["lora_dropout"] = self.dropout(requested_dropout)
            if self.parameters and requested_dropout:
                out["lora_dropout_why"] = "fused expert parameters train through lora.ParamWrapper, which needs 0"
        return out


def lora_targets(model: Any, requested: str | list[str]) -> LoraTargets:
    """The targets of `requested` on `model`: a list as given, `all-linear` resolved (see the module doc)."""
    if requested != ALL_LINEAR:
        return LoraTargets(tuple(requested), chosen=False, parameters=fused_parameters(model, list(requested)))
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
    return LoraTargets(tuple(kept), chosen=True, left_out=left_out, parameters=fused_parameters(model, kept))


def fused_parameters(model: Any, modules: list[str]) -> tuple[str, ...]:
    """The fused expert parameters PEFT will adapt when asked for `modules` (its own conversion, on a copy)."""
    from peft import LoraConfig

    try:
        from peft.utils.transformers_weight_conversion import (
            convert_peft_config_for_transformers,
            get_model_conversion_mapping,
        )
    except ImportError:  # a peft before transformers 5's fused experts
        return ()
    config = LoraConfig(target_modules=list(modules), task_type="CAUSAL_LM")
    try:
        convert_peft_config_for_transformers(config, model=model, conversions=get_model_conversion_mapping(model))
    except ValueError:  # PEFT's own error comes again, in one line, when the adapter is attached
        return ()
    return tuple(sorted(config.target_parameters or ()))


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
