"""Row layouts (`ftdata.tokens.layouts`) and the one reader of a model's sequence layers (`ftdata.tokens.layers`)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from ftdata.options import DataOptions
from ftdata.tokens.layers import Mixing, SequenceLayers, mixing
from ftdata.tokens.layouts import DOCUMENTS, LAYOUTS, PACKED, PLAIN, TREE, built_layout, layout_columns, layout_of

INTS = pa.list_(pa.int32())
TOKENS = pa.schema([("input_ids", INTS), ("attention_mask", pa.list_(pa.int8())), ("labels", INTS)])


def test_a_layout_is_told_by_its_marker_column() -> None:
    assert layout_of(["input_ids", "attention_mask", "labels", "record"]) is PLAIN
    assert layout_of(["input_ids", "labels", "position_ids", "seq_lengths"]) is PACKED
    assert layout_of(["input_ids", "labels", "position_ids", "tree_lengths"]) is TREE
    assert layout_of({"input_ids": [1], "tree_lengths": [1]}) is TREE  # a row's keys
    assert layout_of(TOKENS.names) is PLAIN
    assert DOCUMENTS.marker is None  # never stored: packed rows cut per document in the collator
    assert layout_columns() == {"position_ids", "seq_lengths", "tree_lengths"}
    assert [name for name, layout in LAYOUTS.items() if layout.fallback] == ["packed", "tree"]


def test_a_build_writes_the_layout_of_its_options() -> None:
    assert built_layout(DataOptions()) is PLAIN
    assert built_layout(DataOptions(packing=True)) is PACKED
    assert built_layout(DataOptions(history="tree")) is TREE
    assert built_layout(DataOptions(history="tree", packing=True)) is TREE  # trees packed: still tree rows


def test_each_layout_writes_its_columns_into_a_schema() -> None:
    packed = PACKED.schema(TOKENS)
    assert packed.names == ["input_ids", "attention_mask", "labels", "position_ids", "seq_lengths"]
    assert packed.field("seq_lengths").type == INTS
    weighted = packed.append(pa.field("loss_weights", pa.list_(pa.float32())))
    # packed trees: tree_lengths in place of seq_lengths, the columns after it where they were
    assert TREE.schema(weighted).names == [
        "input_ids", "attention_mask", "labels", "position_ids", "tree_lengths", "loss_weights"
    ]  # fmt: skip
    assert TREE.schema(TOKENS).names[-2:] == ["position_ids", "tree_lengths"]
    assert PLAIN.schema(TOKENS) == TOKENS


def test_each_layout_gives_the_sequences_of_a_row() -> None:
    plain = {"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}
    packed = {"input_ids": [1, 2, 3, 4, 5], "labels": [-100, 2, 3, -100, 5], "seq_lengths": [3, 2]}
    # two trees in one row: 1 2 (3 | 4) and 7 8
    tree = {
        "input_ids": [1, 2, 3, 4, 7, 8],
        "labels": [-100, -100, 3, 4, -100, 8],
        "position_ids": [0, 1, 2, 2, 0, 1],
        "tree_lengths": [4, 2],
    }
    assert list(PLAIN.sequences(plain)) == [([1, 2, 3], [-100, 2, 3])]
    assert list(PACKED.sequences(packed)) == [([1, 2, 3], [-100, 2, 3]), ([4, 5], [-100, 5])]
    assert list(TREE.sequences(tree)) == [
        ([1, 2, 3], [-100, -100, 3]),
        ([1, 2, 4], [-100, -100, 4]),
        ([7, 8], [-100, 8]),
    ]
    assert (PACKED.lengths(packed), TREE.lengths(tree), PLAIN.lengths(plain)) == ([3, 2], [4, 2], [3])
    assert PACKED.lengths(plain) == [3]  # a row without its lengths column is one sequence


@pytest.mark.parametrize(
    ("word", "kind"),
    [
        ("full_attention", Mixing.ATTENTION),
        ("attention", Mixing.ATTENTION),
        ("sliding_attention", Mixing.WINDOW),
        ("linear_attention", Mixing.LINEAR),
        ("mamba", Mixing.STATE),
        ("conv", Mixing.STATE),
        ("hybrid", Mixing.STATE),
        ("mlp", Mixing.NONE),
        ("moe", Mixing.NONE),
        ("dense", Mixing.NONE),
    ],
)
def test_one_word_list_for_every_layout(word: str, kind: Mixing) -> None:
    assert mixing(word) is kind


@pytest.mark.parametrize(
    ("config", "packed", "tree"),
    [
        ({"layer_types": ["full_attention"] * 2}, None, None),
        ({"layer_types": ["linear_attention"] * 3 + ["full_attention"]}, "linear_attention x3", "linear_attention"),
        ({"layer_types": ["full_attention", "sliding_attention"]}, None, "sliding_attention"),
        ({"layers_block_type": ["mlp", "moe"]}, None, None),
        ({"hybrid_override_pattern": "M-M*-"}, "Mamba x2", "holds Mamba layers"),
        ({"hybrid_override_pattern": "*-E*"}, None, None),  # attention, MLP, MoE: a tree's exact
        ({"ssm_state_size": 16}, "ssm_state_size=16", "ssm_state_size=16"),  # a pure SSM declares only its settings
        ({"sliding_window": 4096}, None, "sliding window of 4096"),
        ({"sliding_window": 4096, "use_sliding_window": False}, None, None),
        ({"text_config": {"layer_types": ["conv", "full_attention"]}}, "conv x1", "conv"),  # a media model's
    ],
)
def test_packed_and_tree_rows_ask_the_same_reader(config: dict, packed: str | None, tree: str | None) -> None:
    layers = SequenceLayers.read(config)
    assert layers.state() == packed
    assert (PACKED.blocker(layers) is None) is (packed is None)
    why = TREE.blocker(layers)
    assert (why is None) if tree is None else (why is not None and tree in why)
    assert PLAIN.blocker(layers) is None and DOCUMENTS.blocker(layers) is None


def test_config_json_and_the_config_object_read_alike() -> None:
    """The build reads config.json, training the transformers config: the one reader gives both the same answer
    (in words that may differ: Jamba's config object lists its layers, its config.json only their settings)."""
    transformers = pytest.importorskip("transformers")
    for name in ("LlamaConfig", "Qwen3Config", "Qwen3NextConfig", "NemotronHConfig", "JambaConfig", "Mamba2Config"):
        config = getattr(transformers, name)()
        from_object, from_json = SequenceLayers.read(config), SequenceLayers.read(config.to_dict())
        assert (from_object.state() is None) is (from_json.state() is None), name
        assert (TREE.blocker(from_object) is None) is (TREE.blocker(from_json) is None), name
    assert TREE.blocker(SequenceLayers.read(transformers.Mamba2Config())) is not None  # no layer list: its settings
    assert TREE.blocker(SequenceLayers.read(transformers.LlamaConfig())) is None
