"""Token ids of ASCII text for a byte-level BPE tokenizer, its pre-tokenizer's split run by Python's `re`, each
word given to the tokenizer's own BPE model once.

A byte-level BPE tokenizer (GPT-2, SmolLM2, Llama 3, Qwen2.5, Mistral-Nemo) splits a text at its added tokens, cuts
each stretch between them into words with its pre-tokenizer's regex, maps each word's bytes to characters and runs
BPE on each word alone. So a text's ids are its words' ids joined, and a word's ids are the same wherever it stands:

    'Eat well.<|im_end|>'  ->  'Eat' ' well' '.'  <|im_end|>
                               BPE    BPE    BPE   its id

The Rust tokenizer spends most of an encode in that regex (Oniguruma): on the 48,405 record pieces of
prep_throughput's synthetic 20k set, one thread, `encode_batch_fast` took 4.28 s and `pre_tokenize_str` alone
5.9 s. Python's `re` splits the pieces that are ASCII in 0.29 s, and with each distinct word's ids kept the pieces
cost 0.83 s, with no id different. Only ASCII text is split here: on it, the regex's Unicode classes (`\\p{L}`,
`\\p{N}`, `\\s`) are plain ASCII sets, the same in every Unicode version; other text goes to the Rust tokenizer.

What stays checked:
- once per tokenizer (its shape, kept for the process): on probe texts that put every ASCII character between
  letters, digits, spaces, newlines, apostrophes and punctuation, the ids made here are the Rust tokenizer's
  (`proven`); a tokenizer that fails, or whose pre-tokenizer, normalizer or model is not one this reads, is never
  split here;
- once per word: its tokens spell its bytes exactly (else every text holding it goes to the Rust tokenizer);
- per text: the words hold every character of it (a character no regex branch takes is a word of its own to the
  tokenizer, `Split`'s isolated gaps), and no added token's first character is left in a stretch.
The masker checks the rows made of these ids as it checks the Rust tokenizer's (each trained span's tokens counted
against its bytes, `ftdata.tokens.masking`), and the build's raw tokenizer check compares sampled rows with a
tokenizer read afresh from its files (`ftdata.tokens.identity`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from itertools import chain
from typing import Any

from ftdata.tokens.reuse import (
    learn_split,
    plain_backend,
    shape,
    splits_at_added,
    splitting_tokens,
    unicode_forms_only,
)
from ftdata.tokens.spelling import BYTE_CHARS

__all__ = ["Words"]

# GPT-2's pattern, which a `ByteLevel` pre-tokenizer with `use_regex` splits with.
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# `\s` on ASCII text (Unicode's White_Space), and `\S` standing alone.
_SPACE = r"\t\n\x0b\x0c\r "
_NOT_SPACE = rf"[^{_SPACE}]"
# Characters of the words kept with their ids (36 bytes a character with the dict and the id lists, measured: ~36 MiB
# at most; the 20,000-record synthetic Alpaca set has 13,500 distinct words); forgotten all at once when full.
KEEP_CHARS = 1 << 20
# Where the probes put each ASCII character: between these, before and after it.
_BEFORE = ("", "a", "7", " ", "\n", "'", ".")
_AFTER = ("", "b", " ", "\n", "12", "s")
# And texts that exercise the patterns' branches as a whole.
_TEXTS = (
    "Don't you'LL see'S it's 'tis 'RE'VE'M'D",
    "a  b   c\n\n\nd \n e\t\tf \r\n g",
    "1 12 123 1234 12345 123456 x1y22z333",
    "...!!! ??? (a) [b] {c} <d> #e $f %g ^h &i *j",
    "   leading and trailing   ",
    "\n  \n  x",
    "def f(x):\n    return x**2  # square\n",
)
_ASCII = "".join(map(chr, range(128)))


class Words:
    """For one tokenizer: the ids of ASCII texts (`encode`), or None for a text the Rust tokenizer must take.
    Thread-safe: kept words are only added (each with the ids BPE gave it) or forgotten all at once."""

    def __init__(self, backend: Any, patterns: list[re.Pattern[str]]):
        self.backend = backend
        self._first, *self._rest = patterns  # the pre-tokenizer's regexes, in order
        self._model = backend.model
        self._added = splitting_tokens(backend)
        added = {t.content for t in backend.get_added_tokens_decoder().values() if t.content}
        firsts = sorted({t[0] for t in added})
        self._firsts = re.compile("[" + "".join(map(re.escape, firsts)) + "]") if firsts else None
        self._split: re.Pattern[str] | None = None  # at the added tokens the first texts hold
        self._ids: dict[str, int] = {}
        self._kept: dict[str, list[int] | None] = {}  # word -> its ids (None: its tokens do not spell it)
        self._kept_chars = 0

    @staticmethod
    def of(backend: Any) -> Words | None:
        """The splitter for `backend`, or None where it cannot be proven to give the Rust tokenizer's ids."""
        patterns = None if backend is None or not plain_backend(backend) else _patterns(backend)
        if patterns is None:
            return None
        key = shape(backend)
        if key not in _PROVEN:
            if len(_PROVEN) >= 64:
                _PROVEN.clear()
            _PROVEN[key] = Words(backend, patterns)._proven()
        return Words(backend, patterns) if _PROVEN[key] else None

    def encode(self, texts: Sequence[str]) -> list[list[int] | None]:
        """Each text's ids, as `encode_batch_fast(texts, add_special_tokens=False)` gives them, or None where the
        Rust tokenizer must tokenize it (not ASCII, an added token it holds cannot be split at, a word whose tokens
        do not spell it; every text while the backend truncates or pads: a transformers call left it so)."""
        if not plain_backend(self.backend):
            return [None] * len(texts)
        if self._split is None:
            self._learn([t for t in texts if t.isascii()])
        return [self._text(t) if t.isascii() else None for t in texts]

    def _learn(self, texts: list[str]) -> None:
        if self._added and splits_at_added(self.backend, self._added):
            self._ids, self._split = learn_split(self._added, texts)
        else:
            self._split = re.compile("((?!))")  # never splits: a text with an added token goes to the tokenizer

    def _text(self, text: str) -> list[int] | None:
        if self._firsts is None or not self._firsts.search(text):
            return self._stretch(text)
        assert self._split is not None
        parts = self._split.split(text)
        out: list[int] = []
        for i, part in enumerate(parts):
            if i % 2:
                out.append(self._ids[part])
            elif part:
                if self._firsts.search(part):
                    return None  # an added token may start in it: the tokenizer's own matching decides
                ids = self._stretch(part)
                if ids is None:
                    return None
                out += ids
        return out

    def _stretch(self, text: str) -> list[int] | None:
        """A stretch's ids: its words' kept ids joined (in C: a Python step per word cost as much as the split)."""
        words = _split(self._first, text)
        for pattern in self._rest:
            words = [w for part in words for w in _split(pattern, part)]
        kept = self._kept
        for _ in range(2):
            try:
                return list(chain.from_iterable(map(kept.__getitem__, words)))  # type: ignore[arg-type]  # None: below
            except KeyError:
                self._keep(words)
            except TypeError:  # a word's None: its tokens do not spell it
                return None
        return None  # forgotten meanwhile (another thread filled the kept words): the tokenizer takes it

    def _keep(self, words: list[str]) -> None:
        """Keep the ids of the words not kept yet; all forgotten first when they would pass KEEP_CHARS (then this
        text's words are kept again)."""
        kept = self._kept
        new = [w for w in dict.fromkeys(words) if w not in kept]
        if self._kept_chars + sum(map(len, new)) > KEEP_CHARS:
            kept.clear()
            self._kept_chars = 0
            new = list(dict.fromkeys(words))
        kept.update((w, self._bpe(w)) for w in new)
        self._kept_chars += sum(map(len, new))

    def _bpe(self, word: str) -> list[int] | None:
        """The word's ids from the BPE model alone, or None when its tokens do not spell its bytes."""
        chars = word.translate(_BYTE_MAP)
        tokens = self._model.tokenize(chars)
        if "".join(t.value for t in tokens) != chars:
            return None
        return [t.id for t in tokens]

    def _proven(self) -> bool:
        """Whether the ids made here are the Rust tokenizer's on every probe text they are made for."""
        probes = [f"{a}{c}{b}" for c in _ASCII for a in _BEFORE for b in _AFTER] + list(_TEXTS)
        rust = [e.ids for e in self.backend.encode_batch_fast(probes, add_special_tokens=False)]
        self._learn(probes)
        return all(ids is None or ids == want for ids, want in zip(self.encode(probes), rust))


_PROVEN: dict[tuple[Any, ...], bool] = {}
_BYTE_MAP = dict(enumerate(BYTE_CHARS[:128]))


def _split(pattern: re.Pattern[str], text: str) -> list[str]:
    """`text` cut as a `Split(pattern, "Isolated")` pre-tokenizer cuts it: each match a word, and each stretch
    between matches a word too. (`findall` gives whole matches only for a pattern without groups.)"""
    if not pattern.groups:
        words = pattern.findall(text)
        if sum(map(len, words)) == len(text):
            return words
    out, at = [], 0
    for m in pattern.finditer(text):
        if m.start() > at:
            out.append(text[at : m.start()])
        if m.end() > m.start():
            out.append(m.group())
        at = m.end()
    if at < len(text):
        out.append(text[at:])
    return out


def _patterns(backend: Any) -> list[re.Pattern[str]] | None:
    """The regexes the pre-tokenizer splits with, in order, as they act on ASCII text; None for a tokenizer this
    does not read (another model, a normalizer that changes ASCII text, a pre-tokenizer step other than `Split` on
    a regex and a byte-level map)."""
    model = backend.model
    if type(model).__name__ != "BPE" or model.dropout or model.continuing_subword_prefix or model.end_of_word_suffix:
        return None
    if not unicode_forms_only(backend) or backend.pre_tokenizer is None:  # a Unicode form leaves ASCII text as it is
        return None
    pre = json.loads(backend.pre_tokenizer.__getstate__())
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    *splits, last = steps
    if last.get("type") != "ByteLevel" or last.get("add_prefix_space"):
        return None
    sources = []
    for step in splits:
        regex = step.get("pattern", {}).get("Regex") if step.get("type") == "Split" else None
        if regex is None or step.get("behavior") != "Isolated" or step.get("invert"):
            return None
        sources.append(regex)
    if last.get("use_regex", True):
        sources.append(GPT2_PATTERN)
    compiled = [_ascii_regex(s) for s in sources]
    return None if any(c is None for c in compiled) else [c for c in compiled if c is not None]


def _ascii_regex(source: str) -> re.Pattern[str] | None:
    r"""`source` (Oniguruma syntax) as a Python regex that matches the same on ASCII text: a general category
    (`\p{L}`, `\p{Lu}`, `\p{N}`, `\p{P}`, ...) as its ASCII members, `\s` as ASCII's White_Space, `\S` as the rest.
    None where it holds another property, a negated one, or does not compile."""
    out, inside, i = [], False, 0
    while i < len(source):
        c = source[i]
        if c == "\\" and i + 1 < len(source):
            m = re.match(r"\\p\{(\w+)\}", source[i:])
            token = m.group() if m else source[i : i + 2]
            if m:
                members = _category(m.group(1))
                if members is None:
                    return None
                out.append(members if inside else f"[{members}]" if members else "(?!)")
            elif token == r"\s":
                out.append(_SPACE if inside else f"[{_SPACE}]")
            elif token == r"\S" and not inside:
                out.append(_NOT_SPACE)
            elif token[1] in "pPS":
                return None
            else:
                out.append(token)
            i += len(token)
            continue
        if c == "[" and not inside:
            inside = True
            if source[i + 1 : i + 2] == "^":
                out.append("[^")
                i += 2
                continue
        elif c == "]" and inside and out[-1] not in ("[", "[^"):
            inside = False
        out.append(c)
        i += 1
    try:
        return re.compile("".join(out))
    except re.error:
        return None


def _category(name: str) -> str | None:
    """The ASCII characters of a Unicode general category (`L`, `Lu`, `N`, `P`, ...), escaped for a character class
    ('' where it has none: `Lo`, `M`); None for a name that is not one. ASCII's categories are the same in every
    Unicode version."""
    if not re.fullmatch(r"[CLMNPSZ][a-z]?", name):
        return None
    return "".join(re.escape(c) for c in _ASCII if unicodedata.category(c).startswith(name))
