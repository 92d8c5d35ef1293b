"""Training tree rows (history=tree): the first-step loss equals the split rows' on a tiny attention model, the
mask equals the tree's ancestors, and models whose layers cannot attend along a tree train the split rows."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers")

from support import TOKENIZERS

import ftdata
from ftdata.tokens.tree import visible
from ftdata.train.layouts import fit
from ftdata.train.tree import (
    TreeCollator,
    as_split_rows,
    tree_attention,
    tree_blocker,
    tree_forward,
    tree_loss,
    use_tree_attention,
)
from ftdata.types import IGNORE_INDEX

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")

THINK = ("<think>", "</think>")


def _messages(*turns: tuple[str, str, str]) -> list[dict]:
    out = []
    for question, reasoning, answer in turns:
        out += [{"role": "user", "content": question}, {"role": "assistant", "content": answer, "reasoning_content": reasoning}]
    return out


RECORDS = [
    {"messages": _messages(("What is 2+2?", "Add two and two.", "4"), ("And 3+3?", "Add three.", "6"), ("And 4+4?", "Four.", "8"))},
    {"messages": _messages(("Hi", "Greet back.", "Hello!"), ("Bye", "Say goodbye.", "Goodbye!"))},
]  # fmt: skip


@pytest.fixture(scope="module")
def qwen3_tok():
    from test_chat_tools import template_tokenizer

    return template_tokenizer("qwen3", THINK)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory, qwen3_tok):
    data = tmp_path_factory.mktemp("tree") / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    return {mode: ftdata.build(str(data), tokenizer=qwen3_tok, history=mode).dataset for mode in ("inference", "tree")}


@pytest.fixture(scope="module")
def tiny_qwen3_dir(tmp_path_factory: pytest.TempPathFactory, qwen3_tok) -> Path:
    """A 2-layer Llama from a config with the qwen3-template tokenizer's vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama-qwen3")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(qwen3_tok), hidden_size=32, intermediate_size=64, tie_word_embeddings=True, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, pad_token_id=qwen3_tok.pad_token_id,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    qwen3_tok.save_pretrained(folder)
    return folder


def test_tree_attention_equals_a_dense_mask_of_each_tokens_ancestors() -> None:
    """`tree_attention` (chains over their paths) against scaled_dot_product_attention with the full mask built
    from `visible`: the tree's ancestors."""
    rows = [[0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 4, 5, 3], [0, 1, 1, 2]]
    batch = TreeCollator(pad_id=0)([{"input_ids": [5] * len(r), "labels": [IGNORE_INDEX] * len(r), "position_ids": r} for r in rows])
    assert batch["tree_parents"][1].tolist() == [-1, 0, 0, 2] + [-1] * 9
    mask = torch.eye(13, dtype=torch.bool).repeat(2, 1, 1, 1)
    for b, row in enumerate(rows):
        mask[b, 0, : len(row), : len(row)] = False
        for i, seen in enumerate(visible(row)):
            mask[b, 0, i, seen] = True
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 13, 8), torch.randn(2, 2, 13, 8), torch.randn(2, 2, 13, 8)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True).transpose(1, 2)
    got, _ = tree_attention(SimpleNamespace(training=False), q, k, v, None, tree_segments=batch["tree_segments"])
    for b, row in enumerate(rows):  # the pads (one chain of their own) are never scored
        assert torch.allclose(got[b, : len(row)], want[b, : len(row)], atol=1e-6)


def test_tree_loss_equals_the_split_rows_loss(builds, tiny_qwen3_dir) -> None:
    """The model's forward over the tree rows with `tree_attention`, each token scored from its parent, gives the
    split rows' mean cross-entropy (each row forwarded alone with eager attention: no shared kernel)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3_dir, attn_implementation="eager").float().eval()
    split, tree = builds["inference"], builds["tree"]
    want = split_loss(model, split)
    with torch.no_grad():
        use_tree_attention(model)  # the split rows ran eager; the tree runs its chains over their paths
        batch = TreeCollator(pad_id=0)([dict(r) for r in tree])
        loss = tree_forward(model, batch)[0].item()  # logits only where a trained token is scored
        out = model(**{k: v for k, v in batch.items() if k not in ("labels", "tree_parents")}, use_cache=False)
        assert tree_loss(out.logits, batch["labels"], batch["tree_parents"]).item() == pytest.approx(loss, rel=1e-6)
    assert sum(len(r["input_ids"]) for r in tree) < sum(len(r["input_ids"]) for r in split)
    assert loss == pytest.approx(want, rel=1e-5)


def split_loss(model, rows) -> float:
    """The split rows' mean cross-entropy, each row forwarded alone."""
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            logits = model(input_ids=torch.tensor([row["input_ids"]]), use_cache=False).logits[0, :-1]
            labels = torch.tensor(row["labels"][1:])
            total += torch.nn.functional.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum").item()
            count += int((labels != IGNORE_INDEX).sum())
    return total / count


def test_first_step_loss_through_the_trainer(builds, tiny_qwen3_dir, tmp_path: Path) -> None:
    """Through `fit` and `build_trainer` (what `ftdata train` runs): the first batch's loss of the tree build
    equals the split rows' loss, all rows in one batch; the model still runs plain rows (sdpa) afterwards."""
    from ftdata.train.config import TrainConfig
    from ftdata.train.data import Splits
    from ftdata.train.model import load_for_training
    from ftdata.train.trainer import build_trainer

    cfg = TrainConfig(model=str(tiny_qwen3_dir), quantization="none", lora_r=4, per_device_train_batch_size=8)
    loaded = load_for_training(cfg)
    splits = fit(Splits(builds["tree"].remove_columns("record"), None), loaded.model)
    trainer = build_trainer(cfg, loaded=loaded, splits=splits, run_dir=tmp_path / "tree")
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == len(builds["tree"])
    with torch.no_grad():
        tree = trainer.compute_loss(loaded.model, batch).item()
    assert tree == pytest.approx(split_loss(loaded.model, builds["inference"]), rel=1e-5)


def test_weighted_tree_loss_equals_the_weighted_split_rows_loss(qwen3_tok, tiny_qwen3_dir, tmp_path: Path) -> None:
    """Per-message loss weights (0 masks a turn, 0.5 halves it, 2 doubles it): the tree's loss, each label weighed
    as in its split row, is the split rows' token-weighted loss (`weighting.weighted_loss`, each row alone)."""
    from transformers import AutoModelForCausalLM

    from ftdata.train.weighting import WeightedCollator, weighted_loss

    weights = iter([0, 0.5, 2.0, 1.0, 0.5])
    records = [{"messages": [dict(m, loss_weight=next(weights)) if m["role"] == "assistant" else m for m in r["messages"]]} for r in RECORDS]
    data = tmp_path / "weighted.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    split, tree = (ftdata.build(str(data), tokenizer=qwen3_tok, history=h, cache=False).dataset for h in ("inference", "tree"))
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3_dir, attn_implementation="eager").float().eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in split:  # each split row alone, weighted as SFT's weighted rows are
            batch = WeightedCollator(lambda rows: {"input_ids": torch.tensor([r["input_ids"] for r in rows]), "labels": torch.tensor([r["labels"] for r in rows])}, padding_free=False)([dict(row)])
            n = int((batch["labels"][0, 1:] != IGNORE_INDEX).sum())
            logits = model(input_ids=batch["input_ids"], use_cache=False).logits
            total += weighted_loss(logits, batch["labels"], batch["loss_weights"]).item() * n
            count += n
        use_tree_attention(model)
        batch = WeightedCollator(TreeCollator(pad_id=0), padding_free=False)([dict(r) for r in tree])  # as train lays them out
        assert sorted({round(w, 2) for w in batch["loss_weights"][batch["labels"] != IGNORE_INDEX].tolist()}) == [0.5, 1.0, 2.0]
        loss = tree_forward(model, batch)[0].item()
    assert loss == pytest.approx(total / count, rel=1e-5)
    unweighted = tree_forward(model, {k: v for k, v in batch.items() if k != "loss_weights"})[0].item()
    assert unweighted != pytest.approx(loss, rel=1e-3)  # the weights count


def test_tree_rows_with_added_chat_tokens_train_with_the_split_rows_loss(tmp_path: Path) -> None:
    """TRL's qwen3 template on the Llama-3 tokenizer, its markers added as tokens (`add_chat_tokens`: their
    embedding and output rows train through peft): the tree build's first loss through `build_trainer` is the split
    build's, each from the model's own logits."""
    import trl
    from support import tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    from ftdata.chat.chat_template import with_template
    from ftdata.train.config import TrainConfig
    from ftdata.train.data import Splits
    from ftdata.train.model import load_for_training
    from ftdata.train.trainer import build_trainer

    tok = with_template(tokenizer("llama-3-8b-instruct"), (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text(encoding="utf-8"))
    folder = tmp_path / "tiny"
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    losses = {}
    for history in ("inference", "tree"):
        cfg = TrainConfig(
            model=str(folder), quantization="none", lora_r=4, per_device_train_batch_size=8,
            data_options={"add_chat_tokens": True, "history": history},
        )  # fmt: skip
        loaded = load_for_training(cfg)
        assert len(loaded.new_tokens) == 4  # <|im_start|>, <|im_end|>, <think>, </think>
        built = ftdata.build(str(data), tokenizer=tok, history=history, add_chat_tokens=True, cache=False).dataset
        splits = fit(Splits(built.remove_columns("record"), None), loaded.model)
        trainer = build_trainer(cfg, loaded=loaded, splits=splits, run_dir=tmp_path / history)
        batch = next(iter(trainer.get_train_dataloader()))
        assert batch["input_ids"].shape[0] == len(built) and int(batch["input_ids"].max()) >= len(tok)
        loss = trainer.compute_loss(loaded.model, batch)
        loss.backward()
        losses[history] = loss.item()
        rows = [p.grad for n, p in loaded.model.named_parameters() if "trainable_tokens" in n and p.grad is not None]
        assert rows and any(bool(g.abs().sum() > 0) for g in rows), history  # the added tokens' own rows learn
    assert losses["tree"] == pytest.approx(losses["inference"], rel=1e-5)


def test_a_hybrid_model_trains_the_split_rows_with_a_note(builds) -> None:
    from transformers import JambaConfig, LlamaConfig, MistralConfig, NemotronHConfig, Qwen3Config, Qwen3NextConfig

    assert tree_blocker(LlamaConfig()) is None and tree_blocker(Qwen3Config()) is None
    assert "linear_attention" in tree_blocker(Qwen3NextConfig())  # type: ignore[operator]
    assert tree_blocker(NemotronHConfig()) == "its layers include linear_attention"  # Mamba-2 (MLP, MoE mix no tokens)
    assert tree_blocker(JambaConfig()) == "its layers include linear_attention"
    assert "sliding window of 4096" in tree_blocker(MistralConfig(sliding_window=4096))  # type: ignore[operator]
    from ftdata.train.data import Splits

    hybrid = SimpleNamespace(config=Qwen3NextConfig())  # only its config is read: no model is built
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fit(Splits(builds["tree"], None), hybrid)
    assert any("cannot attend along a tree (its layers include linear_attention)" in str(w.message) for w in caught)
    assert out.train.column_names == ["input_ids", "attention_mask", "labels"]
    split = builds["inference"]
    trained = sorted((tuple(r["input_ids"][: i + 1]), lab) for r in split for i, lab in enumerate(r["labels"]) if lab != IGNORE_INDEX)
    again = sorted((tuple(r["input_ids"][: i + 1]), lab) for r in out.train for i, lab in enumerate(r["labels"]) if lab != IGNORE_INDEX)
    assert again == trained
    assert len(as_split_rows(builds["tree"])) == len(split)
