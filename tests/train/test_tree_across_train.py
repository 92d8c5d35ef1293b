"""Training a tree shared across records (history=tree, `tree_across_records`): on a tiny Llama built from a
config, the loss of one tree holding several records' rows is the split rows' loss (rel 1e-5), each record's
trained tokens counted once each as in its split rows (the mean over all trained tokens: each record's share
unchanged), and `ftdata train` runs a step on it with the split build's first loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from support import TOKENIZERS
from test_tree_train import qwen3_tok, split_loss, tiny_qwen3_dir  # noqa: F401  - the fixtures, re-used

import ftdata
from ftdata.train.tree import TreeCollator, tree_forward, use_tree_attention
from ftdata.types import IGNORE_INDEX

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")

SYSTEM = {"role": "system", "content": "You are a terse calculator. Think, then answer with the number only."}


def _turn(question: str, reasoning: str, answer: str) -> list[dict]:
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer, "reasoning_content": reasoning},
    ]


RECORDS = [  # one system prompt; records 1 and 3 open with the same trained exchange (each trains its own copy)
    {"messages": [SYSTEM, *_turn("2+2?", "Add two and two.", "4"), *_turn("3+3?", "Add three and three.", "6")]},
    {"messages": [SYSTEM, *_turn("7-5?", "Take five from seven.", "2")]},
    {"messages": [SYSTEM, *_turn("2+2?", "Add two and two.", "4"), *_turn("9+1?", "Nine and one.", "10")]},
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("across") / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    return path


def test_a_tree_across_records_has_the_split_rows_loss(data: Path, qwen3_tok, tiny_qwen3_dir) -> None:  # noqa: F811
    from transformers import AutoModelForCausalLM

    split = ftdata.build(str(data), tokenizer=qwen3_tok, history="inference", cache=False).dataset
    tree = ftdata.build(str(data), tokenizer=qwen3_tok, history="tree", cache=False).dataset
    own = ftdata.build(str(data), tokenizer=qwen3_tok, history="tree", tree_across_records=False, cache=False).dataset
    assert (len(split), len(own), len(tree)) == (5, 3, 1)  # every record's rows in one tree
    tokens = [sum(map(len, rows["input_ids"])) for rows in (split, own, tree)]
    assert tokens[2] < tokens[1] < tokens[0]
    trained = [sum(lab != IGNORE_INDEX for r in rows["labels"] for lab in r[1:]) for rows in (split, tree)]
    assert trained[0] == trained[1]  # the split rows' trained tokens, the copy of the shared answer included
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3_dir, attn_implementation="eager").float().eval()
    want = split_loss(model, split)  # each split row alone, eager attention
    use_tree_attention(model)
    with torch.no_grad():
        across = tree_forward(model, TreeCollator(pad_id=0)([dict(r) for r in tree]))[0].item()
        alone = tree_forward(model, TreeCollator(pad_id=0)([dict(r) for r in own]))[0].item()
    assert across == pytest.approx(want, rel=1e-5) and alone == pytest.approx(want, rel=1e-5)


def test_ftdata_train_steps_on_a_tree_across_records(data: Path, tiny_qwen3_dir, tmp_path: Path) -> None:  # noqa: F811
    """One optimizer step of `ftdata train` on the tree build, all rows in one batch: its logged loss is the split
    build's first-step loss (LoRA starts as the base model)."""
    from ftdata.train import TrainConfig, train

    losses = {}
    for history in ("inference", "tree"):
        cfg = TrainConfig(
            model=str(tiny_qwen3_dir), data=str(data), max_steps=1, per_device_train_batch_size=8, logging_steps=1,
            quantization="none", lora_r=4, output_dir=str(tmp_path / history), data_options={"history": history},
        )  # fmt: skip
        run = json.loads((train(cfg).run_dir / "run.json").read_text(encoding="utf-8"))
        losses[history] = next(e["loss"] for e in run["log_history"] if "loss" in e)
    assert losses["tree"] == pytest.approx(losses["inference"], rel=1e-5)
