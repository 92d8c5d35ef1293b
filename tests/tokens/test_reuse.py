"""Token ids with a template's constant stretches tokenized once (`ftdata.tokens.reuse`) are the tokenizer's own,
on every shared tokenizer and every TRL chat template, hostile contents included; a batch of prompts rendered by
one template call (`ChatRenderer.render_all`) is each prompt's own render."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trl
from support import TOKENIZER_NAMES, TOKENIZERS, pristine, tokenizer
from tokenizers import AddedToken
from transformers import AutoTokenizer

from ftdata.chat.chat_template import with_template
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
    tok = pristine(name)
    texts = _renders(tok) * 2  # the second time, the constant stretches come from what was kept
    encoder = ReusingEncoder(tok)
    assert texts
    assert encoder.encode(texts, tok) == tok(texts, add_special_tokens=False)["input_ids"]
    assert encoder.encode(texts, tok, special=True) == tok(texts, add_special_tokens=True)["input_ids"]
    # ByteLevel tokenizers split cleanly at their added tokens; Phi-3's SentencePiece (a space put before the
    # first word of a text) does not, and its texts are tokenized whole
    assert encoder.exact is (name != "phi-3-mini-4k-instruct")


@pytest.fixture(scope="module")
def qwen() -> Any:
    return AutoTokenizer.from_pretrained(TOKENIZERS / "qwen2.5-instruct")  # read only: each template is passed


@pytest.mark.parametrize("template", TRL_TEMPLATES, ids=lambda p: p.stem)
def test_ids_are_the_tokenizers_own_on_every_trl_template(template: Path, qwen: Any) -> None:
    tok = qwen
    source = template.read_text(encoding="utf-8")
    texts = _renders(tok, chat_template=source, bos_token="<|endoftext|>")  # Llama 3's write a BOS; Qwen2.5 has none
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
    tok = with_template(
        tokenizer("qwen2.5-instruct"),
        "{% for m in messages %}{% if m.content == 'boom' %}{{ raise_exception('no') }}{% endif %}{{ m.content }}{% endfor %}",
    )
    renderer = ChatRenderer(tok)
    a, b, boom = ([{"role": "user", "content": c}] for c in ("a", "b", "boom"))
    assert renderer.render_all([a, b], generation=True) == ["a", "b"]
    assert renderer.render_all([a, boom], generation=True) is None


# ---------------------------------------------------------------- template constants (`Constants`, prompt templates)

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ftdata.chat.prompt_templates import load_prompt_template, render_prompt_template  # noqa: E402
from ftdata.errors import Location  # noqa: E402
from ftdata.errors import UnusableRecord  # noqa: E402
from ftdata.tokens.masking import Masker  # noqa: E402
from ftdata.tokens.reuse import Constants  # noqa: E402
from ftdata.types import Example, Message, Rendered  # noqa: E402

ALPACA = load_prompt_template("alpaca")
BYTE_LEVEL = [None, "deepseek-v3", "llama-3-8b-instruct", "qwen2.5-instruct", "mistral-nemo-instruct-2407"]
SENTENCEPIECE = ["gemma-3-it", "phi-3-mini-4k-instruct"]  # no pre-tokenizer split / a prepended ▁ and stripping tokens
# What pre-tokenizers treat apart, at a record's edges and inside it: runs of spaces and newlines, digits, accents
# (composed and combining), other scripts, contractions, punctuation the regexes glue to newlines.
PARTS = [" ", "  ", "\n", "\n\n", "\t", "a", "Word", "7", "42", "é", "e\u0301", "中文", "Ж", ".", "'s", "?", ":", "#"]
TEXTS = st.lists(st.sampled_from(PARTS), min_size=1, max_size=6).map("".join)
_MASKERS: dict[str | None, tuple[Masker, Masker]] = {}


def _maskers(name: str | None) -> tuple[Masker, Masker]:
    if name not in _MASKERS:
        tok = tokenizer(name)
        _MASKERS[name] = (Masker(tok), Masker(tok, reuse=False))
    return _MASKERS[name]


def _alpaca(name: str | None, instruction: str, context: str, output: str) -> Rendered:
    example = Example((Message("user", instruction), Message("assistant", output)), Location("x", index=0), context)
    return render_prompt_template(example, ALPACA, eos=tokenizer(name).eos_token or "", trained=[False, True])


@pytest.mark.parametrize("name", BYTE_LEVEL + SENTENCEPIECE, ids=lambda n: n or "smollm2")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(instruction=TEXTS, context=st.one_of(st.just(""), TEXTS), output=TEXTS)
def test_reused_constant_ids_are_the_tokenizers_own_ids_of_the_whole_text(name, instruction, context, output):
    rendered = _alpaca(name, instruction, context, output)
    reusing, whole = _maskers(name)
    [pieces] = reusing.constants.pieces([(rendered.text, rendered.constants)]) if reusing.constants else [None]
    [a], [b] = reusing([rendered]), whole([rendered])
    assert a == b  # the row, its labels, notes and exchange cuts: as without reuse
    if pieces is not None:
        own = reusing.backend.encode_batch([rendered.text[s:e] for s, e, _ in pieces], add_special_tokens=False)
        joined = [i for (_, _, ids), enc in zip(pieces, own) for i in (enc.ids if ids is None else ids)]
        assert joined == reusing.backend.encode(rendered.text, add_special_tokens=False).ids
        assert a.input_ids[a.prefix :] == joined


def test_the_bundled_tokenizer_reuses_alpaca_constants_for_plain_records():
    rendered = _alpaca(None, "Give three tips.", "", "Eat well.")
    constants = _maskers(None)[0].constants
    [pieces] = constants.pieces([(rendered.text, rendered.constants)])
    assert pieces is not None and [ids is None for _, _, ids in pieces] == [False, True, False, True]


@pytest.mark.parametrize("name", SENTENCEPIECE)
def test_a_tokenizer_that_proves_no_border_reuses_nothing(name):
    # Gemma 3: a normalizer that rewrites spaces and no pre-tokenizer split at a newline; Phi-3: a prepended ▁ and
    # added tokens that strip the spaces beside them.
    assert not Constants(tokenizer(name).backend_tokenizer).usable


@pytest.mark.parametrize(
    ("name", "instruction", "output"),
    [
        (None, " Give", "Eat."),  # a space after `### Instruction:\n`: GPT-2's `\s+(?!\S)` makes `\n` and ` Give`
        (None, "Give", "\nEat."),  # a newline after `### Response:\n`: one `\n\n` pre-token
        (None, "Give ", "Eat."),  # a space before `\n\n### Response:\n`
        ("llama-3-8b-instruct", "Give.", "Eat."),  # Llama 3's `.` takes the newlines after it: `.\n\n`
    ],
)
def test_an_unproven_border_falls_back_to_the_whole_text(name, instruction, output):
    rendered = _alpaca(name, instruction, "", output)
    reusing, whole = _maskers(name)
    assert reusing.constants.pieces([(rendered.text, rendered.constants)]) == [None]
    assert reusing([rendered]) == whole([rendered])


def test_a_constant_that_ends_on_no_split_is_never_proven_beside_a_letter():
    # `Q: ` + `What`: GPT-2's regex makes ` What` one pre-token across the border
    constants = Constants(tokenizer(None).backend_tokenizer)
    assert constants.pieces([("Q: What?\nA: ok", ((0, "Q: "), (8, "\nA: ")))]) == [None]
    text = "Q:\nWhat?\nA:\nok"
    assert constants.pieces([(text, ((0, "Q:\n"), (8, "\nA:\n")))]) != [None]
    # a constant out of place (the text changed after rendering) is never trusted
    assert constants.pieces([("Q:\nWhat?\nB:\nok", ((0, "Q:\n"), (8, "\nA:\n")))]) == [None]


def test_a_piece_is_covered_when_its_tokens_spell_its_bytes():
    masker = _maskers(None)[0]
    text = "Eat well, é 中.<|im_end|>"
    ids = masker.backend.encode(text, add_special_tokens=False).ids
    assert masker.spelling.covers(ids, text)
    assert not masker.spelling.covers(ids[:-1], text)  # the end-of-turn token missing
    assert not masker.spelling.covers(ids[1:], text)
    assert not masker.spelling.covers([], "")


def test_pieces_counted_together_are_each_counted_as_alone():
    # A batch's spans are counted in one pass over all their ids (`covers_all`); each answer is its own piece's.
    tok = load_tokenizer(None)  # its own: a token is added below
    spelling = Masker(tok).spelling
    texts = ["Eat well, é 中.<|im_end|>", "", "ok", "a\n\n  b<|endoftext|>", "日本語 🦆"]
    pieces = [(tok.backend_tokenizer.encode(t, add_special_tokens=False).ids, t) for t in texts]
    pieces += [(pieces[0][0][:-1], texts[0]), (pieces[2][0] * 2, texts[2]), (pieces[4][0], texts[0])]
    assert spelling.covers_all(pieces) == [True, False, True, True, True, False, False, False]
    assert spelling.covers_all(pieces) == [spelling.covers(ids, text) for ids, text in pieces]
    tok.add_tokens(["<new>"])  # an id past the table it was made with
    assert spelling.covers_all([(tok.backend_tokenizer.encode("a<new>", add_special_tokens=False).ids, "a<new>")]) == [True]


def test_a_token_that_spells_no_bytes_leaves_every_piece_to_its_offsets():
    # A token whose characters are not GPT-2's byte alphabet (here one added after the sizes were read: "€") counts
    # no bytes; from then on no count is trusted (None: the masker reads the offsets).
    tok = load_tokenizer(None)  # its own: a token is added below
    spelling = Masker(tok).spelling
    ids = tok.backend_tokenizer.encode("hi", add_special_tokens=False).ids
    assert spelling.covers_all([(ids, "hi")]) == [True]
    tok.add_tokens(["€"])
    assert spelling.covers_all([(ids, "hi"), ([tok.convert_tokens_to_ids("€")], "€")]) == [None, None]
    assert spelling.covers(ids, "hi") is None


def test_a_tokenizer_left_truncating_reuses_nothing_and_rows_stay_the_whole_texts():
    tok = tokenizer(None)
    reusing, whole = Masker(tok), Masker(tok, reuse=False)
    rendered = _alpaca(None, "Give three tips.", "", "Eat well, sleep well and walk every day.")
    assert reusing.constants.pieces([(rendered.text, rendered.constants)]) != [None]
    tok("Give three tips.", truncation=True, max_length=4)  # transformers leaves its backend truncating
    try:
        assert tok.backend_tokenizer.truncation is not None
        assert not reusing.constants.usable
        assert reusing.constants.pieces([(rendered.text, rendered.constants)]) == [None]
        [a], [b] = reusing([rendered]), whole([rendered])
        assert isinstance(a, UnusableRecord) and str(a) == str(b)  # cut by the backend: refused, never trained short
    finally:
        tok.backend_tokenizer.no_truncation()
    assert reusing.constants.usable


def test_a_tokenizer_left_truncating_encodes_prompts_whole() -> None:
    tok = load_tokenizer(None)
    encoder = ReusingEncoder(tok)
    texts = _renders(tok)
    tok("Give three tips.", truncation=True, max_length=4)  # transformers leaves its backend truncating
    assert tok.backend_tokenizer.truncation is not None
    assert encoder.encode(texts, tok) == tok(texts, add_special_tokens=False)["input_ids"]  # transformers: untruncated
    assert max(map(len, encoder.encode(texts, tok))) > 4


@pytest.mark.parametrize("kind", ["masker", "encoder"])
def test_a_token_added_after_the_masker_was_made_is_tokenized_as_the_tokenizer_now_does(kind):
    # The constants' ids, the splitting tokens and the borders were read from the tokenizer as it stood; a token
    # added since (here inside the constant `### Response:`, a new id) changes the ids of every text that holds it.
    tok = load_tokenizer(None)  # its own: the test changes it
    rendered = _alpaca(None, "Give three tips.", "", "Eat well.")
    masker, encoder = Masker(tok), ReusingEncoder(tok)
    before = masker([rendered])[0].input_ids if kind == "masker" else encoder.encode([rendered.text] * 2, tok)[0]
    tok.add_tokens(["sponse"])
    own = tok(rendered.text, add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids("sponse") in own and own != before[-len(own) :]
    if kind == "masker":
        [row] = masker([rendered])
        assert row.input_ids[row.prefix :] == own and row == Masker(tok, reuse=False)([rendered])[0]
    else:
        assert encoder.encode([rendered.text] * 2, tok) == [own, own]


@pytest.mark.parametrize("name", [None, *TOKENIZER_NAMES], ids=lambda n: n or "smollm2")
def test_a_tokenizers_shape_read_twice_is_the_same(name):
    # DeepSeek-V3's empty `Sequence` normalizer is falsy: its shape once held the Python object, new at every read,
    # so a masker read its tokenizer again at every batch and no proof about it was ever kept
    from ftdata.tokens.reuse import shape

    backend = tokenizer(name).backend_tokenizer
    assert shape(backend) == shape(backend)


def test_the_proof_kept_for_a_tokenizer_is_proven_again_once_its_pre_tokenizer_changes(monkeypatch):
    from tokenizers import pre_tokenizers

    from ftdata.tokens import reuse

    proofs = []
    real = reuse._splits_at_added
    monkeypatch.setattr(reuse, "_splits_at_added", lambda b, a: proofs.append(1) or real(b, a))
    monkeypatch.setattr(reuse, "_PROVEN", {})
    tok = AutoTokenizer.from_pretrained(TOKENIZERS / "qwen2.5-instruct")
    backend = tok.backend_tokenizer
    added = reuse.splitting_tokens(backend)
    assert reuse.splits_at_added(backend, added) and reuse.splits_at_added(backend, added)
    assert len(proofs) == 1  # the second answer kept
    backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    reuse.splits_at_added(backend, added)
    assert len(proofs) == 2  # another shape: proven again
    longest = min(added, key=lambda t: (-len(t), t))  # one of those the probes put in texts
    assert not reuse.splits_at_added(backend, {**added, longest: 0})  # another id: proven again, and wrong
    assert len(proofs) == 3


def test_a_backend_left_truncating_is_not_proven_and_leaves_no_answer_kept(monkeypatch):
    from ftdata.tokens import reuse

    monkeypatch.setattr(reuse, "_PROVEN", {})
    backend = AutoTokenizer.from_pretrained(TOKENIZERS / "qwen2.5-instruct").backend_tokenizer
    added = reuse.splitting_tokens(backend)
    backend.enable_truncation(4)  # what a transformers call with truncation=True can leave behind
    assert not reuse.splits_at_added(backend, added) and not reuse._PROVEN
    backend.no_truncation()
    assert reuse.splits_at_added(backend, added)
