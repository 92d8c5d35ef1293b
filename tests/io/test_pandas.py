"""A pandas DataFrame is a source like a list of records, located by its index label."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support import DATASETS, make_char_tokenizer
from ftdata import RecordError, build_sft_dataset, prepare
from ftdata.io.readers import read_records

pd = pytest.importorskip("pandas")

LAMINI_NESTED = DATASETS / "lamini" / "lamini_docs_nested.jsonl"


@pytest.fixture(scope="module")
def tok():
    return make_char_tokenizer()


def test_rows_are_dicts_located_by_the_index_label() -> None:
    frame = pd.DataFrame({"instruction": ["a", "b"], "output": ["x", "y"]}, index=[17, 40])
    got = [(str(loc), row) for loc, row in read_records(frame)]
    assert got == [
        ("DataFrame[17]", {"instruction": "a", "output": "x"}),
        ("DataFrame[40]", {"instruction": "b", "output": "y"}),
    ]


def test_missing_cells_become_none_and_numpy_scalars_python() -> None:
    frame = pd.DataFrame({"instruction": ["a", "b"], "input": [None, float("nan")], "n": [1, 2]})
    rows = [row for _, row in read_records(frame)]
    assert rows == [{"instruction": "a", "input": None, "n": 1}, {"instruction": "b", "input": None, "n": 2}]
    assert type(rows[0]["n"]) is int


def test_a_frame_builds_like_the_same_list_of_records(tok) -> None:
    records = [
        {"instruction": "Say hi.", "input": None, "output": "Hi!"},
        {"instruction": "Add.", "input": "2 + 2", "output": "4"},
    ]
    from_frame = build_sft_dataset(pd.DataFrame(records), tokenizer=tok, template="alpaca")
    from_list = build_sft_dataset(records, tokenizer=tok, template="alpaca")
    assert from_frame.remove_columns("record").to_list() == from_list.remove_columns("record").to_list()
    assert from_frame["record"] == ["DataFrame[0]", "DataFrame[1]"]  # each row named by its frame label


def test_read_json_lines_of_the_nested_lamini_file_builds_like_the_file(tok, tmp_path) -> None:
    """`pd.read_json(..., lines=True)` leaves `{"0": text}` dicts in the cells; they unwrap as in the file."""
    lines = LAMINI_NESTED.read_text(encoding="utf-8").splitlines(keepends=True)[940:960]
    part = tmp_path / "part.jsonl"
    part.write_text("".join(lines), encoding="utf-8")
    frame = pd.read_json(LAMINI_NESTED, lines=True).iloc[940:960]
    assert frame.loc[945, "question"] == json.loads(lines[5])["question"]  # a {"0": text} cell
    result = prepare(frame, tokenizer=tok, template="question-answer", max_length=4096)
    expected = prepare(part, tokenizer=tok, template="question-answer", max_length=4096)
    assert result.dataset.remove_columns("record").to_list() == expected.dataset.remove_columns("record").to_list()
    assert result.dataset["record"][0] == "DataFrame[940]" and expected.dataset["record"][0] == f"{part}:1"
    # Line 951 of the file (index 950) has an empty question and answer: rejected, named by its label.
    assert [(r.location, r.reason) for r in result.report.sample_rejects] == [
        ("DataFrame[950]", "empty response; remove the record or fill the response")
    ]
    assert [r.location for r in expected.report.sample_rejects] == [f"{part}:11"]
    assert (result.report.source, result.report.records, result.report.sequences) == ("DataFrame", 20, 19)


def test_record_errors_name_the_index_label(tok) -> None:
    frame = pd.DataFrame({"instruction": ["a", "b"], "answer_text": ["x", "y"]}, index=["q1", "q2"])
    with pytest.raises(RecordError, match=r"^DataFrame\[q1\]: field 'output': no response field"):
        build_sft_dataset(frame, tokenizer=tok, template="alpaca")


def test_the_build_cache_tells_frames_with_the_same_columns_apart(tok, tmp_path) -> None:
    one = pd.DataFrame({"instruction": ["a"], "output": ["x"]})
    two = pd.DataFrame({"instruction": ["b"], "output": ["y"]})
    first = prepare(one, tokenizer=tok, cache_dir=str(tmp_path))
    second = prepare(two, tokenizer=tok, cache_dir=str(tmp_path))
    assert first.report.fingerprint != second.report.fingerprint
    assert not second.report.cached
    assert tok.decode(second.dataset[0]["input_ids"]).endswith("user\nb<|im_end|>\n<|im_start|>assistant\ny<|im_end|>\n")


def test_reading_records_never_imports_pandas() -> None:
    code = (
        "import sys; from ftdata.io.readers import read_records; "
        "list(read_records([{'instruction': 'a', 'output': 'b'}])); print('pandas' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert proc.stdout.strip() == "False"
