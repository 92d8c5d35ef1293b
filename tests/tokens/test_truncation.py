"""Truncation: the record is shortened as a conversation and rendered again (literal, char tokenizer + real files).

The char tokenizer spells one token per byte, so the kept texts below read as what the model sees.
"""

from __future__ import annotations

import json

import pytest
from support import DATASETS, TOKENIZERS, tokenizer

from ftdata.run.stage import Stage
from ftdata.errors import Location, RecordError
from ftdata.options import DataOptions
from ftdata.build.api import prepare
from ftdata.run.stats import collect
from ftdata.types import TruncationPolicy as T

SYS, HEAD = "<s><|im_start|>system\nS<|im_end|>\n", "<|im_start|>"
CONV = {"messages": [
    {"role": "system", "content": "S"}, {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
    {"role": "user", "content": "question two"}, {"role": "assistant", "content": "a2"},
]}  # fmt: skip  (72 tokens)
LAST = f"{SYS}{HEAD}user\n{{}}<|im_end|>\n{HEAD}assistant\na2<|im_end|>\n"


def cut(tok, record, **options):
    """(code, reason, kept texts) of the build's truncation of `record`."""
    stage = Stage(tok, DataOptions(**options))
    ((_, measured),) = stage.measure([(Location("t", index=0), record)])
    result = stage.truncate(measured)
    return result.code, result.reason, [tok.decode(ids) for ids, _ in result.rows]


def test_a_record_that_fits_is_untouched(char_tok):
    code, reason, texts = cut(char_tok, CONV, max_length=72)
    assert (code, reason) == (None, "") and texts[0].startswith(SYS) and texts[0].endswith("a2<|im_end|>\n")


def test_keep_response_drops_the_oldest_exchange_and_keeps_bos_and_system(char_tok):
    code, reason, texts = cut(char_tok, CONV, max_length=60)
    assert code == "turns_dropped"
    assert reason == "oldest turns dropped: 1 exchange(s) (3 response tokens) to fit 72 tokens > max_length 60"
    assert texts == [LAST.format("question two")]


@pytest.mark.parametrize(("prompt_cut", "kept", "chars"), [("end", "question ", 9), ("start", "stion two", 9), ("middle", "q [...] o", 2)])
def test_keep_response_then_shortens_the_prompt_message_where_prompt_cut_says(char_tok, prompt_cut, kept, chars):
    code, reason, texts = cut(char_tok, CONV, max_length=44, prompt_cut=prompt_cut)
    assert code == "prompt_shortened"
    assert reason == (
        f"prompt shortened: cut the {prompt_cut} of the text (kept {chars} of 12 characters of a user message) "
        "after dropping the oldest 1 exchange(s) (3 response tokens) to fit 72 tokens > max_length 44"
    )
    assert texts == [LAST.format(kept)]


def test_keep_response_rejects_a_response_that_cannot_fit_with_the_template(char_tok):
    code, reason, texts = cut(char_tok, CONV, max_length=34)
    assert (code, texts) == ("response_too_long", [])
    assert reason == "response too long: the responses with the template alone do not fit max_length 34 (72 tokens > max_length 34)"
    code, reason, _ = cut(char_tok, CONV, max_length=2)
    assert reason == "response too long: the response alone is 3 tokens > max_length 2"


def test_instruction_records_shorten_instruction_and_input_longest_first(char_tok):
    record = {"instruction": "q" * 30, "input": "i" * 10, "output": "a" * 5}
    code, reason, texts = cut(char_tok, record, max_length=40, template="question-answer")
    assert code == "prompt_shortened"
    assert reason == (
        "prompt shortened: cut the end of the text (kept 1 of 30 characters of a user message, "
        "kept 2 of 10 characters of the input) to fit 77 tokens > max_length 40"
    )
    assert texts == ["<s>### Question:\nq\n\nii\n\n### Answer:\naaaaa</s>"]


def test_keep_end_cuts_the_start_of_the_prompt_then_of_the_response(char_tok):
    code, _, texts = cut(char_tok, CONV, max_length=45, truncation="keep_end")
    assert (code, texts) == ("prompt_shortened", [LAST.format("estion two")])
    record = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a long answer"}]}
    code, reason, texts = cut(char_tok, record, max_length=30, truncation="keep_end")
    assert code == "start_cut"
    assert reason == (
        "start cut: cut the start of the text (kept 0 of 1 characters of a user message, kept 8 of 13 characters of an "
        "assistant message), 5 of 14 response tokens lost, to fit 36 tokens > max_length 30"
    )
    assert texts == [f"<s>{HEAD}user\n<|im_end|>\n{HEAD}assistant\ng answer<|im_end|>\n"]


def test_split_makes_conversations_at_exchange_boundaries_each_with_the_system_prompt(char_tok):
    code, reason, texts = cut(char_tok, CONV, max_length=60, truncation="split")
    assert code == "split" and reason.startswith("split: 72 tokens > max_length 60 into 2 conversations")
    assert texts == [f"{SYS}{HEAD}user\nq1<|im_end|>\n{HEAD}assistant\na1<|im_end|>\n", LAST.format("question two")]


def test_split_leaves_out_an_exchange_that_trains_nothing_instead_of_rejecting_the_record(char_tok):
    """An exchange whose assistant turn has train=false (the data's flag, or a history turn another row of a
    split record trains) is context alone; split keeps the exchanges that train. It used to reject the record
    as having nothing to train."""
    record = {"messages": [dict(m, train=False) if m["content"] == "a1" else m for m in CONV["messages"]]}
    code, reason, texts = cut(char_tok, record, max_length=60, truncation="split")
    assert code == "split" and "into 1 conversations" in reason and "(0 response tokens lost)" in reason
    assert texts == [LAST.format("question two")]


def test_token_level_policies_keep_start_drop_and_error(char_tok):
    code, reason, texts = cut(char_tok, CONV, max_length=50, truncation="keep_start")
    # token-level: the start of the template is kept by nature, the cut falls where it falls
    assert code == "end_cut" and texts == [f"{SYS}{HEAD}user\nq1<|im_end|>\n{HEAD}assistant\na1<|im_end|>\n{HEAD}user\nquestio"]
    assert reason == "end cut: kept the first 50 of 72 tokens (3 of 6 response tokens lost)"
    assert cut(char_tok, CONV, max_length=20, truncation="keep_start")[:2] == ("no_response_left", "no response left: kept the first 20 of 72 tokens")
    assert cut(char_tok, CONV, max_length=50, truncation="drop")[1] == "too long: 72 tokens > max_length 50 (truncation=drop)"
    with pytest.raises(RecordError, match=r"t\[0\]: field 'max_length': 72 tokens > max_length 50; raise max_length"):
        cut(char_tok, CONV, max_length=50, truncation="error")


def test_left_and_right_are_classic_aliases():
    assert T.parse("left", name="truncation") is T.KEEP_END
    assert T.parse("right", name="truncation") is T.KEEP_START


def test_stats_counts_are_what_each_policy_builds(char_tok):
    records = [CONV, {"instruction": "q" * 30, "output": "a" * 5}, {"instruction": "q", "output": "a" * 60}, {"instruction": "hi", "output": "yo"}]
    for max_length in (40, 60):
        stats = collect(records, Stage(char_tok, DataOptions(max_length=max_length)))
        for outcome in stats.policies:
            result = prepare(records, tokenizer=char_tok, max_length=max_length, truncation=outcome.policy)
            rejected, cut_ = sum(result.report.rejected.values()), sum(result.report.cut.values())
            assert (outcome.cut, outcome.dropped, outcome.fit) == (cut_, rejected, len(records) - cut_ - rejected), outcome


# --- the reproductions, on real tokenizers and files ------------------------------------


def rows(tok, data, **options):
    result = prepare(data, tokenizer=tok, **options)
    return result, [tok.decode(ids) for ids in result.dataset["input_ids"]]


@pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")
def test_alpaca_demo_rows_start_with_the_system_prompt_at_512(smol):
    result, texts = rows(smol, "examples/data/alpaca_en_demo_20.json", max_length=512)
    assert result.report.cut == {"prompt_shortened": 1}
    system = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\n"
    assert len(texts) == 20 and all(t.startswith(system) for t in texts)
    assert max(len(ids) for ids in result.dataset["input_ids"]) <= 512


@pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")
def test_alpaca_demo_rows_start_with_bos_under_gemma_at_470():
    result, texts = rows(tokenizer("gemma-3-it"), "examples/data/alpaca_en_demo_20.json", max_length=470)
    assert result.report.cut == {"prompt_shortened": 1}
    assert len(texts) == 20 and all(t.startswith("<bos><start_of_turn>user\n") for t in texts)


@pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")
def test_glaive_record_243_under_llama_never_starts_inside_a_tool_result():
    data = json.loads((DATASETS / "sharegpt" / "llamafactory_glaive_toolcall_en_demo.json").read_text())[243:244]
    tok = tokenizer("llama-3.2-instruct")
    full = prepare(data, tokenizer=tok, max_length=100_000).dataset[0]["input_ids"]
    for max_length in (len(full) - 40, len(full) * 2 // 3):
        for policy in ("keep_response", "keep_end", "split"):
            result, texts = rows(tok, data, max_length=max_length, truncation=policy)
            assert texts, (policy, result.report.rejected)
            for text in texts:
                assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>"), text[:200]
                first = text.split("<|eot_id|>", 1)[1]  # the turn after the system header (tools live there)
                assert first.startswith("<|start_header_id|>user<|end_header_id|>"), (policy, first[:120])
