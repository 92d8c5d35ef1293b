"""Masked tokenization: `Rendered` -> input_ids + labels, via one offsets-mapping pass.

The whole rendered text is tokenized once (the exact tokens the model sees), and a token is
trained when its characters lie inside a trained span:

    text    : <|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\nyo<|im_end|>\\n
    spans   :                                                     [~~~~~~~~~~~~~~)
    labels  :  -100 ...                                             yo  <|im_end|> -100

A token that overhangs a span edge by whitespace only stays whole on the side where its
text is (added tokens with `rstrip`, like Phi-3's `<|assistant|>`, swallow the newline and
the leading spaces after them). A token that crosses an edge with text on both sides (rare:
BPE merges across the boundary) cannot be half trained; such a record is re-tokenized with
the text split at span edges, each piece tokenized as it would be in context, and noted.
Verification, per span: the trained tokens must cover its characters exactly (only
whitespace the tokenizer trims from offsets may be uncovered), and decoding them must give
its text back (whitespace aside, and up to Unicode NFKC: tokenizers normalize). A record
that fails is rejected with the reason, never trained wrong; a vocabulary that cannot spell
a character (a byte-level vocab missing a byte) fails here.
"""

from __future__ import annotations

import unicodedata
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
        self.anchor = _anchor(self.backend)

    def __call__(self, batch: list[Rendered]) -> list[Tokenized | UnusableRecord]:
        encodings = self.backend.encode_batch([r.text for r in batch], add_special_tokens=False)
        staged = [self._locate(r, e.ids, e.offsets) for r, e in zip(batch, encodings)]
        # One Rust call decodes every trained run of the batch, for the decode check.
        runs = [item[1][i0:i1] for item in staged if not isinstance(item, UnusableRecord) for i0, i1 in item[3]]
        decoded = iter(self.backend.decode_batch(runs, skip_special_tokens=False)) if runs else iter(())
        return [item if isinstance(item, UnusableRecord) else self._finish(*item, decoded) for item in staged]

    def _locate(self, r: Rendered, ids: list[int], offsets: list[tuple[int, int]]) -> Any:
        """(r, ids, offsets, ranges, notes) with every span's token range covering it, or why not."""
        notes = r.notes
        ranges = _token_ranges(r.text, offsets, r.spans)
        if ranges is None:
            ids, offsets = self.split_encode(r)
            ranges = _token_ranges(r.text, offsets, r.spans)
            notes = (*notes, REPAIRED)
            assert ranges is not None, "splitting at span edges makes every token lie on one side"
        for (s, e), (i0, i1) in zip(r.spans, ranges):
            if problem := _coverage_problem(r.text, s, e, offsets, i0, i1):
                return UnusableRecord(f"verification failed: {problem}", field="labels")
        return r, ids, offsets, ranges, notes

    def _finish(
        self, r: Rendered, ids: list[int], offsets: list[tuple[int, int]], ranges: list[tuple[int, int]],
        notes: tuple[str, ...], decoded: Any,
    ) -> Tokenized | UnusableRecord:  # fmt: skip
        problems = [_decode_problem(r.text[s:e], next(decoded)) for s, e in r.spans]  # consume every run
        if problem := next((p for p in problems if p), ""):
            return UnusableRecord(f"verification failed: {problem}", field="labels")
        labels = [IGNORE_INDEX] * len(ids)
        for i0, i1 in ranges:
            labels[i0:i1] = ids[i0:i1]
        # The tokenizer's own BOS, unless the text already starts with it (a chat template that
        # writes `<|begin_of_text|>` itself must not get a second one).
        prefix = self.bos_ids if self.bos_ids and ids[: len(self.bos_ids)] != self.bos_ids else []
        n = len(prefix)
        cuts = tuple(n + bisect_left(offsets, (b, -1)) for b in r.boundaries)
        return Tokenized(prefix + ids, [IGNORE_INDEX] * n + labels, cuts, n, notes)

    def split_encode(self, r: Rendered) -> tuple[list[int], list[tuple[int, int]]]:
        """Tokenize the text piece by piece, split at every span edge.

        A piece is tokenized after an anchor special token and the anchor dropped: that is how
        it tokenizes in the middle of a text. Alone, SentencePiece-style tokenizers (Metaspace
        with `prepend_scheme="first"`: Phi-3, Llama-2, Mistral v1) would prepend a `▁` that is
        not in the text.
        """
        edges = sorted({0, len(r.text), *(x for span in r.spans for x in span)})
        starts = [a for a, b in zip(edges, edges[1:]) if b > a]
        anchor = self.anchor or ""
        # (prefix length to drop, text to encode) per piece; the first piece starts the text.
        inputs = [(len(anchor) if a else 0, (anchor if a else "") + r.text[a:b]) for a, b in zip(edges, edges[1:]) if b > a]
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        encodings = self.backend.encode_batch([text for _, text in inputs], add_special_tokens=False)
        for start, (drop, _), enc in zip(starts, inputs, encodings):
            for token, (a, b) in zip(enc.ids, enc.offsets):
                if b <= drop:
                    continue  # the anchor
                ids.append(token)
                offsets.append((a - drop + start, b - drop + start))
        return ids, offsets


def _anchor(backend: Any) -> str | None:
    """A special token that tokenizes alone and strips nothing around it, or None."""
    for token in backend.get_added_tokens_decoder().values():
        if not token.special or token.lstrip or token.rstrip or token.single_word or not token.content.strip():
            continue
        enc = backend.encode(token.content + "a b", add_special_tokens=False)
        if len(enc.ids) > 1 and enc.offsets[0] == (0, len(token.content)) and enc.offsets[1][0] == len(token.content):
            return token.content
    return None


def _find(haystack: list[int], needle: list[int]) -> int:
    for i in range(len(haystack) - len(needle) + 1):
        if haystack[i : i + len(needle)] == needle:
            return i
    return -1


def _token_ranges(
    text: str, offsets: list[tuple[int, int]], spans: tuple[tuple[int, int], ...]
) -> list[tuple[int, int]] | None:
    """Token index range [i0, i1) of each span, or None when a token crosses a span edge.

    A token that overhangs an edge by whitespace only stays whole on the side of its text:

        <|assistant|>\n␣ | yo ...    Phi-3's <|assistant|> (rstrip) swallows "\n␣": stays out
        ... yo<|end|>\n | <|user|>    Phi-3's <|end|> (rstrip) swallows "\n": stays in
    """
    out = []
    for s, e in spans:
        i0 = bisect_left(offsets, (s, -1))
        i1 = bisect_left(offsets, (e, -1))
        if i0 > 0 and offsets[i0 - 1][1] > s:
            a, b = offsets[i0 - 1]
            if not text[a:s].strip():
                i0 -= 1
            elif text[s:b].strip():
                return None
        if i1 > 0 and offsets[i1 - 1][1] > e:
            a, b = offsets[i1 - 1]
            if text[e:b].strip():
                if text[a:e].strip():
                    return None
                i1 -= 1
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


def _visible(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).split())


def _decode_problem(expected: str, decoded: str) -> str:
    """Why the trained tokens do not decode to the span's text ('' when they do)."""
    if decoded == expected or _visible(decoded) == _visible(expected):
        return ""
    return f"trained tokens decode to {decoded[:40]!r}, not the response {expected[:40]!r} (the tokenizer cannot spell it)"
