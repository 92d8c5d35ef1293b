"""`add_chat_tokens`: a ChatML template on a tokenizer without the ChatML tokens (Llama-3), the
markers added as special tokens, a tiny model trained on them and `ftdata eval` stopping at `<|im_end|>`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import CHATML, TOKENIZER_NAMES, TOKENIZERS, pristine, tokenizer

from ftdata import build_sft_dataset
from ftdata.chat.chat_template import with_template
from ftdata.chat.chat_tokens import chat_markers, copy_tokenizer, with_chat_tokens

torch = pytest.importorskip("torch")
LLAMA3 = "llama-3-8b-instruct"
pytestmark = pytest.mark.skipif(not (TOKENIZERS / LLAMA3).is_dir(), reason="shared tokenizers missing")


def chatml_llama3():
    """Llama 3's tokenizer rendering ChatML, whose markers it splits (shared: `with_chat_tokens` copies it to add them)."""
    return with_template(tokenizer(LLAMA3), CHATML)


def test_markers_come_from_the_templates_renders():
    assert chat_markers(chatml_llama3()) == ["<|im_start|>", "<|im_end|>"]
    assert chat_markers(tokenizer(LLAMA3)) == []  # its own template's markers are tokens already
    assert chat_markers(tokenizer("qwen2.5-instruct")) == []  # ChatML tokens of its own


def test_with_chat_tokens_adds_special_tokens_once():
    tok = chatml_llama3()
    extended = with_chat_tokens(tok)
    assert len(extended) == len(tok) + 2 and len(tok) == 128256  # the argument is not changed
    assert extended.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [128256, 128257]
    assert with_chat_tokens(extended) is extended


def test_the_copy_shares_only_the_tables_init_read_and_leaves_the_tokenizer_as_it_was():
    """Phi-3's tokenizer keeps the vocabulary and merges its __init__ built from: the copy shares those (no one
    changes them) and its Rust model, and the tokens it adds are in the copy only."""
    tok = copy_tokenizer(tokenizer("phi-3-mini-4k-instruct"))
    tok.chat_template = CHATML
    before = (len(tok), dict(tok.added_tokens_decoder), tok("<|im_end|>")["input_ids"], tok.special_tokens_map)
    extended = with_chat_tokens(tok)
    assert extended._merges is tok._merges and extended._vocab is tok._vocab and len(tok._merges) > 60_000
    assert (len(tok), dict(tok.added_tokens_decoder), tok("<|im_end|>")["input_ids"], tok.special_tokens_map) == before
    assert len(extended) == len(tok) + 2 and extended.backend_tokenizer is not tok.backend_tokenizer
    assert extended("<|im_end|>", add_special_tokens=False)["input_ids"] == [len(tok) + 1]


@pytest.mark.parametrize("name", [None, *TOKENIZER_NAMES])
def test_a_copy_is_the_tokenizer_and_what_it_adds_is_its_own_on_every_shared_tokenizer(name):
    """The copy serialises (`to_str`: model, pipeline, added tokens, padding, truncation) as the tokenizer does; tokens,
    padding and truncation set on it leave the tokenizer as it was, and text without the new tokens encodes alike."""
    tok = pristine(name)
    state = tok.backend_tokenizer.to_str()
    copied = copy_tokenizer(tok)
    assert copied.backend_tokenizer is not tok.backend_tokenizer and copied.backend_tokenizer.to_str() == state
    size = len(tok)
    new = ["<|zz_open|>", "<|zz_close|>"]
    copied.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    copied.backend_tokenizer.enable_truncation(max_length=7)
    assert (len(copied), copied.convert_tokens_to_ids(new)) == (size + 2, [size, size + 1])
    assert tok.backend_tokenizer.to_str() == state and len(tok) == size
    text = "Hello wörld, 12 345 <b>tags</b>\n\tand  spaces"
    ids = tok.backend_tokenizer.encode(text, add_special_tokens=False).ids
    assert copied.backend_tokenizer.encode(text, add_special_tokens=False).ids == ids[:7]
    assert copied.backend_tokenizer.encode("<|zz_close|>", add_special_tokens=False).ids == [size + 1]


def test_a_backend_copy_shares_the_model_unless_an_added_token_would_move():
    """`copy_backend` shares the model (changed in place, it changes in both: ftdata never does). Added tokens re-added
    take the model's id where the model has their text: a token added before its model was replaced by one that has it
    would move (3 -> 4 here), so that copy is a deep copy, with a model of its own (and, parsing the serialised
    tokenizer, the token moved too: the copy still serialises as a deep copy does)."""
    import copy

    from tokenizers import Tokenizer, models

    from ftdata.chat.chat_tokens import copy_backend

    def small() -> Tokenizer:
        backend = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
        backend.add_special_tokens(["<x>"])
        return backend

    plain = small()
    copy_backend(plain).model.unk_token = "a"
    assert plain.model.unk_token == "a"
    moved = small()
    moved.model = models.WordLevel({"a": 0, "b": 1, "[UNK]": 2, "c": 3, "<x>": 4}, unk_token="[UNK]")
    assert moved.token_to_id("<x>") == 3
    copied = copy_backend(moved)
    assert copied is not moved and copied.to_str() == copy.deepcopy(moved).to_str()
    copied.model.unk_token = "a"
    assert moved.model.unk_token == "[UNK]"


def test_build_with_add_chat_tokens_trains_the_closer_as_one_token():
    rows = [{"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]}]
    (added,) = build_sft_dataset(rows, tokenizer=chatml_llama3(), add_chat_tokens=True)
    trained = [t for t, label in zip(added["input_ids"], added["labels"]) if label != -100]
    assert trained == [19, 128257]  # "4", <|im_end|>
    # <|im_start|>user\n What is 2+2? <|im_end|>\n <|im_start|>assistant\n 4 <|im_end|>\n: each marker one token
    assert [added["input_ids"].count(i) for i in (128256, 128257)] == [2, 2] and len(added["input_ids"]) == 19


@pytest.fixture(scope="module")
def chatml_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer Llama built from a config, with the Llama-3 tokenizer and a ChatML template (no ChatML tokens)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = chatml_llama3()
    folder = tmp_path_factory.mktemp("chatml-llama")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_train_with_add_chat_tokens_then_eval_stops_at_im_end(tmp_path: Path, chatml_model_dir: Path) -> None:
    from ftdata.train import TrainConfig, train
    from ftdata.train.run import evaluate_run

    data = tmp_path / "data.jsonl"
    pairs = [("What is 2+2?", "4"), ("Name a colour.", "Blue")]
    data.write_text("".join(
        json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n" for q, a in pairs * 16
    ), encoding="utf-8")  # fmt: skip
    cfg = TrainConfig(
        model=str(chatml_model_dir), data=str(data), quantization="none", lora_r=8, lora_alpha=16, lora_dropout=0.0,
        max_steps=30, learning_rate=3e-2, lr_scheduler_type="constant", warmup_steps=0, per_device_train_batch_size=8,
        logging_steps=10, save_strategy="no", eval_strategy="no", output_dir=str(tmp_path / "runs"), run_name="chat-tokens",
        data_options={"add_chat_tokens": True, "test_size": 2},
    )  # fmt: skip
    result = train(cfg)
    adapter = result.run_dir / "adapter"
    saved = json.loads((adapter / "tokenizer_config.json").read_text())
    assert {"<|im_start|>", "<|im_end|>"} <= {t["content"] if isinstance(t, dict) else t for t in _added(saved, adapter)}
    assert "trainable_token_indices" in json.loads((adapter / "adapter_config.json").read_text())
    report = evaluate_run(result.run_dir, compare_base=False)
    answers = {row["reference"]: row["tuned"] for row in report.rows}
    # Generation stopped at the learned <|im_end|> (decoded without special tokens), not at max_new_tokens.
    assert answers == {ref: ref for ref in answers} and set(answers) <= {"4", "Blue"}


def _added(config: dict, folder: Path) -> list:
    """The added tokens a saved tokenizer declares (tokenizer.json's `added_tokens`)."""
    return [t["content"] for t in json.loads((folder / "tokenizer.json").read_text())["added_tokens"]]


def test_training_rows_built_with_added_tokens_needs_the_same_tokenizer(tmp_path: Path):
    from ftdata.errors import ConfigError
    from ftdata.train.config import TrainConfig
    from ftdata.train.data import load_splits

    rows = [{"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]}]
    build_sft_dataset(rows, tokenizer=chatml_llama3(), add_chat_tokens=True).save_to_disk(str(tmp_path / "built"))
    with pytest.raises(ConfigError, match=r"holds token id 128257 but the tokenizer has 128256 tokens.*--add-chat-tokens"):
        load_splits(TrainConfig(data=str(tmp_path / "built")), chatml_llama3())
    assert load_splits(TrainConfig(data=str(tmp_path / "built")), with_chat_tokens(chatml_llama3())).train.num_rows == 1
