"""The held-out split draws whole records: the pieces of a cut record never land on both sides."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ftdata import ConfigError, prepare


def _records(n: int, long_every: int = 3) -> list[dict]:
    # Every `long_every`-th record is a chat of 4 exchanges, longer than max_length=48: truncation="split"
    # makes 4 conversations of it (one exchange is 39 tokens with the char tokenizer).
    def chat(i: int, exchanges: int) -> dict:
        turns = ({"role": "user", "content": f"q{i:03d}"}, {"role": "assistant", "content": f"<{i:03d}>"})
        return {"messages": [m for _ in range(exchanges) for m in turns]}

    return [chat(i, 4 if i % long_every == 0 else 1) for i in range(n)]


def _record_ids(char_tok, split) -> set[str]:
    """Which records a split holds, read back from the text of its rows (each output names its record)."""
    import re

    return {m for row in split["input_ids"] for m in re.findall(r"q(\d{3})", char_tok.decode(row))} | {
        m for row in split["input_ids"] for m in re.findall(r"<(\d{3})>", char_tok.decode(row))
    }


def test_split_pieces_of_a_record_stay_in_one_split(char_tok):
    result = prepare(_records(12), tokenizer=char_tok, template="question-answer", max_length=48, truncation="split", test_size=0.25)
    ds = result.dataset
    assert result.report.cut  # some records were really cut into pieces
    assert ds["train"].column_names == ["input_ids", "attention_mask", "labels", "record"]  # each row names its record
    train, test = _record_ids(char_tok, ds["train"]), _record_ids(char_tok, ds["test"])
    assert not train & test
    assert not set(ds["train"]["record"]) & set(ds["test"]["record"])  # the record column says so too
    assert train | test == {f"{i:03d}" for i in range(12)}
    assert len(test) == 3  # ceil(0.25 * 12) records, not sequences


def test_test_size_counts_records_and_instances_stay_together(char_tok):
    seeds = [{"instruction": f"q{i:03d}", "instances": [{"input": "a", "output": f"<{i:03d}>"}, {"input": "b", "output": f"<{i:03d}>"}]}
             for i in range(6)]  # fmt: skip
    ds = prepare(seeds, tokenizer=char_tok, template="alpaca", test_size=2).dataset
    assert (len(ds["train"]), len(ds["test"])) == (8, 4)  # 2 records x 2 instances held out
    assert not _record_ids(char_tok, ds["train"]) & _record_ids(char_tok, ds["test"])


def test_test_size_beyond_the_records_is_a_config_error(char_tok):
    with pytest.raises(ConfigError, match=r"test_size=3 of 3 records leaves 0 for training"):
        prepare(_records(3), tokenizer=char_tok, template="question-answer", max_length=48, truncation="split", test_size=3)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 30), long_every=st.integers(1, 4), fraction=st.floats(0.05, 0.6), packing=st.booleans())
def test_splits_are_disjoint_and_cover_every_record(char_tok, n, long_every, fraction, packing):
    assume(math.ceil(fraction * n) < n)  # else a ConfigError, pinned above
    ds = prepare(
        _records(n, long_every), tokenizer=char_tok, template="question-answer", max_length=48, truncation="split",
        test_size=fraction, packing=packing,
    ).dataset  # fmt: skip
    train, test = _record_ids(char_tok, ds["train"]), _record_ids(char_tok, ds["test"])
    assert not train & test
    assert train | test == {f"{i:03d}" for i in range(n)}
