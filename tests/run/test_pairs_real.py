"""Preference rows of the shared real data (../shared/datasets/preference) on real tokenizers, pair by pair
against the oracle of tests/pair_oracle.py: the prompt as the template's generation-prompt rendering
tokenized alone, each completion exactly the reply and its end-of-turn, nothing after.

The records are read here without ftdata (the oracle's own reading of each file's shape)."""

from __future__ import annotations

import json

import pytest
from pair_oracle import EOT, check_row, expected
from support import DATASETS, TOKENIZER_NAMES, tokenizer
from typer.testing import CliRunner

import ftdata
from ftdata.cli.app import app

pytestmark = pytest.mark.skipif(not DATASETS.is_dir(), reason=f"shared data not found at {DATASETS}")
PREFERENCE = DATASETS / "preference"
DPO = PREFERENCE / "llamafactory_dpo_en_demo.json"
V1 = PREFERENCE / "llamafactory_v1_dpo_demo.jsonl"
KTO = PREFERENCE / "llamafactory_kto_en_demo.json"
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
DATE = {"llama-3.2-instruct": {"date_string": "26 Jul 2024"}}  # Llama 3.2 writes today's date otherwise


def dpo_pairs(limit: int | None = None) -> list[tuple[list[dict], dict, dict]]:
    """LLaMA-Factory's DPO demo as (prompt messages, chosen reply, rejected reply)."""
    out = []
    for record in json.loads(DPO.read_text(encoding="utf-8"))[:limit]:
        prompt = [{"role": ROLES[m["from"]], "content": m["value"]} for m in record["conversations"]]
        out.append((prompt, *({"role": "assistant", "content": record[side]["value"]} for side in ("chosen", "rejected"))))
    return out


def v1_pairs() -> list[tuple[list[dict], dict, dict]]:
    """The v1 demo: whole conversations per side with typed text parts; the prompt is their common prefix."""
    out = []
    for line in V1.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        sides = [[{"role": m["role"], "content": "".join(p["value"] for p in m["content"])} for m in record[key]]
                 for key in ("chosen_messages", "rejected_messages")]  # fmt: skip
        assert sides[0][:-1] == sides[1][:-1]
        out.append((sides[0][:-1], sides[0][-1], sides[1][-1]))
    return out


def kto_records() -> list[tuple[list[dict], dict, bool]]:
    return [(r["messages"][:-1], r["messages"][-1], r["label"]) for r in json.loads(KTO.read_text(encoding="utf-8"))]


def assert_pairs(tok, name, pairs, rows, kwargs=None) -> None:
    problems = []
    for i, ((prompt, chosen, rejected), row) in enumerate(zip(pairs, rows, strict=True)):
        for reply, column in ((chosen, "chosen_ids"), (rejected, "rejected_ids")):
            exp = expected(tok, EOT[name], prompt, reply, kwargs=kwargs)
            problems += [f"pair {i} {column}: {p}" for p in check_row(tok, exp, row["prompt_ids"], row[column])]
    assert not problems, problems[:5]


@pytest.mark.parametrize("name", [None, "qwen2.5-instruct"], ids=["smollm2", "qwen2.5"])
def test_the_dpo_demo_builds_300_pairs_equal_to_the_oracle(name) -> None:
    tok = tokenizer(name)
    result = ftdata.build(DPO, tokenizer=tok, max_length=8192)
    assert (result.report.records, result.report.sequences, dict(result.report.rejected)) == (300, 300, {})
    assert_pairs(tok, name, dpo_pairs(), result.dataset.to_list())


@pytest.mark.parametrize("name", [None, "qwen2.5-instruct"], ids=["smollm2", "qwen2.5"])
def test_the_v1_demo_builds_its_10_pairs_equal_to_the_oracle(name) -> None:
    tok = tokenizer(name)
    result = ftdata.build(V1, tokenizer=tok)
    assert (result.report.sequences, dict(result.report.formats)) == (10, {"implicit": 10})
    assert_pairs(tok, name, v1_pairs(), result.dataset.to_list())


@pytest.mark.parametrize("name", [None, "qwen2.5-instruct"], ids=["smollm2", "qwen2.5"])
def test_the_kto_demo_with_task_kto_builds_300_completions_equal_to_the_oracle(name) -> None:
    tok = tokenizer(name)
    result = ftdata.build(KTO, tokenizer=tok, task="kto", max_length=8192)
    rows = result.dataset.to_list()
    assert (len(rows), sum(r["label"] for r in rows)) == (300, 150)
    problems = []
    for i, ((prompt, reply, label), row) in enumerate(zip(kto_records(), rows, strict=True)):
        assert row["label"] is label
        problems += [f"record {i}: {p}" for p in check_row(tok, expected(tok, EOT[name], prompt, reply), row["prompt_ids"], row["completion_ids"])]
    assert not problems, problems[:5]


def test_mistral_nemo_rows_hold_the_system_prompt_where_inference_puts_it() -> None:
    """Mistral-Nemo writes the system prompt into the last user turn of an inference prompt only: the
    80 demo pairs with a system turn keep it there, and their completions are the reply + </s>. Each side of those
    is its inference prompt and the reply (a prompt row: method prefix), as every other pair's."""
    name = "mistral-nemo-instruct-2407"
    tok = tokenizer(name)
    result = ftdata.build(DPO, tokenizer=tok, max_length=8192)
    assert dict(result.report.methods) == {"prefix": 300} and not result.report.rejected
    assert not result.report.notes.get("system_dropped")  # the pair's prompt holds it
    rows, pairs = result.dataset.to_list(), dpo_pairs()
    assert_pairs(tok, name, pairs, rows)
    with_system = next(i for i, (prompt, _, _) in enumerate(pairs) if prompt[0]["role"] == "system")
    assert pairs[with_system][0][0]["content"] in tok.decode(rows[with_system]["prompt_ids"])


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in TOKENIZER_NAMES if n in EOT])
def test_the_dpo_demo_on_every_shared_tokenizer_equals_the_oracle(name) -> None:
    tok = tokenizer(name)
    result = ftdata.build(DPO, tokenizer=tok, max_length=16384, chat_template_kwargs=DATE.get(name))
    assert result.report.sequences == 300
    assert_pairs(tok, name, dpo_pairs(), result.dataset.to_list(), kwargs=DATE.get(name))


def test_ftdata_build_of_the_dpo_demo_writes_preference_rows_not_sft(tmp_path) -> None:
    """The issue's run, as a new user runs it: `ftdata build` on LLaMA-Factory's DPO demo."""
    result = CliRunner().invoke(app, ["build", str(DPO), "-o", str(tmp_path / "out"), "--no-cache"])
    assert result.exit_code == 0, result.output
    built = ftdata.load(tmp_path / "out")
    assert built.dataset.column_names == ["prompt_ids", "chosen_ids", "rejected_ids"]
    assert (built.report.task, built.report.records, built.report.sequences) == ("preference", 300, 300)
    assert not built.report.rejected.get("no_assistant")


def test_a_reply_with_a_leading_space_tokenizes_as_in_the_whole_text_in_pairs_and_sft_rows() -> None:
    """Phi-3's `<|assistant|>` takes the whitespace after it (rstrip). The v1 demo's rejected replies begin with
    a space: tokenized alone behind a neutral anchor they became `▁Abd…`, while the whole rendered conversation
    (and an SFT row of it) tokenizes `Ab d…`. One rule: prompt_ids + completion_ids are the tokens of the
    rendered text, for every pair and both sides (the rendering and tokenization here are transformers' own)."""
    tok = tokenizer("phi-3-mini-4k-instruct")
    pairs = v1_pairs()[:10]
    built = ftdata.prepare(V1, tokenizer=tok, task="preference", limit=10).dataset
    assert sum(reply["content"].startswith(" ") for _, _, reply in pairs) == 10  # the case: every rejected reply
    for (prompt, chosen, rejected), row in zip(pairs, built):
        for side, reply in (("chosen", chosen), ("rejected", rejected)):
            text = tok.apply_chat_template([*prompt, reply], tokenize=False)
            whole = tok(text, add_special_tokens=False)["input_ids"]
            assert row["prompt_ids"] + row[f"{side}_ids"] == whole[: len(row["prompt_ids"]) + len(row[f"{side}_ids"])]
            sft = ftdata.build_sft_dataset([{"messages": [*prompt, reply]}], tokenizer=tok, mask="last_assistant")[0]
            trained = [t for t, label in zip(sft["input_ids"], sft["labels"]) if label != -100]
            assert trained == row[f"{side}_ids"]  # the SFT row trains the same tokens
