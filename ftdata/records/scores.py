"""Scores in preference data: what the data's own ratings say about which side it prefers.

Two forms: a pair's ``score_chosen``/``score_rejected`` columns (HuggingFaceH4/ultrafeedback_binarized),
and OpenBMB UltraFeedback's raw ``completions: [{response, overall_score, ...}]``, four rated answers
to one instruction, of which a pair takes the best and the worst.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ftdata.records.formats import Columns, _unwrap
from ftdata.errors import Location, RecordError, UnusableRecord
from ftdata.outcomes import RejectCode
from ftdata.types import Pair

SCORE = "overall_score"  # the rating of one UltraFeedback completion


def number(value: Any, *, location: Location, field: str) -> float:
    """A score: a finite number (not a bool).

    Raises:
        RecordError: anything else, naming the field.
    """
    value = _unwrap(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordError(f"must be a finite number, got {value!r:.40}", location=location, field=field)
    return float(value)


def with_scores(pair: Pair, row: Mapping[str, Any], columns: Columns, *, location: Location) -> Pair:
    """`pair` with the row's `score_chosen` and `score_rejected`, when it has them.

    Raises:
        UnusableRecord: the scores tie (no_preference).
        RecordError: one score without the other, a score that is no number, or the rejected side
            scoring higher (the columns contradict each other).
    """
    high_col, high = columns.find(row, "score_chosen", location=location)
    low_col, low = columns.find(row, "score_rejected", location=location)
    if high_col is None and low_col is None:
        return pair
    if high_col is None or low_col is None:
        missing = "score_chosen" if high_col is None else "score_rejected"
        what = "is missing while the other score is given; give both or neither"
        raise RecordError(what, location=location, field=missing)
    high, low = number(high, location=location, field=high_col), number(low, location=location, field=low_col)
    if high == low:
        raise UnusableRecord(
            f"chosen and rejected both score {high:g}; neither is preferred",
            location=location,
            field=high_col,
            code=RejectCode.NO_PREFERENCE,
        )
    if high < low:
        raise RecordError(
            f"the chosen side scores {high:g}, below the rejected side's {low:g}; the columns contradict each other: "
            "check which side is which",
            location=location,
            field=high_col,
        )
    return replace(pair, chosen_score=high, rejected_score=low)


def best_and_worst(
    completions: Sequence[Any], *, location: Location, field: str
) -> tuple[tuple[int, float], tuple[int, float]]:
    """The (index, score) of the first best-scored and of the first worst-scored completion.

    HuggingFaceH4's binarization takes the best against a random other one; the worst is the
    deterministic choice with the widest margin.

    Raises:
        UnusableRecord: every completion scores the same (no_preference).
        RecordError: fewer than two completions, or one without a numeric `overall_score`.
    """
    if len(completions) < 2:
        what = f"holds one completion; a pair needs two with different {SCORE}"
        raise RecordError(what, location=location, field=field)
    scores = [number(c.get(SCORE), location=location, field=f"{field}[{j}].{SCORE}") for j, c in enumerate(completions)]
    best, worst = scores.index(max(scores)), scores.index(min(scores))
    if best == worst:  # every score ties: max and min are both the first
        raise UnusableRecord(
            f"every completion scores {scores[0]:g}; neither is preferred",
            location=location,
            field=field,
            code=RejectCode.NO_PREFERENCE,
        )
    return (best, scores[best]), (worst, scores[worst])
