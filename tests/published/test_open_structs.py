"""A prompt set's object columns keep their structs as Arrow unifies them over the records (verifiers' `info`: `{}`
in one record, `{index, source}` in another), held against `pa.array` of the records' values and against what
`datasets.Dataset.from_list` gives a user; JSON text only where Arrow cannot unify (int and string in one key), noted.
Builds on Qwen2.5's tokenizer; batches of one record put every record in its own batch (the widening path)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow as pa
import pytest
from support import tokenizer

import ftdata
from ftdata.errors import ConfigError
from ftdata.outcomes import NoteCode

QWEN = "qwen2.5-instruct"
INFOS = [{}, {"index": 3, "source": "gsm8k"}, {"index": 4}, {"source": "math", "level": 2.5}]


def _build(tmp_path: Path, infos: list, **options):
    data = tmp_path / "prompts.jsonl"
    rows = [{"question": f"What is {i} + {i}?", "answer": str(2 * i), "info": info} for i, info in enumerate(infos)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ftdata.build(str(data), tokenizer=tokenizer(QWEN), task="prompts", **options), rows


@pytest.mark.parametrize("batch_size", [512, 1])
@pytest.mark.parametrize("infos", [INFOS, INFOS[::-1], [INFOS[1], INFOS[0]]])
def test_an_object_column_is_the_struct_arrow_and_datasets_make_of_the_records(tmp_path: Path, infos, batch_size) -> None:
    built, rows = _build(tmp_path, infos, batch_size=batch_size)
    column = built.dataset.data.column("info")
    arrow = pa.array([r["info"] for r in rows])
    assert column.type == arrow.type and pa.types.is_struct(column.type)
    assert column.to_pylist() == arrow.to_pylist()  # a key a record lacks is null there
    assert built.dataset.features["info"] == datasets.Dataset.from_list(rows).features["info"]
    for row, record in zip(built.dataset["info"], rows):
        assert {k: v for k, v in row.items() if v is not None} == record["info"]
    assert built.report.notes[NoteCode.JSON_TEXT] == 0


def test_a_list_of_objects_unifies_too(tmp_path: Path) -> None:
    data = tmp_path / "p.jsonl"
    rows = [{"prompt": "hi", "calls": [{"name": "a"}]}, {"prompt": "yo", "calls": [{"args": {"x": 1}}, {}]}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    built = ftdata.build(str(data), tokenizer=tokenizer(QWEN), task="prompts", batch_size=1)
    assert built.dataset.data.column("calls").type == pa.array([r["calls"] for r in rows]).type
    assert built.dataset.data.column("calls").to_pylist() == pa.array([r["calls"] for r in rows]).to_pylist()


@pytest.mark.parametrize("batch_size", [512, 1])
def test_values_arrow_cannot_unify_are_json_text_with_a_note(tmp_path: Path, batch_size) -> None:
    infos = [{"index": 1, "source": "a"}, {"index": "two"}]
    with pytest.raises(pa.ArrowInvalid, match="Could not convert 'two'"):
        pa.array(infos)  # Arrow's own refusal
    with pytest.raises(pa.ArrowInvalid):
        datasets.Dataset.from_list([{"info": i} for i in infos])  # and datasets'
    built, _ = _build(tmp_path, infos, batch_size=batch_size)
    assert built.dataset.features["info"] == datasets.Value("string")
    first = {"index": 1, "source": "a"}
    assert [json.loads(text) for text in built.dataset["info"]] == [first, {"index": "two"}]
    assert built.report.notes[NoteCode.JSON_TEXT] == 1
    (text,) = built.report.note_texts[NoteCode.JSON_TEXT]
    # one batch: pa.array's own words; two: unify_schemas' (the first batch was typed before the second came)
    why = "Could not convert 'two'" if batch_size > 1 else "Unable to merge: Field info has incompatible types"
    assert text.startswith(f"column info: Arrow cannot unify its values ({why}"), text
    assert text.endswith("as datasets cannot; stored as JSON text")


def test_a_struct_named_in_reward_columns_still_refuses_a_key_it_lacks(tmp_path: Path) -> None:
    built, _ = _build(
        tmp_path, [{"index": 1}, {"index": 2, "source": "b"}], reward_columns={"info": "struct{index: int}", "answer": "string"},
        on_error="skip",
    )  # fmt: skip
    assert built.dataset["info"] == [{"index": 1}]
    (reject,) = built.report.sample_rejects
    assert "has key 'source' that the column's type struct{index: int} does not" in reject.reason


def test_an_object_column_empty_in_every_record_stays_struct_in_arrow_and_is_refused_as_parquet(tmp_path: Path) -> None:
    """`{}` in every record: Arrow (and datasets) keep `struct<>`; Parquet cannot store a struct with no field, so
    output_format="parquet" says so in one line (before: pyarrow's ArrowNotImplementedError, a traceback)."""
    built, rows = _build(tmp_path, [{}, {}])
    assert built.dataset.data.column("info").type == pa.array([r["info"] for r in rows]).type == pa.struct([])
    with pytest.raises(pa.ArrowNotImplementedError, match="Cannot write struct type 'info' with no child field"):
        built.dataset.to_parquet(str(tmp_path / "direct.parquet"))  # pyarrow's own refusal
    with pytest.raises(ConfigError) as refused:
        _build(tmp_path, [{}, {}], out=str(tmp_path / "out"), output_format="parquet")
    assert str(refused.value) == (
        "column info is {} in every record (struct<>): Parquet cannot store a struct with no field; write Arrow "
        "(output_format='arrow', engine=local or processes), or leave the column out (reward_columns={'info': 'skip'})"
    )
    assert not (tmp_path / "out" / "train.parquet").exists()
