"""history=tree across records: records that start with the same tokens (a system prompt, tool schemas) share one
tree, each record whole, each trained token of the split rows trained exactly once, in exactly its own context.

Oracles: the history=inference build of the same records (the split rows), an independent per-token trie
(`tree_reference.share_reference`) and the set of distinct prefixes across records (`distinct_prefixes`, the least
any exact layout forwards). The loss of such a tree on a tiny model is the split rows' (tests/train/).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from datasets import concatenate_datasets
from hypothesis import given, settings
from hypothesis import strategies as st
from support import SHARED, TOKENIZERS, tokenizer
from test_chat_tools import template_tokenizer
from tree_reference import distinct_prefixes, share_reference

import ftdata
from ftdata.tokens.masking import WeightedRow
from ftdata.tokens.tree import parents, paths, share, visible
from ftdata.types import IGNORE_INDEX

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")

SYSTEM = {"role": "system", "content": "You are a careful assistant. Think before you answer, and answer briefly."}


def turn(question: str, reasoning: str, answer: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer, "reasoning_content": reasoning},
    ]


RECORDS = [  # one system prompt; records 1 and 3 open with the same exchange (trained in both: each keeps its copy)
    {"messages": [SYSTEM, *turn("What is 2+2?", "Add two and two.", "4"), *turn("And 3+3?", "Add three.", "6")]},
    {"messages": [SYSTEM, *turn("Name a colour.", "Any will do.", "Blue.")]},
    {"messages": [SYSTEM, *turn("What is 2+2?", "Add two and two.", "4"), *turn("And 5+5?", "Add five.", "10")]},
    {"messages": [*turn("Hi", "Greet back.", "Hello!")]},  # no system prompt: shares only the first header
]


def build(tmp_path: Path, history: str, **options: Any) -> Any:
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    tok = template_tokenizer("qwen3", ("<think>", "</think>"))
    return ftdata.build(str(data), tokenizer=tok, history=history, cache=False, **options).dataset


# (a context's number, the next token) -> the number of that context followed by the token: every distinct sequence of
# tokens numbered once, shared by every `contexts` call (0: the empty context)
_CONTEXTS: dict[tuple[int, int], int] = {}


def contexts(rows: Any) -> list[tuple[int, int]]:
    """Every trained token of `rows` as (what it is predicted from, the token): a plain row's tokens before it, a
    tree row's ancestors (`parents`, from the position ids). A context is its number in `_CONTEXTS`, the same for the
    same tokens in every call, so rows of thousands of tokens compare in time linear in their tokens."""
    out = []
    for row in rows:
        ids, labels = row["input_ids"], row["labels"]
        up = parents(row["position_ids"]) if "position_ids" in row else range(-1, len(ids) - 1)
        node: list[int] = []  # per token: the number of the tokens it sees, itself included
        for i, (token, label) in enumerate(zip(ids, labels)):
            before = node[up[i]] if up[i] >= 0 else 0
            node.append(_CONTEXTS.setdefault((before, token), len(_CONTEXTS) + 1))
            if label != IGNORE_INDEX:
                out.append((before, label))
    return sorted(out)


def by_record(rows: Any) -> list[list[tuple[list[int], list[int]]]]:
    out: dict[str, list[tuple[list[int], list[int]]]] = {}
    for row in rows:
        out.setdefault(row["record"], []).append((row["input_ids"], row["labels"]))
    return list(out.values())


def test_records_that_start_alike_share_one_tree(tmp_path: Path) -> None:
    split, own, across = (
        build(tmp_path, "inference"),
        build(tmp_path, "tree", tree_across_records=False),
        build(tmp_path, "tree"),
    )
    assert (len(split), len(own), len(across)) == (6, 4, 1)  # 2 + 1 + 2 + 1 split rows; a tree per record; one tree
    assert contexts(across) == contexts(own) == contexts(split)  # each trained token once, in its split row's context
    tokens = {
        name: sum(map(len, rows["input_ids"])) for name, rows in (("split", split), ("own", own), ("across", across))
    }
    assert tokens["across"] < tokens["own"] < tokens["split"]
    # the least any exact layout forwards, plus the copy of records 1 and 3's shared first answer each trains
    assert tokens["across"] > distinct_prefixes(by_record(split))
    ((tree, records),) = share_reference(by_record(split), max_length=2048)
    assert (across[0]["input_ids"], across[0]["labels"], across[0]["position_ids"]) == (
        tree.ids,
        tree.labels,
        tree.positions,
    )
    assert across[0]["record"] == ", ".join(dict.fromkeys(split["record"]))  # every record it holds, in order
    assert across[0]["tree_lengths"] == [tokens["across"]]


def test_a_record_that_does_not_fit_the_shared_tree_starts_the_next(tmp_path: Path) -> None:
    split = build(tmp_path, "inference")
    longest = max(sum(len(ids) for ids, _ in rows) for rows in by_record(split))
    across = build(tmp_path, "tree", max_length=longest)
    assert 1 < len(across) < 4 and all(len(r["input_ids"]) <= longest for r in across)
    assert contexts(across) == contexts(split)
    assert sorted(", ".join(r["record"] for r in across).split(", ")) == sorted(
        set(split["record"])
    )  # each record once


def test_a_held_out_split_draws_records_one_by_one_each_in_a_tree_of_its_own(tmp_path: Path) -> None:
    split = build(tmp_path, "inference")
    longest = max(sum(len(ids) for ids, _ in rows) for rows in by_record(split))
    out = build(tmp_path, "tree", max_length=longest, test_size=1, seed=3)
    assert all(", " not in r["record"] for s in ("train", "test") for r in out[s])  # no tree across records
    train, test = ({r["record"] for r in out[s]} for s in ("train", "test"))
    assert len(test) == 1 and not train & test and len(train | test) == len(RECORDS)  # one record held out, not a tree
    assert contexts(concatenate_datasets([out["train"], out["test"]])) == contexts(split)


def test_harbor_atif_trajectories_forward_under_three_quarters_of_one_row() -> None:
    """The 10 ATIF trajectories of Harbor's integration tests (shared/datasets): the system prompts and tool
    schemas of one harness are forwarded once across records: 0.70x one row's tokens, per-record trees 1.06x."""
    folder = SHARED / "datasets/agent_traces/atif"
    if not folder.is_dir():
        pytest.skip(f"shared datasets not found at {folder}")
    options = dict(
        tokenizer=tokenizer("qwen2.5-instruct"), chat_template="qwen3", max_length=65536, on_error="skip", cache=False
    )
    one_row = sum(map(len, ftdata.build(str(folder), history="one_row", **options).dataset["input_ids"]))
    split = ftdata.build(str(folder), history="inference", **options).dataset
    own = ftdata.build(str(folder), history="tree", tree_across_records=False, **options).dataset
    across = ftdata.build(str(folder), history="tree", **options).dataset
    tokens = sum(map(len, across["input_ids"]))
    assert len(across) == 1 and len(own) == 10
    assert tokens <= 0.75 * one_row < one_row < sum(map(len, own["input_ids"]))
    records = by_record(split)
    assert (
        distinct_prefixes(records) <= tokens <= distinct_prefixes(records) * 1.01
    )  # 14,557 and the copies trained twice
    assert [(t.ids, t.labels, t.positions) for t, _ in share_reference(records, max_length=65536)] == [
        (r["input_ids"], r["labels"], r["position_ids"]) for r in across
    ]
    assert contexts(across) == contexts(split)


# --- the invariant, on made-up records ---------------------------------------------------------------------

record_st = st.lists(  # one record's rows; a tiny alphabet and a common head make long shared prefixes likely
    st.lists(st.tuples(st.integers(1, 3), st.booleans(), st.sampled_from([1.0, 1.0, 0.5])), min_size=1, max_size=10),
    min_size=1,
    max_size=4,
)


def as_rows(record: list[list[tuple[int, bool, float]]], head: list[int], weighted: bool) -> list[Any]:
    rows = []
    for r in record:
        ids = [*head, *(t for t, _, _ in r)]
        labels = [*(IGNORE_INDEX for _ in head), *(t if k else IGNORE_INDEX for t, k, _ in r)]
        rows.append(
            WeightedRow(ids, labels, [*(1.0 for _ in head), *(w for _, _, w in r)]) if weighted else (ids, labels)
        )
    return rows


def keyed(rows: Any) -> list[tuple[tuple[tuple[int, float], ...], int]]:
    """Every trained token of plain rows as ((token, weight) of its row up to it, its label)."""
    out = []
    for row in rows:
        ids, labels = row
        weights = getattr(row, "weights", None) or [1.0] * len(ids)
        out.extend(
            (tuple(zip(ids[: i + 1], weights[: i + 1])), lab) for i, lab in enumerate(labels) if lab != IGNORE_INDEX
        )
    return sorted(out)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(record_st, st.integers(0, 3), st.booleans()), min_size=1, max_size=6),
    st.integers(6, 60),
)
def test_every_trained_token_of_the_split_rows_is_trained_once_in_its_context(
    made: list[tuple[list[list[tuple[int, bool, float]]], int, bool]], max_length: int
) -> None:
    records = [as_rows(record, [7, 8, 9][:head], weighted) for record, head, weighted in made]
    records = [[r for r in rows if len(r[0]) <= max_length] for rows in records]
    trees = share(records, max_length=max_length)
    held = [k for s in trees for k in s.records]
    assert sorted(set(held)) == [r for r in range(len(records)) if records[r]]  # every record, none parted
    for k in set(held):  # in one tree, or in trees of its own (too long for one)
        holding = [s for s in trees if k in s.records]
        assert len(holding) == 1 or all(s.records == (k,) for s in holding)
    assert all(len(s.tree.ids) <= max_length for s in trees) and sum(s.tree.rows for s in trees) == sum(
        map(len, records)
    )
    seen = []
    for s in trees:
        t = s.tree
        weights = t.weights if t.weights is not None else [1.0] * len(t.ids)
        for i, path in enumerate(visible(t.positions)):
            if t.labels[i] != IGNORE_INDEX:
                seen.append((tuple((t.ids[j], weights[j]) for j in path), t.labels[i]))
    assert sorted(seen) == keyed(r for rows in records for r in rows)  # each trained token once, its own context
    assert sum(len(s.tree.ids) for s in trees) >= distinct_prefixes(records)
    assert [(s.tree, s.records) for s in trees] == share_reference(records, max_length=max_length)
    again = [r for s in trees for r in paths(s.tree.ids, s.tree.labels, s.tree.positions)]  # taken apart again
    assert sorted(
        (tuple(ids[: i + 1]), lab) for ids, labels in again for i, lab in enumerate(labels) if lab != IGNORE_INDEX
    ) == sorted(
        (tuple(ids[: i + 1]), lab)
        for rows in records
        for ids, labels in rows
        for i, lab in enumerate(labels)
        if lab != IGNORE_INDEX
    )
