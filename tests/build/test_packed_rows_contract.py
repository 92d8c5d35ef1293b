"""build.json of a packed build: what a trainer must pass per layer kind, and the note on a hybrid model's
tokenizer folder (ftdata/build/packed_rows.py: config.json only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftdata.build.packed_rows import CONTRACT, hybrid_note, packing_record, state_layers


@pytest.mark.parametrize(
    ("config", "found"),
    [
        ({"layer_types": ["linear_attention"] * 3 + ["full_attention"]}, "linear_attention x3"),
        ({"layer_types": ["conv", "full_attention", "conv"]}, "conv x2"),  # LFM2
        ({"hybrid_override_pattern": "M-M*-"}, "Mamba x2"),  # Nemotron-H
        ({"mamba_d_conv": 4, "layers_block_type": ["mamba", "attention"]}, "mamba x1"),
        ({"mamba_d_conv": 4}, "mamba_d_conv=4"),  # Jamba, Falcon-H1: declared by their settings
        ({"layer_types": ["full_attention", "sliding_attention"], "num_hidden_layers": 2}, None),  # Gemma-style
        ({"layers_block_type": ["mlp", "moe"]}, None),
    ],
)
def test_state_layers_from_config_json(config: dict, found: str | None) -> None:
    assert state_layers(config) == found


def test_a_hybrid_beside_the_tokenizer_is_noted(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_5", "text_config": {
        "model_type": "qwen3_5_text", "layer_types": ["linear_attention"] * 3 + ["full_attention"]}}), encoding="utf-8")
    note = hybrid_note(tmp_path)
    assert note is not None and note.startswith("the model beside the tokenizer (qwen3_5_text) has layers that carry "
                                                "state along the row (linear_attention x3)")  # fmt: skip
    assert f"ftdata check-packing --model {tmp_path} OUT" in note
    record = packing_record(packing=True, tokenizer_name=str(tmp_path))["packing"]
    assert record["trainer_must_pass"] == CONTRACT and record["note"] == note
    assert packing_record(packing=False, tokenizer_name=str(tmp_path)) == {}
    assert "note" not in packing_record(packing=True, tokenizer_name="HuggingFaceTB/SmolLM2-135M-Instruct")["packing"]
