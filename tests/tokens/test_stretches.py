"""A text assembled from its stretches between added tokens (`ftdata.tokens.stretches`) has the whole text's
encoding: the same ids, the same characters for every token, the same token for every character, and the same
words, on every shared tokenizer and on Harbor's ATIF trajectories. A stretch is served only for the same
characters, a stretch seen once is never kept, and what is kept stays within its budget."""

from __future__ import annotations

from array import array
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import SHARED, TOKENIZER_NAMES, TOKENIZERS, pristine, tokenizer
from test_reuse import _renders

import ftdata
from ftdata.tokens import stretches as stretches_module
from ftdata.tokens.border import Offsets
from ftdata.tokens.stretches import Assembled, Stretches

ATIF = SHARED / "datasets/agent_traces/atif"
# What pre-tokenizers treat apart, on both sides of an added token: runs of spaces and newlines, digits, accents
# (composed and combining, which NFC joins), other scripts, emoji, contractions, punctuation.
ADDED = ["<|im_start|>", "<|im_end|>", "<tool_call>"]  # Qwen2.5's, as its template writes them
PARTS = [" ", "  ", "\n", "\n\n", "\t", "a", "Word", "7", "42", "é", "e", "\u0301", "中文", "🦆", ".", "'s", "?", "{"]


def _same_encoding(got: Any, text: str, backend: Any) -> None:
    """`got` answers every question the masker asks of an encoding as the whole text's encoding does."""
    whole = backend.encode(text, add_special_tokens=False)
    assert got.ids == whole.ids
    assert len(got) == len(whole)
    assert [got.token_to_chars(i) for i in range(len(whole))] == [whole.token_to_chars(i) for i in range(len(whole))]
    chars = range(len(text) + 1)
    assert [got.char_to_token(c) for c in chars] == [whole.char_to_token(c) for c in chars]
    a, b = Offsets(got), Offsets(whole)
    assert [a.one_word(i) for i in range(len(whole) + 1)] == [b.one_word(i) for i in range(len(whole) + 1)]
    assert [a.first_at(c) for c in range(len(text) + 1)] == [b.first_at(c) for c in range(len(text) + 1)]


def _encodings(stretches: Stretches, texts: list[str]) -> list[Any]:
    return [
        stretches.assemble(p) if p is not None else stretches.backend.encode(t, add_special_tokens=False)
        for t, p in zip(texts, stretches.plans(texts))
    ]


@pytest.mark.parametrize("name", [None, *TOKENIZER_NAMES], ids=lambda n: n or "smollm2")
def test_an_assembled_text_has_the_whole_texts_encoding_on_every_shared_tokenizer(name: str | None) -> None:
    tok = pristine(name)  # as its files have it, not as another test may have left `tokenizer(name)` (truncating)
    stretches = Stretches(tok.backend_tokenizer)
    texts = _renders(tok)
    if not stretches.usable:  # Gemma 3 (a normalizer over its added tokens), Phi-3 (added tokens strip spaces)
        assert name in ("gemma-3-it", "phi-3-mini-4k-instruct")
        return
    first = _encodings(stretches, texts)
    again = _encodings(stretches, texts)  # every stretch seen before: each text assembled, from kept stretches
    assert all(isinstance(e, Assembled) for e in again)
    for text, a, b in zip(texts, first, again):
        _same_encoding(a, text, stretches.backend)
        _same_encoding(b, text, stretches.backend)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.sampled_from([*PARTS, *ADDED]), max_size=12), min_size=1, max_size=6))
def test_texts_made_of_pieces_and_added_tokens_assemble_to_the_whole_texts_encoding(texts: list[list[str]]) -> None:
    tok = tokenizer("qwen2.5-instruct")
    stretches = Stretches(tok.backend_tokenizer)
    joined = ["".join(t) for t in texts]
    for text, got in zip(joined * 2, _encodings(stretches, joined) + _encodings(stretches, joined)):
        _same_encoding(got, text, stretches.backend)


def test_a_stretch_is_kept_on_its_second_sighting_and_served_only_for_the_same_characters() -> None:
    backend = tokenizer("qwen2.5-instruct").backend_tokenizer
    stretches = Stretches(backend)
    system = "<|im_start|>system\n" + "You are a careful agent. " * 40 + "<|im_end|>\n"
    one = system + "<|im_start|>user\nFix the bug<|im_end|>\n"
    two = system + "<|im_start|>user\nNow test it<|im_end|>\n"
    [plan] = stretches.plans([one])
    assert plan is None and not stretches.kept.kept  # nothing seen before: tokenized whole, nothing kept
    [plan] = stretches.plans([two])
    assert plan is not None  # the system prompt was seen: assembled, and kept
    _same_encoding(stretches.assemble(plan), two, backend)
    assert set(stretches.kept.kept) == {"system\n" + "You are a careful agent. " * 40, "\n"}  # not the users' own
    edited = two.replace("careful", "careFul")  # one byte of the kept stretch changed
    [plan] = stretches.plans([edited])
    assert plan is None  # mostly new text again: tokenized whole
    assert "system\n" + "You are a careFul agent. " * 40 not in stretches.kept.kept


def test_what_is_kept_stays_within_its_budget_the_least_recently_used_let_go(monkeypatch) -> None:
    backend = tokenizer("qwen2.5-instruct").backend_tokenizer
    one = stretches_module._cost("system\n" + "alpha " * 20, (None, array("l", range(23))))  # 23 tokens each
    monkeypatch.setattr(stretches_module, "KEEP_BYTES", 2 * one + 10)
    stretches = Stretches(backend)
    prompts = ["<|im_start|>system\n" + f"{word} " * 20 + "<|im_end|>" for word in ("alpha", "beta", "gamma")]
    for text in prompts + prompts:
        _encodings(stretches, [text])
    assert stretches.kept.bytes <= 2 * one + 10
    assert [k.split()[1] for k in stretches.kept.kept] == ["beta", "gamma"]  # alpha, kept first, let go
    _same_encoding(_encodings(stretches, [prompts[0]])[0], prompts[0], backend)


def test_a_token_added_to_the_tokenizer_forgets_what_was_kept() -> None:
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TOKENIZERS / "qwen2.5-instruct")
    stretches = Stretches(tok.backend_tokenizer)
    text = "<|im_start|>system\nCall <fn> now, " * 3 + "<|im_end|>"
    _encodings(stretches, [text, text])
    assert stretches.usable and stretches.kept.kept
    tok.add_tokens([AddedToken("<fn>", special=True, normalized=False)])
    assert stretches.usable and not stretches.kept.kept  # read again: the kept stretches held `<fn>` as text
    _same_encoding(_encodings(stretches, [text, text])[1], text, tok.backend_tokenizer)


def test_threads_that_share_the_stretches_get_each_texts_own_encoding(monkeypatch) -> None:
    # engine=local masks batches on several threads, one `Stretches` for them all; a small budget makes them evict
    # what the others serve
    monkeypatch.setattr(stretches_module, "KEEP_BYTES", 400 * 90)
    backend = tokenizer("qwen2.5-instruct").backend_tokenizer
    stretches = Stretches(backend)
    system = "<|im_start|>system\n" + "Use the tools. " * 30 + "<|im_end|>\n"
    texts = [system + f"<|im_start|>user\ntask {i % 7}: " + "go " * (i % 5) + "<|im_end|>\n" for i in range(60)]
    wanted = [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]

    def work(k: int) -> tuple[list[Any], list[str]]:
        order = texts[k:] + texts[:k]
        return _encodings(stretches, order), order

    with ThreadPoolExecutor(4) as pool:
        for got, order in pool.map(work, range(0, 40, 10)):
            assert [e.ids for e in got] == [wanted[texts.index(t)] for t in order]
            assert sum(isinstance(e, Assembled) for e in got) > 50
    assert stretches.kept.bytes <= 400 * 90


def _agent_records(tmp_path: Path) -> Path:
    """Harbor's ATIF folder with each trajectory there three times (rollouts of one task, logged alike)."""
    folder = tmp_path / "atif"
    folder.mkdir()
    for file in sorted(ATIF.glob("*.json")):
        for k in range(3):
            (folder / f"{file.stem}.{k}.json").write_bytes(file.read_bytes())
    return folder


@pytest.mark.parametrize("history", ["one_row", "inference", "tree"])
def test_agent_records_build_the_same_rows_assembled_from_kept_stretches(history, tmp_path, monkeypatch) -> None:
    if not ATIF.is_dir():
        pytest.skip(f"shared datasets not found at {ATIF}")
    path = _agent_records(tmp_path)
    options = {"tokenizer": tokenizer("qwen2.5-instruct"), "chat_template": "qwen3", "max_length": 65536,
               "on_error": "skip", "cache": False, "history": history}  # fmt: skip
    assembled = []
    real = Stretches.assemble
    monkeypatch.setattr(Stretches, "assemble", lambda self, plan: assembled.append(1) or real(self, plan))
    built = ftdata.build(str(path), **options)
    monkeypatch.setattr(Stretches, "plans", lambda self, texts: [None] * len(texts))  # every text whole
    whole = ftdata.build(str(path), **options)
    assert len(assembled) >= 2 * (built.report.records - sum(built.report.rejected.values())) // 3  # the copies
    assert built.dataset.to_dict() == whole.dataset.to_dict()
    assert built.report.rejected == whole.report.rejected
