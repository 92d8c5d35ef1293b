"""Deduplication across the sources of a recipe, in build order: the first occurrence is kept.

- exact: the same text after `normalise` (NFKC, casefold, whitespace collapsed), compared by
  a 16-byte SHA-256 prefix. Memory per distinct text: the digest and the key of its first
  occurrence, never the text.
- near: MinHash LSH from `datasketch` (`pip install 'ftdata[dedup]'`) over word 5-gram
  shingles of the normalised text; a record whose estimated Jaccard similarity to a kept one
  is at least `threshold` is removed. Exact repeats are found first, by digest. Memory per
  kept record: its MinHash (`num_perm` 64-bit values) and the LSH index entries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from ftdata.errors import ConfigError
from ftdata.mix.normalise import normalise, words
from ftdata.mix.recipe import Dedup

K = TypeVar("K", bound=Hashable)
SHINGLE = 5  # words per shingle for near dedup
_MINHASH_SEED = 1  # fixed: the same text gives the same MinHash in every process


@dataclass(frozen=True, slots=True)
class Duplicate(Generic[K]):
    """A removed record: its key, the key of the kept record it repeats, and how."""

    key: K
    original: K
    how: Dedup  # EXACT or NEAR
    jaccard: float  # estimated Jaccard similarity of the shingles (1.0 for exact)


def digest(text: str) -> bytes:
    """16 bytes of SHA-256 of the normalised text: equal for texts that differ only in case,
    width forms or whitespace."""
    return hashlib.sha256(normalise(text).encode("utf-8", "surrogatepass")).digest()[:16]


class Deduplicator(Generic[K]):
    """Feed records in build order; `check` says whether each repeats one seen before.

    >>> d = Deduplicator(Dedup.EXACT)
    >>> d.check("a", "Hello  world"), d.check("b", "hello world").original
    (None, 'a')
    """

    def __init__(self, how: Dedup | str, *, threshold: float = 0.8, num_perm: int = 128) -> None:
        """Raises: ConfigError: how is not exact or near, or near without datasketch installed."""
        self.how = Dedup.parse(how, name="dedup")
        if self.how is Dedup.NONE:
            raise ConfigError("dedup=none removes nothing: build no Deduplicator for it")
        self._first: dict[bytes, K] = {}
        self._near: _Near | None = _Near(threshold=threshold, num_perm=num_perm) if self.how is Dedup.NEAR else None

    def check(self, key: K, text: str) -> Duplicate[K] | None:
        """The duplicate record `key` is, or None (then it is kept and later records compare to it)."""
        seen = digest(text)
        if seen in self._first:
            return Duplicate(key, self._first[seen], Dedup.EXACT, 1.0)
        if self._near is not None and (found := self._near.check(key, text)) is not None:
            return Duplicate(key, found[0], Dedup.NEAR, found[1])
        self._first[seen] = key
        return None


def find_duplicates(
    items: Iterable[tuple[K, str]], *, how: Dedup | str, threshold: float = 0.8, num_perm: int = 128
) -> Iterator[Duplicate[K]]:
    """The duplicates among `(key, text)` pairs in build order (keys must be distinct).

    Raises:
        ConfigError: see `Deduplicator`.
    """
    dedup: Deduplicator[K] = Deduplicator(how, threshold=threshold, num_perm=num_perm)
    for key, text in items:
        if (found := dedup.check(key, text)) is not None:
            yield found


def exact_repeats(ids: np.ndarray, digests: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The records whose digest an earlier record has, and that first record: `(repeats, firsts)`, ids paired.

    `ids`: the records in build order; `digests`: their `digest`s as an `(n, 2)` array of 64-bit integers. One
    stable sort of the digests: a million records take ~25 MiB beside them (`np.unique` with its first indices and
    inverse took ~75 MiB, the peak of a deduplicated recipe build).

    >>> d = np.array([[1, 2], [3, 4], [1, 2], [1, 5], [1, 2]], dtype=np.uint64)
    >>> [a.tolist() for a in exact_repeats(np.array([10, 11, 12, 13, 14]), d)]
    [[12, 14], [10, 10]]
    """
    order = np.lexsort((digests[:, 1], digests[:, 0]))  # stable: equal digests stay in build order
    ordered = digests[order]
    same = (ordered[1:] == ordered[:-1]).all(axis=1)  # position k + 1 repeats position k
    del ordered
    later = np.flatnonzero(same) + 1
    starts = np.flatnonzero(np.concatenate(([True], ~same)))  # where each distinct digest first comes
    first = starts[np.searchsorted(starts, later, side="right") - 1]
    return ids[order[later]], ids[order[first]]


class _Near(Generic[K]):
    """MinHash LSH over word shingles; ids are insertion numbers, keys are kept beside them."""

    def __init__(self, *, threshold: float, num_perm: int) -> None:
        try:
            from datasketch import LeanMinHash, MinHash, MinHashLSH
        except ImportError:
            raise ConfigError("dedup=near needs datasketch: pip install 'ftdata[dedup]' (or use dedup=exact)") from None
        if not 0 < threshold < 1:
            raise ConfigError(f"near_threshold must be a number in (0, 1), got near_threshold={threshold!r}")
        self._minhash, self._lean = MinHash, LeanMinHash
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.threshold, self.num_perm = threshold, num_perm
        self._kept: list[tuple[K, Any]] = []  # (key, LeanMinHash) by id

    def check(self, key: K, text: str) -> tuple[K, float] | None:
        """(key of the most similar kept record, estimated Jaccard), or None: then `text` is kept."""
        mh = self._minhash(num_perm=self.num_perm, seed=_MINHASH_SEED)
        mh.update_batch([s.encode("utf-8", "surrogatepass") for s in _shingles(text)])
        best: tuple[float, int] | None = None
        for id_ in self._lsh.query(mh):  # candidates: a few may fall below the threshold
            jaccard = mh.jaccard(self._kept[id_][1])
            if jaccard >= self.threshold and (best is None or (jaccard, -id_) > (best[0], -best[1])):
                best = (jaccard, id_)
        if best is not None:
            return self._kept[best[1]][0], best[0]
        self._lsh.insert(len(self._kept), mh, check_duplication=False)
        self._kept.append((key, self._lean(mh)))
        return None


def _shingles(text: str) -> set[str]:
    """Word 5-grams of the normalised text; a text of fewer words is one shingle."""
    ws = words(text)
    if len(ws) <= SHINGLE:
        return {" ".join(ws)}
    return {" ".join(ws[i : i + SHINGLE]) for i in range(len(ws) - SHINGLE + 1)}


__all__ = ["Duplicate", "Deduplicator", "SHINGLE", "digest", "exact_repeats", "find_duplicates"]
