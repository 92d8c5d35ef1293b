"""A recipe built end to end: the same mixture on every engine, exact shares, removals reported, no test leak."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import DATASETS, TOKENIZERS, peak_of

import ftdata
from ftdata.errors import ConfigError, RecordError

needs_data = pytest.mark.skipif(not DATASETS.is_dir(), reason=f"shared datasets not found at {DATASETS}")
ALPACA = DATASETS / "alpaca" / "llamafactory_alpaca_en_demo.json"
GLAIVE = DATASETS / "sharegpt" / "llamafactory_glaive_toolcall_en_demo.json"
LAMINI = DATASETS / "lamini" / "lamini_docs_nested.jsonl"


def write_recipe(folder: Path, **top: Any) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(top, sort_keys=False))
    return path


def three_sources(folder: Path, **top: Any) -> Path:
    """The issue's three shared sources: Alpaca, glaive tool calls (Qwen 2.5 writes them), Lamini Q&A."""
    sources = [
        {"data": str(ALPACA), "name": "alpaca", "weight": 0.5},
        {"data": str(GLAIVE), "name": "glaive", "weight": 0.3, "epochs_max": 3},
        {"data": str(LAMINI), "name": "lamini", "weight": 0.2, "template": "question-answer"},
    ]
    return write_recipe(folder, tokenizer=str(TOKENIZERS / "qwen2.5-instruct"), max_length=1024, on_error="skip", sources=sources, **top)


def rows_digest(dataset: Any) -> list[list[int]]:
    return [list(map(int, r)) for r in dataset["input_ids"]]


@needs_data
def test_a_three_source_recipe_is_the_same_mixture_on_every_engine(tmp_path: Path) -> None:
    recipe = three_sources(tmp_path, mix_by="records", total=600)
    local = ftdata.build(recipe)
    processes = ftdata.build(recipe, engine="processes", num_workers=2, batch_size=64)
    assert rows_digest(local.dataset) == rows_digest(processes.dataset)
    assert local.report.mix == processes.report.mix
    used = {s["source"]: s["used"] for s in local.report.mix}
    assert used == {"alpaca": 300, "glaive": 180, "lamini": 120}  # 600 records at 0.5 / 0.3 / 0.2, exactly


@needs_data
@pytest.mark.parametrize("unit", ["tokens", "trained_tokens"])
def test_shares_in_tokens_are_within_half_a_percent(tmp_path: Path, unit: str) -> None:
    recipe = three_sources(tmp_path, mix_by=unit)
    mix = ftdata.build(recipe).report.mix
    assert mix is not None
    for source in mix:
        assert source[unit]["share"] == pytest.approx(source["target_share"], rel=0.005), source
    glaive = next(s for s in mix if s["source"] == "glaive")
    assert glaive["used"] <= 3 * glaive["available"]  # epochs_max=3


@needs_data
def test_a_planted_duplicate_and_an_eval_overlap_are_removed_and_reported(tmp_path: Path) -> None:
    alpaca = json.loads(ALPACA.read_text())
    mine = tmp_path / "mine.jsonl"
    planted = {"instruction": alpaca[7]["instruction"].upper(), "input": alpaca[7]["input"], "output": "  " + alpaca[7]["output"]}
    mine.write_text("\n".join(json.dumps(r) for r in [{"instruction": "Say hi.", "output": "Hi!"}, planted]) + "\n")
    evals = tmp_path / "eval.jsonl"
    evals.write_text(json.dumps({"question": "q", "answer": alpaca[11]["output"]}) + "\n")
    sources = [{"data": str(ALPACA), "name": "alpaca", "weight": 1}, {"data": str(mine), "name": "mine", "weight": 1}]
    recipe = write_recipe(tmp_path, dedup="exact", decontaminate=[str(evals)], sources=sources, template="alpaca")
    result = ftdata.build(recipe, rejects_path=str(tmp_path / "rejects.jsonl"))
    lines = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    dup = [r for r in lines if r["code"] == "duplicate" and r["location"].startswith(str(mine))]
    over = [r for r in lines if r["code"] == "contaminated"]
    assert [(r["location"], r["stage"]) for r in dup] == [(f"{mine}:2", "mix")]  # (the Alpaca demo repeats 14 of its own)
    assert f"duplicates {ALPACA}[7] (exact)" in dup[0]["reason"] and "source 'mine'" in dup[0]["reason"]
    assert [r["location"] for r in over] == [f"{ALPACA}[11]"]
    assert f"overlaps evaluation record {evals}:1" in over[0]["reason"]
    by_name = {s["source"]: s for s in result.report.mix}  # type: ignore[union-attr]
    assert (by_name["alpaca"]["decontaminated"], by_name["mine"]["deduplicated"]) == (1, 1)
    # everything once: 'mine' has one record left, so alpaca is drawn down to one record too
    assert (by_name["alpaca"]["used"], by_name["mine"]["used"]) == (1, 1)
    assert result.report.not_drawn == by_name["alpaca"]["available"] - 1


@needs_data
def test_no_test_record_reaches_train(tmp_path: Path) -> None:
    # upsampled (glaive repeats to reach its share) and deduplicated: the shared sets repeat some records verbatim
    recipe = three_sources(tmp_path, mix_by="records", total=900, test_size=0.1, dedup="exact")
    built = ftdata.build(recipe).dataset
    train = {tuple(r) for r in built["train"]["input_ids"]}
    test = [tuple(r) for r in built["test"]["input_ids"]]
    assert len(test) > 0 and not any(t in train for t in test)
    assert len(set(test)) == len(test)  # each held-out record once


def test_a_share_no_source_can_meet_fails_before_anything_is_written(tmp_path: Path) -> None:
    small = tmp_path / "small.jsonl"
    small.write_text("\n".join(json.dumps({"instruction": f"q{i}", "output": "a"}) for i in range(3)) + "\n")
    big = tmp_path / "big.jsonl"
    big.write_text("\n".join(json.dumps({"instruction": f"w{i}", "output": "b"}) for i in range(30)) + "\n")
    recipe = write_recipe(tmp_path, template="alpaca", mix_by="records", total=20,
                          sources=[{"data": str(small), "weight": 1}, {"data": str(big), "weight": 1}])  # fmt: skip
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"source 'small' has 3 records but its share of total=20 needs 10: .*epochs_max=4 would do"):
        ftdata.build(recipe, out)
    assert not out.exists()


def test_data_options_beside_a_recipe_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n")
    recipe = write_recipe(tmp_path, sources=[{"data": str(data)}])
    with pytest.raises(ConfigError, match=r"a recipe carries its data options: set max_length in the recipe"):
        ftdata.build(recipe, max_length=64)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(20, 120), min_size=2, max_size=3), weights=st.lists(st.integers(1, 9), min_size=3, max_size=3),
       seed=st.integers(0, 2**16))  # fmt: skip
def test_random_weights_and_sizes_get_their_record_shares(char_tok, tmp_path_factory: Any, sizes: list[int], weights: list[int], seed: int) -> None:
    folder = tmp_path_factory.mktemp("mix")
    sources = []
    for i, n in enumerate(sizes):
        path = folder / f"s{i}.jsonl"
        path.write_text("\n".join(json.dumps({"instruction": f"s{i} q{j}", "output": "ok" * (1 + j % 4)}) for j in range(n)) + "\n")
        sources.append({"data": str(path), "weight": weights[i], "epochs_max": 4})
    recipe = write_recipe(folder, template="alpaca", max_length=512, mix_by="records", seed=seed, sources=sources)
    first = ftdata.build(recipe, tokenizer=char_tok)
    mix = first.report.mix
    assert mix is not None
    used = np.array([s["used"] for s in mix])
    target = np.array(weights[: len(sizes)]) / sum(weights[: len(sizes)]) * used.sum()
    assert np.all(np.abs(used - target) <= 1)  # whole records: each within one record of its share
    assert rows_digest(ftdata.build(recipe, tokenizer=char_tok).dataset) == rows_digest(first.dataset)  # same seed, same mixture


def small_recipe(folder: Path) -> Path:
    for name, n in (("a", 6), ("b", 4)):
        (folder / f"{name}.jsonl").write_text("\n".join(json.dumps({"instruction": f"{name}{i}?", "output": f"{name}{i}!"}) for i in range(n)) + "\n")
    sources = [{"data": "a.jsonl", "weight": 1}, {"data": "b.jsonl", "weight": 1, "template": "question-answer"}]
    return write_recipe(folder, template="alpaca", max_length=256, mix_by="records", sources=sources)


def test_the_cli_builds_surveys_and_previews_a_recipe(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ftdata.cli.app import app

    recipe = small_recipe(tmp_path)
    run = CliRunner().invoke
    built = run(app, ["build", str(recipe), "-o", str(tmp_path / "out"), "--no-color"])
    assert built.exit_code == 0, built.output
    assert "source a        4 draws of 6 records (0 repeats): 50.00% of records" in built.output
    manifest = json.loads((tmp_path / "out" / "build.json").read_text())
    assert (manifest["counts"]["not_drawn"], manifest["counts"]["mix"][0]["not_drawn"]) == (2, 2)
    assert [s["used"] for s in manifest["counts"]["mix"]] == [4, 4]
    lines = (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()
    assert [json.loads(line)["code"] for line in lines] == ["not_drawn", "not_drawn"]
    survey = run(app, ["stats", str(recipe), "--json"])
    assert survey.exit_code == 0, survey.output
    rows = json.loads(survey.output)["sources"]
    assert [(r["source"], r["records"], r["planned"]) for r in rows] == [("a", 6, 4), ("b", 4, 4)]
    shown = run(app, ["preview", str(recipe), "--source", "b", "-n", "1", "--no-color"])
    assert shown.exit_code == 0, shown.output
    assert "### Question:\nb0?" in shown.output and "b.jsonl:1" in shown.output
    wrong = run(app, ["preview", str(recipe), "--source", "9"])
    assert wrong.exit_code == 2 and "has sources 1 (a), 2 (b)" in wrong.stderr
    beside = run(app, ["build", str(recipe), "-o", str(tmp_path / "o2"), "--max-length", "64"])
    assert beside.exit_code == 2 and "a recipe carries its data options: set max_length in the recipe" in beside.stderr


def test_training_data_can_be_a_recipe(tmp_path: Path) -> None:
    """`ftdata train recipe.yaml`: the data step is the same driver; the run keeps the recipe's report."""
    from ftdata.io.resources import load_tokenizer
    from ftdata.train.config import TrainConfig
    from ftdata.train.data import load_splits

    splits = load_splits(TrainConfig(data=str(small_recipe(tmp_path)), max_steps=1), load_tokenizer(None))
    assert splits.train.num_rows == 8
    assert splits.report is not None and [s["used"] for s in splits.report.mix or []] == [4, 4]


# --- read bounds (issue 39): a recipe reads its sources and evaluation sets as a build does ---------

MB = 1 << 20


def _long_line_source(folder: Path, megabytes: int) -> Path:
    """Three records, the second on a line of `megabytes` MiB (written a MiB at a time)."""
    path = folder / "long.jsonl"
    with path.open("wb") as fh:
        fh.write(json.dumps({"instruction": "q1", "output": "a1"}).encode() + b'\n{"instruction": "')
        for _ in range(megabytes):
            fh.write(b"x" * MB)
        fh.write(b'", "output": "a2"}\n' + json.dumps({"instruction": "q3", "output": "a3"}).encode() + b"\n")
    return path


def test_the_share_check_counts_a_source_within_its_read_bounds(tmp_path: Path) -> None:
    """`check_shares` counts each source before any tokenizing. Before: whole lines, whatever the
    recipe's max_line_bytes (a 200 MB line took a recipe build to 596 MB)."""
    from ftdata.mix import load_recipe
    from ftdata.mix.build import check_shares

    long = _long_line_source(tmp_path, 32)
    small = small_recipe(tmp_path)  # a.jsonl: 6 records
    recipe = write_recipe(tmp_path, template="alpaca", mix_by="records", total=12, max_line_bytes=MB, on_error="skip",
                          sources=[{"data": str(long), "weight": 1}, {"data": str(small.parent / "a.jsonl"), "weight": 1}])  # fmt: skip
    raised, peak = peak_of(lambda: pytest.raises(ConfigError, check_shares, load_recipe(recipe)))
    assert raised.match(r"source 'long' has 3 records but its share of total=12 needs 6")
    assert peak < 8 * MB  # a MiB of the line at a time, never its 32 MiB


def test_a_survey_rejects_records_past_the_bound_in_bounded_memory(tmp_path: Path, char_tok: Any) -> None:
    """`ftdata stats recipe.yaml` measures each source within its read bounds: a JSONL line and a CSV
    record past max_line_bytes are one reject each. (The survey read through the run loop before
    too; the CSV source's quoted field of 8 MiB took the old field scanner 150 MiB.)"""
    from ftdata.mix import load_recipe
    from ftdata.mix.survey import survey
    from ftdata.options import RunOptions

    long = _long_line_source(tmp_path, 32)
    field = tmp_path / "field.csv"
    with field.open("wb") as fh:
        fh.write(b'instruction,output\nq1,a1\n"')
        for _ in range(8):
            fh.write(b"x" * MB)
        fh.write(b'",a2\nq3,a3\n')
    sources = [{"data": str(long), "weight": 1}, {"data": str(field), "weight": 1}]
    recipe = write_recipe(tmp_path, template="alpaca", max_line_bytes=MB, on_error="skip", sources=sources)
    rows, peak = peak_of(lambda: survey(load_recipe(recipe), tokenizer=char_tok, run=RunOptions()))
    assert [(r["source"], r["records"], r["rejected"], r["examples"]) for r in rows] == [("long", 3, 1, 2), ("field", 3, 1, 2)]
    assert peak < 8 * MB


def test_an_evaluation_line_past_the_bound_is_a_located_error_not_a_silent_gap(tmp_path: Path, char_tok: Any) -> None:
    """Evaluation sets are read with the build's bounds. A record the reader cannot read would leave
    its n-grams out of the check: the build stops, naming it. Before: read with the default bounds
    (64 MiB a line), and a record past them was indexed as an empty text."""
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(3)))
    evals = tmp_path / "eval.jsonl"
    evals.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n" + json.dumps({"question": "q" * 2000, "answer": "a"}) + "\n")
    recipe = write_recipe(tmp_path, template="alpaca", max_line_bytes=1000, decontaminate=[str(evals)], sources=[{"data": str(data)}])
    with pytest.raises(RecordError) as raised:
        ftdata.build(recipe, tokenizer=char_tok)
    assert str(raised.value) == (
        f"{evals}:2: the line is longer than 1,000 bytes (max_line_bytes), so it was skipped unread; split the record, "
        "or raise max_line_bytes (--max-line-bytes) if it is real"
    )


@given(
    st.lists(st.integers(1, 3), max_size=40),
    st.lists(st.integers(0, 45), max_size=60),
    st.integers(1, 7),
)
def test_the_rows_of_drawn_records_are_each_records_rows_in_draw_order(
    rows_per_record: list[int], drawn: list[int], chunk: int
) -> None:
    """`_rows_of`, filled a few records at a time, against a loop over the draw: a record drawn twice gives its rows
    twice, a record with no rows (or past the last) gives none, whatever the chunk."""
    from ftdata.mix import build

    groups = np.repeat(np.arange(len(rows_per_record)), rows_per_record)
    want = [row for record in drawn for row in np.flatnonzero(groups == record).tolist()]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(build, "_CHUNK", chunk)
        assert build._rows_of(groups, np.asarray(drawn, dtype=np.int64)).tolist() == want


def test_a_recipes_sources_on_one_tokenizer_keep_their_repeated_texts_in_one_memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each source's masker kept texts seen twice in memos of its own (at most 12 MiB of ids and 45 MiB of stretches
    each), so a recipe's memory grew with its sources. Sources on the build's one tokenizer share them: a text once in
    each of two sources is seen twice, and kept. The rows are those of memos apart."""
    import ftdata.mix.build as mix_build
    from ftdata.tokens.masking import Masker

    made: list[list[Any]] = []
    recipe_stages = mix_build.recipe_stages
    monkeypatch.setattr(mix_build, "recipe_stages", lambda *args: made.append(recipe_stages(*args)) or made[-1])
    for name in ("a", "b"):
        record = {"instruction": "Name a colour of the sky at noon.", "output": f"{name}: blue"}
        (tmp_path / f"{name}.jsonl").write_text(json.dumps(record) + "\n")
    sources = [{"data": str(tmp_path / f"{n}.jsonl"), "name": n, "weight": 1} for n in "ab"]
    recipe = write_recipe(tmp_path, sources=sources, template="alpaca")
    shared = ftdata.build(recipe)
    (stages,) = made
    first, second = (stage.masker for stage in stages)
    assert second.repeats is first.repeats and second.stretches is first.stretches
    assert [text for text in first.repeats.kept if "colour of the sky" in text] == ["Name a colour of the sky at noon."]
    monkeypatch.setattr(Masker, "share_memos", lambda self, other: None)
    apart = ftdata.build(recipe)
    assert made[1][1].masker.repeats is not made[1][0].masker.repeats
    assert not [text for text in made[1][0].masker.repeats.kept if "colour of the sky" in text]
    assert rows_digest(apart.dataset) == rows_digest(shared.dataset)


def test_maskers_of_two_backends_keep_memos_of_their_own(smol: Any) -> None:
    """A masker on another backend (a source's own copy of the tokenizer: its own chat template, tokens added) keeps
    memos of its own: such a copy may give the same text other ids. One on the same backend shares them."""
    from ftdata.chat.chat_tokens import copy_tokenizer
    from ftdata.tokens.masking import Masker

    one, copy = Masker(smol), Masker(copy_tokenizer(smol))
    copy.share_memos(one)
    assert copy.repeats is not one.repeats and copy.stretches is not one.stretches
    again = Masker(smol)
    again.share_memos(one)
    assert again.repeats is one.repeats and again.stretches is one.stretches
