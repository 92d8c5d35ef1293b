"""Nested stays nested: a reward column's type, named from its first value (`type_of`), stores that value and reads
back equal through its Arrow type (`arrow_type`; an object as Arrow types it, `run.open_columns`): structs as
structs, lists as lists, whatever the nesting."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftdata.errors import ConfigError, Location
from ftdata.records.reward_types import is_open, parse_kind, type_of, typed
from ftdata.run.open_columns import OpenColumns
from ftdata.run.rows_prompts import arrow_type

HERE = Location("d.jsonl", line=1)
KEYS = st.from_regex(r"[a-z_][a-z0-9_]{0,7}", fullmatch=True)  # ({"0": x} is one pandas cell: read as x)
SCALARS = st.one_of(st.text(max_size=12), st.integers(-2**40, 2**40), st.booleans(), st.floats(allow_nan=False, allow_infinity=False))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, min_size=1, max_size=4), st.dictionaries(KEYS, inner, min_size=1, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(value=VALUES)
def test_a_value_reads_back_through_its_own_type(value) -> None:
    kind = type_of(value)
    assert parse_kind(kind) is not None  # the name it gives is a type reward_columns takes
    stored = typed(value, kind, name="col", location=HERE)
    if is_open(kind):  # Arrow types it: as pa.array does, or (values it cannot unify) as JSON text
        columns = OpenColumns(["col"])
        (back,) = columns.arrays({"col": [stored]})[0]["col"].to_pylist()
        if columns.json:
            assert json.loads(back) == stored
            return
        (back,) = pa.array([stored]).to_pylist()
        assert back == stored or "struct" in kind  # objects in a list: each holds every key of the list's, null or not
        return
    (back,) = pa.array([stored], type=arrow_type(kind)).to_pylist()
    assert back == stored
    if "json" not in kind and "float" not in kind:  # nothing turned into text (nor an int into a float): the value itself
        assert back == value


def test_verl_reward_model_is_an_object_and_a_struct_named_checks_a_later_record() -> None:
    first = {"style": "rule", "ground_truth": "72"}
    assert type_of(first) == type_of({}) == "struct"  # typed by Arrow over the records (tests/published/test_open_structs.py)
    with pytest.raises(Exception, match=r"field 'reward_model': is string \(\"72\"\), the column holds objects"):
        typed("72", "struct", name="reward_model", location=HERE)
    named = "struct{style: string, ground_truth: string}"  # named in reward_columns: checked key by key
    assert typed({"ground_truth": "10"}, named, name="reward_model", location=HERE) == {"style": None, "ground_truth": "10"}
    with pytest.raises(Exception, match=r"field 'reward_model.ground_truth': is int \(10\), the column holds string"):
        typed({"style": "rule", "ground_truth": 10}, named, name="reward_model", location=HERE)


@pytest.mark.parametrize("text", ["struct{a int}", "list[skip]", "struct{a: string", "map<string>", "list[int]x"])
def test_a_type_that_is_no_type_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match=r"is no type; choose one of string, int, float, bool, list\[T\], struct, struct\{KEY: T, \.\.\.\}, json, skip"):
        parse_kind(text)
