"""Tokenizing a record with images: each run of image pads tokenized as one pad, the run spliced back in.

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
then `Vision.verify` on the spliced row, as on a fully tokenized one.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ftdata.tokens.masking import Tokenized
from ftdata.types import Rendered
from ftdata.media.processors import Expansion


class Splicer:
    """Writes each run of image pads of an expanded rendering once (`compact`) and splices the runs
    back into its tokenized row (`splice`), for one tokenizer and pad token.

    `lead`: the characters of the template's image text before the processor's replacement.
    """

    def __init__(self, backend: Any, *, pad: str, pad_id: int, lead: int):
        self.pad = pad
        self.pad_id = pad_id
        self.lead = lead
        self.enabled = atomic(backend, pad, pad_id)
        self._runs_of: dict[Expansion, tuple[tuple[int, int], ...]] = {}
        self._pad_run = re.compile(f"(?:{re.escape(pad)})+")

    def _runs(self, exp: Expansion) -> tuple[tuple[int, int], ...]:
        """(character offset in `exp.text`, length) of each run of image-pad tokens of an expansion (cached)."""
        runs = self._runs_of.get(exp)
        if runs is None:
            width = len(self.pad)
            runs = tuple((m.start(), (m.end() - m.start()) // width) for m in self._pad_run.finditer(exp.text))
            if len(self._runs_of) < 65536:
                self._runs_of[exp] = runs
        return runs

    def compact(self, rendered: Rendered) -> Compact | None:
        """`rendered` (expanded) with each run of k image-pad tokens written as one: what is tokenized.

        A run of pads is k copies of one added token, which the tokenizer splits out before anything
        else (checked once per tokenizer: `atomic`), so it tokenizes to exactly k pad ids whatever is
        around it; tokenizing its k x 13 characters costs 3.5-9 us a pad (146 ms for a 15,552-token
        photo), and truncation tokenizes a record once per trial. None when the tokenizer fails that check.
        """
        if not self.enabled:
            return None
        width = len(self.pad)
        runs = [(p.start + self.lead + off, k) for p in rendered.media for off, k in self._runs(p.expansion) if k > 1]
        if not runs:
            return None
        text, pieces, last, removed, ends, drops, placed = rendered.text, [], 0, 0, [], [], []
        for at, k in runs:
            pieces.append(text[last : at + width])
            placed.append((at - removed, k, at))  # (compact position, pads, expanded position)
            last = at + k * width
            removed += (k - 1) * width
            ends.append(last)
            drops.append(removed)

        def to(x: int) -> int:  # an offset outside every run, expanded -> compact
            i = bisect_right(ends, x)
            return x - (drops[i - 1] if i else 0)

        pieces.append(text[last:])
        small = replace(
            rendered, text="".join(pieces), spans=tuple((to(s), to(e)) for s, e in rendered.spans),
            boundaries=tuple(to(b) for b in rendered.boundaries), literal=tuple((to(s), to(e)) for s, e in rendered.literal),
            holes=tuple((to(s), to(e)) for s, e in rendered.holes), media=(),
        )  # fmt: skip
        return Compact(small, tuple(placed))

    def splice(self, row: Tokenized, compact: Compact) -> Tokenized | str:
        """The row of the expanded text from the row of `compact`: each run's one pad id repeated k times,
        offsets and cuts moved; or why not (a run's pad did not tokenize to one pad id on its own characters)."""
        width, n = len(self.pad), row.prefix
        ids, labels, weights, offsets = row.input_ids, row.labels, row.weights, row.offsets
        out_ids, out_labels, out_weights = ids[:n], labels[:n], None if weights is None else weights[:n]
        prev, added, runs, at = 0, 0, [], []
        for c, pads, e in compact.runs:
            j = bisect_left(offsets, c, key=lambda o: o[0])
            if j >= len(offsets) or tuple(offsets[j]) != (c, c + width) or ids[n + j] != self.pad_id:
                return f"the image-pad run at character {e} did not tokenize to one pad token there"
            out_ids += ids[n + prev : n + j] + [self.pad_id] * pads
            out_labels += labels[n + prev : n + j] + [labels[n + j]] * pads  # -100; `verify` rejects it otherwise
            if out_weights is not None:
                out_weights += weights[n + prev : n + j] + [weights[n + j]] * pads  # type: ignore[index]
            at.append((j, pads))
            added += pads - 1
            runs.append((j + added - pads + 1, pads, e, added, added * width))
            prev = j + 1
        out_ids += ids[n + prev :]
        out_labels += labels[n + prev :]
        if out_weights is not None:
            out_weights += weights[n + prev :]  # type: ignore[index]
        cuts = tuple(c + sum(pads - 1 for j, pads in at if n + j < c) for c in row.cuts)  # a cut never falls in a run
        spliced = _SplicedOffsets(offsets, runs, width)
        return replace(row, input_ids=out_ids, labels=out_labels, cuts=cuts, offsets=spliced, weights=out_weights)


@dataclass(frozen=True, slots=True)
class Compact:
    """A rendering with each run of image pads written once, and per run: (its position there, its pads, its position expanded)."""

    rendered: Rendered
    runs: tuple[tuple[int, int, int], ...]


class _SplicedOffsets(Sequence[tuple[int, int]]):
    """The character offsets of a spliced row's tokens, computed per lookup from the compact row's.

    A photo's run is thousands of pads; verification and truncation look up a few offsets by
    bisection, so no list of them is built (that cost ~1 us a pad, more than tokenizing them).
    """

    __slots__ = ("_compact", "_firsts", "_runs", "_width", "_n")

    def __init__(self, compact: Sequence[tuple[int, int]], runs: list[tuple[int, int, int, int, int]], width: int):
        self._compact = compact
        self._runs = runs  # (index of its first pad here, pads, its first character, tokens and characters added up to its end)
        self._firsts = [r[0] for r in runs]
        self._width = width
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
        first, pads, start, extra, moved = self._runs[r]
        if i < first + pads:
            q = i - first
            return (start + q * self._width, start + (q + 1) * self._width)
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
