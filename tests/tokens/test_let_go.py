"""Long texts are encoded one at a time and their encodings let go once their spans are located
(`ftdata.tokens.masking.LET_GO_CHARS`): the exchange cuts are read before, the offsets read again only when a later
step reads them, and a record with holes keeps its encoding. Every row, cut, note and offset is the one the kept
encoding gives: the same records masked with every text let go (the bound at 0) and with none (the bound past any
text), on real tokenizers and on Harbor's ATIF trajectories built under each history layout."""

from __future__ import annotations

import pytest
from support import SHARED, tokenizer
from test_chat_masking import chat

import ftdata
from ftdata.errors import UnusableRecord
from ftdata.options import DataOptions
from ftdata.run.stage import Stage
from ftdata.tokens import masking

AXOLOTL_DETAIL = [{"begin_offset": 0, "end_offset": 3, "train": False}, {"begin_offset": 4, "end_offset": 12, "train": True}]
RECORDS = [
    chat("What is 2+2?", "It is 4.", "And 3+3?", "Six.", "Sure?", " Yes, 6 — sure.\n"),
    {"messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Very well, thanks.",
                                                          "train_detail": AXOLOTL_DETAIL}]},  # holes: kept
    {"messages": [{"role": "user", "content": "Weigh this."}, {"role": "assistant", "content": "Weighed.", "loss_weight": 0.5}]},
    chat("你好，世界", "😀 ça va?\n\n```py\nx = 1\n```"),
]  # fmt: skip


def _measured(tok, history: str) -> list[tuple]:
    stage = Stage(tok, DataOptions(history=history))
    out = []
    for _, item in stage.measure([(None, r) for r in RECORDS]):
        assert not isinstance(item, UnusableRecord) and hasattr(item, "tokenized"), item
        t = item.tokenized
        out.append((t.input_ids, t.labels, t.cuts, t.prefix, t.notes, t.weights, list(t.offsets)))
    return out


@pytest.mark.parametrize("name", ["qwen2.5-instruct", "llama-3-8b-instruct", "phi-3-mini-4k-instruct", "gemma-3-it"])
@pytest.mark.parametrize("history", ["one_row", "inference"])
def test_a_record_whose_encoding_is_let_go_is_masked_as_with_it_kept(name, history, monkeypatch):
    tok = tokenizer(name)
    monkeypatch.setattr(masking, "LET_GO_CHARS", 10**12)
    kept = _measured(tok, history)
    monkeypatch.setattr(masking, "LET_GO_CHARS", 0)
    let_go = _measured(tok, history)
    assert let_go == kept
    assert any(t[2] for t in kept) or history == "one_row"  # exchange cuts were read from the encoding


def test_a_let_go_record_holds_no_encoding_unless_it_has_holes(monkeypatch):
    from ftdata.tokens.border import Offsets

    monkeypatch.setattr(masking, "LET_GO_CHARS", 0)
    stage = Stage(tokenizer("qwen2.5-instruct"), DataOptions())
    kinds = [type(item.tokenized.offsets) for _, item in stage.measure([(None, r) for r in RECORDS])]
    assert [k is Offsets for k in kinds] == [False, True, False, False]  # the one with train_detail keeps it


@pytest.mark.parametrize("history", ["one_row", "inference", "tree"])
def test_harbor_atif_trajectories_build_the_same_rows_with_encodings_let_go(history, monkeypatch):
    folder = SHARED / "datasets/agent_traces/atif"
    if not folder.is_dir():
        pytest.skip(f"shared datasets not found at {folder}")
    options = {"tokenizer": tokenizer("qwen2.5-instruct"), "chat_template": "qwen3", "max_length": 65536,
               "on_error": "skip", "cache": False, "history": history}  # fmt: skip
    monkeypatch.setattr(masking, "LET_GO_CHARS", 10**12)
    kept = ftdata.build(str(folder), **options).dataset.to_dict()
    monkeypatch.setattr(masking, "LET_GO_CHARS", 0)
    assert ftdata.build(str(folder), **options).dataset.to_dict() == kept
    assert len(kept["input_ids"]) > 1 or history == "tree"
