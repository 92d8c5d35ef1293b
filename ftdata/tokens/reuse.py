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

import re
import threading
from collections import ChainMap, Counter
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ReusingEncoder", "splits_at_added"]

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
        backend = getattr(tokenizer, "backend_tokenizer", None)
        # a backend that pads or truncates by itself (transformers switches that off per call) is not called directly
        plain = backend is not None and backend.truncation is None and backend.padding is None
        self.backend = backend if plain else None
        self.added = _splitting_tokens(self.backend) if self.backend is not None else {}
        self.exact = bool(self.added) and splits_at_added(self.backend, self.added)
        self._split: re.Pattern[str] | None = None  # from the first texts: the added tokens they hold
        self._ids: dict[str, int] = {}
        self._known: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], tokenizer: Any, *, special: bool = False) -> list[list[int]]:
        """The ids of `texts`; `tokenizer` (the one this encoder was made for) when it has no Rust backend.
        `special`: with the tokenizer's special tokens added (a BOS), each text tokenized whole."""
        if self.backend is None:
            return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=special)["input_ids"]]
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
        """Split at the added tokens `texts` hold (a template's markup; Gemma 3 has 6,415 added tokens, and one
        pattern of them all costs 180 us a text) that share no characters with another added token's edge."""
        used = [t for t in self.added if any(t in text for text in texts[:64])]
        apart = [t for t in used if not _overlaps(t, self.added)]
        pattern = "|".join(re.escape(t) for t in sorted(apart, key=len, reverse=True)) or "(?!)"
        with self._lock:
            self._ids = {t: self.added[t] for t in apart}
            self._split = re.compile(f"({pattern})")


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


def _splitting_tokens(backend: Any) -> dict[str, int]:
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
    which hold the shorter ones' characters, first)."""
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
