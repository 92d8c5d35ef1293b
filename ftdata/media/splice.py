"""Tokenizing a record with media: each run of placeholder tokens tokenized as one, the run spliced back in.

A photo's expansion is thousands of copies of one pad token (Qwen2-VL: `<|image_pad|>` x 15,552
for a 4032x3024 photo), and tokenizing them costs 3.5-9 us each, once per truncation trial too.
Their ids are known: a pad is an added token, which the tokenizer splits out before normalizing
and pre-tokenizing, so k copies are k pad ids whatever is around them. So

    expanded  ...<|vision_start|><|image_pad|> x 378<|vision_end|>What is this?...
    compact   ...<|vision_start|><|image_pad|><|vision_end|>What is this?...      what is tokenized
    splice    ids: the run's one pad id becomes 378; offsets and cuts move with it

What stays checked: once per tokenizer, on real text, that k pads tokenize to k pad ids on their
own characters (`atomic`; a tokenizer that fails is tokenized in full); per record, that each
run's one pad tokenized to one pad id on exactly its characters (not merged with a neighbour);
then `Media.verify` on the spliced row, as on a fully tokenized one. Each medium's pad is checked
and spliced on its own (an image's `<|image_pad|>`, an audio clip's `<|AUDIO|>`).
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from ftdata.media.medium import Expansion
from ftdata.records.media import MediaKind
from ftdata.tokens.masking import Tokenized
from ftdata.types import Rendered


@dataclass(frozen=True, slots=True)
class _Pad:
    """One medium's placeholder token: its text, its id, and a pattern for its runs."""

    text: str
    id: int
    run: re.Pattern[str]


class Splicer:
    """Writes each run of placeholder tokens of an expanded rendering once (`compact`) and splices the
    runs back into its tokenized row (`splice`), for one tokenizer and each medium's pad token.

    `pads`: per kind, its pad token and id; a pad that fails `atomic` is tokenized in full.
    """

    def __init__(self, backend: Any, pads: dict[MediaKind, tuple[str, int]]):
        self.pads = {
            kind: _Pad(pad, pad_id, re.compile(f"(?:{re.escape(pad)})+"))
            for kind, (pad, pad_id) in pads.items()
            if atomic(backend, pad, pad_id)
        }
        self._runs_of: dict[tuple[MediaKind, Expansion], tuple[tuple[int, int], ...]] = {}

    def _runs(self, kind: MediaKind, exp: Expansion) -> tuple[tuple[int, int], ...]:
        """(character offset in `exp.text`, length) of each run of pad tokens of an expansion (cached)."""
        key = (kind, exp)
        runs = self._runs_of.get(key)
        if runs is None:
            pad = self.pads[kind]
            runs = tuple((m.start(), (m.end() - m.start()) // len(pad.text)) for m in pad.run.finditer(exp.text))
            if len(self._runs_of) < 65536:
                self._runs_of[key] = runs
        return runs

    def compact(self, rendered: Rendered) -> Compact | None:
        """`rendered` (expanded) with each run of k pad tokens written as one: what is tokenized.

        A run of pads is k copies of one added token, which the tokenizer splits out before anything
        else (checked once per tokenizer: `atomic`), so it tokenizes to exactly k pad ids whatever is
        around it; tokenizing its k x 13 characters costs 3.5-9 us a pad (146 ms for a 15,552-token
        photo), and truncation tokenizes a record once per trial. None when no run can be written once.
        """
        runs = [
            (p.start + p.lead + off, k, self.pads[p.item.kind])
            for p in rendered.media
            if p.item.kind in self.pads
            for off, k in self._runs(p.item.kind, p.item.expansion)
            if k > 1
        ]
        if not runs:
            return None
        text, pieces, last, removed, ends, drops, placed = rendered.text, [], 0, 0, [], [], []
        for at, k, pad in runs:
            width = len(pad.text)
            pieces.append(text[last : at + width])
            placed.append(_Run(at - removed, k, at, pad))
            last = at + k * width
            removed += (k - 1) * width
            ends.append(last)
            drops.append(removed)

        def to(x: int) -> int:  # an offset outside every run, expanded -> compact
            i = bisect_right(ends, x)
            return x - (drops[i - 1] if i else 0)

        pieces.append(text[last:])
        small = replace(
            rendered,
            text="".join(pieces),
            spans=tuple((to(s), to(e)) for s, e in rendered.spans),
            boundaries=tuple(to(b) for b in rendered.boundaries),
            literal=tuple((to(s), to(e)) for s, e in rendered.literal),
            holes=tuple((to(s), to(e)) for s, e in rendered.holes),
            media=(),
        )
        return Compact(small, tuple(placed))

    def splice(self, row: Tokenized, compact: Compact) -> Tokenized | str:
        """The row of the expanded text from the row of `compact`: each run's one pad id repeated k times,
        offsets and cuts moved; or why not (a run's pad did not tokenize to one pad id on its own characters)."""
        n = row.prefix
        ids, labels, weights, offsets = row.input_ids, row.labels, row.weights, row.offsets
        out_ids, out_labels, out_weights = ids[:n], labels[:n], None if weights is None else weights[:n]
        prev, added, moved, runs, at = 0, 0, 0, [], []
        for c, pads, e, pad in compact.runs:
            width = len(pad.text)
            j = bisect_left(offsets, c, key=lambda o: o[0])
            if j >= len(offsets) or tuple(offsets[j]) != (c, c + width) or ids[n + j] != pad.id:
                return f"the pad run at character {e} did not tokenize to one pad token there"
            out_ids += ids[n + prev : n + j] + [pad.id] * pads
            out_labels += labels[n + prev : n + j] + [labels[n + j]] * pads  # -100; `verify` rejects it otherwise
            if out_weights is not None:
                out_weights += weights[n + prev : n + j] + [weights[n + j]] * pads  # type: ignore[index, operator]  # weights is set when out_weights is
            at.append((j, pads))
            added += pads - 1
            moved += (pads - 1) * width
            runs.append((j + added - pads + 1, pads, e, added, moved, width))
            prev = j + 1
        out_ids += ids[n + prev :]
        out_labels += labels[n + prev :]
        if out_weights is not None:
            out_weights += weights[n + prev :]  # type: ignore[index]  # as above
        cuts = tuple(c + sum(pads - 1 for j, pads in at if n + j < c) for c in row.cuts)  # a cut never falls in a run
        spliced = _SplicedOffsets(offsets, runs)
        return replace(row, input_ids=out_ids, labels=out_labels, cuts=cuts, offsets=spliced, weights=out_weights)


class _Run(NamedTuple):
    """One run of pads written once: its position in the compact text, its pads, its position expanded, its pad."""

    at: int
    pads: int
    expanded: int
    pad: _Pad


@dataclass(frozen=True, slots=True)
class Compact:
    """A rendering with each run of pads written once, and its runs."""

    rendered: Rendered
    runs: tuple[_Run, ...]


class _SplicedOffsets(Sequence[tuple[int, int]]):
    """The character offsets of a spliced row's tokens, computed per lookup from the compact row's.

    A photo's run is thousands of pads; verification and truncation look up a few offsets by
    bisection, so no list of them is built (that cost ~1 us a pad, more than tokenizing them).
    """

    __slots__ = ("_compact", "_firsts", "_runs", "_n")

    def __init__(self, compact: Sequence[tuple[int, int]], runs: list[tuple[int, int, int, int, int, int]]):
        self._compact = compact
        # (index of its first pad here, pads, its first character, tokens and characters added up to its end, pad width)
        self._runs = runs
        self._firsts = [r[0] for r in runs]
        self._n = len(compact) + sum(r[1] - 1 for r in runs)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:  # an index (bisect and the span rules never slice)
        if not -self._n <= i < self._n:
            raise IndexError(i)
        i %= self._n
        r = bisect_right(self._firsts, i) - 1
        if r < 0:
            return tuple(self._compact[i])
        first, pads, start, extra, moved, width = self._runs[r]
        if i < first + pads:
            q = i - first
            return (start + q * width, start + (q + 1) * width)
        a, b = self._compact[i - extra]
        return (a + moved, b + moved)


def atomic(backend: Any, pad: str, pad_id: int) -> bool:
    """Whether k copies of `pad` tokenize to k pad ids, each on its own characters, whatever is around them.

    True of an added token (the tokenizer splits added tokens out before normalizing and pre-tokenizing);
    checked on real text, so a tokenizer where it fails is tokenized in full instead (`Splicer.compact`).
    """
    width = len(pad)
    for before, k, after in (("a", 1, "b"), ("\n", 2, " x"), ("", 1000, "")):
        enc = backend.encode(before + pad * k + after, add_special_tokens=False)
        spans = [o for i, o in zip(enc.ids, enc.offsets) if i == pad_id]
        if spans != [(len(before) + q * width, len(before) + (q + 1) * width) for q in range(k)]:
            return False
    return True


__all__ = ["Compact", "Splicer", "atomic"]
