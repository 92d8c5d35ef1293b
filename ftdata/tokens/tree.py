"""Tree rows: the rows of one record (a record split by history=inference) as one prefix tree (`grow`), and the
rows of records that start alike (a harness's system prompt and tool schemas) as one tree across them (`share`).

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
at a branch's first token). Rows share a token where they agree on it and on everything before it (and on its
loss weight); a shared token is trained where one of its rows trains it (the others hold it as context, the same
token after the same prefix). A row whose shared prefix holds a token that another row trains too starts a tree
of its own (`grow`) or branches off before that token (`share`), so every trained token of the split rows is
trained exactly once, in exactly its own context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ftdata.types import IGNORE_INDEX

__all__ = ["Shared", "Tree", "grow", "parents", "paths", "share", "visible"]


@dataclass(frozen=True, slots=True, eq=False)
class Tree:
    """One tree of a record's rows: its unique tokens in pre-order, their labels, depths and loss weights
    (None: no row of it had any), and how many split rows it holds.

    The columns are numpy arrays (int32 ids, labels and depths; float64 weights), as the build writes them: the
    trees of 200 agent examples held 4 million tokens, and as Python ints they were made and read back at
    ~160 ns a value (2.6 s of a 20 s build). Two trees are equal where every column holds the same values, so a
    tree compares equal to one written with lists."""

    ids: np.ndarray
    labels: np.ndarray
    positions: np.ndarray
    weights: np.ndarray | None
    rows: int

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tree):
            return NotImplemented
        columns = ("ids", "labels", "positions", "weights")
        return self.rows == other.rows and all(_same(getattr(self, c), getattr(other, c)) for c in columns)

    @property
    def trained(self) -> int:
        """Its tokens that carry loss."""
        return int(np.count_nonzero(self.labels != IGNORE_INDEX))

    @property
    def first_trained(self) -> bool:
        """Whether its first token carries loss (packing masks it, as a packed row's first token)."""
        return bool(len(self.labels)) and int(self.labels[0]) != IGNORE_INDEX

    __hash__ = None  # type: ignore[assignment]  # arrays are not hashable: neither is a tree (as the dataclass had it)


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Two columns hold the same values (None only as the other's None)."""
    return a is b if a is None or b is None else np.array_equal(a, b)


class _Grown:
    """Rows merged into one tree, row by row: each row hangs from the earlier row it shares the longest prefix
    with (tokens and weights equal), its own tokens from there on written once; a shared token is trained where
    any of its rows trains it."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []  # per row: its (token, label, weight) keys, shape (n, 3)
        self.attach: list[tuple[int, int]] = []  # per row: (the row it hangs from, depth of its first own token)
        self.size = 0
        self.weighted = False  # a row of it has loss weights
        self._trains: list[tuple[int, int]] = []  # (row, depth) of each shared label a later row set: for `undo`

    def shared(self, keys: np.ndarray, among: range | None = None, *, branch: bool = False) -> tuple[int, int] | None:
        """(row, depth): the earlier row (of `among`, None: any) this one shares its longest prefix of tokens (and
        weights) with, and that prefix's length. Where a token of that prefix is trained by both (it would be trained
        once for two): None, or with `branch` the prefix before the first such token (the row branches off there and
        trains its own copy of it, as its split row does)."""
        best, depth = -1, 0
        for r in range(len(self.rows)) if among is None else among:
            other = self.rows[r]
            n = min(len(other), len(keys))
            same = (other[:n, 0] == keys[:n, 0]) & (other[:n, 2] == keys[:n, 2])
            lcp = n if same.all() else int(np.argmin(same))
            if lcp > depth:
                best, depth = r, lcp
        both = [k for k, owner in self._trained(keys, best, depth) if self.rows[owner][k, 1] != IGNORE_INDEX]
        if both and not branch:
            return None
        depth = min(both, default=depth)
        return (best if depth else -1), depth

    def _trained(self, keys: np.ndarray, row: int, depth: int) -> list[tuple[int, int]]:
        """(depth, owning row) of each token of the shared prefix (`row`'s path up to `depth`) that `keys` trains."""
        out = []
        for k in np.flatnonzero(keys[:depth, 1] != IGNORE_INDEX).tolist():
            owner = row
            while self.attach[owner][1] > k:
                owner = self.attach[owner][0]
            out.append((k, owner))
        return out

    def add(self, keys: np.ndarray, at: tuple[int, int]) -> None:
        row, depth = at
        for k, owner in self._trained(keys, row, depth):  # a shared token this row trains: trained in the tree
            self.rows[owner][k, 1] = keys[k, 1]
            self._trains.append((owner, k))
        while row >= 0 and self.attach[row][1] >= depth > 0:  # the node at depth - 1 belongs to an ancestor row
            row = self.attach[row][0]
        self.rows.append(keys)
        self.attach.append((row if depth else -1, depth))
        self.size += len(keys) - depth

    def mark(self) -> tuple[int, int, int]:
        """What `undo` goes back to: the rows, the shared labels set and the size now."""
        return len(self.rows), len(self._trains), self.size

    def undo(self, mark: tuple[int, int, int]) -> None:
        """Take back the rows added since `mark` (their rows, attachments and the shared labels they set)."""
        rows, trains, self.size = mark
        for owner, k in self._trains[trains:]:  # `shared` let a row train only a label no earlier row trained
            self.rows[owner][k, 1] = IGNORE_INDEX
        del self.rows[rows:], self.attach[rows:], self._trains[trains:]

    def tree(self, weighted: bool) -> Tree:
        """Pre-order: a row's own tokens, then the rows that hang from them, deepest first, each in the order
        it was added (a node's first child is the row that wrote it on)."""
        hanging: dict[tuple[int, int], list[int]] = {}
        for j, (row, depth) in enumerate(self.attach):
            hanging.setdefault((row, depth), []).append(j)
        # per row: the depths that rows hang from, shallowest first (a walk over every token of every row, asking
        # at each, was 0.4 s of a 5 s build of 40 agent examples)
        forks: dict[int, list[int]] = {}
        for row, depth in sorted(hanging):
            forks.setdefault(row, []).append(depth)
        parts: list[np.ndarray] = []
        depths: list[np.ndarray] = []
        stack = [(j, 0) for j in reversed(hanging.get((-1, 0), []))]
        while stack:
            j, start = stack.pop()
            parts.append(self.rows[j][start:])
            depths.append(np.arange(start, len(self.rows[j])))
            for d in forks.get(j, ()):  # pushed shallowest first: popped deepest first
                if start < d <= len(self.rows[j]):
                    stack.extend((k, d) for k in reversed(hanging[(j, d)]))
        keys, positions = np.concatenate(parts), np.concatenate(depths)
        weights = keys[:, 2].copy() if weighted else None
        ids, labels = keys[:, 0].astype(np.int32), keys[:, 1].astype(np.int32)
        return Tree(ids, labels, positions.astype(np.int32), weights, len(self.rows))


def _keys(row: tuple[list[int], list[int]]) -> np.ndarray:
    """A row as its (token, label, weight) keys, weight 1 where it has no loss weights."""
    ids, labels = row
    weights = getattr(row, "weights", None)
    return np.column_stack([ids, labels, weights if weights is not None else np.ones(len(ids))]).astype(np.float64)


def grow(rows: Sequence[tuple[list[int], list[int]]], *, max_length: int) -> list[Tree]:
    """The rows of one record as the fewest trees this greedy pass finds, each of at most `max_length` unique
    tokens (a row is never cut: each row is at most `max_length` already). A row with loss weights
    (`masking.WeightedRow`) keeps them, and shares only tokens of equal weight.

        grow([([1, 2, 3], [-100, -100, 3]), ([1, 2, 4], [-100, -100, 4])], max_length=8)
        -> [Tree(ids=[1, 2, 3, 4], labels=[-100, -100, 3, 4], positions=[0, 1, 2, 2], weights=None, rows=2)]
    """
    trees: list[tuple[_Grown, list[bool]]] = []  # each tree and whether a row of it has loss weights
    for row in rows:
        weights = getattr(row, "weights", None)
        keys = _keys(row)
        fits = [
            (k, at)
            for k, (grown, _) in enumerate(trees)
            if (at := grown.shared(keys)) is not None and grown.size + len(keys) - at[1] <= max_length
        ][:1]
        if not fits:
            trees.append((_Grown(), [False]))
            fits = [(len(trees) - 1, (-1, 0))]
        ((k, at),) = fits
        trees[k][0].add(keys, at)
        trees[k][1][0] |= weights is not None
    return [grown.tree(weighted[0]) for grown, weighted in trees]


@dataclass(frozen=True, slots=True)
class Shared:
    """A tree of the rows of one or more records (`share`): the tree, and those records (indices into its input,
    ascending)."""

    tree: Tree
    records: tuple[int, ...]


def share(records: Sequence[Sequence[tuple[list[int], list[int]]]], *, max_length: int) -> list[Shared]:
    """The rows of `records` (each record's rows) as trees of at most `max_length` unique tokens, records that start
    with the same tokens (a harness's system prompt and tool schemas) sharing one tree, so that prefix is forwarded
    once for them all. A record is never parted: its rows go whole into one shared tree, or, where they do not fit
    one tree, into its own trees (`grow`). Records are taken in the order of their first row's tokens, and a record
    joins the tree being grown when its first row shares at least one token with the record before it and all its
    rows fit; else that tree is closed and the record starts the next. A token is shared only where it and everything
    before it are equal (and its loss weight); where two rows train the same token after the same prefix (a record
    and its copy), the later branches off before it and trains its own copy, as its split row does. So each trained
    token of every split row is trained exactly once, in exactly its own context. Trees come in the order of their
    first record.

        share([[([1, 2, 3], [-100, -100, 3])], [([1, 2, 4], [-100, -100, 4])]], max_length=8)
        -> [Shared(Tree([1, 2, 3, 4], [-100, -100, 3, 4], [0, 1, 2, 2], None, 2), records=(0, 1))]
    """
    out: list[Shared] = []
    grown, members, last = _Grown(), list[int](), 0  # the tree being grown, its records, its last record's first row
    for r in sorted((r for r in range(len(records)) if records[r]), key=lambda r: list(records[r][0][0])):
        keys = [_keys(row) for row in records[r]]
        start = len(grown.rows)
        if not (members and _joined(grown, keys, max_length, after=last)):
            if members:
                out.append(Shared(grown.tree(grown.weighted), tuple(sorted(members))))
            grown, members, start = _Grown(), [], 0
            if not _joined(grown, keys, max_length, after=None):  # does not fit one tree: trees of its own
                out.extend(Shared(tree, (r,)) for tree in grow(records[r], max_length=max_length))
                continue
        grown.weighted |= any(getattr(row, "weights", None) is not None for row in records[r])
        members.append(r)
        last = start
    if members:
        out.append(Shared(grown.tree(grown.weighted), tuple(sorted(members))))
    return sorted(out, key=lambda s: s.records[0])


def _joined(grown: _Grown, keys: list[np.ndarray], max_length: int, *, after: int | None) -> bool:
    """Add one record's rows (`keys`) to `grown` if they all fit in `max_length` (True), else leave it as it was.
    `after`: the first row they may hang from (the record before's first; None: any), and the first must hang."""
    mark = grown.mark()
    for n, row in enumerate(keys):
        at = grown.shared(row, among=None if after is None else range(after, len(grown.rows)), branch=True)
        if at is None or grown.size + len(row) - at[1] > max_length or (n == 0 and after is not None and not at[1]):
            grown.undo(mark)
            return False
        grown.add(row, at)
    return True


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

        paths([1, 2, 3, 4], [-100, -100, 3, 4], [0, 1, 2, 2])
        -> [([1, 2, 3], [-100, -100, 3]), ([1, 2, 4], [-100, -100, 4])]
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
