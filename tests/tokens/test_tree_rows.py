"""history=tree: a split record's rows as one prefix tree, checked against the split rows themselves.

The oracle is the history=inference build of the same records (tests/chat/test_trajectory.py checks those rows against
`apply_chat_template`): the tree must hold each distinct prefix once, train exactly the split rows' trained tokens,
and show every trained token exactly the context its split row showed it; on a tiny Llama the first-step loss of
the tree rows equals the split rows' (rel 1e-5).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import TOKENIZERS
from test_chat_tools import template_tokenizer
from tree_reference import grow_reference

import ftdata
from ftdata.errors import ConfigError
from ftdata.tokens.tree import grow, parents, paths, visible
from ftdata.types import IGNORE_INDEX

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str, reasoning: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text, "reasoning_content": reasoning}


RECORDS = [
    {"messages": [user("What is 2+2?"), assistant("4", "Add two and two."), user("And 3+3?"), assistant("6", "Add three and three."),
                  user("And 4+4?"), assistant("8", "Four and four.")]},
    {"messages": [user("Name a colour."), assistant("Blue.", "Any colour will do.")]},
    {"messages": [user("Hi"), assistant("Hello!", "Greet back."), user("Bye"), assistant("Goodbye!", "Say goodbye.")]},
]  # fmt: skip


def built(tmp_path: Path, history: str, **options: Any):
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    return ftdata.build(str(data), tokenizer=template_tokenizer("qwen3", ("<think>", "</think>")), history=history, **options).dataset


def contexts(rows: Any) -> list[tuple[tuple[int, ...], int]]:
    """Every trained token of `rows` as (what it sees, the token), from each row's own attention: a plain row
    sees the tokens before it, a tree row its ancestors (`visible`, from the position ids)."""
    out = []
    for row in rows:
        ids, labels = row["input_ids"], row["labels"]
        seen = visible(row["position_ids"]) if "position_ids" in row else [list(range(i + 1)) for i in range(len(ids))]
        # a trained token is predicted from what its parent sees: its own context, itself excluded
        out.extend((tuple(ids[j] for j in seen[i][:-1]), label) for i, label in enumerate(labels) if label != IGNORE_INDEX)
    return sorted(out)


def test_tree_rows_forward_each_prefix_once_and_train_what_the_split_rows_train(tmp_path: Path) -> None:
    split, tree = built(tmp_path, "inference"), built(tmp_path, "tree", tree_across_records=False)
    assert (len(split), len(tree)) == (6, 3)  # 3 + 1 + 2 split rows -> one tree per record (across: 1, test_tree_across_records)
    assert tree.column_names == ["input_ids", "attention_mask", "labels", "record", "position_ids", "tree_lengths"]
    assert contexts(tree) == contexts(split)  # the same trained tokens, each in exactly its split row's context
    for row in tree:  # unique: no two tokens with the same parent, token and label
        kids = {(p, t, lab) for p, t, lab in zip(parents(row["position_ids"]), row["input_ids"], row["labels"])}
        assert len(kids) == len(row["input_ids"]) and row["tree_lengths"] == [len(row["input_ids"])]
    first = tree[0]  # the shared head (system-less prompt up to the first reply) is written once
    assert sum(len(r["input_ids"]) for r in split.select(range(3))) > len(first["input_ids"])
    assert first["position_ids"][:3] == [0, 1, 2] and max(first["position_ids"]) + 1 == len(split[0]["input_ids"])


def test_packed_tree_rows_keep_each_tree_apart(tmp_path: Path) -> None:
    split, packed = built(tmp_path, "inference"), built(tmp_path, "tree", packing=True, max_length=4096)
    assert len(packed) == 1 and packed.column_names == ["input_ids", "attention_mask", "labels", "position_ids", "tree_lengths"]
    row = packed[0]
    assert sorted(row["tree_lengths"]) == sorted(len(r["input_ids"]) for r in built(tmp_path, "tree"))
    assert contexts(packed) == contexts(split)


def test_tree_refuses_padding(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"history='tree' .* padding=max_length pads each row itself; drop one"):
        ftdata.DataOptions(history="tree", padding="max_length")


rows_st = st.lists(  # rows of one record: a shared alphabet makes long shared prefixes likely
    st.lists(st.tuples(st.integers(1, 3), st.booleans()), min_size=1, max_size=12), min_size=1, max_size=6
)


@settings(max_examples=200, deadline=None)
@given(rows_st, st.integers(4, 40))
def test_grow_keeps_every_row_and_trains_each_trained_token_once(rows: list[list[tuple[int, bool]]], max_length: int) -> None:
    plain = [([t for t, _ in r], [IGNORE_INDEX if i == 0 or not k else t for i, (t, k) in enumerate(r)]) for r in rows]
    plain = [r for r in plain if len(r[0]) <= max_length]
    trees = grow(plain, max_length=max_length)
    assert all(len(t.ids) <= max_length for t in trees) and sum(t.rows for t in trees) == len(plain)
    prefixes = {tuple(ids[: i + 1]) for ids, _ in plain for i in range(len(ids))}
    seen = []  # every token of a tree is a prefix of some row, sees exactly that prefix, and every trained token once
    for t in trees:
        for i, path in enumerate(visible(t.positions)):
            assert tuple(t.ids[j] for j in path) in prefixes
        seen += [(tuple(t.ids[j] for j in path), t.labels[i]) for i, path in enumerate(visible(t.positions)) if t.labels[i] != IGNORE_INDEX]
    want = [(tuple(ids[: i + 1]), lab) for ids, labels in plain for i, lab in enumerate(labels) if lab != IGNORE_INDEX]
    assert sorted(seen) == sorted(want)
    assert trees == grow_reference(plain, max_length=max_length)  # the per-token trie builds the same trees
    again = [r for t in trees for r in paths(t.ids, t.labels, t.positions)]  # taken apart: the same trained tokens
    assert sorted((tuple(ids[: i + 1]), lab) for ids, labels in again for i, lab in enumerate(labels) if lab != IGNORE_INDEX) == sorted(want)


def test_parents_from_position_ids() -> None:
    assert parents([0, 1, 2, 3, 4, 5, 6, 4, 2]) == [-1, 0, 1, 2, 3, 4, 5, 3, 1]
    assert visible([0, 1, 2, 1]) == [[0], [0, 1], [0, 1, 2], [0, 3]]
    with pytest.raises(ValueError, match="jump from 0 to 2 at token 1"):
        parents([0, 2])


def weighted_contexts(rows: Any) -> list[tuple[tuple[int, ...], int, float]]:
    """`contexts` with each trained token's loss weight."""
    out = []
    for row in rows:
        ids, labels, weights = row["input_ids"], row["labels"], row["loss_weights"]
        seen = visible(row["position_ids"]) if "position_ids" in row else [list(range(i + 1)) for i in range(len(ids))]
        out.extend(
            (tuple(ids[j] for j in seen[i][:-1]), lab, weights[i])
            for i, lab in enumerate(labels)
            if lab != IGNORE_INDEX
        )
    return sorted(out)


def test_tree_rows_keep_each_trained_tokens_loss_weight(tmp_path: Path) -> None:
    """Per-message loss weights (LLaMA-Factory `loss_weight`) build as tree rows: every trained token keeps its
    split row's context and weight (`ftdata train` weighs them: tests/train/test_tree_train.py)."""
    weighted = [
        dict(m, loss_weight=w) if m["role"] == "assistant" else m
        for m, w in zip(RECORDS[0]["messages"], [0, 0.5, 0, 1.0, 0, 2.0])
    ]
    data = tmp_path / "weighted.jsonl"
    data.write_text(json.dumps({"messages": weighted}) + "\n", encoding="utf-8")
    tok = template_tokenizer("qwen3", ("<think>", "</think>"))
    split, tree = (
        ftdata.build(str(data), tokenizer=tok, history=h, cache=False).dataset for h in ("inference", "tree")
    )
    assert (len(split), len(tree)) == (3, 1) and "loss_weights" in tree.column_names
    assert weighted_contexts(tree) == weighted_contexts(split)
    assert sorted({w for _, _, w in weighted_contexts(tree)}) == [0.5, 1.0, 2.0]
    # still one tree, its shared start written once: the untrained history tokens carry weight 1 in every row
    assert sum(map(len, split["input_ids"])) > len(tree[0]["input_ids"])


def test_tree_refuses_media_naming_the_fix() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^history='tree' .*: processor='proc' builds rows with media, which are not built as trees yet; "
        r"use history='inference'",
    ):
        ftdata.DataOptions(history="tree", processor="proc")
