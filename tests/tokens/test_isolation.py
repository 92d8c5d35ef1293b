"""Attention isolation of packed rows, proven on tiny causal LMs (CPU, fp32).

Claim (transformers 5.23, `masking_utils`): with `position_ids` that restart at each sequence,
`attention_mask=None` and no KV cache, `find_packed_sequence_indices` splits the row into
sequences and sdpa/eager attention become block-diagonal causal. So the logits of each
segment of a packed row equal the logits of that sequence run alone. The negative controls
show the test would catch a leak: a KV cache (the config's default `use_cache=True`, also in
train mode) or an all-ones `attention_mask` switch the detection off.

The last tests run the path `SFTTrainer` uses for ftdata's packed data: TRL's
`DataCollatorForLanguageModeling(padding_free=True)` builds `position_ids` from
`seq_lengths`, and `SFTTrainer.compute_loss` passes `use_cache=False`.

Each positive test also runs with `pad_to_multiple_of=4` (every sequence padded at its end,
positions continuing): the real tokens' logits must still equal the sequence alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
trl_sft = pytest.importorskip("trl.trainer.sft_trainer")

from ftdata.tokens.packing import padded_lengths, plan_bins  # noqa: E402
from packing_reference import pack_rows  # noqa: E402
from ftdata.types import IGNORE_INDEX, TokenRow  # noqa: E402

VOCAB = 1000
ATOL = 1e-4
LEAK = 1e-2  # a leaking segment differs by ~0.5 in these models; far above ATOL
ARCHS = ("llama", "qwen2")
ATTNS = ("sdpa", "eager")
MULTIPLES = (None, 4)  # pad_to_multiple_of: off, and what a context-parallel size of 2 needs
PAD = 3  # a real token id used as the pad: it must not matter, as no real token sees it


def build_model(arch: str, attn: str) -> transformers.PreTrainedModel:
    """A 2-layer causal LM from a config, eval mode, fp32, same weights on every call."""
    torch.manual_seed(0)
    shape = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        attn_implementation=attn,
    )
    if arch == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape))
    else:
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**shape))
    assert model.config._attn_implementation == attn
    return model.float().eval()


tiny_model = cache(build_model)  # one shared, never-trained model per arch/attention


def token_rows(lengths: Sequence[int], *, seed: int = 0) -> list[TokenRow]:
    """Random sequences; the first third of each is 'prompt' (untrained), the rest trained."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        ids = torch.randint(1, VOCAB, (n,), generator=g).tolist()
        labels = [IGNORE_INDEX if j < max(1, n // 3) else t for j, t in enumerate(ids)]
        rows.append(TokenRow(input_ids=ids, attention_mask=[1] * n, labels=labels))
    return rows


def alone_logits(model, row: TokenRow) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([row["input_ids"]]), use_cache=False).logits[0]


def segment_errors(
    model, rows: Sequence[TokenRow], packed_logits: torch.Tensor, *, multiple: int | None = None
) -> list[float]:
    """Max |packed - alone| over the real tokens of each sequence's segment of a packed row's
    logits (a segment is the sequence plus its padding up to `multiple`)."""
    lengths = [len(r["input_ids"]) for r in rows]
    segments = packed_logits.split(padded_lengths(lengths, multiple=multiple).tolist())
    return [(seg[:n] - alone_logits(model, r)).abs().max().item() for seg, r, n in zip(segments, rows, lengths)]


def packed_forward(model, rows: Sequence[TokenRow], *, multiple: int | None = None, **overrides) -> torch.Tensor:
    packed = pack_rows(rows, pad_to_multiple_of=multiple, pad_id=PAD)
    inputs = dict(
        input_ids=torch.tensor([packed["input_ids"]]),
        position_ids=torch.tensor([packed["position_ids"]]),
        attention_mask=None,
        use_cache=False,
    )
    inputs.update(overrides)
    with torch.no_grad():
        return model(**inputs).logits[0]


@pytest.mark.parametrize("multiple", MULTIPLES)
@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("arch", ARCHS)
def test_packed_segments_equal_sequences_run_alone(arch, attn, multiple):
    model = tiny_model(arch, attn)
    rows = token_rows([7, 12, 5])
    errors = segment_errors(model, rows, packed_forward(model, rows, multiple=multiple), multiple=multiple)
    assert max(errors) < ATOL, errors


@pytest.mark.parametrize("attn", ATTNS)
def test_isolation_is_lost_with_a_cache_or_a_mask(attn):
    # The negative controls: the same comparison sees the leak when isolation is off.
    model = tiny_model("llama", attn)
    rows = token_rows([7, 12, 5])
    ones = torch.ones(1, 24, dtype=torch.long)
    for overrides in ({"use_cache": True}, {"attention_mask": ones}, {"position_ids": None}):
        errors = segment_errors(model, rows, packed_forward(model, rows, **overrides))
        assert errors[0] < ATOL, overrides  # the first sequence sees nothing before it anyway
        assert min(errors[1:]) > LEAK, overrides


def test_train_mode_alone_does_not_isolate():
    # model.train() still builds a DynamicCache when config.use_cache is True, which turns the
    # packed-sequence detection off. SFTTrainer passes use_cache=False; custom loops must too.
    model = tiny_model("llama", "sdpa")
    rows = token_rows([7, 12, 5])
    packed = pack_rows(rows)
    model.train()
    try:
        with torch.no_grad():
            logits = model(
                input_ids=torch.tensor([packed["input_ids"]]), position_ids=torch.tensor([packed["position_ids"]])
            ).logits[0]
    finally:
        model.eval()
    assert model.config.use_cache is True
    assert min(segment_errors(model, rows, logits)[1:]) > LEAK


def collate(
    rows: Sequence[TokenRow], *, max_length: int, padding_free: bool = True, multiple: int | None = None
) -> tuple[list, dict]:
    """Plan and pack `rows`, then collate the packed rows as SFTTrainer would (its columns only)."""
    lengths = padded_lengths([len(r["input_ids"]) for r in rows], multiple=multiple)
    bins = plan_bins(lengths, max_length=max_length)
    packed = [pack_rows([rows[i] for i in b], pad_to_multiple_of=multiple, pad_id=PAD) for b in bins]
    collator = trl_sft.DataCollatorForLanguageModeling(pad_token_id=0, padding_free=padding_free)
    examples = [{k: p[k] for k in ("input_ids", "labels", "seq_lengths")} for p in packed]
    order = [rows[i] for b in bins for i in b]
    return order, collator(examples)


@pytest.mark.parametrize("multiple", MULTIPLES)
@pytest.mark.parametrize("attn", ATTNS)
def test_trl_padding_free_batch_is_isolated_and_loss_matches(attn, multiple):
    model = tiny_model("llama", attn)
    rows = token_rows([9, 4, 11, 6, 3, 8, 7])
    order, batch = collate(rows, max_length=20, multiple=multiple)
    assert "attention_mask" not in batch
    lengths = padded_lengths([len(r["input_ids"]) for r in order], multiple=multiple).tolist()
    assert batch["input_ids"].shape == (1, sum(lengths))
    # what TRL rebuilds from seq_lengths is what pack_rows stored: positions run on through the pads
    assert batch["position_ids"][0].tolist() == [p for n in lengths for p in range(n)]

    with torch.no_grad():
        out = model(**batch, use_cache=False)
    errors = segment_errors(model, order, out.logits[0], multiple=multiple)
    assert max(errors) < ATOL, errors

    # The packed loss is the token-weighted mean of the separate losses: nothing crosses a boundary.
    total, count = 0.0, 0
    for r in order:
        logits, labels = alone_logits(model, r)[:-1], torch.tensor(r["labels"][1:])
        total += torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum").item()
        count += int((labels != IGNORE_INDEX).sum())
    assert out.loss.item() == pytest.approx(total / count, abs=1e-5)


def test_trl_collator_without_padding_free_leaks():
    # Why ftdata's packed data must be trained with padding_free=True: the padded collator
    # drops position_ids and sends an attention_mask, so sequences attend to each other.
    model = tiny_model("llama", "sdpa")
    rows = token_rows([9, 4, 11, 6])
    order, batch = collate(rows, max_length=40, padding_free=False)
    assert "position_ids" not in batch and "attention_mask" in batch
    with torch.no_grad():
        logits = model(**batch, use_cache=False).logits.flatten(0, 1)
    assert max(segment_errors(model, order, logits)) > LEAK


def test_sft_trainer_runs_on_packed_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    tokenizers = pytest.importorskip("tokenizers")
    trl = pytest.importorskip("trl")

    vocab = {"<pad>": 0, **{f"t{i}": i for i in range(1, VOCAB)}}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<pad>"))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<pad>")

    rows = token_rows([9, 4, 11, 6, 3, 8, 7, 10, 5, 12], seed=1)
    bins = plan_bins([len(r["input_ids"]) for r in rows], max_length=24)
    dataset = datasets.Dataset.from_list([pack_rows([rows[i] for i in b]) for b in bins])

    seen: list[dict] = []

    def record(_module, _args, kwargs):
        seen.append({k: kwargs.get(k) for k in ("attention_mask", "position_ids", "use_cache", "input_ids")})

    model = build_model("llama", "sdpa")  # a fresh one: the trainer changes it
    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        config = trl.SFTConfig(
            output_dir=str(tmp_path),
            max_steps=2,
            per_device_train_batch_size=2,
            padding_free=True,
            max_length=None,  # ftdata already enforced it; padding_free without packing requires None
            dataset_kwargs={"skip_prepare_dataset": True},
            bf16=False,
            report_to=[],
            save_strategy="no",
            logging_steps=1,
            disable_tqdm=True,
        )
        trainer = trl.SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
        trainer.train()
    finally:
        handle.remove()

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    assert seen
    for inputs in seen:
        assert inputs["attention_mask"] is None
        assert inputs["use_cache"] is False
        positions = inputs["position_ids"][0].tolist()
        assert positions[0] == 0 and positions.count(0) > 1  # several sequences, positions restarting
