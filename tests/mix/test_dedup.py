"""Dedup: exact by normalised text, near by MinHash LSH; the first occurrence is kept."""

from __future__ import annotations

import json
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import DATASETS

from ftdata.errors import ConfigError, Location
from ftdata.records.formats import to_examples
from ftdata.mix.dedup import Deduplicator, Duplicate, digest, exact_repeats, find_duplicates
from ftdata.mix.normalise import normalise, words
from ftdata.mix.recipe import Dedup
from ftdata.io.readers import read_records

GLAIVE = DATASETS / "sharegpt" / "llamafactory_glaive_toolcall_en_demo.json"
LONG = ("The quick brown fox jumps over the lazy dog and then runs far away into the deep dark forest "
        "where nobody can find it until the next morning when the sun rises over the hills")  # fmt: skip


def test_normalise_folds_width_case_and_whitespace() -> None:
    assert normalise("  Ｈello\n\t WORLD\u00a0 ﬁne ") == "hello world fine"
    assert normalise("Straße") == "strasse"
    assert words("It's 3.5 — “quoted”, ok?") == ["it", "s", "3", "5", "quoted", "ok"]
    assert digest("Hello  World") == digest("hello world\n") != digest("hello, world")
    assert len(digest("x")) == 16


def test_exact_keeps_the_first_and_names_it() -> None:
    items = [("a", "Hello world"), ("b", "HELLO   world"), ("c", "hello world!"), ("d", "Ｈｅｌｌｏ world"), ("e", "hello world!")]
    assert list(find_duplicates(items, how="exact")) == [
        Duplicate("b", "a", Dedup.EXACT, 1.0), Duplicate("d", "a", Dedup.EXACT, 1.0), Duplicate("e", "c", Dedup.EXACT, 1.0),
    ]  # fmt: skip


def test_near_catches_a_one_word_edit_but_not_a_different_text() -> None:
    edited = LONG.replace("morning", "evening")
    items = [(0, LONG), (1, edited), (2, "A completely different sentence about cooking pasta with garlic and oil."),
             (3, edited.upper())]  # fmt: skip
    found = list(find_duplicates(items, how="near", threshold=0.6))
    # 3 repeats 1 exactly, but 1 was removed: 3 is named a near copy of 0, the record kept
    assert [(d.key, d.original, d.how) for d in found] == [(1, 0, Dedup.NEAR), (3, 0, Dedup.NEAR)]
    # 35 words -> 31 shingles each; the edit changes 5: true Jaccard 26 / 36; MinHash estimates it
    assert found[0].jaccard == found[1].jaccard == pytest.approx(26 / 36, abs=0.1)
    assert list(find_duplicates(items, how="near", threshold=0.9)) == [Duplicate(3, 1, Dedup.EXACT, 1.0)]


def test_near_without_datasketch_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasketch", None)
    with pytest.raises(ConfigError, match=r"dedup=near needs datasketch: pip install 'ftdata\[dedup\]' \(or use dedup=exact\)"):
        Deduplicator("near")
    assert Deduplicator("exact").check("a", "x") is None
    with pytest.raises(ConfigError, match="dedup=none removes nothing"):
        Deduplicator("none")
    with pytest.raises(ConfigError, match="dedup must be one of none, exact, near"):
        Deduplicator("fuzzy")


def _texts(path) -> list[tuple[Location, str]]:
    return [(loc, "\n".join(m.content for e in to_examples(row, loc) for m in e.messages)) for loc, row in read_records(path)]


@pytest.mark.skipif(not GLAIVE.is_file(), reason=f"shared datasets not found at {DATASETS}")
@pytest.mark.parametrize("how", ["exact", "near"])
def test_a_planted_duplicate_of_a_glaive_record_is_removed(how: str) -> None:
    records = _texts(GLAIVE)
    rows = json.loads(GLAIVE.read_text(encoding="utf-8"))
    repeated = Counter(json.dumps(r, sort_keys=True) for r in rows)
    # glaive's demo file repeats 35 of its rows verbatim: each repeat is found, after its first
    verbatim = {i for i, r in enumerate(rows) if repeated[json.dumps(r, sort_keys=True)] > 1
                and rows.index(r) != i}  # fmt: skip
    assert len(verbatim) == 35
    planted = Location("planted.jsonl", line=1)
    original = records[5]
    found = list(find_duplicates([*records, (planted, "  " + original[1].upper().replace(" ", "\n  "))], how=how))
    assert found[-1] == Duplicate(planted, original[0], Dedup.EXACT, 1.0)
    assert verbatim <= {d.key.index for d in found[:-1]}
    assert all(d.original.index < d.key.index for d in found[:-1])


@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=60),
    st.integers(0, 1000),
)
def test_exact_repeats_are_the_first_seen_record_of_each_digest(pairs: list[tuple[int, int]], offset: int) -> None:
    """Against a dict of first-seen records: each record after the first of its digest names that first one.
    Digests share their first or second word often (0-3 each), so a sort on one word alone would pair wrongly."""
    ids = np.arange(len(pairs), dtype=np.int64) * 7 + offset  # not positions: the ids travel with the records
    digests = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    first: dict[tuple[int, int], int] = {}
    want = []
    for record, pair in zip(ids.tolist(), pairs):
        if pair in first:
            want.append((record, first[pair]))
        else:
            first[pair] = record
    later, firsts = exact_repeats(ids, digests)
    assert sorted(zip(later.tolist(), firsts.tolist())) == want
