"""Tree rows: the rows of one record (a record split by history=inference) as one prefix tree.

The split rows of a record repeat the conversation before each of their turns. Laid out as a tree, every
distinct token prefix is written once and each row continues its own branch:

    split rows   S u1 a1' u2 a2' u3 [a3]         (a1', a2': history as the full render writes it)
                 S u1 a1' u2 [a2]
                 S u1 [a1]
    tree         S u1 ─┬─ a1' u2 ─┬─ a2' u3 [a3]
                       │          └─ [a2]
                       └─ [a1]

The tree is written in depth-first pre-order, and `position_ids` is each token's depth (its position in its
split row). That alone encodes the tree: a token's parent is the last token before it whose position id is one
less, and a token sees exactly its ancestors (and itself): token i sees token j <= i when every token after j up
to i has a position id greater than j's. A plain packed row is the special case of chains restarting at 0.

    input_ids     S  u1 a1' u2 a2' u3 a3  a2  a1
    position_ids  0  1  2   3  4   5  6   4   2
    parent        -  0  1   2  3   4  5   3   1

Labels are the split rows' own, unshifted: `labels[i]` is predicted from the logits of i's parent (i - 1 except
at a branch's first token). A node is keyed on (token, label, loss weight), so rows share a token only where they
agree on it; a row whose shared prefix would hold a trained token of another row starts a new tree, so every
trained token of the split rows is trained exactly once, in exactly its own context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ftdata.types import IGNORE_INDEX

__all__ = ["Tree", "grow", "parents", "paths", "visible"]

Key = tuple[int, int, float]


@dataclass(frozen=True, slots=True)
class Tree:
    """One tree of a record's rows: its unique tokens in pre-order, their labels, depths and loss weights
    (None: no row of it had any), and how many split rows it holds."""

    ids: list[int]
    labels: list[int]
    positions: list[int]
    weights: list[float] | None
    rows: int


class _Trie:
    """The prefix trie of some rows, keyed per node on (token, label, weight)."""

    def __init__(self) -> None:
        self.keys: list[Key] = []
        self.children: list[dict[Key, int]] = [{}]  # node 0 is the (unwritten) root above every first token
        self.rows = 0
        self.weighted = False

    @property
    def size(self) -> int:
        return len(self.keys)

    def novel(self, keys: Sequence[Key]) -> int | None:
        """How many nodes `keys` would add, or None where its shared prefix holds a trained token (it would be
        trained twice)."""
        node, shared = 0, 0
        for key in keys:
            child = self.children[node].get(key)
            if child is None:
                break
            if key[1] != IGNORE_INDEX:
                return None
            node, shared = child, shared + 1
        return len(keys) - shared

    def add(self, keys: Sequence[Key]) -> None:
        node = 0
        for key in keys:
            child = self.children[node].get(key)
            if child is None:
                child = len(self.children)
                self.children[node][key] = child
                self.children.append({})
                self.keys.append(key)
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


def grow(rows: Sequence[tuple[list[int], list[int]]], *, max_length: int) -> list[Tree]:
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


def parents(positions: Sequence[int]) -> list[int]:
    """Each token's parent in a pre-order tree row (its `position_ids`): the last earlier token one level up,
    -1 at a root (position 0).

        parents([0, 1, 2, 1, 0, 1]) -> [-1, 0, 1, 0, -1, 4]
    """
    last: list[int] = []  # last[d]: the latest token at depth d
    out = []
    for i, depth in enumerate(positions):
        if depth > len(last):
            raise ValueError(f"position_ids jump from {len(last) - 1} to {depth} at token {i}: not a tree row")
        del last[depth:]
        out.append(last[depth - 1] if depth else -1)
        last.append(i)
    return out


def visible(positions: Sequence[int]) -> list[list[int]]:
    """The tokens each token of a tree row sees (its ancestors and itself), from its parents: the reference
    that `ftdata.train.tree`'s attention mask is tested against."""
    up = parents(positions)
    out: list[list[int]] = []
    for i in range(len(positions)):
        seen = [] if up[i] < 0 else list(out[up[i]])
        out.append([*seen, i])
    return out


def paths(ids: Sequence[int], labels: Sequence[int], positions: Sequence[int]) -> list[tuple[list[int], list[int]]]:
    """A tree row as plain rows again, for a model that cannot attend along a tree: one row per leaf (its
    path from the root), each trained token trained in the first row that holds it, rows that train nothing
    dropped. Every trained token keeps exactly its context.

        paths([1, 2, 3, 4], [-100, -100, 3, 4], [0, 1, 2, 2]) -> [([1, 2, 3], [-100, -100, 3]), ([1, 2, 4], [-100, -100, 4])]
    """
    up = parents(positions)
    n = len(positions)
    trained = [False] * n
    out = []
    for leaf in range(n):
        if leaf + 1 < n and positions[leaf + 1] == positions[leaf] + 1:
            continue  # not a leaf: the next token is its child
        path = []
        node = leaf
        while node >= 0:
            path.append(node)
            node = up[node]
        path.reverse()
        row_labels = []
        for node in path:
            take = labels[node] != IGNORE_INDEX and not trained[node]
            trained[node] = trained[node] or take
            row_labels.append(labels[node] if take else IGNORE_INDEX)
        if any(label != IGNORE_INDEX for label in row_labels):
            out.append(([ids[node] for node in path], row_labels))
    return out
