"""`ftdata.run.stats`: literal token rows -> literal numbers, and agreement with a real build."""

from __future__ import annotations

import numpy as np
import pytest

from support import tokenizer
from ftdata import prepare
from ftdata.run import executors
from ftdata.errors import FtdataError, Location, RecordError
from ftdata.tokens.masking import Tokenized
from ftdata.run.sft import Measured
from ftdata.options import DataOptions, RunOptions
from ftdata.run.stage import Stage
from ftdata.run.stats import CUT, DROPPED, FIT, POLICIES, collect, describe, histogram, summaries
from ftdata.types import Example, Message, Rendered, TruncationPolicy

N = -100


CONV = {"messages": [
    {"role": "system", "content": "S"}, {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
    {"role": "user", "content": "question two"}, {"role": "assistant", "content": "a2"},
]}  # fmt: skip  (72 tokens with the char tokenizer, 3 trained per exchange)


def summarized(tok, **options):
    stage = Stage(tok, DataOptions(**options))
    (stats,) = summaries(stage, stage.run([(Location("t", index=0), CONV)], responses=True, lenient=True))
    return stats


def test_describe_uses_nearest_rank() -> None:
    assert describe(np.array([4, 1, 3, 2])) == {"p50": 2, "p90": 4, "p99": 4, "max": 4, "mean": 2.5}
    assert describe(np.array([], dtype=np.int64)) == {"p50": 0, "p90": 0, "p99": 0, "max": 0, "mean": 0.0}


def test_histogram_has_round_bins_from_min_to_max() -> None:
    assert histogram(np.array([1, 3, 12]), bins=2) == [(0, 10, 2), (10, 20, 1)]
    assert histogram(np.array([20, 25, 201]), bins=12) == [
        (20, 40, 2), (40, 60, 0), (60, 80, 0), (80, 100, 0), (100, 120, 0),
        (120, 140, 0), (140, 160, 0), (160, 180, 0), (180, 200, 0), (200, 220, 1),
    ]  # fmt: skip
    assert histogram(np.array([], dtype=np.int64)) == []


def test_summarize_runs_every_truncation_policy_through_the_builds_truncation(char_tok) -> None:
    stats = summarized(char_tok, max_length=60)
    outcomes = dict(zip([p.value for p in POLICIES], stats.outcomes))
    assert outcomes == {
        "keep_response": (CUT, 3),  # the oldest exchange (3 trained tokens) dropped, the rest re-rendered
        "keep_start": (CUT, 3),  # the first 60 tokens: the second response is lost
        "keep_end": (CUT, 3),  # the same exchange dropped
        "split": (CUT, 0),  # two conversations, each with the system prompt
        "drop": (DROPPED, 6),
    }
    assert (stats.total, stats.response, stats.trained) == (72, 6, 6)
    assert (stats.kept, stats.kept_trained, stats.kept_first_trained) == ((47,), 3, 0)


def test_summarize_fitting_row_and_error_policy(char_tok) -> None:
    fits = summarized(char_tok, max_length=72, truncation="error")
    assert fits.outcomes == ((FIT, 0),) * len(POLICIES) and fits.kept == (72,)
    too_long = summarized(char_tok, max_length=71, truncation="error")
    assert too_long.kept == ()  # a build with truncation=error would stop here


ROWS = [
    {"instruction": "Say hi.", "output": "Hi!"},
    {"instruction": "Count to three.", "output": "One, two, three."},
    {"instruction": "Name a colour.", "input": "A warm one.", "output": "Red."},
    {"instruction": "Skip me.", "output": "no"},
]


def test_collect_agrees_with_a_build() -> None:
    smol = tokenizer(None)
    options = {"template": "alpaca", "filter": "instruction != 'Skip me.'"}
    stats = collect(ROWS, Stage(smol, DataOptions(**options)))
    report = prepare(ROWS, tokenizer=smol, **options).report
    assert (stats.records, stats.filtered, stats.examples) == (4, 1, 3)
    assert (int(stats.total.sum()), int(stats.trained.sum())) == (report.tokens, report.trained_tokens)
    assert stats.epoch is not None and (stats.epoch.sequences, stats.epoch.tokens) == (report.sequences, report.tokens)
    assert stats.to_dict()["formats"] == {"instruction": 3}


def test_collect_counts_responses_apart_from_trained_tokens_for_other_masks() -> None:
    smol = tokenizer(None)
    chat = [{"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"},
        {"role": "user", "content": "bye"}, {"role": "assistant", "content": "bye"},
    ]}]  # fmt: skip
    last = collect(chat, Stage(smol, DataOptions(mask="last_assistant")))
    every = collect(chat, Stage(smol, DataOptions()))
    assert int(last.response[0]) == int(every.trained[0]) > int(last.trained[0])
    everything = collect(chat, Stage(smol, DataOptions(mask="train_on_prompt")))
    assert int(everything.trained[0]) == int(everything.total[0])
    assert int(everything.response[0]) == int(every.trained[0])


def test_collect_epoch_with_test_split_and_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executors, "IN_PROCESS_BELOW", 0)  # a pool even for 30 records
    smol = tokenizer(None)
    rows = ROWS[:3] * 10
    stage = Stage(smol, DataOptions(template="alpaca", test_size=0.2))
    one = collect(rows, stage, RunOptions(batch_size=4))
    two = collect(rows, stage, RunOptions(batch_size=4, engine="processes", num_workers=2))
    assert one.to_dict() == two.to_dict()
    assert one.epoch is not None and one.epoch.train_fraction == 0.8 and one.epoch.sequences == 24
    counted = collect(rows, Stage(smol, DataOptions(template="alpaca", test_size=6)))
    assert counted.epoch is not None and counted.epoch.sequences == 24


def test_collect_errors() -> None:
    smol = tokenizer(None)
    bad = [{"instruction": "no output"}]
    with pytest.raises(RecordError, match=r"<records>\[0\]: field 'output'"):
        collect(bad, Stage(smol, DataOptions(template="alpaca")))
    with pytest.raises(FtdataError, match=r"no record could be measured \(1 read, 0 filtered\); first: <records>\[0\]"):
        collect(bad, Stage(smol, DataOptions(template="alpaca", on_error="skip")))
