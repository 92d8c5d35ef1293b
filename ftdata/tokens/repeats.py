"""Texts tokenized without offsets that repeat from record to record, tokenized once.

A record's own text between its template constants (`tokens.reuse.Constants`) and a pair's prompt are tokenized on
their own, without offsets (`Masker._ids`): their ids are the tokenizer's for those characters, whichever record
holds them. Data repeats such texts: an instruction many records share ("Summarize the following text."), an input
given with many instructions, a prompt answered by several pairs, a record that appears twice in a mixture.

    record 1   ### Instruction:\\n | Give three tips for staying healthy. | \\n\\n### Response:\\n | Eat well ...
    record 7   ### Instruction:\\n | Give three tips for staying healthy. | \\n\\n### Response:\\n | Sleep ...
                constant (reused)    seen before: its ids served             constant          its own

A text seen twice is kept (`KEEP_TOKENS` tokens of them, the least recently used let go first) and its ids served to
every later text with the same characters, by the same tokenizer as it stands: the masker makes a new `Repeats` when
`reuse.shape` changes, and nothing is served or kept while the backend truncates or pads (`reuse.plain_backend`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

__all__ = ["Repeats"]

# Tokens of texts kept (a tuple of ids each, ~36 bytes a token: ~18 MiB at most).
KEEP_TOKENS = 1 << 19
# Texts remembered as seen once (their hashes), so that one is kept when it comes again; forgotten all at once when
# full.
SEEN = 1 << 18


class Repeats:
    """For one tokenizer as it stands: the ids of texts seen twice, served again. Thread-safe."""

    def __init__(self) -> None:
        self._kept: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._tokens = 0
        self._seen: set[int] = set()
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
            seen, kept = self._seen, self._kept
            for text, its in zip(texts, ids):
                key = hash(text)
                if key not in seen:
                    if len(seen) >= SEEN:
                        seen.clear()
                    seen.add(key)
                elif text not in kept:
                    kept[text] = tuple(its)
                    self._tokens += len(its)
            while self._tokens > KEEP_TOKENS and len(kept) > 1:
                _, gone = kept.popitem(last=False)
                self._tokens -= len(gone)
