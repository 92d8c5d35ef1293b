"""ASCII text split into words in Python and each word given to the tokenizer's own BPE (`ftdata.tokens.words`): the
ids are the Rust tokenizer's on every shared byte-level tokenizer, on real data and on Hypothesis texts built from
what the pre-tokenizer regexes treat apart; a tokenizer it cannot prove is never split here; the masker's rows are
the same with it and without."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import DATASETS, TOKENIZER_NAMES, tokenizer
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from ftdata.tokens import masking, words
from ftdata.tokens.words import Words

PROVEN = [None, "deepseek-v3", "llama-3-8b-instruct", "llama-3.2-instruct", "mistral-nemo-instruct-2407",
          "qwen2.5-instruct"]  # fmt: skip
NOT_BYTE_LEVEL = ["gemma-3-it", "phi-3-mini-4k-instruct"]  # SentencePiece: a normalizer, a prepended ▁
# What the pre-tokenizer regexes treat apart: letters in both cases, contractions, digit runs (Llama 3 cuts them in
# threes), runs of spaces, tabs and newlines (`\s+(?!\S)`), punctuation glued to newlines, control characters, the
# markup of added tokens (whole, and its first character alone).
PARTS = [
    "a", "Word", "UPPER", "x1", "7", "42", "12345", " ", "  ", "\n", "\n\n", "\r\n", "\t", " \n ", "'s", "'S", "'ll",
    "'RE", "n't", ".", "...", "?!", "(", ")", ":", "#", "$", "_", "-", "\\", "`", "\x00", "\x0b", "\x1c", "\x7f",
    "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<", "|", ">",
]  # fmt: skip
TEXTS = st.lists(st.sampled_from(PARTS), min_size=1, max_size=12).map("".join)


def backend(name: str | None) -> Any:
    return tokenizer(name).backend_tokenizer


def rust(b: Any, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in b.encode_batch_fast(texts, add_special_tokens=False)]


def real_texts() -> list[str]:
    """Alpaca, Dolly and CodeAlpaca fields as published, and the messages of Harbor's ATIF agent trajectories."""
    out: list[str] = []
    for path in [*sorted((DATASETS / "alpaca").glob("*.json")), *sorted((DATASETS / "codealpaca").glob("*.json"))]:
        for r in json.loads(path.read_text(encoding="utf-8"))[:400]:
            out += [v for k, v in r.items() if isinstance(v, str) and v and k != "id"]
    for path in sorted((DATASETS / "agent_traces" / "atif").glob("*.json")):
        for step in json.loads(path.read_text(encoding="utf-8")).get("steps", []):
            if isinstance(step.get("message"), str) and step["message"]:
                out.append(step["message"])
    return out


def test_every_shared_byte_level_tokenizer_is_proven_once_and_no_other(monkeypatch) -> None:
    assert set(PROVEN) | set(NOT_BYTE_LEVEL) == {None, *TOKENIZER_NAMES}
    for name in PROVEN:
        assert Words.of(backend(name)) is not None, name
    for name in NOT_BYTE_LEVEL:
        assert Words.of(backend(name)) is None, name
    proofs = []
    real = Words._proven
    monkeypatch.setattr(Words, "_proven", lambda self: proofs.append(self) or real(self))
    assert all(Words.of(backend(name)) is not None for name in PROVEN) and proofs == []  # kept for the process


@pytest.mark.parametrize("name", PROVEN, ids=lambda n: n or "smollm2")
def test_ids_are_the_tokenizers_own_on_real_data(name: str | None) -> None:
    b = backend(name)
    texts = real_texts()
    made = Words.of(b).encode(texts)  # type: ignore[union-attr]
    want = rust(b, texts)
    answered = [i for i, ids in enumerate(made) if ids is not None]
    assert [made[i] for i in answered] == [want[i] for i in answered]
    # every ASCII text answered but those with a character an added token starts with (`<`, `[`): there the
    # tokenizer's own matching decides
    firsts = {t.content[0] for t in b.get_added_tokens_decoder().values()}
    plain = {i for i, t in enumerate(texts) if t.isascii() and not firsts.intersection(t)}
    assert plain <= set(answered) and len(plain) > len(texts) / 2
    assert all(texts[i].isascii() for i in answered)


@pytest.mark.parametrize("name", PROVEN, ids=lambda n: n or "smollm2")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXTS, min_size=1, max_size=8))
def test_ids_are_the_tokenizers_own_on_texts_of_what_the_regexes_treat_apart(name: str | None, texts) -> None:
    b = backend(name)
    made = Words.of(b).encode(texts)  # type: ignore[union-attr]
    for text, ids, want in zip(texts, made, rust(b, texts)):
        assert ids is None or ids == want, repr(text)


@settings(max_examples=40, deadline=None)
@given(a=TEXTS, b=TEXTS)
def test_a_split_at_an_added_token_leaves_each_sides_ids_as_alone(a: str, b: str) -> None:
    # what must not change: the ids of the text on either side of an added token, whatever is on the other side
    w = Words.of(backend(None))
    assert w is not None
    left, right, joined = w.encode([a, b, a + "<|im_end|>" + b])
    if joined is not None and left is not None and right is not None:
        assert joined == left + [backend(None).token_to_id("<|im_end|>")] + right


def test_kept_words_give_the_ids_they_were_made_with_even_once_forgotten(monkeypatch) -> None:
    texts = real_texts()[:300]
    b = backend(None)
    want = rust(b, texts)
    w = Words.of(b)
    assert w is not None
    first, again = w.encode(texts), w.encode(texts)  # the second time from the kept words
    monkeypatch.setattr(words, "KEEP_CHARS", 40)  # forgotten every few words
    tiny = Words.of(b)
    assert tiny is not None
    forgetful = tiny.encode(texts)
    assert first == again == forgetful
    assert tiny._kept_chars <= 40 + max(map(len, texts))
    assert [ids for ids in first if ids is not None] == [x for ids, x in zip(first, want) if ids is not None]


def test_text_that_is_not_ascii_or_may_hold_an_added_token_goes_to_the_tokenizer() -> None:
    w = Words.of(backend(None))
    assert w is not None
    made = w.encode(["café", "naïve résumé", "a <b> tag", "Eat well.<|im_end|>", "x<|im_end|>y<"])
    assert made[0] is None and made[1] is None  # not ASCII
    assert made[2] is None  # `<` outside an added token: the tokenizer's own matching decides
    assert made[3] == rust(backend(None), ["Eat well.<|im_end|>"])[0]
    assert made[4] is None


def toy_bpe(*, pre: Any = None, normalizer: Any = None) -> Tokenizer:
    """A byte-level BPE whose vocabulary has no `z`: BPE drops a byte it has no token for, without a word."""
    chars = [*"abcdefghijklmnopqrstuvwxyABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,'!?", "Ġ", "Ċ"]
    t = Tokenizer(models.BPE({c: i for i, c in enumerate([*chars, "ab", "Ġab"])}, [("a", "b"), ("Ġ", "ab")]))
    t.pre_tokenizer = pre or pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    if normalizer is not None:
        t.normalizer = normalizer
    return t


def test_a_word_whose_tokens_do_not_spell_it_goes_to_the_tokenizer() -> None:
    t = toy_bpe()
    w = Words.of(t)
    assert w is not None
    made = w.encode(["ab cab", "ab zab", "zz"])
    assert made[0] == t.encode("ab cab").ids
    assert made[1] is None and made[2] is None  # the Rust tokenizer drops `z`: the masker's coverage check sees it


@pytest.mark.parametrize(
    "change",
    [
        {"pre": pre_tokenizers.ByteLevel(add_prefix_space=True)},  # a space put before the text
        {"pre": pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel()])},
        {"pre": pre_tokenizers.Sequence([pre_tokenizers.Split(r"\p{Han}+", "isolated"), pre_tokenizers.ByteLevel()])},
        {"pre": pre_tokenizers.Sequence([pre_tokenizers.Split(" ", "removed"), pre_tokenizers.ByteLevel()])},
        {"normalizer": normalizers.Lowercase()},
    ],
    ids=["prefix-space", "digits-step", "script-property", "removed-split", "lowercase"],
)
def test_a_tokenizer_this_does_not_read_is_never_split_here(change: dict[str, Any]) -> None:
    assert Words.of(toy_bpe()) is not None
    assert Words.of(toy_bpe(**change)) is None


def test_a_pattern_with_groups_is_cut_at_its_whole_matches() -> None:
    # `findall` gives a pattern's groups, not its matches: `(a)(b)` on "ab" is one tuple of two, as long as the text
    pre = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"(a)(b)|[c-z]+| "), "isolated"), pre_tokenizers.ByteLevel(False, use_regex=False)]
    )
    t = toy_bpe(pre=pre)
    w = Words.of(t)
    assert w is not None
    texts = ["ab", "ab cd", "abab xy ab", "ba"]
    assert w.encode(texts) == [t.encode(x).ids for x in texts]


def test_a_backend_left_truncating_is_not_split_here() -> None:
    t = toy_bpe()
    w = Words.of(t)
    assert w is not None and w.encode(["ab ab ab ab ab"]) == [t.encode("ab ab ab ab ab").ids]
    t.enable_truncation(4)  # as a transformers call with truncation=True leaves it
    assert Words.of(t) is None
    assert w.encode(["ab ab ab ab ab"]) == [None]  # the Rust tokenizer's truncated ids, as before


def test_a_class_read_wrong_fails_the_proof(monkeypatch) -> None:
    # `\p{L}` read without `e`: `the` would be three words, and the probes see it
    real = words._category
    monkeypatch.setattr(words, "_category", lambda n: (real(n) or "").replace("e", "") if n == "L" else real(n))
    monkeypatch.setattr(words, "_PROVEN", {})
    assert Words.of(backend(None)) is None
    monkeypatch.setattr(words, "_category", real)
    monkeypatch.setattr(words, "_PROVEN", {})
    assert Words.of(backend(None)) is not None


def test_the_unicode_classes_read_on_ascii() -> None:
    assert words._ascii_regex(r"\p{L}+").pattern == "[" + "".join(words._category("L") or "") + "]+"  # type: ignore[union-attr]
    assert words._category("Lu") == "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    assert words._category("N") == "0123456789"
    assert words._category("Lo") == "" and words._ascii_regex(r"\p{Lo}").pattern == "(?!)"  # type: ignore[union-attr]
    assert words._ascii_regex(r"[^\s\p{N}]").fullmatch("\t") is None  # type: ignore[union-attr]
    assert words._ascii_regex(r"\S+").fullmatch("a.b") is not None  # type: ignore[union-attr]
    assert words._ascii_regex(r"\p{Han}") is None and words._ascii_regex(r"[\S]") is None
    assert words._ascii_regex(r"\P{L}") is None


@pytest.mark.parametrize("name", PROVEN, ids=lambda n: n or "smollm2")
def test_the_maskers_rows_with_words_are_its_rows_without(monkeypatch, name: str | None) -> None:
    from ftdata.chat.prompt_templates import load_prompt_template, render_prompt_template
    from ftdata.errors import Location
    from ftdata.types import Example, Message, Rendered

    tok = tokenizer(name)
    records = json.loads((DATASETS / "alpaca" / "llamafactory_alpaca_en_demo.json").read_text())[:300]
    template = load_prompt_template("alpaca")
    rendered = []
    for i, r in enumerate(records):
        turns = (Message("user", r["instruction"]), Message("assistant", r["output"]))
        example = Example(turns, Location("x", line=i), r["input"])
        rendered.append(render_prompt_template(example, template, eos=tok.eos_token or "", trained=[False, True]))
    # and prompts with nothing to locate (a preference pair's), ChatML-rendered: tokenized without offsets too
    rendered += [Rendered(f"<|im_start|>user\n{r['instruction']}<|im_end|>\n<|im_start|>assistant\n", (), "p") for r in records]
    without = masking.Masker(tok)(rendered)  # under WORDS_FROM_CHARS: the Rust tokenizer's calls
    monkeypatch.setattr(masking, "WORDS_FROM_CHARS", 0)
    masker = masking.Masker(tok)
    with_words = masker(rendered)
    assert masker.words is not None
    assert with_words == without
    assert masking.Masker(tok, reuse=False)(rendered) == without


def test_a_masker_that_threads_share_leaves_the_words_to_the_rust_tokenizer(monkeypatch) -> None:
    # engine=local on more cores: the Rust call releases the GIL for the other threads' Python; one thread alone (a
    # worker process, one core) splits words here. The rows are the same either way.
    import threading

    from ftdata.chat.render import Renderer
    from ftdata.errors import Location
    from ftdata.types import Example, Message

    tok = tokenizer(None)
    render = Renderer(tok, "alpaca")
    rendered = [render(Example((Message("user", f"Say {i}."), Message("assistant", f"{i} it is.")), Location("x")))
                for i in range(50)]  # fmt: skip
    monkeypatch.setattr(masking, "WORDS_FROM_CHARS", 0)
    calls: list[int] = []
    real = Words.encode
    monkeypatch.setattr(Words, "encode", lambda self, texts: calls.append(len(texts)) or real(self, texts))
    masker = masking.Masker(tok)
    alone = masker(rendered)
    assert calls and masker.words is not None
    other: list[Any] = []
    thread = threading.Thread(target=lambda: other.append(masker(rendered)))
    thread.start()
    thread.join()
    calls.clear()
    shared = masker(rendered)
    assert calls == []
    assert alone == other[0] == shared
