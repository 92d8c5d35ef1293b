"""What a stack trains, compared with the build, row for row: the same token ids, the same trained positions.

A stack's own loader runs in its own venv (`scripts/stacks/read_<stack>.py`) and prints one JSON object a row
(`input_ids` and a 0/1 `loss_mask` as it trains them: for a token-id stack the export read back, for a stack that
tokenizes messages itself its own tokenization of each record). `compare` lines them up with the build's rows:

- token-id stacks: row i of the export against the build's sequence i;
- text stacks (one row per record): against the build's row of that record, or, where history=inference split
  the record into several rows (its template rewrites history), against its last row, which holds the whole
  conversation; the record is reported as split, since the stack trains every turn in one row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ftdata.build.exports.rows import TokenRow

_SHOWN = 40  # characters of text shown either side of a difference


@dataclass
class RowAgreement:
    """One row (or record): where the stack's tokens and trained positions part from the build's."""

    row: int
    record: str | None
    ours_trained: int
    theirs_trained: int
    same_ids: bool
    same_trained: bool
    split: int = 1  # the build's rows for this record (text stacks)
    refused: str | None = None  # the stack's loader refused or failed on the row
    detail: str = ""

    @property
    def agrees(self) -> bool:
        return self.same_ids and self.same_trained and self.refused is None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "agrees": self.agrees}


@dataclass
class Agreement:
    """A stack's rows against the build's: counts and the rows that differ."""

    stack: str
    mode: str
    rows: list[RowAgreement] = field(default_factory=list)

    @property
    def ours_trained(self) -> int:
        return sum(r.ours_trained for r in self.rows)

    @property
    def theirs_trained(self) -> int:
        return sum(r.theirs_trained for r in self.rows)

    @property
    def differing(self) -> list[RowAgreement]:
        return [r for r in self.rows if not r.agrees]

    def summary(self) -> dict[str, Any]:
        differ = self.differing
        return {
            "stack": self.stack,
            "mode": self.mode,
            "rows": len(self.rows),
            "trained_tokens_ftdata": self.ours_trained,
            "trained_tokens_stack": self.theirs_trained,
            "rows_differing": len(differ),
            "ids_differ": sum(not r.same_ids for r in self.rows),
            "trained_positions_differ": sum(r.same_ids and not r.same_trained for r in self.rows),
            "refused": sum(r.refused is not None for r in self.rows),
            "split_records": sum(r.split > 1 for r in self.rows),
        }


def compare_rows(
    stack: str,
    ours: Sequence[TokenRow],
    theirs: Sequence[dict[str, Any]],
    *,
    decode: Callable[[list[int]], str] | None = None,
    mode: str = "export",
) -> Agreement:
    """A token-id stack's rows (as its loader returns them, in order) against the build's sequences."""
    out = Agreement(stack, mode)
    if len(ours) != len(theirs):
        out.rows.append(
            RowAgreement(-1, None, 0, 0, False, False, detail=f"{len(theirs):,} rows loaded, {len(ours):,} exported")
        )
    for i, (row, got) in enumerate(zip(ours, theirs)):
        out.rows.append(_row(i, row, got, decode))
    return out


def compare_records(
    stack: str,
    ours: Sequence[TokenRow],
    theirs: Sequence[dict[str, Any]],
    records: Sequence[str],
    *,
    decode: Callable[[list[int]], str] | None = None,
    mode: str = "records",
) -> Agreement:
    """A text stack's rows (one per record, `records[i]` the record of row i) against the build's rows."""
    by_record: dict[str, list[TokenRow]] = {}
    for row in ours:
        by_record.setdefault(str(row.record), []).append(row)
    out = Agreement(stack, mode)
    for i, (record, got) in enumerate(zip(records, theirs)):
        built = by_record.get(record, [])
        if not built:
            out.rows.append(RowAgreement(i, record, 0, 0, False, False, detail="not in the build"))
            continue
        last = built[-1]
        result = _row(i, last, got, decode)
        result.record, result.split = record, len(built)
        result.ours_trained = sum(r.trained for r in built)
        if len(built) > 1:
            result.detail = (
                f"the build trains this record in {len(built)} rows (its template rewrites history); {stack} trains "
                f"every turn in one; " + result.detail
            ).rstrip("; ")
        out.rows.append(result)
    return out


def _row(i: int, ours: TokenRow, got: dict[str, Any], decode: Callable[[list[int]], str] | None) -> RowAgreement:
    ids, mask = list(got.get("input_ids") or []), [int(v) for v in got.get("loss_mask") or []]
    refused = got.get("refused")
    our_mask = ours.loss_mask
    same_ids = ids == ours.input_ids
    same_trained = same_ids and mask == our_mask
    result = RowAgreement(i, ours.record, ours.trained, sum(mask), same_ids, same_trained, refused=refused)
    if refused and not ids:
        result.detail = f"refused: {refused}"
    elif not same_ids:
        result.detail = _first_difference(ours.input_ids, ids, decode)
    elif not same_trained:
        result.detail = _mask_difference(ours.input_ids, our_mask, mask, decode)
    if refused and ids:
        result.detail = f"refused by default ({refused}); " + result.detail
    return result


def _first_difference(ours: list[int], theirs: list[int], decode: Callable[[list[int]], str] | None) -> str:
    at = next((k for k, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    where = f"token ids part at {at} of {len(ours)} (ftdata) / {len(theirs)} (stack)"
    if decode is None:
        return where
    lo = max(at - 8, 0)
    return f"{where}: ftdata {decode(ours[lo : at + 8])!r} vs stack {decode(theirs[lo : at + 8])!r}"


def _mask_difference(
    ids: list[int], ours: list[int], theirs: list[int], decode: Callable[[list[int]], str] | None
) -> str:
    only_theirs = [k for k, (a, b) in enumerate(zip(ours, theirs)) if b and not a]
    only_ours = [k for k, (a, b) in enumerate(zip(ours, theirs)) if a and not b]
    parts = []
    for label, where in (("trained only by the stack", only_theirs), ("trained only by ftdata", only_ours)):
        if where:
            shown = ""
            if decode is not None:
                kinds: dict[str, int] = {}
                for k in where:
                    text = decode([ids[k]])
                    kinds[text] = kinds.get(text, 0) + 1
                shown = (
                    " (" + ", ".join(f"{t!r} x{n}" for t, n in sorted(kinds.items(), key=lambda kv: -kv[1])[:4]) + ")"
                )
            parts.append(f"{len(where)} tokens {label}{shown}")
    return "; ".join(parts)
