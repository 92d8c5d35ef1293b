"""Token ids of many renders of one template, with what repeats from render to render tokenized once.

A rendered prompt is mostly the template's constant text: the default system prompt, the role headers.
The tokenizer splits a text at its added tokens (`<|im_start|>`, `<|im_end|>`) before it normalizes
and pre-tokenizes anything, and tokenizes each stretch between them on its own; so a text's ids are
its stretches' ids with the added tokens' ids between them, and a stretch that every render repeats
(`system\\nYou are a helpful AI assistant ...`, `\\n`, `assistant\\n`) has the same ids in every render:

    <|im_start|>system\\nYou are ... Face<|im_end|>\\n<|im_start|>user\\nJanet's ducks ...<|im_end|>
    |  id    |  once per build      |  id   |once|  id   |  tokenized per record    |  id  |
    \\n<|im_start|>assistant\\n
    once|  id   |   once   |

What stays checked: once per tokenizer, on probe texts that put spaces, newlines, digits, letters and
accents on both sides of every splitting token, that the stretches' ids joined are the whole text's ids
(`splits_at_added`); a tokenizer that fails (an added token that strips the spaces beside it, a
pre-tokenizer that treats a text's first word apart: SentencePiece's `prepend_scheme=first`) has every
text tokenized whole. Either way the ids come from the tokenizer's Rust encoder without the offsets
and BatchEncoding a `tokenizer(texts)` call builds, which a prompt set never reads.
"""

from __future__ import annotations

import json
import re
import threading
from collections import ChainMap, Counter
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "Constants",
    "ReusingEncoder",
    "learn_split",
    "plain_backend",
    "shape",
    "splits_at_added",
    "splitting_tokens",
    "unicode_forms_only",
]

# Stretches kept (their ids) per encoder: those that repeat within a batch of texts (a template's constant
# text), up to KEEP of them, each up to KEEP_CHARS long.
KEEP = 4096
KEEP_CHARS = 2000
# What the check puts beside a splitting token: every kind of character a pre-tokenizer treats apart.
_SIDES = ("", " ", "  ", "\n", "\n\n", " \n", "x", " x", "X y", "12", " 3", "é", "\u0301", "'s", ".", "\t")


class ReusingEncoder:
    """`encode(texts)` -> each text's token ids (no special tokens added), as `tokenizer(texts,
    add_special_tokens=False)["input_ids"]` gives them, the stretches between added tokens that repeat
    tokenized once. Thread-safe: stretches are only ever added, each with the ids the tokenizer gave it.
    The tokens a stretch is split at are learnt from the first texts; ids are the same with any such set.
    """

    def __init__(self, tokenizer: Any):
        self.backend = getattr(tokenizer, "backend_tokenizer", None)
        self._read_tokenizer()

    def _read_tokenizer(self) -> None:
        """What this encoder knows of its tokenizer, read (again) for the tokenizer as it stands (`shape`)."""
        self.shape = shape(self.backend)
        self.added = splitting_tokens(self.backend) if self.backend is not None else {}
        self.exact = bool(self.added) and plain_backend(self.backend) and splits_at_added(self.backend, self.added)
        self._split: re.Pattern[str] | None = None  # from the first texts: the added tokens they hold
        self._ids: dict[str, int] = {}
        self._known: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], tokenizer: Any, *, special: bool = False) -> list[list[int]]:
        """The ids of `texts`; `tokenizer`'s (the one this encoder was made for) when it has no Rust backend or its
        backend pads or truncates.
        `special`: with the tokenizer's special tokens added (a BOS), each text tokenized whole."""
        if self.backend is None or not plain_backend(self.backend):  # read per call: a transformers call with
            # truncation=True leaves the backend truncating; transformers switches that off for its own calls
            return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=special)["input_ids"]]
        if shape(self.backend) != self.shape:  # a token added since, or a new pre-tokenizer: its stretches differ
            with self._lock:
                self._read_tokenizer()
        if special or not self.exact:
            return [e.ids for e in self.backend.encode_batch_fast(list(texts), add_special_tokens=special)]
        if self._split is None:
            self._learn(texts)
        assert self._split is not None
        splits = [self._split.split(text) for text in texts]  # stretch, token, stretch, token, ..., stretch
        seen = Counter(s for parts in splits for s in parts[::2] if s and s not in self._known)
        todo = list(seen)
        fresh = dict(zip(todo, (e.ids for e in self.backend.encode_batch_fast(todo, add_special_tokens=False))))
        # kept: what repeats within these texts (a record's own text, written once, would only take room)
        keep = [s for s in todo if seen[s] > 1 and len(s) <= KEEP_CHARS][: max(0, KEEP - len(self._known))]
        if keep:
            with self._lock:
                self._known.update((s, fresh[s]) for s in keep)
        return [_joined(parts, ChainMap(fresh, self._known), self._ids) for parts in splits]

    def _learn(self, texts: Sequence[str]) -> None:
        ids, pattern = learn_split(self.added, texts)
        with self._lock:
            self._ids, self._split = ids, pattern


def learn_split(added: dict[str, int], texts: Sequence[str]) -> tuple[dict[str, int], re.Pattern[str]]:
    """The added tokens `texts` hold (a template's markup; Gemma 3 has 6,415 added tokens, and one pattern of them
    all costs 180 us a text) that share no characters with another added token's edge, by content, and a pattern
    that splits a text at them, keeping them: stretch, token, stretch, ..., stretch."""
    used = [t for t in added if any(t in text for text in texts[:64])]
    apart = [t for t in used if not _overlaps(t, added)]
    pattern = "|".join(re.escape(t) for t in sorted(apart, key=len, reverse=True)) or "(?!)"
    return {t: added[t] for t in apart}, re.compile(f"({pattern})")


def _overlaps(token: str, added: dict[str, int]) -> bool:
    """Whether another added token holds `token`, lies in it, or ends where it starts or starts where it ends:
    then where the tokenizer matches `token` depends on that one too (a stretch split at any other token is
    tokenized by the tokenizer, which splits it again where it would have)."""
    heads = {token[:k] for k in range(1, len(token))}
    tails = {token[k:] for k in range(1, len(token))}
    for other in added:
        if other != token and (
            token in other
            or other in token
            or any(other[k:] in heads for k in range(1, len(other)))
            or any(other[:k] in tails for k in range(1, len(other)))
        ):
            return True
    return False


def splitting_tokens(backend: Any) -> dict[str, int]:
    """The added tokens the tokenizer splits every text at before anything else, by content: each one
    matched as written (not normalized, or no normalizer), that takes no whitespace beside it (lstrip,
    rstrip) and matches inside words too (not single_word). {} when any added token is otherwise: the
    split points would not be the tokenizer's own."""
    out, normalized = {}, set()
    for token_id, token in backend.get_added_tokens_decoder().items():
        if token.lstrip or token.rstrip or token.single_word or not token.content:
            return {}
        if token.normalized and backend.normalizer:
            return {}
        out[token.content] = token_id
        if token.normalized:
            normalized.add(token.content)
    # the tokenizer matches the tokens written as is first, then the others in what is left: one pass over
    # all of them finds the same matches unless a token of one kind holds one of the other
    plain = out.keys() - normalized
    if len(plain) * len(normalized) > 1_000_000:  # too many to compare: not claimed
        return {}
    if any(a in b or b in a for a in plain for b in normalized):
        return {}
    return out


def splits_at_added(backend: Any, splitting: dict[str, int]) -> bool:
    """Whether texts split at `splitting` tokenize to their stretches' ids joined by the tokens' ids: checked
    on probe texts with every kind of character on both sides of each token (up to 8 tokens, the longest,
    which hold the shorter ones' characters, first); False for a backend that truncates or pads. The answer is
    kept for the process, by what it depends on: the tokenizer's shape (its normalizer and pre-tokenizer among it)
    and the splitting tokens with their ids; the model never sees across a split. The check costs 14-24 ms, and a
    process may run hundreds of builds."""
    if not plain_backend(backend):  # a backend left truncating cuts the probes: no answer, and none kept
        return False
    key = (shape(backend), tuple(sorted(splitting.items())))
    known = _PROVEN.get(key)
    if known is None:
        known = _splits_at_added(backend, splitting)
        if len(_PROVEN) >= _PROVEN_LIMIT:
            _PROVEN.clear()
        _PROVEN[key] = known
    return known


_PROVEN: dict[tuple[Any, ...], bool] = {}
_PROVEN_LIMIT = 64


def _splits_at_added(backend: Any, splitting: dict[str, int]) -> bool:
    tokens = sorted(splitting, key=lambda t: (-len(t), t))[:8]
    texts = [f"{a}{t}{b}" for t in tokens for a in _SIDES for b in _SIDES[::-1]]
    texts += [f"{tokens[0]}{t}{a}{t}" for t in tokens for a in _SIDES]
    whole = [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
    pattern = re.compile("(" + "|".join(re.escape(t) for t in tokens) + ")")
    splits = [pattern.split(text) for text in texts]
    stretches = sorted({p for parts in splits for p in parts[::2] if p})
    ids_of = dict(zip(stretches, (e.ids for e in backend.encode_batch_fast(stretches, add_special_tokens=False))))
    return all(_joined(parts, ids_of, splitting) == ids for parts, ids in zip(splits, whole))


def _joined(parts: list[str], stretches: Mapping[str, list[int]], tokens: dict[str, int]) -> list[int]:
    """The ids of a text split into [stretch, token, stretch, ..., stretch]: each stretch's, each token's."""
    ids: list[int] = []
    for i, part in enumerate(parts):
        if i % 2:
            ids.append(tokens[part])
        elif part:
            ids += stretches[part]
    return ids


# The characters a record's text may have beside a template constant, each proven once per constant and side, when
# a record first has it there (`Constants`): printable ASCII, and letters of other scripts as one class (LETTER,
# proven on these). Whitespace, marks and every other character are never proven: the whole text is tokenized.
LETTER = "L"
_LETTERS = ("é", "ß", "ñ", "ł", "Ж", "я", "中", "あ", "한", "ا", "α")
# What a probe puts beyond the edge character, away from the constant; the neighbours on the constant's other side.
_BEYOND = ("", " x", "\n1", "é's ")
_NEIGHBOURS = ("x", "A", "1", ".", "(")
Pieces = list[tuple[int, int, "list[int] | None"]]


def _kind(char: str) -> str | None:
    """What is proven for `char` beside a constant: itself (printable ASCII), LETTER, or None (never)."""
    if char.isascii():
        return char if "!" <= char <= "~" else None
    return LETTER if char.isalpha() else None


class _Constant:
    """One constant: its ids, the neighbours its probes put on each side, and what each side was proven for."""

    __slots__ = ("after", "before", "befores", "first", "ids", "nexts", "text")

    def __init__(self, text: str, first: bool, ids: list[int], befores: list[str], nexts: list[str]):
        self.text, self.first, self.ids, self.befores, self.nexts = text, first, ids, befores, nexts
        self.before: dict[str, bool] = {}  # kind -> proven, for the last character of the text before it
        self.after: dict[str, bool] = {}  # kind -> proven, for the first character after it

    def probes(self, side: str, kind: str) -> list[tuple[str, str, str]]:
        chars = _LETTERS if kind == LETTER else (kind,)
        if side == "before":
            return [(x + c, self.text, n) for c in chars for x in _BEYOND for n in self.nexts]
        return [(b, self.text, c + x) for c in chars for x in _BEYOND for b in self.befores]


class Constants:
    """For one tokenizer: the token ids of template constants (`Rendered.constants`: text every render writes),
    reused wherever the record's text beside a constant is proven to leave the constant's ids alone.

    A pre-tokenizer (the byte-level regex of GPT-2/Llama-3/Qwen, Metaspace) splits a text into pieces that BPE
    never merges across; where a constant starts and ends on such a split, the whole text's ids are its pieces'
    ids joined, the constant's among them:

        whole   Below is ... ### Instruction:\n | Give three tips.| \n\n### Response:\n | Eat well.<|endoftext|>
        ids     constant (once per build)       | tokenized       | constant             | tokenized
        border  proven for 'G' after it         | for '.' before  | for 'E' after        |

    Proven once per constant, side and character, when a record first has that character there, on probe texts
    that put it beside the constant with other text beyond it (a space and a word, a newline and a digit, an
    accent and a contraction) and a proven neighbour on the constant's other side: each probe's ids must equal
    its three pieces' ids joined. A record with an unproven character beside a constant (a space, a newline:
    regexes treat runs of them apart; Llama 3's `.` before a newline), two constants that touch, or a constant
    not at its place in the text is tokenized whole, as without constants. Tokenizers that rewrite text
    (a normalizer other than Unicode forms, an added token that strips the spaces beside it) or have no
    pre-tokenizer (nothing splits at a border) reuse nothing.
    """

    def __init__(self, backend: Any):
        self.backend = backend
        self._exact = _pieces_exact(backend)  # its pre-tokenizer, normalizer and added tokens: read once
        self._known: dict[tuple[str, bool], _Constant] = {}
        self._lock = threading.Lock()

    @property
    def usable(self) -> bool:
        """Whether any text's pieces tokenize as the whole text (`_pieces_exact`), as the tokenizer stands now: what
        can change after it is made, whether it truncates or pads, is read again each time."""
        return self._exact and plain_backend(self.backend)

    def pieces(self, records: Sequence[tuple[str, Sequence[tuple[int, str]]]]) -> list[Pieces | None]:
        """Each (text, constants) as pieces [start, end) in order, a constant's with its ids (None: text to
        tokenize), or None where a constant is out of place or a border beside one is unproven for the text."""
        if not self.usable:  # read per call: a transformers call with truncation=True leaves the backend truncating
            return [None] * len(records)
        wanted = [self._wanted(text, constants) for text, constants in records]
        todo = {(c, side, kind) for need in wanted if need is not None for c, side, kind in need}
        todo = {(c, side, kind) for c, side, kind in todo if kind not in getattr(c, side)}
        if todo:
            self._prove(sorted(todo, key=lambda t: (id(t[0]), t[1], t[2])))
        out: list[Pieces | None] = []
        for (text, constants), need in zip(records, wanted):
            if need is None or not all(getattr(c, side)[kind] for c, side, kind in need):
                out.append(None)
                continue
            pieces: Pieces = []
            at = 0
            for (start, constant), c in zip(constants, self._of(constants)):
                if start > at:
                    pieces.append((at, start, None))
                at = start + len(constant)
                pieces.append((start, at, c.ids))
            if at < len(text):
                pieces.append((at, len(text), None))
            out.append(pieces)
        return out

    def _wanted(self, text: str, constants: Sequence[tuple[int, str]]) -> list[tuple[_Constant, str, str]] | None:
        """What must be proven for the borders of `text`'s constants, or None when one cannot be."""
        if not constants:
            return None
        need = []
        at = 0
        for (start, constant), c in zip(constants, self._of(constants)):
            end = start + len(constant)
            if start < at or (start == at and start > 0) or not text.startswith(constant, start):
                return None  # out of place, or touching the constant before it
            for side, char in (("before", text[start - 1] if start else ""), ("after", text[end : end + 1])):
                if char:
                    kind = _kind(char)
                    if kind is None:
                        return None
                    need.append((c, side, kind))
            at = end
        return need

    def _of(self, constants: Sequence[tuple[int, str]]) -> list[_Constant]:
        out = []
        for start, text in constants:
            c = self._known.get((text, start == 0))
            if c is None:
                c = self._first_seen(text, start == 0)
            out.append(c)
        return out

    def _first_seen(self, text: str, first: bool) -> _Constant:
        """A constant's ids, and the neighbours its probes put beside it (ones proven there with "x" opposite)."""
        ids = self._encode([text])[0]
        if first:
            c = _Constant(text, first, ids, [""], [])
        elif _crossed_by_added(self.backend, text):
            c = _Constant(text, first, ids, [], [])  # no neighbours: nothing is proven beside it
        else:
            probe = _Constant(text, first, ids, ["x"], ["x"])
            nexts = self._holding({n: probe.probes("after", n) for n in _NEIGHBOURS})
            probe.nexts = [n for n in _NEIGHBOURS if n in nexts][:2]
            befores = self._holding({n: probe.probes("before", n) for n in _NEIGHBOURS}) if probe.nexts else set()
            c = _Constant(text, first, ids, [b for b in _NEIGHBOURS if b in befores][:2], probe.nexts)
        if first and _crossed_by_added(self.backend, text):
            c.befores = []
        with self._lock:
            return self._known.setdefault((text, first), c)

    def _prove(self, todo: list[tuple[_Constant, str, str]]) -> None:
        """Prove each (constant, side, kind) in one tokenizer call for them all."""
        probes = {(c, side, kind): c.probes(side, kind) for c, side, kind in todo}
        held = self._holding(probes)
        with self._lock:
            for c, side, kind in todo:
                getattr(c, side)[kind] = bool(probes[(c, side, kind)]) and (c, side, kind) in held

    def _holding(self, probes: Mapping[Any, list[tuple[str, str, str]]]) -> set[Any]:
        """The keys all of whose probes (before, constant, after) tokenize whole as their three pieces apart,
        joined (two tokenizer calls for them all)."""
        flat = [probe for group in probes.values() for probe in group]
        pieces = sorted({p for probe in flat for p in probe if p})
        ids_of = dict(zip(pieces, self._encode(pieces)))
        wholes = iter(self._encode([a + c + b for a, c, b in flat]))
        held = {
            key: [ids_of.get(a, []) + ids_of[c] + ids_of.get(b, []) == next(wholes) for a, c, b in group]
            for key, group in probes.items()
        }
        return {key for key, results in held.items() if all(results)}

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch_fast(texts, add_special_tokens=False)] if texts else []


def shape(backend: Any) -> tuple[Any, ...]:
    """What a tokenizer's pieces and borders depend on that a caller can change after loading it: its vocabulary
    size with added tokens (`add_tokens`) and its normalizer, pre-tokenizer and decoder (each assignable). Read in
    microseconds; those who keep facts about a tokenizer compare it per batch and read them again when it differs.
    Not in it: a token of the vocabulary made an added token, or an added token given new flags (no id is new, and
    reading every added token takes 34 ms on Gemma 3's 6,415)."""
    if backend is None:
        return ()
    parts = (backend.normalizer, backend.pre_tokenizer, backend.decoder)
    # `is None`, not truth: an empty `Sequence` normalizer (DeepSeek-V3's) is falsy, and its Python object is new at
    # every read, so a shape that held it never equalled the next one
    return (backend.get_vocab_size(with_added_tokens=True), *(None if p is None else p.__getstate__() for p in parts))


def plain_backend(backend: Any) -> bool:
    """The backend neither pads nor truncates by itself, so calling it directly gives each text's own ids."""
    return backend.truncation is None and backend.padding is None


def unicode_forms_only(backend: Any) -> bool:
    """The tokenizer has no normalizer, or only Unicode normalization forms (NFC, NFKC, ...), alone or in a
    `Sequence`: nothing that rewrites ASCII text."""
    if backend.normalizer is None:
        return True
    normalizer = json.loads(backend.normalizer.__getstate__())
    steps = normalizer.get("normalizers", [normalizer])
    return all(step.get("type") in ("NFC", "NFD", "NFKC", "NFKD") for step in steps)


def _pieces_exact(backend: Any) -> bool:
    """Whether a text's pieces can tokenize apart as in the whole text at all: a pre-tokenizer splits words,
    no normalizer but Unicode forms rewrites text, no added token takes the whitespace beside it."""
    if backend is None or backend.pre_tokenizer is None or not plain_backend(backend):
        return False
    if not unicode_forms_only(backend):
        return False
    return not any(t.lstrip or t.rstrip or t.single_word for t in backend.get_added_tokens_decoder().values())


def _crossed_by_added(backend: Any, constant: str) -> bool:
    """Whether an added token could span an edge of `constant` (start in the text before it and end inside it, or
    start inside it and end after it): then the tokenizer would match it across the border."""
    for token in backend.get_added_tokens_decoder().values():
        t = token.content
        if any(constant.startswith(t[k:]) or constant.endswith(t[:k]) for k in range(1, len(t))):
            return True
    return False
