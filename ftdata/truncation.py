"""Truncation: fit a masked record into `max_length` tokens without losing responses silently.

`keep_response` (default) keeps every response if it can:

    [BOS][ exchange 1 ][ exchange 2 ][ prompt 3 | response 3 ]   too long
    [BOS]              [ exchange 2 ][ prompt 3 | response 3 ]   1. drop oldest exchanges
    [BOS]                          [ompt 3 | response 3 ]        2. then trim the prompt's head
    response 3 alone > max_length  ->  rejected with that reason

Every outcome other than "fits" is reported as `kind: detail`: cut records are kept and
logged, rejected ones are not kept; both land in the rejects file with their reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftdata.errors import RecordError
from ftdata.masking import Tokenized
from ftdata.outcomes import RejectCode
from ftdata.types import IGNORE_INDEX, TruncationPolicy, count_trained


@dataclass(frozen=True, slots=True)
class Truncated:
    """The kept token rows (several for `split`) and, when anything was cut, why."""

    rows: list[tuple[list[int], list[int]]]
    reason: str = ""
    code: RejectCode | None = None  # set exactly when reason is


def truncate(row: Tokenized, *, max_length: int, policy: TruncationPolicy) -> Truncated:
    """Apply `policy` to one record.

    Returns `Truncated` with no rows when the record is rejected (reason says why).

    Raises:
        RecordError: policy `error` and the record is too long.
    """
    ids, labels, n = row.input_ids, row.labels, len(row.input_ids)
    if n <= max_length:
        return Truncated([(ids, labels)])
    over = f"{n} tokens > max_length {max_length}"
    if policy is TruncationPolicy.ERROR:
        raise RecordError(f"{over}; raise max_length or choose another truncation policy", field="max_length")
    if policy is TruncationPolicy.DROP:
        return Truncated([], f"too long: {over} (truncation=drop)", RejectCode.TOO_LONG)
    if policy is TruncationPolicy.SPLIT:
        chunks = [(ids[i : i + max_length], labels[i : i + max_length]) for i in range(0, n, max_length)]
        kept = [c for c in chunks if count_trained(c[1])]
        why = f"split: {over} into {len(chunks)} chunks ({len(chunks) - len(kept)} without response dropped)"
        return Truncated(kept, why, RejectCode.SPLIT if kept else RejectCode.NO_RESPONSE_LEFT)
    keep = max_length - row.prefix
    head_ids, head_labels = ids[: row.prefix], labels[: row.prefix]
    total = count_trained(labels)
    if policy is TruncationPolicy.KEEP_START:
        out = (ids[:max_length], labels[:max_length])
        return _partial(out, total, f"end cut: kept the first {max_length} of {n} tokens", RejectCode.END_CUT)
    if policy is TruncationPolicy.KEEP_END:
        out = (head_ids + ids[n - keep :], head_labels + labels[n - keep :])
        return _partial(out, total, f"start cut: kept the last {keep} of {n} tokens", RejectCode.START_CUT)
    # keep_response: the earliest exchange boundary after which everything fits.
    for dropped, cut in enumerate((row.prefix, *row.cuts)):
        if n - cut <= keep and count_trained(labels[cut:]):
            out = (head_ids + ids[cut:], head_labels + labels[cut:])
            lost = total - count_trained(out[1])
            return Truncated([out], f"oldest turns dropped: {dropped} exchange(s) ({lost} response tokens) to fit {over}", RejectCode.TURNS_DROPPED)
    last = row.cuts[-1] if row.cuts else row.prefix
    first_trained = next((i for i in range(last, n) if labels[i] != IGNORE_INDEX), n)
    if n - first_trained <= keep:
        out = (head_ids + ids[n - keep :], head_labels + labels[n - keep :])
        lost = total - count_trained(out[1])
        kept_exchanges = "only the last exchange, " if row.cuts else ""
        return Truncated([out], f"prompt trimmed: kept {kept_exchanges}cut the prompt's head ({lost} response tokens lost) to fit {over}", RejectCode.PROMPT_TRIMMED)
    why = f"response too long: the response alone is {n - first_trained} tokens > max_length {max_length}"
    return Truncated([], why, RejectCode.RESPONSE_TOO_LONG)


def _partial(out: tuple[list[int], list[int]], total: int, reason: str, code: RejectCode) -> Truncated:
    kept = count_trained(out[1])
    if not kept:
        return Truncated([], f"no response left: {reason.split(': ', 1)[1]}", RejectCode.NO_RESPONSE_LEFT)
    return Truncated([out], f"{reason} ({total - kept} of {total} response tokens lost)", code)
