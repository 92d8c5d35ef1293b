"""Token-weighted cross-entropy (ftdata/train/weighting.py) on a tiny model built from a config."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from ftdata.train.weighting import WeightedCollator, weighted_loss  # noqa: E402
from ftdata.types import IGNORE_INDEX  # noqa: E402

# One row: prompt (masked), turn A (positions 4-6), prompt, turn B (positions 10-12).
IDS = [5, 6, 7, 8, 20, 21, 22, 9, 10, 11, 30, 31, 32, 2]
A, B = range(4, 7), range(10, 13)


def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=48, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def labels_of(*turns):
    return [token if any(i in t for t in turns) else IGNORE_INDEX for i, token in enumerate(IDS)]


def loss_and_grads(model, labels, weights=None, num_items=None):
    """(loss, gradient of every parameter) of one batch of the row."""
    model.zero_grad()
    example = {"input_ids": IDS, "labels": labels}
    if weights is not None:
        example["loss_weights"] = weights
    batch = WeightedCollator(plain_collator, padding_free=False)([example])
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    weights = batch.get("loss_weights", torch.ones(batch["input_ids"].shape))
    loss = weighted_loss(out.logits, batch["labels"], weights, num_items=num_items)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def plain_collator(examples):
    ids = torch.tensor([e["input_ids"] for e in examples])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([e["labels"] for e in examples])}


def weights_for(a: float, b: float) -> list[float]:
    return [a if i in A else b if i in B else 1.0 for i in range(len(IDS))]


def test_weight_zero_equals_masking_loss_and_gradients():
    model = tiny_model()
    masked_loss, masked_grads = loss_and_grads(model, labels_of(B))  # turn A masked with -100
    weighted, grads = loss_and_grads(model, labels_of(A, B), weights_for(0.0, 1.0))
    assert torch.equal(weighted, masked_loss)
    assert all(torch.equal(g, m) for g, m in zip(grads, masked_grads))
    # and both are the model's own mean cross-entropy over the trained tokens
    reference = model(input_ids=torch.tensor([IDS]), labels=torch.tensor([labels_of(B)])).loss
    assert torch.allclose(masked_loss, reference, atol=1e-6)


def test_weight_one_is_the_plain_loss():
    model = tiny_model()
    plain, plain_grads = loss_and_grads(model, labels_of(A, B))
    ones, grads = loss_and_grads(model, labels_of(A, B), weights_for(1.0, 1.0))
    assert torch.equal(plain, ones) and all(torch.equal(g, h) for g, h in zip(grads, plain_grads))


def test_weight_half_halves_the_turns_contribution_to_the_gradient():
    model = tiny_model()
    n = len(A) + len(B)  # trained tokens: the normaliser, the same whatever turn A weighs (> 0)
    _, full = loss_and_grads(model, labels_of(A, B), weights_for(1.0, 1.0))
    _, half = loss_and_grads(model, labels_of(A, B), weights_for(0.5, 1.0))
    _, without = loss_and_grads(model, labels_of(B), num_items=n)  # turn B alone, over the same n
    for f, h, w in zip(full, half, without):
        assert torch.allclose(h - w, 0.5 * (f - w), atol=1e-6)
    assert any(not torch.allclose(f, w) for f, w in zip(full, without))  # turn A does move the gradient


def test_collator_lays_weights_out_like_the_tokens():
    rows = [
        {"input_ids": [1, 2, 3], "labels": [IGNORE_INDEX, 2, 3], "loss_weights": [1.0, 0.5, 0.0]},
        {"input_ids": [4, 5], "labels": [IGNORE_INDEX, 5]},
    ]

    def padded(examples):
        ids = [e["input_ids"] + [0] * (3 - len(e["input_ids"])) for e in examples]
        labels = [e["labels"] + [IGNORE_INDEX] * (3 - len(e["labels"])) for e in examples]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}

    batch = WeightedCollator(padded, padding_free=False)([dict(r) for r in rows])
    assert batch["loss_weights"].tolist() == [[1.0, 0.5, 0.0], [1.0, 1.0, 0.0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 2, IGNORE_INDEX], [IGNORE_INDEX, 5, IGNORE_INDEX]]  # weight 0: masked

    def flat(examples):
        ids = [t for e in examples for t in e["input_ids"]]
        labels = [t for e in examples for t in e["labels"]]
        return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels])}

    batch = WeightedCollator(flat, padding_free=True)([dict(r) for r in rows])
    assert batch["loss_weights"].tolist() == [[1.0, 0.5, 0.0, 1.0, 1.0]]


@pytest.mark.parametrize("packed", [False, True])
def test_trainer_uses_the_weights_column(tmp_path, tiny_model_dir, make_row, pack_rows, packed):
    """Through `build_trainer`: weights of 1 give TRL's own loss; weights of 0 on one row mask it."""
    from datasets import Dataset

    from ftdata.train.config import TrainConfig
    from ftdata.train.data import Splits
    from ftdata.train.model import load_for_training
    from ftdata.train.trainer import build_trainer

    rows = [make_row("What colour is the sky?", "The sky is blue."), make_row("Name a fruit.", "An apple.")]
    cfg = TrainConfig(model=str(tiny_model_dir), quantization="none", lora_r=4, per_device_train_batch_size=2)
    loaded = load_for_training(cfg)

    def loss(data, name):
        if packed:
            row = pack_rows(data)
            if "loss_weights" in data[0]:
                row["loss_weights"] = [w for r in data for w in r["loss_weights"]]
            data = [row]
        trainer = build_trainer(cfg, loaded=loaded, splits=Splits(Dataset.from_list(data), None), run_dir=tmp_path / name)
        batch = next(iter(trainer.get_train_dataloader()))
        with torch.no_grad():
            return trainer.compute_loss(loaded.model, batch).item()

    plain = loss(rows, "plain")
    ones = loss([{**r, "loss_weights": [1.0] * len(r["input_ids"])} for r in rows], "ones")
    assert ones == pytest.approx(plain, abs=1e-5)
    zero = [{**rows[0], "loss_weights": [0.0] * len(rows[0]["input_ids"])}, {**rows[1], "loss_weights": [1.0] * len(rows[1]["input_ids"])}]
    masked = [{**rows[0], "labels": [IGNORE_INDEX] * len(rows[0]["labels"])}, rows[1]]
    assert loss(zero, "zero") == pytest.approx(loss(masked, "masked"), abs=1e-5)
