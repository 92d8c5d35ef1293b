"""Readers: every source kind, sniffing, and one-line located errors."""

from __future__ import annotations

import json
import string

import pytest
from support import DATASETS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftdata.errors import ConfigError, ReaderError
from ftdata.io.readers import read_records, sniff


def rows(source, **kw):
    return [(str(loc), row) for loc, row in read_records(source, **kw)]


def test_json_array_locations_are_indexes(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[{"a": 1}, {"a": 2}]')
    assert rows(path) == [(f"{path}[0]", {"a": 1}), (f"{path}[1]", {"a": 2})]


def test_pandas_column_dict_becomes_rows(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"question": {"0": "q0", "1": "q1"}, "answer": {"0": "a0", "1": "a1"}}))
    assert [r for _, r in rows(path)] == [{"question": "q0", "answer": "a0"}, {"question": "q1", "answer": "a1"}]


def test_pandas_list_columns_become_rows(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"instruction": ["i0", "i1"], "output": ["o0", "o1"]}))
    assert [r for _, r in rows(path)] == [{"instruction": "i0", "output": "o0"}, {"instruction": "i1", "output": "o1"}]


def test_jsonl_streams_lines_and_skips_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert rows(path) == [(f"{path}:1", {"a": 1}), (f"{path}:3", {"a": 2})]


def test_utf8_bom_is_dropped(tmp_path):
    for name, text in (("d.json", '[{"a": "x"}]'), ("d.jsonl", '{"a": "x"}\n')):
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + text.encode())
        assert [r for _, r in rows(path)] == [{"a": "x"}]


def test_a_key_given_twice_with_the_same_value_is_read_and_nested_objects_are_checked_too(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1, "a": 1, "m": [{"r": "u", "r": "u"}]}\n{"m": [{"r": "u", "r": "v"}]}\n\ufeff{"a": 1}\n')
    it = read_records(path)
    assert next(it)[1] == {"a": 1, "m": [{"r": "u"}]}
    assert str(next(it)[1]) == f"{path}:2: field 'r': key 'r' appears twice with different values ('u' and 'v'); JSON would silently keep the last: remove one"
    with pytest.raises(ReaderError, match=rf"{path}:3:1: invalid JSON: Unexpected UTF-8 BOM"):
        next(it)


def test_invalid_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n  {"a": 1},\n  {"a": }\n]')
    with pytest.raises(ReaderError, match=rf"{path}:3:\d+: invalid JSON: Expecting value"):
        rows(path)


def test_bad_line_in_the_middle_of_jsonl_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n{"a": 2\n{"a": 3}\n')
    it = read_records(path)
    assert next(it)[1] == {"a": 1}
    with pytest.raises(ReaderError, match=rf"{path}:2:\d+: invalid JSON"):
        next(it)


def test_empty_files_are_errors(tmp_path):
    for name in ("e.json", "e.jsonl"):
        path = tmp_path / name
        path.write_text("\n  \n")
        with pytest.raises(ReaderError, match=rf"{path}: file is empty"):
            rows(path)
    path = tmp_path / "empty_array.json"
    path.write_text("[]")
    with pytest.raises(ReaderError, match="JSON array is empty"):
        rows(path)


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": "ok"}\n{"a": "caf\xe9"}\n')
    with pytest.raises(ReaderError, match=rf"{path}:2: not valid UTF-8 \(byte 0xe9"):
        rows(path)
    path = tmp_path / "d.json"
    path.write_bytes(b'[\n{"a": "caf\xe9"}]')
    with pytest.raises(ReaderError, match=rf"{path}:2: not valid UTF-8"):
        rows(path)


def test_unknown_suffix_is_sniffed_or_refused(tmp_path):
    good = tmp_path / "d.dat"
    good.write_text('[{"a": 1}]')
    assert sniff(good) == "json"
    assert sniff(tmp_path / "wiki_demo.txt") == "text"  # as `datasets` reads .txt: one document a line
    lines = tmp_path / "d.data"
    lines.write_text('{"a": 1}\n{"a": 2}\n')
    assert sniff(lines) == "jsonl"
    bad = tmp_path / "d.xml"
    bad.write_text("<a/>")
    with pytest.raises(ReaderError, match=r"unknown file type '\.xml'"):
        rows(bad)


def test_missing_file_and_explicit_reader(tmp_path):
    with pytest.raises(ReaderError, match="no such file"):
        rows(tmp_path / "nope.json")
    path = tmp_path / "d.txt"
    path.write_text('{"a": 1}\n')
    assert [r for _, r in rows(path, reader="jsonl")] == [{"a": 1}]
    with pytest.raises(ConfigError, match="reader must be one of"):
        rows(path, reader="xml")


def test_jsonl_content_in_a_json_file_is_read_as_jsonl():
    got = rows(DATASETS / "chinese" / "belle_eval_set.json")
    assert len(got) == 1000
    assert got[0][0].endswith("belle_eval_set.json:1")
    assert set(got[0][1]) == {"question", "std_answer", "class"}


def test_csv_parquet_dataset_and_lists(tmp_path):
    import datasets

    data = [{"instruction": "i,0", "output": "o\n0"}, {"instruction": "i1", "output": "o1"}]
    ds = datasets.Dataset.from_list(data)
    ds.to_csv(tmp_path / "d.csv", index=False)
    ds.to_parquet(tmp_path / "d.parquet")
    ds.save_to_disk(tmp_path / "saved")
    for source in (tmp_path / "d.csv", tmp_path / "d.parquet", tmp_path / "saved", ds, data):
        assert [r for _, r in rows(source)] == data
    assert rows(datasets.DatasetDict({"train": ds}))[0][0] == "<dataset>[train][0]"


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=30)
records = st.lists(st.fixed_dictionaries({"instruction": text, "output": text}), min_size=1, max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=records, kind=st.sampled_from(["json", "jsonl", "csv", "parquet"]))
def test_readers_round_trip(tmp_path, records, kind):
    import datasets

    path = tmp_path / f"rt.{kind}"
    if kind == "json":
        path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    elif kind == "csv":
        datasets.Dataset.from_list(records).to_csv(path, index=False)
    else:
        datasets.Dataset.from_list(records).to_parquet(path)
    got = [r for _, r in rows(path)]
    if kind == "csv":  # CSV has no null: empty strings come back as empty strings
        got = [{k: v or "" for k, v in r.items()} for r in got]
    assert got == records


def test_printable_alphabet_is_safe_in_csv(tmp_path):
    import datasets

    data = [{"instruction": string.printable.replace("\r", ""), "output": "x"}]
    datasets.Dataset.from_list(data).to_csv(tmp_path / "p.csv", index=False)
    assert [r for _, r in rows(tmp_path / "p.csv")] == data


# --- encodings, delimiters, wrapped JSON (issue 24); compressed input: test_compressed.py ----------


def test_text_that_is_not_utf8_says_how_to_re_encode(tmp_path):
    plain = tmp_path / "latin1.json"
    plain.write_bytes(b'[{"a": "caf\xe9"}]')
    with pytest.raises(ReaderError, match="latin1.json:1: not valid UTF-8 .*; re-save the file as UTF-8"):
        rows(plain)


@pytest.mark.parametrize(
    ("name", "text"),
    [("semi.csv", 'instruction;output\n"a, b";"c; d"\n'), ("tab.tsv", "instruction\toutput\na, b\tc; d\n"),
     ("pipe.csv", "instruction|output\na, b|c; d\n"), ("tab.csv", "instruction\toutput\na, b\tc; d\n")],
)  # fmt: skip
def test_csv_delimiter_is_sniffed_from_the_header(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert [r for _, r in rows(path)] == [{"instruction": "a, b", "output": "c; d"}]


def test_csv_delimiter_option_wins_and_is_checked(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("instruction;output\na;b\n", encoding="utf-8")
    assert [r for _, r in rows(path, delimiter=",")] == [{"instruction;output": "a;b"}]
    from ftdata.options import BuildOptions

    assert BuildOptions(delimiter="tab").data.delimiter == "\t"
    assert BuildOptions(delimiter="\\t").data.delimiter == "\t"
    with pytest.raises(ConfigError, match=r"delimiter must be one character .*got delimiter=';;'"):
        BuildOptions(delimiter=";;")


def test_csv_keeps_crlf_inside_a_quoted_field(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b'instruction,output\r\n"line 1\r\nline 2",b\r\n')
    assert [r for _, r in rows(path)] == [{"instruction": "line 1\r\nline 2", "output": "b"}]


def test_json_wrapped_in_an_object_needs_field(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"data": [{"instruction": "i", "output": "o"}, {"instruction": "j", "output": "p"}]}))
    with pytest.raises(ReaderError, match=r"records are wrapped in an object under 'data' .*read them with field='data'"):
        rows(path)
    assert [r for _, r in rows(path, field="data")] == [{"instruction": "i", "output": "o"}, {"instruction": "j", "output": "p"}]
    with pytest.raises(ReaderError, match=r"field='rows' names no key of the top-level JSON object \(it has 'data'\)"):
        rows(path, field="rows")
    with pytest.raises(ConfigError, match="field='data' picks the records out of a JSON object; reader 'jsonl'"):
        rows(path, field="data", reader="jsonl")
    single = tmp_path / "chat.json"
    single.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}))
    assert len(rows(single)) == 1  # one chat record is not a wrapped list
