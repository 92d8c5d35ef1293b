"""Tiny random-weight causal LMs of every family with non-attention sequence layers, built from transformers'
own default configs (shrunk: 64 wide, 4 layers keeping the family's mix of layer kinds), plus Llama and Qwen3
as the attention-only reference. The vocabulary covers the bundled SmolLM2 tokenizer (49152 tokens)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SIZES = {
    "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 16, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32, "num_experts": 4,
    "num_local_experts": 4, "n_routed_experts": 4, "num_experts_per_tok": 2, "mamba_n_heads": 8,
    "mamba_d_head": 16, "mamba_d_state": 16, "mamba_n_groups": 1, "mamba_expand": 2, "linear_num_key_heads": 2,
    "linear_num_value_heads": 4, "linear_key_head_dim": 16, "linear_value_head_dim": 16, "state_size": 16,
    "ssm_state_size": 16, "n_groups": 1, "num_heads": 8, "expand": 2, "mamba_head_dim": 16,
    "time_step_rank": 8, "mamba_dt_rank": 8, "block_ff_dim": 96, "conv_dim": 64,
    "shared_intermediate_size": 96, "moe_shared_expert_intermediate_size": 32, "lru_width": 64,
    "attention_window_size": 64, "max_position_embeddings": 512, "vocab_size": 49152, "n_shared_experts": 1,
    "num_dense_layers": 1,
}  # fmt: skip
# Families whose default config declares no non-attention layer: the real checkpoints' layouts.
LAYOUTS: dict[str, dict[str, Any]] = {
    "lfm2": {"layer_types": ["conv", "full_attention", "conv", "full_attention"]},
    "lfm2_moe": {"layer_types": ["conv", "full_attention", "conv", "full_attention"]},
    "falcon_h1": {"mamba_d_ssm": 128, "mamba_n_heads": 8, "mamba_d_head": 16},
    "zaya": {"num_experts_per_tok": 1},  # its config validator allows no other
}
# Families with non-attention sequence layers that build at this size, and the attention-only references.
HYBRIDS = ("bamba", "falcon_h1", "granitemoehybrid", "jamba", "lfm2", "lfm2_moe", "mamba2", "minimax", "nemotron_h",
           "olmo_hybrid", "qwen3_5_moe_text", "qwen3_5_text", "qwen3_next", "recurrent_gemma", "zaya")  # fmt: skip
ATTENTION = ("llama", "qwen3")


def tiny_config(model_type: str, *, layers: int = 4) -> Any:
    """transformers' default config of `model_type`, shrunk."""
    from transformers import CONFIG_MAPPING

    config = CONFIG_MAPPING[model_type]()
    text = getattr(config, "text_config", None) or config
    for name, value in {**SIZES, **LAYOUTS.get(model_type, {})}.items():
        if hasattr(text, name) or name in LAYOUTS.get(model_type, {}):
            _set(text, name, value)
    for name in ("layer_types", "layers_block_type", "block_types"):
        declared = getattr(text, name, None)
        if isinstance(declared, (list, tuple)) and declared and name not in LAYOUTS.get(model_type, {}):
            kinds = list(dict.fromkeys(declared))
            _set(text, name, (kinds * layers)[: max(layers, len(kinds))])
    if getattr(text, "hybrid_override_pattern", None):
        _set(text, "hybrid_override_pattern", text.hybrid_override_pattern[:layers])
    for name in ("num_hidden_layers", "num_layers"):
        if hasattr(text, name):
            _set(text, name, layers)
    if hasattr(text, "full_attn_idxs") and getattr(text, "layer_types", None):
        _set(text, "full_attn_idxs", [i for i, t in enumerate(text.layer_types) if "attention" in t])
    if hasattr(text, "attn_layer_indices"):
        _set(text, "attn_layer_indices", [1])
    if hasattr(text, "attn_layer_offset"):
        _set(text, "attn_layer_offset", 1)
        _set(text, "attn_layer_period", 2)
    if hasattr(text, "expert_layer_offset"):
        _set(text, "expert_layer_offset", 1)
        _set(text, "expert_layer_period", 2)
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if hasattr(text, name):
            _set(text, name, 0)
    return config


def _set(config: Any, name: str, value: Any) -> None:
    try:
        setattr(config, name, value)
    except AttributeError:  # a derived property (bamba's layers_block_type): its inputs are set instead
        pass


def save_tiny(model_type: str, folder: Path, *, tokenizer_dir: Path | None = None, seed: int = 0) -> Path:
    """A tiny model of `model_type` saved to `folder` (with the tokenizer of `tokenizer_dir`)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type))
    model.save_pretrained(folder)
    if tokenizer_dir is not None:
        for file in tokenizer_dir.iterdir():
            if file.is_file():
                shutil.copy2(file, folder / file.name)
    return folder
