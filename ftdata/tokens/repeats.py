"""Texts tokenized without offsets that repeat from record to record, tokenized once.

A record's own text between its template constants (`tokens.reuse.Constants`) and a pair's prompt are tokenized on
their own, without offsets (`Masker._ids`): their ids are the tokenizer's for those characters, whichever record
holds them. Data repeats such texts: an instruction many records share ("Summarize the following text."), an input
given with many instructions, a prompt answered by several pairs, a record that appears twice in a mixture.

    record 1   ### Instruction:\\n | Give three tips for staying healthy. | \\n\\n### Response:\\n | Eat well ...
    record 7   ### Instruction:\\n | Give three tips for staying healthy. | \\n\\n### Response:\\n | Sleep ...
                constant (reused)    seen before: its ids served             constant          its own

A text seen twice is kept (`KEEP_BYTES` of them, the least recently used let go first) and its ids served to
every later text with the same characters, by the same tokenizer as it stands: the masker makes a new `Repeats` when
`reuse.shape` changes, and nothing is served or kept while the backend truncates or pads (`reuse.plain_backend`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

__all__ = ["Repeats"]

# Bytes of texts kept, as `_cost` counts them: 12 MiB at most. The synthetic 20k benchmark keeps 2,605 texts in 7;
# at 1M records of short random texts a bound of 524,288 tokens held ~30 MiB.
KEEP_BYTES = 12 << 20
# What a kept text costs beyond its ids and characters: its key, tuple and place in the ordered dict.
ENTRY_BYTES = 200
# Texts seen once are remembered as one bit each, at their hash, in a table of `SEEN_BITS` bits (512 KiB), so that one
# is kept when it comes again; forgotten all at once when `SEEN` have been noted. A text whose bit another set (1 in
# 16 at the fullest) is kept at its first repeat-less sighting: a tuple of ids more, within `KEEP_BYTES`, never
# other ids (a kept text is found by its characters).
SEEN_BITS = 1 << 22
SEEN = 1 << 18


class Repeats:
    """For one tokenizer as it stands: the ids of texts seen twice, served again. Thread-safe."""

    def __init__(self) -> None:
        self._kept: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._bytes = 0
        self._seen = bytearray(SEEN_BITS // 8)
        self._noted = 0  # texts noted in it since it was last cleared
        self._lock = threading.Lock()

    def served(self, texts: Sequence[str]) -> list[list[int] | None]:
        """Each text's kept ids (a list of its own), or None: it is to be tokenized (and passed to `keep`)."""
        with self._lock:
            kept = self._kept
            out = [list(ids) if (ids := kept.get(t)) is not None else None for t in texts]
            for t, served in zip(texts, out):
                if served is not None:
                    kept.move_to_end(t)
        return out

    def keep(self, texts: Sequence[str], ids: Sequence[Sequence[int]]) -> None:
        """Note these texts, just tokenized to `ids`, as seen; keep those seen before."""
        with self._lock:
            kept = self._kept
            for text, its in zip(texts, ids):
                at = hash(text) & (SEEN_BITS - 1)
                byte, bit = at >> 3, 1 << (at & 7)
                if not self._seen[byte] & bit:
                    if self._noted >= SEEN:
                        self._seen, self._noted = bytearray(SEEN_BITS // 8), 0
                    self._seen[byte] |= bit
                    self._noted += 1
                elif text not in kept:
                    kept[text] = tuple(its)
                    self._bytes += _cost(text, its)
            while self._bytes > KEEP_BYTES and len(kept) > 1:
                self._bytes -= _cost(*kept.popitem(last=False))


def _cost(text: str, ids: Sequence[int]) -> int:
    """The bytes a kept text holds: each id a tuple slot and an int (8 + 32), its characters (one byte each: ASCII's,
    as a str holds them), and `ENTRY_BYTES`."""
    return 40 * len(ids) + len(text) + ENTRY_BYTES
