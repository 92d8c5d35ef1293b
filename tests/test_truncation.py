"""Truncation policies on literal token rows. Labels: -100 = prompt, other = response."""

from __future__ import annotations

import pytest

from ftdata.errors import RecordError
from ftdata.masking import Tokenized
from ftdata.truncation import truncate
from ftdata.types import TruncationPolicy as T

P = -100
# [BOS] p p R R | p p R R R   (exchange boundary at index 5), BOS kept by every policy.
ROW = Tokenized(list(range(10)), [P, P, P, 3, 4, P, P, 7, 8, 9], cuts=(5,), prefix=1, notes=())


def run(max_length, policy, row=ROW):
    return truncate(row, max_length=max_length, policy=policy)


def test_fits_untouched():
    out = run(10, T.KEEP_RESPONSE)
    assert out.rows == [(ROW.input_ids, ROW.labels)] and out.reason == ""


def test_keep_response_drops_the_oldest_exchange_first():
    out = run(6, T.KEEP_RESPONSE)
    assert out.rows == [([0, 5, 6, 7, 8, 9], [P, P, P, 7, 8, 9])]
    assert out.reason.startswith("oldest turns dropped: 1 exchange(s) (2 response tokens)")


def test_keep_response_then_trims_the_prompt_head():
    out = run(5, T.KEEP_RESPONSE)
    assert out.rows == [([0, 6, 7, 8, 9], [P, P, 7, 8, 9])]
    assert out.reason.startswith("prompt trimmed")


def test_keep_response_rejects_a_response_that_cannot_fit():
    out = run(3, T.KEEP_RESPONSE)
    assert out.rows == []
    assert out.reason == "response too long: the response alone is 3 tokens > max_length 3"


def test_keep_start_and_keep_end():
    start = run(4, T.KEEP_START)
    assert start.rows == [([0, 1, 2, 3], [P, P, P, 3])]
    assert start.reason == "end cut: kept the first 4 of 10 tokens (4 of 5 response tokens lost)"
    end = run(4, T.KEEP_END)
    assert end.rows == [([0, 7, 8, 9], [P, 7, 8, 9])]
    assert end.reason.startswith("start cut: kept the last 3 of 10 tokens")


def test_keep_start_without_any_response_left_is_rejected():
    out = run(3, T.KEEP_START)
    assert out.rows == [] and out.reason.startswith("no response left: kept the first 3")


def test_drop_split_and_error():
    assert run(5, T.DROP).reason == "too long: 10 tokens > max_length 5 (truncation=drop)"
    split = run(4, T.SPLIT)
    assert [ids for ids, _ in split.rows] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    with pytest.raises(RecordError, match="10 tokens > max_length 5; raise max_length"):
        run(5, T.ERROR)


def test_left_and_right_are_classic_aliases():
    assert T.parse("left", name="truncation") is T.KEEP_END
    assert T.parse("right", name="truncation") is T.KEEP_START
