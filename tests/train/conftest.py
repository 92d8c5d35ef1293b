"""Fixtures for the training layer: a tiny Llama with the real SmolLM2 tokenizer, and builds of the small hand-made
datasets of `train_records` (import helpers from there, not from here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from train_records import QA, chat_row, preference_build, preference_records, prompt_set_build, rows_dataset  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    # Registered in pyproject.toml too; repeated here so tests/train runs on its own.
    config.addinivalue_line("markers", "slow: long-running tests; run with -m slow")
    config.addinivalue_line("markers", "gpu: needs CUDA; skipped without a GPU")


@pytest.fixture(scope="session")
def smol_tok():
    from ftdata.io.resources import load_tokenizer

    return load_tokenizer(None)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smol_tok) -> Path:
    """A 2-layer LlamaForCausalLM (hidden 64) built from a config, saved with the SmolLM2 tokenizer.

    Hidden 64, not 32: bitsandbytes' CPU 4-bit kernels need in_features >= the 64-wide quant block.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(smol_tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=smol_tok.bos_token_id, eos_token_id=smol_tok.eos_token_id, pad_token_id=smol_tok.pad_token_id,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    smol_tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def qa_dataset_dir(tmp_path_factory: pytest.TempPathFactory, smol_tok) -> Path:
    """A saved DatasetDict: train = the QA rows x4, test = the same 8 rows (memorisation check)."""
    from datasets import DatasetDict

    folder = tmp_path_factory.mktemp("qa-data") / "built"
    DatasetDict({"train": rows_dataset(smol_tok, repeat=4), "test": rows_dataset(smol_tok)}).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="session")
def qa_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The QA pairs as an Alpaca-style JSON file, for the build_sft_dataset path."""
    path = tmp_path_factory.mktemp("qa-json") / "qa.json"
    path.write_text(json.dumps([{"instruction": q, "input": "", "output": a} for q, a in QA * 3]), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def make_row(smol_tok):
    """`make_row(question, answer)` -> an unpacked row for the SmolLM2 tokenizer."""
    return lambda question, answer: chat_row(smol_tok, question, answer)


@pytest.fixture(scope="session")
def pack_rows():
    from packing_reference import pack_rows

    return pack_rows


@pytest.fixture(scope="session")
def dpo_build(tmp_path_factory: pytest.TempPathFactory, smol_tok) -> Path:
    """A preference build: train = the 8 pairs x2, test = the first 4 pairs."""
    records = preference_records("preference")
    return preference_build(tmp_path_factory.mktemp("dpo") / "built", smol_tok, task="preference",
                            train=records * 2, test=records[:4])  # fmt: skip


@pytest.fixture(scope="session")
def kto_build(tmp_path_factory: pytest.TempPathFactory, smol_tok) -> Path:
    """A KTO build: train = the 16 unpaired rows (each pair as a desirable and an undesirable row), test = the first 4."""
    records = preference_records("kto")
    return preference_build(tmp_path_factory.mktemp("kto") / "built", smol_tok, task="kto", train=records, test=records[:4])


@pytest.fixture(scope="session")
def gsm8k_build(tmp_path_factory: pytest.TempPathFactory, smol_tok) -> Path:
    """A prompt set of the 4 GSM8K-shaped records, 2 held out (test), built by ftdata."""
    return prompt_set_build(tmp_path_factory.mktemp("gsm8k") / "built", test_size=2)
