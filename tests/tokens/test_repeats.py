"""Texts tokenized without offsets that repeat from record to record, tokenized once (`ftdata.tokens.repeats`): a text
is kept when seen a second time and served from then on, within a byte bound; the masker's rows on real records
that repeat are its rows without it on every shared tokenizer, a text edited by one character is tokenized again, and
a tokenizer changed since (a token added, truncation left on) is never served ids it did not make."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import pytest
from support import DATASETS, TOKENIZER_NAMES, tokenizer

from ftdata.chat.chat_tokens import copy_tokenizer
from ftdata.chat.prompt_templates import load_prompt_template, render_prompt_template
from ftdata.errors import Location
from ftdata.tokens import masking, repeats
from ftdata.tokens.repeats import Repeats
from ftdata.types import Example, Message, Rendered


def _ids_memo(keep_bytes: int = repeats.KEEP_BYTES) -> Repeats[tuple[int, ...]]:
    return Repeats(repeats.ids_cost, keep_bytes)


def _tokenized(memo: Repeats[tuple[int, ...]], texts: list[str], ids: list[list[int]]) -> None:
    """As the masker notes texts it just tokenized: each seen, those seen before kept."""
    memo.keep((t, tuple(i)) for t, i, again in zip(texts, ids, memo.seen(texts)) if again)


def test_a_text_is_kept_when_seen_again_and_served_from_then_on() -> None:
    memo = _ids_memo()
    assert memo.served(["a b", "c"]) == [None, None]
    assert memo.seen(["a b", "c"]) == [False, False]
    assert memo.seen(["a b", "c", "d"]) == [True, True, False]
    memo.keep([("a b", (1, 2))])
    assert memo.served(["c", "a b", "a b"]) == [None, (1, 2), (1, 2)]
    assert memo.served(["a b "]) == [None]  # one character more: another text
    assert memo.seen(["a b "]) == [False]


def test_kept_texts_stay_within_the_byte_bound_least_recently_served_let_go_first() -> None:
    memo = _ids_memo(2 * repeats.ids_cost("x", [1, 2]) + 1)
    for _ in range(2):
        _tokenized(memo, ["x", "y"], [[1, 2], [3, 4]])
    assert memo.served(["x"]) == [(1, 2)]  # x served last: y is the least recently used
    _tokenized(memo, ["z", "z"], [[5, 6], [5, 6]])  # three such texts are over the bound: y goes
    assert memo.served(["x", "y", "z"]) == [(1, 2), None, (5, 6)]
    assert memo.bytes == 2 * repeats.ids_cost("x", [1, 2])


def test_texts_seen_once_are_forgotten_all_at_once_when_the_record_is_full(monkeypatch) -> None:
    monkeypatch.setattr(repeats, "SEEN", 2)
    memo = _ids_memo()
    _tokenized(memo, ["a", "b"], [[1], [2]])
    _tokenized(memo, ["c"], [[3]])  # full: a and b forgotten, c noted
    _tokenized(memo, ["a", "c"], [[1], [3]])  # a is new again; c is seen again: kept
    assert memo.served(["a", "b", "c"]) == [None, None, (3,)]


def test_texts_that_share_a_seen_bit_are_each_served_their_own_ids(monkeypatch) -> None:
    monkeypatch.setattr(repeats, "SEEN_BITS", 8)  # 40 texts on 8 bits: most share one
    memo = _ids_memo()
    texts = [f"text {i}" for i in range(40)]
    own = [[i, i + 1] for i in range(40)]
    _tokenized(memo, texts, own)
    _tokenized(memo, texts, own)
    assert memo.served(texts) == [tuple(i) for i in own]


def _rendered(tok: Any, records: list[dict[str, str]]) -> list[Rendered]:
    template = load_prompt_template("alpaca")
    out = []
    for i, r in enumerate(records):
        example = Example(
            (Message("user", r["instruction"]), Message("assistant", r["output"])), Location("x", line=i), r["input"]
        )
        out.append(render_prompt_template(example, template, eos=tok.eos_token or "", trained=[False, True]))
    # and a preference pair's prompts (nothing to locate): tokenized without offsets too
    return out + [Rendered(f"<|im_start|>user\n{r['instruction']}<|im_end|>\n", (), "p") for r in records]


def _repeating_records() -> list[dict[str, str]]:
    """Alpaca records as published, each three times in a seeded order, and copies with one character edited."""
    records = json.loads((DATASETS / "alpaca" / "llamafactory_alpaca_en_demo.json").read_text(encoding="utf-8"))[:80]
    edited = [{**r, "instruction": r["instruction"][:-1] + "?", "output": "x" + r["output"]} for r in records[:20]]
    out = records * 3 + edited
    random.Random(0).shuffle(out)
    return out


@pytest.mark.parametrize("name", [None, *TOKENIZER_NAMES], ids=lambda n: n or "smollm2")
def test_the_maskers_rows_on_records_that_repeat_are_its_rows_without_the_memo(monkeypatch, name: str | None) -> None:
    tok = tokenizer(name)
    rendered = _rendered(tok, _repeating_records())
    tokenized: Counter[str] = Counter()  # batches each text was tokenized in (a text twice in one: once)
    served: list[int] = []
    masker = masking.Masker(tok)
    memo, real_tokenized = masker.repeats, masker._tokenized
    real_served = memo.served
    monkeypatch.setattr(masker, "_tokenized", lambda texts, alone: (tokenized.update(texts), real_tokenized(texts, alone))[1])
    monkeypatch.setattr(memo, "served", lambda texts: (out := real_served(texts), served.append(sum(x is not None for x in out)))[0])  # fmt: skip
    rows = [r for i in range(0, len(rendered), 64) for r in masker(rendered[i : i + 64])]
    assert _outcomes(rows) == _outcomes(masking.Masker(tok, reuse=False)(rendered))
    assert max(tokenized.values()) == 2 and sum(served) > 0  # seen, then kept; served from then on


def _outcomes(results: list[Any]) -> list[Any]:
    """Each record's row, or its rejection's reason (an exception equals only itself)."""
    return [(type(r).__name__, str(r)) if isinstance(r, Exception) else r for r in results]


def test_a_tokenizer_changed_after_texts_were_kept_is_served_none_of_them() -> None:
    tok = copy_tokenizer(tokenizer(None))
    records = json.loads((DATASETS / "alpaca" / "llamafactory_alpaca_en_demo.json").read_text(encoding="utf-8"))[:30]
    records = [{**r, "instruction": r["instruction"] + " Zqxwv", "input": ""} for r in records]
    rendered = _rendered(tok, records)
    masker = masking.Masker(tok)
    for _ in range(3):
        masker(rendered)
    assert tok.add_tokens(["Zqxwv"]) == 1  # the texts holding it now tokenize otherwise
    after = masker(rendered)
    assert _outcomes(after) == _outcomes(masking.Masker(tok, reuse=False)(rendered))
    assert tok.convert_tokens_to_ids("Zqxwv") in after[0].input_ids
    assert _outcomes(masker(rendered)) == _outcomes(after)  # each text seen twice since: kept
    fresh = masking.Masker(tok)  # nothing kept
    tok.backend_tokenizer.enable_truncation(4)  # a transformers call may leave the backend truncating
    try:
        truncating = masker(rendered)
        assert tok.backend_tokenizer.truncation is not None
        assert _outcomes(truncating) == _outcomes(fresh(rendered)) != _outcomes(after)
    finally:
        tok.backend_tokenizer.no_truncation()
