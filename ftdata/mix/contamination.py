"""Decontamination: does a training text share a word n-gram with an evaluation set?

Evaluation files are read as ftdata reads any data (`read_records`, any format, compressed or
not); each record's text is the text of every message (or, for a row that is no SFT shape,
every string field), and its word n-grams (13 by default, of the normalised text) are
hashed to 64-bit ints. A training text overlaps when one of its n-grams is in that set.

    eval   "... what is the capital of france answer paris ..."   13-gram hashes, sorted
    train  "... what is the capital of france answer paris ..."   any hash in the set? -> rejected

A record of fewer than n words is one gram of all its words, so a short evaluation item is
caught where a training text is exactly it, and never inside a longer text.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ftdata.errors import ConfigError, Location, RecordError
from ftdata.records.formats import to_examples
from ftdata.mix.normalise import words
from ftdata.io.readers import read_records

K = TypeVar("K", bound=Hashable)
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it mod 2**64 loses nothing


@dataclass(frozen=True, slots=True)
class Overlap:
    """Where a training text meets an evaluation record: that record's location and the words."""

    eval_location: Location
    ngram: str


class EvalIndex:
    """The n-gram hashes of evaluation records: a sorted uint64 array and, beside it, the
    record each hash came from (12 bytes per distinct n-gram)."""

    def __init__(self, texts: Iterable[tuple[Location, str]], *, n: int = 13) -> None:
        """Index `(location, text)` pairs; `from_files` reads them from evaluation files.

        Raises:
            ConfigError: n < 1.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"ngram must be an integer >= 1, got ngram={n!r}")
        self.n = n
        self.locations: list[Location] = []
        self._word_hashes: dict[str, int] = {}
        chunks: list[np.ndarray] = []
        for location, text in texts:
            grams = self._grams(words(text))
            chunks.append(np.stack([grams, np.full(len(grams), len(self.locations), dtype=np.uint64)]))
            self.locations.append(location)
        table = np.concatenate(chunks, axis=1) if chunks else np.zeros((2, 0), dtype=np.uint64)
        hashes, first = np.unique(table[0], return_index=True)  # the first record with an n-gram names it
        self._hashes, self._owner = hashes, table[1, first].astype(np.uint32)

    @classmethod
    def from_files(cls, paths: Sequence[str | Path], *, n: int = 13, **read: Any) -> EvalIndex:
        """Index evaluation files in any format ftdata reads (`read` goes to `read_records`:
        reader, delimiter, field, bounds).

        Raises:
            ReaderError: a file cannot be read (the message names it and the line).
            RecordError: a record cannot be read faithfully, e.g. a line past `bounds` (naming it).
        """
        return cls((item for path in paths for item in _eval_texts(path, **read)), n=n)

    @property
    def ngrams(self) -> int:
        """Distinct n-grams indexed."""
        return len(self._hashes)

    def check(self, text: str) -> Overlap | None:
        """The first n-gram of `text` that an evaluation record holds, or None."""
        ws = words(text)
        grams = self._grams(ws)
        if not len(grams) or not len(self._hashes):
            return None
        at = np.searchsorted(self._hashes, grams).clip(max=len(self._hashes) - 1)
        hits = np.flatnonzero(self._hashes[at] == grams)
        if not len(hits):
            return None
        i = int(hits[0])
        return Overlap(self.locations[int(self._owner[at[i]])], " ".join(ws[i : i + self.n]))

    def _grams(self, ws: list[str]) -> np.ndarray:
        """Hashes of the word n-grams (one gram of all words when fewer than n; none when empty):
        a polynomial over per-word 64-bit hashes, computed for every window at once."""
        h = np.array([self._word(w) for w in ws], dtype=np.uint64)
        if len(h) < self.n:
            return _combine(h[None, :]) if len(h) else h
        return _combine(np.lib.stride_tricks.sliding_window_view(h, self.n))

    def _word(self, word: str) -> int:
        # blake2b, not hash(): the same word must hash the same in every process (workers, Ray)
        if (value := self._word_hashes.get(word)) is None:
            value = int.from_bytes(
                hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little"
            )
            self._word_hashes[word] = value
        return value


def find_overlaps(items: Iterable[tuple[K, str]], index: EvalIndex) -> Iterator[tuple[K, Overlap]]:
    """`(key, overlap)` for every `(key, text)` that shares an n-gram with the evaluation set."""
    for key, text in items:
        if (found := index.check(text)) is not None:
            yield key, found


def count_by_eval_file(overlaps: Iterable[Overlap]) -> dict[str, int]:
    """How many training records overlap each evaluation file (for the report)."""
    return dict(Counter(o.eval_location.source for o in overlaps))


def _combine(windows: np.ndarray) -> np.ndarray:
    """One uint64 per row of word hashes: h0*M^(k-1) + h1*M^(k-2) + ... mod 2**64 (Horner)."""
    out = np.zeros(len(windows), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in windows.T:
            out = out * _MIX + column
    return out


def _eval_texts(path: str | Path, **read: Any) -> Iterator[tuple[Location, str]]:
    """Each evaluation record's text. A record the reader could not read faithfully (past a read
    bound, a lone surrogate) is an error: skipped, it would leave its n-grams out of the check.

    Raises:
        RecordError: naming the evaluation file, the line and the fix.
    """
    for location, row in read_records(path, **read):
        if isinstance(row, RecordError):
            raise row
        yield location, "\n".join(_texts(row, location))


def _texts(row: Any, location: Location) -> list[str]:
    """Every message's text as a chat shows it (content with an instruction's input joined,
    reasoning), or for a row that is no SFT shape (an MMLU-style question with choices), every
    string in it."""
    try:
        examples = to_examples(row, location)
    except RecordError:
        return list(_strings(row))
    return [t for e in examples for m in e.chat_messages() for t in (m["content"], m.get("reasoning_content")) if t]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


__all__ = ["EvalIndex", "Overlap", "count_by_eval_file", "find_overlaps"]
