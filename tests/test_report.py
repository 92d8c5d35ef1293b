"""Typed rejects and mergeable reports; the same reject from build, preview and stats."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support import tokenizer
from ftdata import prepare, preview
from ftdata.errors import FtdataError, Location
from ftdata.options import BuildOptions
from ftdata.outcomes import RejectCode, RejectStage
from ftdata.pipeline import Stage
from ftdata.report import SAMPLES, BuildReport, Reject
from ftdata.stats import collect

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

    stage = Stage(tok, BuildOptions())
    records = [(Location("<records>", index=i), r) for i, r in enumerate([PLAIN, CONTROL])]
    shown = [v for v in preview.views(stage, records) if isinstance(v, Reject)]
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
