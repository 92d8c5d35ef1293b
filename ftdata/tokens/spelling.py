"""When a byte-level BPE tokenizer's tokens spell a text exactly, so that checks on them hold by construction.

`Spelling.exact(text)`: decoding the tokens of `text` can only give it back (the decode check is skipped);
`Spelling.covers(ids, text)`: tokens of a piece encoded alone cover exactly its bytes (the coverage check of a
piece whose tokens carry no offsets, `ftdata.tokens.masking`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ftdata.tokens.packing import flat

__all__ = ["BYTE_CHARS", "Spelling"]


@dataclass(frozen=True, slots=True)
class Spelling:
    """When a text is spelled exactly by its tokens, so that decoding them can only give it back.

    Holds for byte-level BPE (GPT-2 style: SmolLM2, Llama-3, Qwen2.5, Mistral-Nemo) when the
    tokenizer neither adds text (no `add_prefix_space`, no prepended marker) nor rewrites it
    (no normalizer, or a Unicode normalization form on ASCII text, where it changes nothing):
    the pre-tokenizer hands BPE every byte of the text, BPE only merges adjacent symbols, and
    the only symbol it can lose is a byte with no token of its own. So a text none of whose
    UTF-8 bytes is `missing` decodes back byte for byte, and together with the offsets
    coverage check the trained tokens decode to their span.

        SmolLM2: missing = {0x04, 0x06, ..., 0xc0, 0xc1, 0xf1, ...}
        "a \U00040000 b" -> bytes 61 20 f1 80 80 80 20 62: f1 is missing -> decode it
    """

    missing: bytes  # byte values the vocabulary has no token for
    ascii_only: bool  # a Unicode normalizer: only ASCII text is unchanged by it
    sizes: _Sizes | None = None  # the bytes each token id spells

    @staticmethod
    def of(backend: Any) -> Spelling | None:
        # Each part's own JSON (what pickling it writes), not the whole tokenizer's: that one
        # holds the vocabulary and merges, and serializing and parsing it took 0.1 s per build.
        normalizer, pre, decoder = (
            _spec(part) for part in (backend.normalizer, backend.pre_tokenizer, backend.decoder)
        )
        model = backend.model
        unicode_forms = {"NFC", "NFD", "NFKC", "NFKD"}
        if normalizer is not None and normalizer.get("type") not in unicode_forms:
            return None
        if (
            type(model).__name__ != "BPE"
            or (decoder or {}).get("type") != "ByteLevel"
            or model.continuing_subword_prefix
            or model.end_of_word_suffix
            or not _byte_level_only(pre)
        ):
            return None
        missing = bytes(b for b, char in enumerate(BYTE_CHARS) if model.token_to_id(char) is None)
        return Spelling(missing, ascii_only=normalizer is not None, sizes=_Sizes(backend))

    def exact(self, text: str) -> bool:
        """Whether `text`'s tokens decode back to it by construction (else: decode and compare)."""
        if self.ascii_only and not text.isascii():  # isascii is O(1) in CPython
            return False
        data = text.encode()
        return len(data.translate(None, self.missing)) == len(data)

    def covers(self, ids: list[int], text: str) -> bool | None:
        """Whether the tokens `ids` of `text` (a piece encoded alone, `exact`) spell as many bytes as it has, none
        missing and none more (None: the sizes are unknown, read the offsets instead).

            'Eat well.<|endoftext|>' -> 'Eat' ' well' '.' '<|endoftext|>': 3 + 5 + 1 + 13 = 22 bytes
        """
        return self.covers_all([(ids, text)])[0]

    def covers_all(self, pieces: Sequence[tuple[list[int], str]]) -> list[bool | None]:
        """`covers` of each `(ids, text)`, the bytes of all their tokens counted in one numpy pass (a build's
        batch: a dict lookup per token cost 7% of the build's time with the GIL held)."""
        totals = None if self.sizes is None else self.sizes.totals([ids for ids, _ in pieces])
        if totals is None:
            return [None] * len(pieces)
        return [bool(ids) and total == len(text.encode()) for (ids, text), total in zip(pieces, totals)]


class _Sizes:
    """The bytes each token id stands for, looked up the first time an id is read (reading the whole vocabulary
    cost 0.05-0.5 s a build): a byte-level token's characters (one per byte), an added token's content in UTF-8,
    and `unknown` once a token with a character that stands for no byte is read (then no count is trusted)."""

    def __init__(self, backend: Any):
        self._backend = backend
        self._chars = frozenset(BYTE_CHARS)
        self.unknown = False  # a token read so far stands for no bytes that can be counted: no count is trusted
        added = backend.get_added_tokens_decoder()
        size = max(backend.get_vocab_size(with_added_tokens=True), max(added, default=-1) + 1)
        self._table = np.full(size, -1, dtype=np.int64)  # -1: not read yet
        for i, token in added.items():
            self._table[i] = len(token.content.encode())

    def _size(self, i: int) -> int:
        """The bytes of token `i`, read from the vocabulary (0, and `unknown` set, when it stands for none)."""
        token = self._backend.id_to_token(i)
        if token is None or not self._chars.issuperset(token):
            self.unknown = True
            return 0
        return len(token)

    def totals(self, lists: Sequence[list[int]]) -> list[int] | None:
        """The bytes the tokens of each list spell, summed (None once a token read stands for no bytes): each id's
        size looked up in the table, an id not read before (`-1`, or past the table: a token added since) read first."""
        ids, lengths = flat(lists)
        if ids.size and int(ids.max()) >= len(self._table):
            self._table = np.concatenate([self._table, np.full(int(ids.max()) + 1 - len(self._table), -1)])
        sizes = self._table[ids]
        if (sizes < 0).any():
            for i in np.unique(ids[sizes < 0]).tolist():
                self._table[i] = self._size(i)
            sizes = self._table[ids]
        if self.unknown:
            return None
        ends = np.concatenate(([0], np.cumsum(sizes)))[np.cumsum(lengths)]
        return np.diff(ends, prepend=0).tolist()


def _spec(part: Any) -> dict[str, Any] | None:
    """A tokenizer part's settings (`{"type": "ByteLevel", ...}`), or None when the tokenizer has none."""
    return None if part is None else json.loads(part.__getstate__())


def _byte_level_only(pre: Any) -> bool:
    """The pre-tokenizer only splits (keeping every character) and maps bytes, adding nothing."""
    if pre is None:
        return False
    kind = pre.get("type")
    if kind == "Sequence":
        return (
            bool(pre["pretokenizers"])
            and all(map(_byte_level_only_step, pre["pretokenizers"]))
            and any(p.get("type") == "ByteLevel" for p in pre["pretokenizers"])
        )
    return kind == "ByteLevel" and _byte_level_only_step(pre)


def _byte_level_only_step(pre: Any) -> bool:
    kind = pre.get("type")
    if kind == "ByteLevel":
        return not pre.get("add_prefix_space")
    return kind in ("Split", "Digits", "Punctuation") and pre.get("behavior", "Isolated") != "Removed"


def _byte_chars() -> str:
    """GPT-2's byte -> character table (`bytes_to_unicode`): the character that stands for each byte."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return "".join(chars)


BYTE_CHARS = _byte_chars()
