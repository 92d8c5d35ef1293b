"""TRL's fused LM head on the CPU (`ftdata.train.fused_head`): inside `trained_positions_only()` only the trained
positions go through the head, and every per-token figure, the loss and the gradients are what projecting every
position gives."""

from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch")
trl_utils = pytest.importorskip("trl.trainer.utils")

from ftdata.train.fused_head import trained_positions_only  # noqa: E402

FIELDS = ("log_probs", "entropy", "is_top1")


def _tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    model = LlamaForCausalLM(config)
    trl_utils.add_fused_lm_head(model, outputs=FIELDS)
    return model


def _batch(trained: list[list[int]]):
    """Rows of 12 random ids; `trained[i]`: the positions of row i whose label is kept (else -100)."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 97, (len(trained), 12), generator=generator)
    labels = torch.full_like(ids, -100)
    for row, positions in enumerate(trained):
        labels[row, positions] = ids[row, positions]
    return ids, labels


def _step(model, ids, labels):
    """The fused forward's per-token fields and loss, the head's inputs' row counts, and the gradients."""
    rows = []
    kernel = trl_utils._ChunkedLogProbFunction

    class Counted:
        @staticmethod
        def apply(hidden, *args):
            rows.append(hidden.shape[0])
            return kernel.apply(hidden, *args)

    model.zero_grad()
    trl_utils._ChunkedLogProbFunction = Counted
    try:
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    finally:
        trl_utils._ChunkedLogProbFunction = kernel
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return {f: getattr(out, f).detach() for f in FIELDS}, out.loss.detach(), rows, grads


@pytest.mark.parametrize("trained", [[[5, 6, 7], [2, 11]], [[], [3]], [[], []]], ids=["two-rows", "one-empty", "none"])
def test_the_trained_positions_alone_give_every_figure_and_gradient(trained):
    model = _tiny_model()
    ids, labels = _batch(trained)
    every_fields, every_loss, every_rows, every_grads = _step(model, ids, labels)
    with trained_positions_only():
        fields, loss, rows, grads = _step(model, ids, labels)
    # Projected: every shifted position outside, only those with a label inside (a label at position p is
    # predicted from position p - 1, so a label at 0 is never scored).
    assert every_rows == [ids.shape[0] * (ids.shape[1] - 1)]
    assert rows == [int((labels[:, 1:] != -100).sum())]
    for name in FIELDS:
        torch.testing.assert_close(fields[name], every_fields[name], rtol=1e-5, atol=1e-6)
        assert not fields[name][labels[:, 1:] == -100].any(), name
    torch.testing.assert_close(loss, every_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == every_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, every_grads[name], rtol=1e-4, atol=1e-6)


def test_trls_choice_comes_back_when_the_last_training_leaves():
    own = trl_utils._use_triton
    cpu, meta = torch.device("cpu"), torch.device("meta")
    assert own(cpu) is False
    first, second = trained_positions_only(), trained_positions_only()
    first.__enter__()
    assert trl_utils._use_triton(cpu) is True and trl_utils._use_triton(meta) is own(meta)
    second.__enter__()
    first.__exit__(None, None, None)
    assert trl_utils._use_triton(cpu) is True  # the second training is still inside
    second.__exit__(None, None, None)
    assert trl_utils._use_triton is own


def test_trainings_in_threads_leave_trls_choice_as_it_was():
    own = trl_utils._use_triton
    barrier = threading.Barrier(4)
    seen = []

    def training():
        with trained_positions_only():
            barrier.wait()
            seen.append(trl_utils._use_triton(torch.device("cpu")))
            barrier.wait()

    threads = [threading.Thread(target=training) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [True] * 4 and trl_utils._use_triton is own


def test_an_error_inside_puts_trls_choice_back():
    own = trl_utils._use_triton
    with pytest.raises(RuntimeError, match="step failed"), trained_positions_only():
        raise RuntimeError("step failed")
    assert trl_utils._use_triton is own


def test_ftdata_train_projects_only_the_trained_positions_and_puts_trls_choice_back(tmp_path, tiny_model_dir):
    """Through `train()` on the CPU: each step's head sees exactly the batch's trained positions."""
    import json

    from transformers import TrainerCallback

    from ftdata.train import TrainConfig, train

    pairs = [("What colour is the sky?", "The sky is blue."), ("Name a fruit.", "An apple is a fruit.")]
    data = tmp_path / "qa.json"
    data.write_text(json.dumps([{"instruction": q, "input": "", "output": a} for q, a in pairs * 4]), encoding="utf-8")
    own, kernel = trl_utils._use_triton, trl_utils._ChunkedLogProbFunction
    projected, trained = [], []

    class Counted:
        @staticmethod
        def apply(hidden, *args):
            projected.append(hidden.shape[0])
            return kernel.apply(hidden, *args)

    class Labels(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            model.register_forward_pre_hook(
                lambda module, a, kw: trained.append(int((kw["labels"][:, 1:] != -100).sum())), with_kwargs=True
            )

    trl_utils._ChunkedLogProbFunction = Counted
    try:
        train(TrainConfig(
            model=str(tiny_model_dir), data=str(data), quantization="none", max_steps=2, per_device_train_batch_size=4,
            save_strategy="no", eval_strategy="no", output_dir=str(tmp_path / "runs"), run_name="cpu",
        ), callbacks=[Labels()])  # fmt: skip
    finally:
        trl_utils._ChunkedLogProbFunction = kernel
    assert len(trained) == 2 and all(trained) and projected == trained
    assert trl_utils._use_triton is own
