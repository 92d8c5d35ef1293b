"""Decontamination: word n-gram overlap against evaluation files in any format ftdata reads."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from support import DATASETS

from ftdata.errors import ConfigError, Location, ReaderError
from ftdata.records.formats import to_examples
from ftdata.mix.contamination import EvalIndex, Overlap, count_by_eval_file, find_overlaps
from ftdata.io.readers import read_records

ALPACA = DATASETS / "alpaca" / "llamafactory_alpaca_en_demo.json"
GLAIVE = DATASETS / "sharegpt" / "llamafactory_glaive_toolcall_en_demo.json"
needs_data = pytest.mark.skipif(not ALPACA.is_file(), reason=f"shared datasets not found at {DATASETS}")
EVAL = Location("eval.jsonl", line=1)


def test_an_ngram_of_the_eval_text_is_found_after_normalising() -> None:
    index = EvalIndex([(EVAL, "What is the capital of France? Answer: Paris, of course.")], n=4)
    assert index.ngrams == 7  # 10 words -> 7 four-grams
    assert index.check("Q: WHAT is  the capital of Spain?") == Overlap(EVAL, "what is the capital")
    assert index.check("…answer: paris, of course!") == Overlap(EVAL, "answer paris of course")
    assert index.check("answer paris of") is None  # three words: one 3-word gram, not a 4-gram of the eval text
    assert index.check("the capital is Paris") is None
    assert index.check("") is None


def test_a_short_eval_record_matches_only_a_text_that_is_exactly_it() -> None:
    index = EvalIndex([(EVAL, "Yes."), (Location("eval.jsonl", line=2), "")], n=13)
    assert index.ngrams == 1
    assert index.check("  yes ") == Overlap(EVAL, "yes")
    assert index.check("Yes, I think so.") is None
    with pytest.raises(ConfigError, match="ngram must be an integer >= 1, got ngram=0"):
        EvalIndex([], n=0)
    assert EvalIndex([]).check("anything at all") is None


def test_the_first_eval_record_with_an_ngram_names_it() -> None:
    second = Location("eval.jsonl", line=2)
    index = EvalIndex([(EVAL, "one two three four"), (second, "zero one two three four five")], n=3)
    assert index.check("a one two three b") == Overlap(EVAL, "one two three")
    assert index.check("four five six") is None
    assert index.check("three four five") == Overlap(second, "three four five")


def _write_eval(folder: Path) -> Path:
    """An eval file as people keep them: gzipped JSONL, an Alpaca record, a messages record and
    an MMLU-style row that is no SFT shape (its string fields are indexed)."""
    alpaca = json.loads(ALPACA.read_text(encoding="utf-8"))
    rows = [
        alpaca[12],
        {"messages": [{"role": "user", "content": "Name the three primary colours of light used by screens."},
                      {"role": "assistant", "content": "Red, green and blue are the primary colours of light."}]},
        {"question": "Which planet in our solar system has the longest day measured in Earth days?",
         "choices": ["Mercury", "Venus", "Mars", "Jupiter"], "answer": 1},
    ]  # fmt: skip
    path = folder / "evals.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def _train_texts(path: Path) -> list[tuple[Location, str]]:
    """Each record's text as a chat shows it (an instruction's input joined to its user turn)."""
    return [
        (loc, "\n".join(m["content"] for e in to_examples(row, loc) for m in e.chat_messages())) for loc, row in read_records(path)
    ]


@needs_data
def test_a_planted_eval_overlap_is_found_among_real_records(tmp_path: Path) -> None:
    evals = _write_eval(tmp_path)
    index = EvalIndex.from_files([evals], n=13)
    assert [str(loc) for loc in index.locations] == [f"{evals}:{i}" for i in (1, 2, 3)]
    alpaca_record = json.loads(ALPACA.read_text(encoding="utf-8"))[12]
    planted = [
        (Location("planted.jsonl", line=1), "Here is something I read:\n" + alpaca_record["output"][:400]),
        (Location("planted.jsonl", line=2), "Quiz. WHICH planet in our solar system has the longest day measured in Earth days? Venus."),
    ]  # fmt: skip
    hits = list(find_overlaps([*_train_texts(GLAIVE), *planted], index))
    assert [(key, overlap.eval_location) for key, overlap in hits] == [
        (planted[0][0], Location(str(evals), line=1)), (planted[1][0], Location(str(evals), line=3)),
    ]  # fmt: skip
    assert hits[1][1].ngram == "which planet in our solar system has the longest day measured in earth"  # the first 13 words
    assert count_by_eval_file(o for _, o in hits) == {str(evals): 2}


@needs_data
def test_every_alpaca_record_overlaps_itself_and_one_glaive_record_shares_a_phrase() -> None:
    index = EvalIndex.from_files([ALPACA])
    assert len(index.locations) == 999
    alpaca = _train_texts(ALPACA)
    hits = list(find_overlaps(alpaca, index))
    assert [key for key, _ in hits] == [loc for loc, _ in alpaca]
    # the first eval record with the n-gram is named: the record itself, or one before it (alpaca repeats some)
    assert all(overlap.eval_location.index <= key.index for key, overlap in hits)
    assert sum(overlap.eval_location == key for key, overlap in hits) > 900
    # a stock phrase about machine learning, in glaive[14] and alpaca[255]: 13 words in common
    assert list(find_overlaps(_train_texts(GLAIVE), index)) == [(
        Location(str(GLAIVE), index=14),
        Overlap(Location(str(ALPACA), index=255), "that can learn from data and make predictions or decisions based on that"),
    )]  # fmt: skip


def test_an_unreadable_eval_file_names_itself(tmp_path: Path) -> None:
    bad = tmp_path / "eval.jsonl"
    bad.write_text('{"question": "fine"}\n{broken\n', encoding="utf-8")
    with pytest.raises(ReaderError, match=r"eval\.jsonl:2"):
        EvalIndex.from_files([bad])
