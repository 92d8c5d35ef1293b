"""The reference tree builder: a per-token prefix trie, one dict lookup per token (slow, obviously right).
`ftdata.tokens.tree.grow` must build the same trees (tests/tokens/test_tree_rows.py)."""

from __future__ import annotations

from collections.abc import Sequence

from ftdata.tokens.tree import Tree
from ftdata.types import IGNORE_INDEX

Key = tuple[int, int, float]


class _Trie:
    """The prefix trie of some rows, a node per (token, loss weight) under its parent, trained where any row
    that holds it trains it."""

    def __init__(self) -> None:
        self.keys: list[list] = []  # per node: [token, label, weight]
        self.children: list[dict[tuple[int, float], int]] = [{}]  # node 0 is the (unwritten) root above every first token
        self.rows = 0
        self.weighted = False

    @property
    def size(self) -> int:
        return len(self.keys)

    def novel(self, keys: Sequence[Key]) -> int | None:
        """How many nodes `keys` would add, or None where a token of its shared prefix is trained by it and by
        a row already in (it would be trained once for two)."""
        node, shared = 0, 0
        for token, label, weight in keys:
            child = self.children[node].get((token, weight))
            if child is None:
                break
            if label != IGNORE_INDEX and self.keys[child - 1][1] != IGNORE_INDEX:
                return None
            node, shared = child, shared + 1
        return len(keys) - shared

    def add(self, keys: Sequence[Key]) -> None:
        node = 0
        for token, label, weight in keys:
            child = self.children[node].get((token, weight))
            if child is None:
                child = len(self.children)
                self.children[node][(token, weight)] = child
                self.children.append({})
                self.keys.append([token, label, weight])
            elif label != IGNORE_INDEX:
                self.keys[child - 1][1] = label
            node = child
        self.rows += 1

    def tree(self) -> Tree:
        """The trie in pre-order: children in the order they were first written."""
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        weights: list[float] = []
        stack = [(child, 0) for child in reversed(self.children[0].values())]
        while stack:
            node, depth = stack.pop()
            token, label, weight = self.keys[node - 1]
            ids.append(token)
            labels.append(label)
            positions.append(depth)
            weights.append(weight)
            stack.extend((child, depth + 1) for child in reversed(self.children[node].values()))
        return Tree(ids, labels, positions, weights if self.weighted else None, self.rows)


def grow_reference(rows: Sequence[tuple[list[int], list[int]]], *, max_length: int) -> list[Tree]:
    """The rows of one record as the fewest trees this greedy pass finds, each of at most `max_length` unique
    tokens (a row is never cut: each row is at most `max_length` already). A row with loss weights
    (`masking.WeightedRow`) keeps them, and shares only tokens of equal weight.

        grow([([1, 2, 3], [-100, -100, 3]), ([1, 2, 4], [-100, -100, 4])], max_length=8)
        -> [Tree(ids=[1, 2, 3, 4], labels=[-100, -100, 3, 4], positions=[0, 1, 2, 2], weights=None, rows=2)]
    """
    tries: list[_Trie] = []
    for row in rows:
        ids, labels = row
        weights = getattr(row, "weights", None)
        keys = list(zip(ids, labels, weights if weights is not None else [1.0] * len(ids)))
        trie = next((t for t in tries if (n := t.novel(keys)) is not None and t.size + n <= max_length), None)
        if trie is None:
            trie = _Trie()
            tries.append(trie)
        trie.add(keys)
        trie.weighted |= weights is not None
    return [t.tree() for t in tries]


