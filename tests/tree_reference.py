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
        self.children: list[dict[tuple[int, float], int]] = [
            {}
        ]  # node 0 is the (unwritten) root above every first token
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


def distinct_prefixes(records: Sequence[Sequence[tuple[list[int], list[int]]]]) -> int:
    """The least any exact layout of these rows can forward: their distinct (token, loss weight) prefixes, across
    records (a trie of dicts, each prefix numbered once; nothing shared with `ftdata.tokens.tree`)."""
    prefixes: dict[tuple[int, Key], int] = {}  # (a prefix's number, the next key) -> the longer prefix's number
    for rows in records:
        for row in rows:
            weights = getattr(row, "weights", None) or [1.0] * len(row[0])
            node = 0  # the empty prefix
            for key in zip(row[0], weights):
                node = prefixes.setdefault((node, key), len(prefixes) + 1)
    return len(prefixes)


class _SharedTrie:
    """A prefix trie of several records' rows: a node per (token, weight) under its parent, each row's path of nodes,
    and a copy of a node where a second row trains it (that row goes on below the copy)."""

    def __init__(self) -> None:
        self.keys: list[list] = []  # per node (node n + 1): [token, label, weight]
        self.children: list[list[int]] = [[]]  # per node, node 0 the root: its children in the order written
        self.paths: list[tuple[int, list[int], list[tuple[int, float]]]] = []  # per row: record, nodes, keys
        self.rows = 0
        self.weighted = False

    def walk(self, keys: Sequence[Key], allowed: set[int] | None) -> list[int]:
        """The existing nodes `keys` goes through from the root: the path of the first earlier row (of `allowed`
        records; None: any) that shares the longest prefix of (token, weight) with it, up to a node both it and an
        earlier row train (where `keys` branches off and trains its own copy)."""
        best: list[int] = []
        for record, nodes, row in self.paths:
            if allowed is not None and record not in allowed:
                continue
            n = 0
            while n < min(len(row), len(keys)) and row[n] == (keys[n][0], keys[n][2]):
                n += 1
            if n > len(best):
                best = nodes[:n]
        for k, node in enumerate(best):
            if keys[k][1] != IGNORE_INDEX and self.keys[node - 1][1] != IGNORE_INDEX:
                return best[:k]
        return best

    def add(self, keys: Sequence[Key], record: int, allowed: set[int] | None) -> None:
        path = self.walk(keys, allowed)
        node, nodes = 0, []
        for k, (token, label, weight) in enumerate(keys):
            if k < len(path):
                node = path[k]
                if label != IGNORE_INDEX:
                    self.keys[node - 1][1] = label
            else:
                self.children[node].append(len(self.children))
                node = len(self.children)
                self.children.append([])
                self.keys.append([token, label, weight])
            nodes.append(node)
        self.paths.append((record, nodes, [(token, weight) for token, _, weight in keys]))
        self.rows += 1

    def tree(self) -> Tree:
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        weights: list[float] = []
        stack = [(child, 0) for child in reversed(self.children[0])]
        while stack:
            node, depth = stack.pop()
            token, label, weight = self.keys[node - 1]
            ids.append(token)
            labels.append(label)
            positions.append(depth)
            weights.append(weight)
            stack.extend((child, depth + 1) for child in reversed(self.children[node]))
        return Tree(ids, labels, positions, weights if self.weighted else None, self.rows)


def share_reference(
    records: Sequence[Sequence[tuple[list[int], list[int]]]], *, max_length: int
) -> list[tuple[Tree, tuple[int, ...]]]:
    """`ftdata.tokens.tree.share` from its description, on a trie: records in the order of their first row's
    tokens; a record joins the tree being grown when its first row shares a token with the record before it (its
    rows follow only that record's and its own paths) and all its rows fit in `max_length` nodes; else the tree is
    closed and the record starts the next, or, too long for one, becomes its own trees (`grow_reference`)."""
    import copy

    def joined(trie: _SharedTrie, r: int, allowed: set[int] | None) -> _SharedTrie | None:
        trial = copy.deepcopy(trie)
        for n, row in enumerate(records[r]):
            weights = getattr(row, "weights", None)
            keys = list(zip(row[0], row[1], weights if weights is not None else [1.0] * len(row[0])))
            shared = len(trial.walk(keys, allowed))
            if (n == 0 and allowed is not None and not shared) or len(trial.keys) + len(keys) - shared > max_length:
                return None
            trial.add(keys, r, allowed)
            trial.weighted |= weights is not None
        return trial

    out: list[tuple[Tree, tuple[int, ...]]] = []
    trie, members = _SharedTrie(), []
    for r in sorted((r for r in range(len(records)) if records[r]), key=lambda r: list(records[r][0][0])):
        grown = joined(trie, r, {members[-1], r}) if members else None
        if grown is None:
            if members:
                out.append((trie.tree(), tuple(sorted(members))))
            trie, members = _SharedTrie(), []
            grown = joined(trie, r, None)
            if grown is None:
                out.extend((tree, (r,)) for tree in grow_reference(records[r], max_length=max_length))
                continue
        trie = grown
        members.append(r)
    if members:
        out.append((trie.tree(), tuple(sorted(members))))
    return sorted(out, key=lambda pair: pair[1][0])
