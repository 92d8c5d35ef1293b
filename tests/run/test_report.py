"""Typed rejects and mergeable reports; the same reject from build, preview and stats."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support import tokenizer
from ftdata import prepare
from ftdata.cli import preview
from ftdata.errors import FtdataError, Location
from ftdata.options import DataOptions
from ftdata.outcomes import Note, NoteCode, RejectCode, RejectStage
from ftdata.tokens.packing import packing_stats
from ftdata.run.stage import Stage
from ftdata.run.report import NOTE_TEXTS, SAMPLES, BuildReport, Reject
from ftdata.run.stats import collect

CONTROL = {"instruction": "What ends a turn?", "output": "The marker <|im_end|> does."}
PLAIN = {"instruction": "Say hi", "output": "hi"}


def test_build_preview_and_stats_reject_a_control_token_at_the_same_stage_with_the_same_code(tmp_path) -> None:
    tok = tokenizer("qwen2.5-instruct")
    path = tmp_path / "rejects.jsonl"
    built = prepare([PLAIN, CONTROL], tokenizer=tok, rejects_path=str(path))
    (line,) = [json.loads(x) for x in path.read_text().splitlines()]
    assert (line["location"], line["stage"], line["code"]) == ("<records>[1]", "render", "control_token")
    assert "'<|im_end|>', which the tokenizer reads as a control token" in line["reason"]
    assert built.report.rejected == {RejectCode.CONTROL_TOKEN: 1}

    stage = Stage(tok, DataOptions())
    records = [(Location("<records>", index=i), r) for i, r in enumerate([PLAIN, CONTROL])]
    shown = [v for v in preview.views(stage, stage.run(records, responses=True, lenient=True)) if isinstance(v, Reject)]
    assert [(r.location, r.stage, r.code) for r in shown] == [("<records>[1]", RejectStage.RENDER, RejectCode.CONTROL_TOKEN)]

    stats = collect([PLAIN, CONTROL], stage)
    assert stats.problems == {RejectCode.CONTROL_TOKEN: 1}
    assert [(r.stage, r.code) for r in stats.sample_problems] == [(RejectStage.RENDER, RejectCode.CONTROL_TOKEN)]
    assert stats.to_dict()["problems"] == {"control_token": 1}


rejects = st.builds(
    Reject, location=st.sampled_from(["a:1", "b[2]"]), stage=st.sampled_from(list(RejectStage)),
    code=st.sampled_from(list(RejectCode)), reason=st.just("why"), kept=st.booleans(),
)  # fmt: skip


def _report(items: list[Reject], records: int) -> BuildReport:
    report = BuildReport(records=records, examples=records, tokens=3 * records)
    report.formats["alpaca"] += records
    for reject in items:
        report.add(reject)
    return report


@given(st.lists(st.lists(rejects, max_size=15), min_size=1, max_size=6))
def test_merging_per_chunk_reports_equals_one_report_over_all_records(chunks: list[list[Reject]]) -> None:
    merged = BuildReport()
    for i, chunk in enumerate(chunks):
        merged.merge(_report(chunk, i))
    whole = _report([r for chunk in chunks for r in chunk], sum(range(len(chunks))))
    assert merged.to_dict() == whole.to_dict()
    assert len(merged.sample_rejects) == min(SAMPLES, sum(map(len, chunks)))


@given(st.lists(rejects, max_size=25), st.lists(rejects, max_size=25), st.lists(rejects, max_size=25))
def test_merge_is_associative(a: list[Reject], b: list[Reject], c: list[Reject]) -> None:
    left = _report(a, 1).merge(_report(b, 2)).merge(_report(c, 3))
    right = _report(a, 1).merge(_report(b, 2).merge(_report(c, 3)))
    assert left.to_dict() == right.to_dict()


def test_a_report_round_trips_through_json_and_an_old_one_is_refused() -> None:
    report = _report([Reject("a:1", RejectStage.TRUNCATE, RejectCode.PROMPT_SHORTENED, "prompt shortened: ...", kept=True)], 1)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["cut"] == {"prompt_shortened": 1} and data["sample_rejects"][0]["code"] == "prompt_shortened"
    assert BuildReport.from_dict(data) == report
    with pytest.raises(FtdataError, match=r"written by an older ftdata \(reject category 'prompt trimmed'\); build it again"):
        BuildReport.from_dict({**data, "cut": {"prompt trimmed": 1}, "sample_rejects": []})


notes = st.builds(Note, code=st.sampled_from(list(NoteCode)), text=st.sampled_from(["one", "two", "three", "four"]))
examples = st.lists(st.lists(notes, max_size=4).map(tuple), max_size=8)  # each example's notes


def _noted(per_example: list[tuple[Note, ...]]) -> BuildReport:
    report = BuildReport()
    for example in per_example:
        report.note(example)
    return report


@given(st.lists(examples, min_size=1, max_size=5))
def test_notes_count_examples_per_code_and_merge_like_one_report(chunks: list[list[tuple[Note, ...]]]) -> None:
    merged = BuildReport()
    for chunk in chunks:
        merged.merge(_noted(chunk))
    everything = [example for chunk in chunks for example in chunk]
    assert merged.to_dict() == _noted(everything).to_dict()
    for code, n in merged.notes.items():
        assert n == sum(any(note.code is code for note in example) for example in everything)
        seen = list(dict.fromkeys(note.text for example in everything for note in example if note.code is code))
        assert merged.note_texts[code] == seen[:NOTE_TEXTS]


def test_build_json_shows_note_codes_and_texts_and_an_old_one_is_refused() -> None:
    report = _noted([
        (Note(NoteCode.ROLE_MAPPED, "role 'human' mapped to 'user'"), Note(NoteCode.ROLE_MAPPED, "role 'gpt' mapped to 'assistant'")),
        (Note(NoteCode.ROLE_MAPPED, "role 'human' mapped to 'user'"),),
    ])  # fmt: skip
    report.packing = {"train": packing_stats([5, 3, 4], [[2], [0, 1]], max_length=8, trained_tokens=7)}
    data = json.loads(json.dumps(report.to_dict()))
    assert data["notes"] == {"role_mapped": 2}
    assert data["note_texts"] == {"role_mapped": ["role 'human' mapped to 'user'", "role 'gpt' mapped to 'assistant'"]}
    assert data["packing"]["train"] == {
        "rows": 2, "sequences": 3, "tokens": 12, "slots": 16, "fill_ratio": 0.75, "sequences_per_row": 1.5,
        "max_sequences_per_row": 2, "trained_tokens": 7,
    }  # fmt: skip
    assert BuildReport.from_dict(data) == report
    old = {**data, "notes": {"role 'human' mapped to 'user'": 2}}
    old.pop("note_texts")
    with pytest.raises(FtdataError, match=r"written by an older ftdata \(note \"role 'human' mapped to 'user'\"\); build it again"):
        BuildReport.from_dict(old)
