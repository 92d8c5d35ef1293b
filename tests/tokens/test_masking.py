"""Masker: literal masks on every real chat template, BOS handling, edge rules, verification.

"Trained text" is the text under each run of trained tokens (their offsets into the
rendered text), so `["yo<|im_end|>"]` means: the tokens of `yo` and `<|im_end|>` carry
loss, and nothing else does.
"""

from __future__ import annotations

import functools
import re

import pytest
from support import TOKENIZER_NAMES, TOKENIZERS, tokenizer
from test_chat_masking import BYTE_LEVEL, chat, chat_template, one, trained_runs, trained_texts

from ftdata.errors import Location
from ftdata.errors import UnusableRecord
from ftdata.tokens.border import token_ranges
from ftdata.tokens.masking import REPAIRED, Masker, Tokenized
from ftdata.chat.render import Renderer
from ftdata.types import IGNORE_INDEX, Example, Message, Rendered

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")
SYSTEM_MULTI = {"messages": [{"role": "system", "content": "Be brief."}, *chat("hi", "yo", "again", "sure thing")["messages"]]}
TODAY = r"\d{2} [A-Z][a-z]{2} \d{4}"  # llama-3.2 writes today's date (strftime_now); the rest is literal

# name -> (render of [user hi, assistant yo], trained), (render of SYSTEM_MULTI, trained)
LITERAL = {
    None: (
        ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
         "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n", ["yo<|im_end|>"]),
        ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
         "<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\nsure thing<|im_end|>\n",
         ["yo<|im_end|>", "sure thing<|im_end|>"]),
    ),
    "qwen2.5-instruct": (
        ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
         "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n", ["yo<|im_end|>"]),
        ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
         "<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\nsure thing<|im_end|>\n",
         ["yo<|im_end|>", "sure thing<|im_end|>"]),
    ),
    "llama-3-8b-instruct": (
        ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\nyo<|eot_id|>", ["yo<|eot_id|>"]),
        ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
         "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nyo<|eot_id|>"
         "<|start_header_id|>user<|end_header_id|>\n\nagain<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\nsure thing<|eot_id|>", ["yo<|eot_id|>", "sure thing<|eot_id|>"]),
    ),
    "llama-3.2-instruct": (
        ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
         "Today Date: {TODAY}\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\nyo<|eot_id|>", ["yo<|eot_id|>"]),
        ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
         "Today Date: {TODAY}\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\nyo<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nagain"
         "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nsure thing<|eot_id|>",
         ["yo<|eot_id|>", "sure thing<|eot_id|>"]),
    ),
    "mistral-nemo-instruct-2407": (
        ("<s>[INST]hi[/INST]yo</s>", ["yo</s>"]),
        # The template drops the system prompt of a record that ends with the assistant (noted).
        ("<s>[INST]hi[/INST]yo</s>[INST]again[/INST]sure thing</s>", ["yo</s>", "sure thing</s>"]),
    ),
    "gemma-3-it": (
        ("<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\nyo<end_of_turn>\n", ["yo<end_of_turn>"]),
        # No system role: the template folds it into the first user turn.
        ("<bos><start_of_turn>user\nBe brief.\n\nhi<end_of_turn>\n<start_of_turn>model\nyo<end_of_turn>\n"
         "<start_of_turn>user\nagain<end_of_turn>\n<start_of_turn>model\nsure thing<end_of_turn>\n",
         ["yo<end_of_turn>", "sure thing<end_of_turn>"]),
    ),
    "phi-3-mini-4k-instruct": (
        # <|end|> strips the newline after it into its own token; the template closes with EOS.
        ("<|user|>\nhi<|end|>\n<|assistant|>\nyo<|end|>\n<|endoftext|>", ["yo<|end|>\n<|endoftext|>"]),
        ("<|system|>\nBe brief.<|end|>\n<|user|>\nhi<|end|>\n<|assistant|>\nyo<|end|>\n<|user|>\nagain<|end|>\n"
         "<|assistant|>\nsure thing<|end|>\n<|endoftext|>", ["yo<|end|>\n", "sure thing<|end|>\n<|endoftext|>"]),
    ),
    "deepseek-v3": (
        ("<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜>yo<｜end▁of▁sentence｜>", ["yo<｜end▁of▁sentence｜>"]),
        # The system prompt goes right after BOS, with no role marker.
        ("<｜begin▁of▁sentence｜>Be brief.<｜User｜>hi<｜Assistant｜>yo<｜end▁of▁sentence｜><｜User｜>again"
         "<｜Assistant｜>sure thing<｜end▁of▁sentence｜>", ["yo<｜end▁of▁sentence｜>", "sure thing<｜end▁of▁sentence｜>"]),
    ),
}  # fmt: skip
# Tokens that open or close a header, a user or a system turn: never trained.
STRUCTURE = {"<|im_start|>", "<|start_header_id|>", "<|end_header_id|>", "<start_of_turn>", "[INST]", "[/INST]",
             "<｜User｜>", "<｜Assistant｜>", "<|user|>", "<|assistant|>", "<|system|>", "<|begin_of_text|>", "<bos>",
             "<s>", "<｜begin▁of▁sentence｜>"}  # fmt: skip
ALL = [None, *TOKENIZER_NAMES]


def matches(expected: str, text: str) -> bool:
    return re.fullmatch(re.escape(expected).replace(re.escape("{TODAY}"), TODAY), text) is not None


@pytest.mark.parametrize("name", ALL, ids=lambda n: n or "smollm2")
@pytest.mark.parametrize("which", [0, 1], ids=["single", "system-multi"])
def test_real_template_literal_mask(name, which):
    tok = tokenizer(name)
    row = chat("hi", "yo") if which == 0 else SYSTEM_MULTI
    text, trained = LITERAL[name][which]
    rendered, result = one(tok, row)
    assert matches(text, rendered.text), rendered.text
    assert trained_texts(tok, rendered, result) == trained
    tokens = tok.convert_ids_to_tokens(result.input_ids)
    structure = [t for t, label in zip(tokens, result.labels) if t in STRUCTURE]
    assert structure, "the render has header tokens"
    assert all(label == IGNORE_INDEX for t, label in zip(tokens, result.labels) if t in STRUCTURE)
    for word in ("hi", "again", "Be", "brief"):  # user and system words stay untrained
        assert not any(t.lstrip("Ġ▁") == word for t, label in zip(tokens, result.labels) if label != IGNORE_INDEX), word


def test_chatml_label_vector_token_by_token(smol):
    rendered, result = one(smol, chat("hi", "yo"))
    pairs = [(t, label != IGNORE_INDEX) for t, label in zip(smol.convert_ids_to_tokens(result.input_ids), result.labels)]
    assert pairs[-10:] == [
        ("hi", False), ("<|im_end|>", False), ("Ċ", False), ("<|im_start|>", False), ("ass", False), ("istant", False),
        ("Ċ", False), ("yo", True), ("<|im_end|>", True), ("Ċ", False),
    ]  # fmt: skip
    assert [t for t, trained in pairs if trained] == ["yo", "<|im_end|>"]


@pytest.mark.parametrize("name", BYTE_LEVEL, ids=lambda n: n or "smollm2")
def test_byte_level_decode_of_trained_ids_is_the_response(name):
    """Byte-level BPE decodes exactly: the trained ids of each turn decode to content + marker."""
    tok = tokenizer(name)
    row = chat("¿Qué tal? 你好", " Très bien 😀 — 很好\n\tok ", "and?", "x")
    rendered, result = one(tok, row)
    eot = {"mistral-nemo-instruct-2407": "</s>", "deepseek-v3": "<｜end▁of▁sentence｜>"}.get(name, "<|eot_id|>" if "llama" in (name or "") else "<|im_end|>")
    first = " Très bien 😀 — 很好\n\tok " if name in (None, "qwen2.5-instruct", "mistral-nemo-instruct-2407", "deepseek-v3") else "Très bien 😀 — 很好\n\tok"
    decoded = [tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) for ids, _ in trained_runs(tok, rendered, result)]
    assert decoded == [first + eot, "x" + eot]
    all_trained = [i for i in result.labels if i != IGNORE_INDEX]
    assert tok.decode(all_trained, skip_special_tokens=False, clean_up_tokenization_spaces=False) == first + eot + "x" + eot


# ---------------------------------------------------------------- BOS


@pytest.mark.parametrize("name", ALL, ids=lambda n: n or "smollm2")
def test_chat_template_bos_is_never_doubled(name):
    tok = tokenizer(name)
    rendered, result = one(tok, chat("hi", "yo"))
    assert result.input_ids == tok(rendered.text, add_special_tokens=False)["input_ids"]
    assert result.prefix == 0
    bos = Renderer(tok).markers.bos  # '' for ChatML, whose "BOS" <|im_start|> opens every turn
    if bos:
        assert rendered.text.startswith(bos) and result.input_ids.count(tok.bos_token_id) == 1


@pytest.mark.parametrize("name", ALL, ids=lambda n: n or "smollm2")
def test_prompt_template_gets_the_tokenizers_own_bos_once(name):
    tok = tokenizer(name)
    rendered, result = one(tok, {"instruction": "Say hi.", "output": "hi"}, template="alpaca")
    assert result.input_ids == tok(rendered.text)["input_ids"][: len(result.input_ids)]  # what tokenizer(text) gives
    if name in ("llama-3-8b-instruct", "llama-3.2-instruct", "gemma-3-it", "mistral-nemo-instruct-2407"):
        assert result.prefix == 1 and result.input_ids[0] == tok.bos_token_id
        assert result.input_ids.count(tok.bos_token_id) == 1
        assert result.labels[0] == IGNORE_INDEX
    else:
        assert result.prefix == 0
    assert trained_texts(tok, rendered, result) == [f"hi{tok.eos_token}"]


def test_template_without_bos_on_a_bos_tokenizer_gets_one():
    tok = tokenizer("llama-3-8b-instruct")
    source = "{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>{% endfor %}"
    with chat_template(tok, source + "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"):
        rendered, result = one(tok, chat("hi", "yo"))
    assert not rendered.text.startswith("<|begin_of_text|>")
    assert result.input_ids[0] == tok.bos_token_id and result.input_ids.count(tok.bos_token_id) == 1
    assert trained_texts(tok, rendered, result) == ["yo<|eot_id|>"]


# ---------------------------------------------------------------- edge rules


def test_whitespace_swallowed_by_a_header_token_stays_untrained():
    """Phi-3's <|assistant|> (rstrip) swallows the newline and the response's leading space."""
    tok = tokenizer("phi-3-mini-4k-instruct")
    rendered, result = one(tok, chat("hi", "  yo"))
    assert rendered.text == "<|user|>\nhi<|end|>\n<|assistant|>\n  yo<|end|>\n<|endoftext|>"
    tokens = tok.convert_ids_to_tokens(result.input_ids)
    assert ("<|assistant|>", IGNORE_INDEX) in zip(tokens, result.labels)
    assert REPAIRED not in result.notes  # no re-tokenization: the exact tokens of the text
    assert trained_texts(tok, rendered, result) == ["yo<|end|>\n<|endoftext|>"]


@pytest.mark.parametrize(
    ("name", "eot", "trained_tokens"),
    [
        (None, "<|im_end|>", ["s", "Ġare", "Ġgood", "<|im_end|>"]),
        ("llama-3-8b-instruct", "<|eot_id|>", ["s", "Ġare", "Ġgood", "<|eot_id|>"]),
        ("gemma-3-it", "<end_of_turn>", ["s", "▁are", "▁good", "<end_of_turn>"]),
        ("phi-3-mini-4k-instruct", "<|end|>", ["s", "▁are", "▁good", "<|end|>"]),
    ],
)
def test_token_crossing_a_response_edge_is_split_there(name, eot, trained_tokens):
    """'Answer' + 's are good' merges into the token 'Answers' (or 'wers'): re-tokenize at the edge."""
    tok = tokenizer(name)
    source = "{% for m in messages %}{% if m.role == 'user' %}Question: {{ m.content }}\nAnswer{% else %}{{ m.content }}EOT\n{% endif %}{% endfor %}"
    with chat_template(tok, source.replace("EOT", eot)):
        rendered, result = one(tok, chat("q", "s are good"))
    whole = tok.backend_tokenizer.encode(rendered.text, add_special_tokens=False)
    assert any(a < rendered.spans[0][0] < b for a, b in whole.offsets), "a token crosses the edge"
    assert REPAIRED in result.notes
    assert trained_texts(tok, rendered, result) == [f"s are good{eot}"]
    ids = [i for i in result.labels if i != IGNORE_INDEX]
    assert tok.convert_ids_to_tokens(ids) == trained_tokens  # Phi-3: 's', not a prepended '▁s'
    if name == "phi-3-mini-4k-instruct":  # alone, the piece would get a '▁' that is not in the text
        assert tok.backend_tokenizer.encode("s are good", add_special_tokens=False).tokens[0] == "▁s"


def test_token_ranges_rules_on_literal_offsets():
    text = "AB\n yoC"
    # tokens: "AB\n " (an added header token "AB" with rstrip, id 900) | "yo" | "C"
    offsets = [(0, 4), (4, 6), (6, 7)]
    assert token_ranges(text, offsets, ((3, 6),), [900, 5, 6], {900: "AB"}) == [(1, 2)]  # added header swallowed " ": out
    assert token_ranges(text, offsets, ((3, 6),), [40, 5, 6], {900: "AB"}) is None  # a plain token across the start: split
    assert token_ranges(text, offsets, ((1, 6),), [900, 5, 6], {900: "AB"}) is None  # its own text crosses the start
    # Qwen2.5 "assistant\n" + "\nyo": the whole-text token "\n\n" crosses the start: split, as inference does
    assert token_ranges("t\n\nyo", [(0, 1), (1, 3), (3, 5)], ((2, 5),), [1, 2, 3], {900: "AB"}) is None
    # Gemma 3's "\n\n" is an added token, but whitespace itself: the prompt alone ends with "\n": split
    assert token_ranges("t\n\nyo", [(0, 1), (1, 3), (3, 5)], ((2, 5),), [1, 108, 3], {108: "\n\n"}) is None
    assert token_ranges(text, [(0, 2), (2, 4), (4, 6), (6, 7)], ((2, 6),)) == [(1, 3)]  # whitespace token inside
    assert token_ranges(text, [(0, 5), (5, 6), (6, 7)], ((4, 6),)) is None  # " y" + "o": crosses with text both sides
    assert token_ranges("yo\n\nX", [(0, 2), (2, 4), (4, 5)], ((0, 3),)) == [(0, 2)]  # "\n\n" overhangs the end: in


# ---------------------------------------------------------------- verification


def _rendered(text: str, spans) -> Rendered:
    return Rendered(text, tuple(spans), "prefix")


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_a_text_with_nothing_to_locate_is_tokenized_as_the_tokenizer_does_its_offsets_read_later(name):
    """A pair's prompt (no span) goes through the tokenizer's call without offsets: the same ids as the
    call with them, and offsets, when read, the tokenizer's own."""
    tok = tokenizer(name)
    text = "Caf\u00e9  na\u00efve 1234\n\n\ttabs, emoji \U0001f600 and <b>markup</b>  "
    bare, spanned = Masker(tok)([Rendered(text, (), "prefix"), Rendered(text, ((0, len(text)),), "prefix")])
    enc = tok.backend_tokenizer.encode(text, add_special_tokens=False)
    assert bare.input_ids[bare.prefix :] == enc.ids and bare.input_ids == spanned.input_ids
    assert list(bare.offsets) == enc.offsets == list(spanned.offsets)


def test_verification_rejects_a_span_with_no_token(smol):
    (result,) = Masker(smol)([_rendered("hello there", [(5, 5)])])
    assert result.reason == "verification failed: no token inside the response span ''"


def test_verification_rejects_characters_the_vocabulary_cannot_spell(smol):
    """The bundled SmolLM2 vocab lacks the byte 0xF1: U+40000 encodes to three 0x80 tokens."""
    renderer = Renderer(smol)
    example = Example((Message("user", "hi"), Message("assistant", "a \U00040000 b")), Location("x"))
    (result,) = Masker(smol)([renderer(example)])
    assert result.reason == (
        "verification failed: trained tokens decode to 'a ��� b<|im_end|>', not the response 'a \\U00040000 b<|im_end|>' "
        "(the tokenizer cannot spell it)"
    )


def test_verification_passes_unicode_the_tokenizer_normalizes():
    """Qwen2.5 normalizes to NFC: a decomposed 'é' decodes composed, and still verifies."""
    tok = tokenizer("qwen2.5-instruct")
    rendered, result = one(tok, chat("hi", "cafe\u0301"))
    assert tok.decode([i for i in result.labels if i != IGNORE_INDEX]) == "café<|im_end|>"


# ---------------------------------------------------------------- cheap verification stays exact

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ftdata.tokens import masking as masking_module  # noqa: E402
from ftdata.tokens import spelling as spelling_module  # noqa: E402

SPELLING = {None: "ascii", "qwen2.5-instruct": "normalizer", "llama-3-8b-instruct": "ascii",
            "llama-3.2-instruct": "ascii", "mistral-nemo-instruct-2407": "ascii", "deepseek-v3": None,
            "gemma-3-it": None, "phi-3-mini-4k-instruct": None}  # fmt: skip
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


def test_byte_table_is_gpt2s():
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    assert spelling_module.BYTE_CHARS == "".join(bytes_to_unicode()[b] for b in range(256))


@pytest.mark.parametrize("name", ALL, ids=lambda n: n or "smollm2")
def test_decode_is_skipped_only_for_lossless_byte_level_bpe(name):
    spelling = Masker(tokenizer(name)).spelling
    kind = None if spelling is None else ("normalizer" if spelling.ascii_only else "ascii")
    assert kind == SPELLING[name]
    if name is None:  # SmolLM2: a few control bytes and the lead bytes of U+40000.. have no token
        assert spelling.missing.hex(" ") == "04 06 13 14 16 1d c0 c1 f1 f2 f5 f6 f7 f8 f9 fa fb fc fd fe ff"
        assert spelling.exact("hello, wörld 你好 😀") and not spelling.exact("a \U00040000 b") and not spelling.exact("\x04")


@functools.cache
def _spelling(name):
    return Masker(tokenizer(name)).spelling


@pytest.mark.parametrize("name", [n for n, kind in SPELLING.items() if kind], ids=lambda n: n or "smollm2")
@settings(max_examples=200, deadline=None)
@given(text=ANY_TEXT)
def test_exact_spelling_means_the_tokens_decode_to_the_text(name, text):
    """The soundness of skipping the decode: whenever the rule says exact, decode(encode(text)) == text."""
    backend = tokenizer(name).backend_tokenizer
    if _spelling(name).exact(text):
        ids = backend.encode(text, add_special_tokens=False).ids
        assert backend.decode(ids, skip_special_tokens=False) == text


_FAST = Masker(tokenizer(None)) if TOKENIZERS.is_dir() else None
_SLOW = Masker(tokenizer(None), fast_verify=False) if TOKENIZERS.is_dir() else None


@settings(max_examples=100, deadline=None)
@given(prompt=ANY_TEXT, response=ANY_TEXT.filter(str.strip))
def test_fast_verification_gives_the_same_verdicts_as_decoding_every_record(prompt, response):
    renderer = Renderer(tokenizer(None), "alpaca")
    example = Example((Message("user", prompt or "q"), Message("assistant", response)), Location("x"))
    try:
        rendered = renderer(example)
    except UnusableRecord:  # control-token text: rejected before masking
        return
    assert list(map(_verdict, _FAST([rendered]))) == list(map(_verdict, _SLOW([rendered])))


def _verdict(result):
    return result.reason if isinstance(result, UnusableRecord) else result


def test_a_corrupted_mask_is_caught(smol, monkeypatch):
    """A span's first token left out (the kind of bug offsets arithmetic can have) fails the coverage check."""
    from ftdata.tokens import border

    real = border.token_ranges

    def shifted(text, offsets, spans, *token_info):
        ranges = real(text, offsets, spans, *token_info)
        return [(i0 + 1, i1) for i0, i1 in ranges]

    monkeypatch.setattr(border, "token_ranges", shifted)
    rendered = Renderer(smol, "alpaca")(Example((Message("user", "Say hi."), Message("assistant", "hi there")), Location("x")))
    (result,) = Masker(smol, reuse=False)([rendered])  # the whole text's path (below: the pieces')
    assert result.reason == "verification failed: trained tokens cover ' there<|im_end|>', not the response 'hi there<|im_end|>'"


@pytest.mark.parametrize("words", [False, True], ids=["rust", "words"])
def test_a_corrupted_piece_is_caught(smol, monkeypatch, words):
    """A span piece's first token lost (the kind of bug joining pieces, or words, can have) fails the byte count,
    whether the Rust tokenizer made its ids or `tokens.words` did."""
    if words:
        monkeypatch.setattr(masking_module, "WORDS_FROM_CHARS", 0)
    masker = Masker(smol)
    real = masker._encode_pieces
    monkeypatch.setattr(masker, "_encode_pieces", lambda *a: iter([(ids[1:], enc) for ids, enc in real(*a)]))
    rendered = Renderer(smol, "alpaca")(Example((Message("user", "Say hi."), Message("assistant", "hi there")), Location("x")))
    (result,) = masker([rendered])
    assert result.reason == "verification failed: trained tokens do not spell the 18 bytes of the response"
    assert (masker.words is not None) is words


def test_unspellable_text_is_caught_on_the_fast_path(smol):
    """SmolLM2 takes the no-decode path for spellable text; U+40000 sends the record to the decode check."""
    masker = Masker(smol)
    assert masker.spelling is not None
    renderer = Renderer(smol, "alpaca")
    ok, bad = (renderer(Example((Message("user", "q"), Message("assistant", a)), Location("x"))) for a in ("a b", "a \U00040000 b"))
    good, rejected = masker([ok, bad])
    assert isinstance(good, Tokenized)
    assert rejected.reason.startswith("verification failed: trained tokens decode to 'a ��� b")
