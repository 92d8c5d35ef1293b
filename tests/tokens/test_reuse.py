"""Token ids with a template's constant stretches tokenized once (`ftdata.tokens.reuse`) are the tokenizer's own,
on every shared tokenizer and every TRL chat template, hostile contents included; a batch of prompts rendered by
one template call (`ChatRenderer.render_all`) is each prompt's own render."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trl
from support import TOKENIZER_NAMES, TOKENIZERS
from tokenizers import AddedToken
from transformers import AutoTokenizer

from ftdata.chat.renderer import ChatRenderer
from ftdata.io.resources import load_tokenizer
from ftdata.tokens.reuse import ReusingEncoder

# Contents that put what a pre-tokenizer treats apart next to the template's markup.
CONTENTS = [
    "Janet's ducks lay 16 eggs per day. How many does she sell?", " leading space", "\n\nleading newlines",
    "trailing newline\n", "tab\tand  two spaces", "e\u0301 and é, 日本語, emoji 🦆", "12345 67", "",
    "<|im_start|>as text", "<start_of_turn>as text", "<|eot_id|>as text", "'s 're 've", "ends with a space ",
]  # fmt: skip
VISION = ("vl", "llava", "idefics", "smolvlm")
TRL_TEMPLATES = sorted(p for p in (Path(trl.__file__).parent / "chat_templates").glob("*.jinja")
                       if not p.stem.endswith("_training") and not any(v in p.stem for v in VISION))  # fmt: skip


def _conversations() -> list[list[dict[str, str]]]:
    out = []
    for i, content in enumerate(CONTENTS):
        user = {"role": "user", "content": content or "hi"}
        out.append([{"role": "system", "content": CONTENTS[-1 - i] or "Be brief."}, user] if i % 2 else [user])
        reply = {"role": "assistant", "content": CONTENTS[i - 1] or "ok"}
        out.append([user, reply, {"role": "user", "content": "And?"}])
    return out


def _renders(tok: Any, **kwargs: object) -> list[str]:
    texts = []
    for conversation in _conversations():
        try:
            texts.append(tok.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False, **kwargs))
        except Exception:  # noqa: BLE001, S112 (a template that refuses a system turn or two user turns)
            continue
    return texts


@pytest.mark.parametrize("name", [None, *TOKENIZER_NAMES])
def test_ids_are_the_tokenizers_own_on_every_shared_tokenizer(name: str | None) -> None:
    tok = load_tokenizer(None) if name is None else AutoTokenizer.from_pretrained(TOKENIZERS / name)
    texts = _renders(tok) * 2  # the second time, the constant stretches come from what was kept
    encoder = ReusingEncoder(tok)
    assert texts
    assert encoder.encode(texts, tok) == tok(texts, add_special_tokens=False)["input_ids"]
    assert encoder.encode(texts, tok, special=True) == tok(texts, add_special_tokens=True)["input_ids"]
    # ByteLevel tokenizers split cleanly at their added tokens; Phi-3's SentencePiece (a space put before the
    # first word of a text) does not, and its texts are tokenized whole
    assert encoder.exact is (name != "phi-3-mini-4k-instruct")


@pytest.mark.parametrize("template", TRL_TEMPLATES, ids=lambda p: p.stem)
def test_ids_are_the_tokenizers_own_on_every_trl_template(template: Path) -> None:
    tok = AutoTokenizer.from_pretrained(TOKENIZERS / "qwen2.5-instruct")
    tok.chat_template = template.read_text(encoding="utf-8")
    texts = _renders(tok, bos_token="<|endoftext|>")  # Llama 3's templates write a BOS; Qwen2.5 has none
    assert texts, f"{template.name} rendered none of the probe conversations"
    assert ReusingEncoder(tok).encode(texts * 2, tok) == tok(texts * 2, add_special_tokens=False)["input_ids"]


def test_a_template_constant_text_is_kept_and_a_records_own_text_is_not() -> None:
    tok = load_tokenizer(None)
    encoder = ReusingEncoder(tok)
    asks = [[{"role": "user", "content": f"question {i}"}] for i in range(5)]
    texts = [tok.apply_chat_template(a, add_generation_prompt=True, tokenize=False) for a in asks]
    encoder.encode(texts, tok)
    kept = set(encoder._known)
    assert "assistant\n" in kept and "\n" in kept
    assert any(k.startswith("system\nYou are a helpful AI assistant named SmolLM") for k in kept)
    assert not any("question" in k for k in kept)


def test_an_added_token_that_strips_spaces_makes_every_text_tokenized_whole() -> None:
    tok = AutoTokenizer.from_pretrained(TOKENIZERS / "qwen2.5-instruct")
    tok.add_tokens([AddedToken("<sep>", lstrip=True, rstrip=True, special=True, normalized=False)])
    texts = ["a <sep> b", "<|im_start|>user\n x <sep>\n\ny<|im_end|>"]
    encoder = ReusingEncoder(tok)
    assert not encoder.exact
    assert encoder.encode(texts, tok) == tok(texts, add_special_tokens=False)["input_ids"]


def test_a_batch_render_is_each_conversations_own_render() -> None:
    renderer = ChatRenderer(load_tokenizer(None))
    conversations = [c for c in _conversations() if c[-1]["role"] == "user"]
    assert renderer.render_all(conversations, generation=True) == [renderer(c, generation=True) for c in conversations]


def test_a_batch_render_that_raises_is_none_so_each_is_rendered_on_its_own() -> None:
    tok = AutoTokenizer.from_pretrained(TOKENIZERS / "qwen2.5-instruct")
    tok.chat_template = (
        "{% for m in messages %}{% if m.content == 'boom' %}{{ raise_exception('no') }}{% endif %}"
        "{{ m.content }}{% endfor %}"
    )
    renderer = ChatRenderer(tok)
    a, b, boom = ([{"role": "user", "content": c}] for c in ("a", "b", "boom"))
    assert renderer.render_all([a, b], generation=True) == ["a", "b"]
    assert renderer.render_all([a, boom], generation=True) is None
