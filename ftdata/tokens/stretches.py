"""Encodings with offsets of whole texts, a stretch between added tokens that repeats from text to text tokenized
once.

The tokenizer splits a text at its added tokens before it normalizes or pre-tokenizes anything, and tokenizes
each stretch between them on its own (`ftdata.tokens.reuse`, proven once per tokenizer by `splits_at_added`). So
a text's encoding is its stretches' encodings, each moved to where the stretch starts, with the added tokens
between them:

    <|im_start|>system\\nYou are OpenHands ... # Tools ...<|im_end|>\\n<|im_start|>user\\nFix the bug<|im_end|> ...
    | id       | kept: every record of the harness opens with it   |id |\\n| id | tokenized: this record's own |

Agent records repeat long stretches: a harness's system prompt and tool definitions open each of its records
(22 KB of a 107 KB OpenHands record), the rows a history-rewriting template makes of one record repeat its turns,
the rollouts of one task repeat its prompt. A stretch seen twice is kept (`tokens.repeats`: `KEEP_BYTES` of them, the
least recently used let go first) and its encoding served to every later text that holds it: served only for the same
characters, by the same tokenizer as it stands (`reuse.shape`). A text is assembled from its stretches when kept
ones, or ones seen before, hold at least `ASSEMBLE_SHARE` of it (its other stretches tokenized in one call, those seen
before kept); any other text is tokenized whole, as before.

What the masker reads of an encoding (`tokens.border.Offsets`: `ids`, `token_to_chars`, `char_to_token`,
`token_to_word`) an `Assembled` answers from the stretch that holds the token or character: the same offsets as
the whole text's, and the same words, told apart by stretch (a pre-token never crosses an added token).
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ftdata.tokens.repeats import ENTRY_BYTES, Repeats
from ftdata.tokens.reuse import learn_split, shape, splits_at_added, splitting_tokens

__all__ = ["Assembled", "Plan", "Stretches"]

# Bytes of stretches kept, as `_cost` counts them: 45 MiB at most (524,288 tokens at 90 bytes).
KEEP_BYTES = 45 << 20
# A text is assembled from its stretches when kept stretches, or stretches seen before, hold at least this share of
# its characters; a mostly new one is tokenized whole, in one call with the others (an assembled text costs a
# tokenizer call of its own and a Python step per stretch).
ASSEMBLE_SHARE = 0.125


class Assembled:
    """A text's encoding made of its stretches' encodings and the added tokens between them.

    units   [stretch 0 | <|im_end|> | stretch 1 | <|im_start|> | stretch 2]
    chars    0          c1           c2          c3             c4
    tokens   0          t1           t1+1        t2             t2+1
    """

    __slots__ = ("_chars", "_encodings", "_tokens", "_widths", "ids")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self._chars: list[int] = []  # where each unit starts in the text
        self._tokens: list[int] = []  # and in the ids
        self._encodings: list[Any] = []  # a stretch's encoding, or None for an added token
        self._widths: list[int] = []  # an added token's characters (0 for a stretch)

    def add(self, at: int, encoding: Any, ids: Any, width: int = 0) -> None:
        self._chars.append(at)
        self._tokens.append(len(self.ids))
        self._encodings.append(encoding)
        self._widths.append(width)
        self.ids += ids

    def __len__(self) -> int:
        return len(self.ids)

    def token_to_chars(self, i: int) -> tuple[int, int]:
        k = bisect_right(self._tokens, i) - 1
        at, encoding = self._chars[k], self._encodings[k]
        if encoding is None:
            return at, at + self._widths[k]
        a, b = encoding.token_to_chars(i - self._tokens[k])
        return a + at, b + at

    def char_to_token(self, c: int) -> int | None:
        k = bisect_right(self._chars, c) - 1
        if k < 0:
            return None
        at, encoding = self._chars[k], self._encodings[k]
        if encoding is None:
            return self._tokens[k] if c < at + self._widths[k] else None
        t = encoding.char_to_token(c - at)
        return None if t is None else t + self._tokens[k]

    def token_to_word(self, i: int) -> tuple[int, int | None]:
        """The token's pre-token, as (unit, word): equal for two tokens exactly when the whole text's are."""
        k = bisect_right(self._tokens, i) - 1
        encoding = self._encodings[k]
        return k, None if encoding is None else encoding.token_to_word(i - self._tokens[k])


class Stretches:
    """For one tokenizer: which texts to assemble from their stretches (`plans`), and their encodings (`assemble`:
    no special tokens added, the ids, offsets and words of the whole text's). Thread-safe."""

    def __init__(self, backend: Any):
        self.backend = backend
        self._read_tokenizer()

    def _read_tokenizer(self) -> None:
        self.shape = shape(self.backend)
        self.added = splitting_tokens(self.backend)
        self._split: Any = None  # learnt from the first batch of texts: the added tokens they hold
        self._ids: dict[str, int] = {}
        self.kept: Repeats[tuple[Any, array[int]]] = Repeats(_cost, KEEP_BYTES)  # stretch -> (its encoding, ids)
        self._lock = threading.Lock()

    @property
    def usable(self) -> bool:
        """Whether texts may be assembled, for the tokenizer as it stands (read per call: a transformers call with
        truncation=True leaves the backend truncating)."""
        if shape(self.backend) != self.shape:  # a token added since, or a new pre-tokenizer: stretches differ
            with self._lock:
                self._read_tokenizer()
        return bool(self.added) and splits_at_added(self.backend, self.added)  # proven once a process, per shape

    def plans(self, texts: Sequence[str]) -> list[Plan | None]:
        """Each text split at its added tokens, when it is to be assembled (kept stretches, or stretches seen
        before, hold `ASSEMBLE_SHARE` of it), else None: it is tokenized whole. Every stretch is noted as seen."""
        if self._split is None:
            ids, pattern = learn_split(self.added, texts)
            with self._lock:
                self._ids, self._split = ids, pattern
        out: list[Plan | None] = []
        for text in texts:
            parts = self._split.split(text)  # stretch, token, stretch, token, ..., stretch
            if len(parts) == 1:
                out.append(None)
                continue
            stretches = [s for s in dict.fromkeys(parts[::2]) if s]
            again = {s for s, seen in zip(stretches, self.kept.seen(stretches)) if seen}
            out.append(Plan(parts, again) if sum(map(len, again)) >= ASSEMBLE_SHARE * len(text) else None)
        return out

    def assemble(self, plan: Plan) -> Assembled:
        """The text's encoding from its stretches: the kept ones served, the others tokenized in one call, those seen
        before kept."""
        parts, again = plan.parts, list(plan.again)
        kept = {s: value for s, value in zip(again, self.kept.served(again)) if value is not None}
        todo = list(dict.fromkeys(s for s in parts[::2] if s and s not in kept))
        fresh = {s: (e, e.ids) for s, e in zip(todo, self.backend.encode_batch(todo, add_special_tokens=False))}
        self.kept.keep((s, (fresh[s][0], array("l", fresh[s][1]))) for s in again if s in fresh)
        out, at = Assembled(), 0
        for i, part in enumerate(parts):
            if i % 2:
                out.add(at, None, (self._ids[part],), len(part))
            elif part:
                out.add(at, *(kept[part] if part in kept else fresh[part]))
            at += len(part)
        return out


def _cost(stretch: str, kept: tuple[Any, array[int]]) -> int:
    """The bytes a kept stretch holds: its Rust encoding and ids (~90 a token), its characters and `ENTRY_BYTES`."""
    return 90 * len(kept[1]) + len(stretch) + ENTRY_BYTES


@dataclass(frozen=True, slots=True)
class Plan:
    """A text to assemble: its parts (stretch, token, ..., stretch) and its stretches seen before (`again`)."""

    parts: list[str]
    again: set[str]
