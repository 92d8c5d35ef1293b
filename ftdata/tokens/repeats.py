"""What was made of a text seen twice, kept and served again: the one memo of texts that repeat from record to record.

Two parts of the masker tokenize text that data repeats, and each keeps what it made of it here:

- `Masker._ids`: a record's own text between its template constants (`tokens.reuse.Constants`) and a pair's prompt,
  tokenized without offsets. Data repeats such texts: an instruction many records share ("Summarize the following
  text."), an input given with many instructions, a prompt answered by several pairs, a record twice in a mixture.
- `tokens.stretches.Stretches`: the stretches between added tokens of chat renders (a harness's system prompt and
  tool definitions open each of its records), kept with their encodings.

    record 1   ### Instruction:\\n | Give three tips for staying healthy. | \\n\\n### Response:\\n | Eat well ...
    record 7   ### Instruction:\\n | Give three tips for staying healthy. | \\n\\n### Response:\\n | Sleep ...
                constant (reused)    seen before: its ids served             constant          its own

A text seen once is noted as one bit at its hash (`SEEN_BITS`: 512 KiB, forgotten all at once when `SEEN` have been
noted). Seen again, what was made of it is kept, within a byte bound its owner sets and as its owner counts a
text and its value, the least recently used let go first. A bit another text set only keeps a text early: a kept
value is found by the text's characters, never by its hash. Its owner makes a new `Repeats` when the tokenizer
changes (`reuse.shape`), and keeps and serves nothing while the backend truncates or pads (`reuse.plain_backend`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

__all__ = ["Repeats", "ids_cost"]

V = TypeVar("V")

# Bytes of ids kept for `Masker._ids`, as `ids_cost` counts them: 12 MiB at most. The synthetic 20k benchmark keeps its
# 2,605 texts in 7; at 1M records of short random texts a bound of 524,288 tokens held ~30 MiB.
KEEP_BYTES = 12 << 20
# What a kept text costs beyond its value and characters: its key, tuple and place in the ordered dict.
ENTRY_BYTES = 200
# Texts seen once are one bit each, at their hash, in a table of `SEEN_BITS` bits (512 KiB), forgotten all at once
# when `SEEN` have been noted (1 bit in 16 set at the fullest).
SEEN_BITS = 1 << 22
SEEN = 1 << 18


def ids_cost(text: str, ids: Sequence[int]) -> int:
    """The bytes a text kept with its ids holds: each id a tuple slot and an int (8 + 32), its characters (one byte
    each: ASCII's, as a str holds them), and `ENTRY_BYTES`."""
    return 40 * len(ids) + len(text) + ENTRY_BYTES


class Repeats(Generic[V]):
    """Values made of texts seen twice, for one tokenizer as it stands, within `keep_bytes` as `cost(text, value)`
    counts them (`Repeats(ids_cost, KEEP_BYTES)`: ids). Thread-safe."""

    def __init__(self, cost: Callable[[str, V], int], keep_bytes: int) -> None:
        self.cost = cost
        self.keep_bytes = keep_bytes
        self.kept: OrderedDict[str, V] = OrderedDict()  # the least recently used first
        self.bytes = 0
        self._seen = bytearray(SEEN_BITS // 8)
        self._noted = 0  # texts noted in it since it was last cleared
        self._lock = threading.Lock()

    def served(self, texts: Sequence[str]) -> list[V | None]:
        """Each text's kept value (now the most recently used), or None."""
        with self._lock:
            kept = self.kept
            out = [kept.get(t) for t in texts]
            for t, value in zip(texts, out):
                if value is not None:
                    kept.move_to_end(t)
        return out

    def seen(self, texts: Iterable[str]) -> list[bool]:
        """Whether each text was seen before (noted, or kept); all are noted as seen from now on."""
        out = []
        with self._lock:
            for text in texts:
                at = hash(text) & (SEEN_BITS - 1)
                byte, bit = at >> 3, 1 << (at & 7)
                if self._seen[byte] & bit or text in self.kept:
                    out.append(True)
                    continue
                if self._noted >= SEEN:
                    self._seen, self._noted = bytearray(SEEN_BITS // 8), 0
                self._seen[byte] |= bit
                self._noted += 1
                out.append(False)
        return out

    def keep(self, items: Iterable[tuple[str, V]]) -> None:
        """Keep these texts' values (texts seen before), the least recently used let go to stay within the bound."""
        with self._lock:
            kept = self.kept
            for text, value in items:
                if text not in kept:
                    kept[text] = value
                    self.bytes += self.cost(text, value)
            while self.bytes > self.keep_bytes and len(kept) > 1:
                self.bytes -= self.cost(*kept.popitem(last=False))
