"""history=tree: the kept rows of each record of a batch grown into prefix trees (`ftdata.tokens.tree.grow`), once
for every command that counts or shows them, so a build, `ftdata stats` and `ftdata preview` agree on each number:

    record  split rows (kept)     trees    tokens forwarded       trained
    1       3 rows, 137 tokens    1 tree   90 (its unique tokens)  38
    2       1 row,   27 tokens    1 tree   27                      14

A record's rows are all in its batch (the run loop never parts them), so a batch's trees are the build's trees.
Across records (`tree_across_records`, the default) the records of a batch that start with the same tokens (a
harness's system prompt and tool schemas) share a tree as well (`batch_trees`, `ftdata.tokens.tree.share`); a
record's own figures (`record_trees`, what `ftdata preview` shows) are its rows' trees alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ftdata.run.stage import Ran
from ftdata.tokens.tree import Shared, Tree, grow, share

__all__ = ["RecordTrees", "SharedTree", "batch_trees", "record_trees"]


@dataclass(frozen=True, slots=True)
class RecordTrees:
    """One record's kept rows (`rows` of them, `row_tokens` tokens in all) as the trees a build writes."""

    record: int  # its index in the batch
    location: str
    rows: int
    row_tokens: int
    trees: tuple[Tree, ...]

    @property
    def tokens(self) -> int:
        """The tokens its trees forward: each tree's unique tokens."""
        return sum(len(t.ids) for t in self.trees)

    @property
    def trained(self) -> int:
        return sum(t.trained for t in self.trees)

    @property
    def first_trained(self) -> int:
        """Its trees whose first token is trained (packing masks it, as for a packed row's first token)."""
        return sum(t.first_trained for t in self.trees)

    def describe(self) -> str:
        """`its 3 rows are written as 1 prefix tree: 90 unique tokens forwarded (137 in the rows), 38 trained`."""
        trees = f"{len(self.trees)} prefix tree{'s' if len(self.trees) != 1 else ''}"
        return (
            f"its {self.rows} rows are written as {trees}: {self.tokens:,} unique tokens forwarded "
            f"({self.row_tokens:,} in the rows), {self.trained:,} trained (history=tree)"
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "row_tokens": self.row_tokens,
            "trees": len(self.trees),
            "tokens": self.tokens,
            "trained": self.trained,
        }


@dataclass(frozen=True, slots=True)
class SharedTree:
    """One tree a build writes: the tree, the records of the batch whose rows it holds, and their locations."""

    tree: Tree
    records: tuple[int, ...]  # indices in the batch, the first the lowest
    locations: tuple[str, ...]

    @property
    def location(self) -> str:
        """Its records' locations, for the `record` column: `a.json[0]`, or `a.json[0], a.json[4]` for two."""
        return ", ".join(self.locations)


def batch_trees(ran: Ran[Any, Any], *, max_length: int, across: bool) -> list[SharedTree]:
    """The trees a history=tree build writes for the batch `ran`, each of at most `max_length` unique tokens:
    `across`, records that start with the same tokens share one (`tokens.tree.share`); else each record's rows
    alone (`record_trees`). In the order of their first record."""
    by_record = _rows_by_record(ran)
    if not across:
        return [
            SharedTree(tree, (record,), (location,))
            for record, (location, rows) in by_record.items()
            for tree in grow(rows, max_length=max_length)
        ]
    order = list(by_record)
    grown: list[Shared] = share([by_record[r][1] for r in order], max_length=max_length)
    return [
        SharedTree(s.tree, tuple(order[k] for k in s.records), tuple(by_record[order[k]][0] for k in s.records))
        for s in grown
    ]


def _rows_by_record(ran: Ran[Any, Any]) -> dict[int, tuple[str, list[Any]]]:
    """Each record of `ran` that kept rows, in order: its location and its kept rows."""
    by_record: dict[int, tuple[str, list[Any]]] = {}
    for record, item, result in ran.kept():
        by_record.setdefault(record, (item.location, []))[1].extend(result.rows)
    return by_record


def record_trees(ran: Ran[Any, Any], *, max_length: int) -> Iterator[RecordTrees]:
    """Each record of `ran` that kept rows, in order, with its rows grown into trees of at most `max_length`
    unique tokens: what a history=tree build writes for it."""
    for record, (location, rows) in _rows_by_record(ran).items():
        trees = tuple(grow(rows, max_length=max_length))
        yield RecordTrees(record, location, len(rows), sum(len(row[0]) for row in rows), trees)
