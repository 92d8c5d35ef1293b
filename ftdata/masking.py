"""Masked tokenization: `Rendered` -> input_ids + labels, via one offsets-mapping pass.

The whole rendered text is tokenized once (the exact tokens the model sees), and a token is
trained when its characters lie inside a trained span:

    text    : <|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\nyo<|im_end|>\\n
    spans   :                                                     [~~~~~~~~~~~~~~)
    labels  :  -100 ...                                             yo  <|im_end|> -100

A token that crosses a span edge (rare: BPE merges across the boundary) cannot be half
trained; such a record is re-tokenized with the text split at span edges, and noted.
Verification: the trained tokens of each span must cover its characters exactly (only
whitespace the tokenizer trims from offsets may be uncovered); otherwise the record is
rejected, never trained wrong.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

from ftdata.errors import UnusableRecord
from ftdata.types import IGNORE_INDEX, Rendered

REPAIRED = "a token crossed a response edge; re-tokenized split at the edge"


@dataclass(frozen=True, slots=True)
class Tokenized:
    """One masked record before truncation. `cuts` are token indices where exchanges end."""

    input_ids: list[int]
    labels: list[int]
    cuts: tuple[int, ...]
    prefix: int  # leading special tokens added by ftdata (BOS), kept by every truncation
    notes: tuple[str, ...]


class Masker:
    """Tokenizes rendered records in batches and builds their labels."""

    def __init__(self, tokenizer: Any):
        self.backend = tokenizer.backend_tokenizer
        with_special = tokenizer("x", add_special_tokens=True)["input_ids"]
        plain = tokenizer("x", add_special_tokens=False)["input_ids"]
        at = _find(with_special, plain)
        self.bos_ids: list[int] = with_special[:at] if at >= 0 else []
        self.bos_text = tokenizer.bos_token or ""

    def __call__(self, batch: list[Rendered]) -> list[Tokenized | UnusableRecord]:
        encodings = self.backend.encode_batch([r.text for r in batch], add_special_tokens=False)
        return [self._one(r, e.ids, e.offsets) for r, e in zip(batch, encodings)]

    def _one(self, r: Rendered, ids: list[int], offsets: list[tuple[int, int]]) -> Tokenized | UnusableRecord:
        notes = r.notes
        ranges = _token_ranges(r.text, offsets, r.spans)
        if ranges is None:
            ids, offsets = self._split_encode(r)
            ranges = _token_ranges(r.text, offsets, r.spans)
            notes = (*notes, REPAIRED)
            assert ranges is not None, "splitting at span edges makes every token lie on one side"
        for (s, e), (i0, i1) in zip(r.spans, ranges):
            problem = _coverage_problem(r.text, s, e, offsets, i0, i1)
            if problem:
                return UnusableRecord(f"verification failed: {problem}", field="labels")
        labels = [IGNORE_INDEX] * len(ids)
        for i0, i1 in ranges:
            labels[i0:i1] = ids[i0:i1]
        prefix = self.bos_ids if self.bos_ids and not r.text.startswith(self.bos_text) else []
        n = len(prefix)
        cuts = tuple(n + bisect_left(offsets, (b, -1)) for b in r.boundaries)
        return Tokenized(prefix + ids, [IGNORE_INDEX] * n + labels, cuts, n, notes)

    def _split_encode(self, r: Rendered) -> tuple[list[int], list[tuple[int, int]]]:
        edges = sorted({0, len(r.text), *(x for span in r.spans for x in span)})
        pieces = [r.text[a:b] for a, b in zip(edges, edges[1:]) if b > a]
        starts = [a for a, b in zip(edges, edges[1:]) if b > a]
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        for start, enc in zip(starts, self.backend.encode_batch(pieces, add_special_tokens=False)):
            ids.extend(enc.ids)
            offsets.extend((a + start, b + start) for a, b in enc.offsets)
        return ids, offsets


def _find(haystack: list[int], needle: list[int]) -> int:
    for i in range(len(haystack) - len(needle) + 1):
        if haystack[i : i + len(needle)] == needle:
            return i
    return -1


def _token_ranges(
    text: str, offsets: list[tuple[int, int]], spans: tuple[tuple[int, int], ...]
) -> list[tuple[int, int]] | None:
    """Token index range [i0, i1) of each span, or None when a token crosses a span edge.

    A token that overhangs an edge by whitespace only belongs to the span: added tokens
    with `rstrip`/`lstrip` (Phi-3's `<|end|>`) swallow the newline next to them.
    """
    out = []
    for s, e in spans:
        i0 = bisect_left(offsets, (s, -1))
        i1 = bisect_left(offsets, (e, -1))
        if i0 > 0 and offsets[i0 - 1][1] > s:
            if text[offsets[i0 - 1][0] : s].strip():
                return None
            i0 -= 1
        if i1 > 0 and offsets[i1 - 1][1] > e and text[e : offsets[i1 - 1][1]].strip():
            return None
        out.append((i0, i1))
    return out


def _coverage_problem(text: str, s: int, e: int, offsets: list[tuple[int, int]], i0: int, i1: int) -> str:
    """Why tokens [i0, i1) do not cover text[s:e] exactly ('' when they do)."""
    if i1 <= i0:
        return f"no token inside the response span {text[s:e][:40]!r}"
    first, last = offsets[i0][0], offsets[i1 - 1][1]
    if text[s:first].strip() or text[last:e].strip():
        return f"trained tokens cover {text[first:last][:40]!r}, not the response {text[s:e][:40]!r}"
    return ""
