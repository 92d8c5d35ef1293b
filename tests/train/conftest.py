"""Fixtures for the training layer: a tiny Llama with the real SmolLM2 tokenizer, and small
hand-made datasets (rows built with the tokenizer's own chat template)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from ftdata.types import IGNORE_INDEX  # noqa: E402

# Short, distinct question/answer pairs: a tiny model can learn them in a few dozen steps.
QA = [
    ("What colour is the sky?", "The sky is blue."),
    ("How many legs has a cat?", "A cat has four legs."),
    ("What is two plus two?", "Two plus two is four."),
    ("Name a fruit.", "An apple is a fruit."),
    ("What do bees make?", "Bees make honey."),
    ("Where do fish live?", "Fish live in water."),
    ("What is frozen water?", "Frozen water is ice."),
    ("Which animal barks?", "A dog barks."),
]


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


def chat_row(tok, question: str, answer: str) -> dict[str, list[int]]:
    """One unpacked row: prompt (chat template + generation prompt) masked, answer + EOS trained."""
    messages = [{"role": "system", "content": "Answer."}, {"role": "user", "content": question}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = prompt_ids + answer_ids
    return {
        "input_ids": ids,
        "attention_mask": [1] * len(ids),
        "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids,
    }


def rows_dataset(tok, pairs=QA, *, repeat: int = 1):
    from datasets import Dataset

    rows = [chat_row(tok, q, a) for q, a in pairs] * repeat
    return Dataset.from_list(rows)


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
