"""Masked tokenization: `Rendered` -> input_ids + labels, via one offsets-mapping pass.

The whole rendered text is tokenized once (the exact tokens the model sees), and a token is
trained when its characters lie inside a trained span (a text with nothing to locate, a preference
pair's prompt, is tokenized without offsets, and its offsets computed only if read):

    text    : <|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\nyo<|im_end|>\\n
    spans   :                                                     [~~~~~~~~~~~~~~)
    labels  :  -100 ...                                             yo  <|im_end|> -100

At a span edge the row holds what inference holds: the prompt tokenized alone, the response
from a fresh token (`ftdata.tokens.border`). A token that overhangs an edge by whitespace only
stays whole on the side where its text is (added tokens with `rstrip`, like Phi-3's
`<|assistant|>`, swallow the newline and the leading spaces after them). Where the whole
text's tokens across an edge are not each side's own (a BPE merge across it, a regex
pre-token across it), the record is re-tokenized split at its span edges, and noted.
Verification, per span: the trained tokens must cover its characters exactly (only
whitespace the tokenizer trims from offsets may be uncovered), and decoding them must give
its text back (whitespace aside, and up to Unicode NFKC: tokenizers normalize). A record
that fails is rejected with the reason, never trained wrong; a vocabulary that cannot spell
a character (a byte-level vocab missing a byte) fails here.

The decode is skipped only where it cannot fail: a byte-level BPE tokenizer that adds and
normalizes nothing hands every byte of the text to BPE, and BPE only merges, so its tokens
spell the text byte for byte unless a byte has no token of its own. Such a record, when
every byte of its text is in the vocabulary, passes the decode check by construction; any
other record (another tokenizer kind, a missing byte, a normalizer on non-ASCII text) is
decoded. `Masker(tokenizer, fast_verify=False)` decodes every record (the tests compare both).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ftdata.errors import UnusableRecord
from ftdata.outcomes import Note, NoteCode, RejectCode
from ftdata.tokens.border import REPAIRED, Border, Offsets, first_at
from ftdata.types import IGNORE_INDEX, Rendered

WIDENED = Note(
    NoteCode.TRAIN_DETAIL_WIDENED,
    "a token crosses a train_detail edge: it stays trained, whole (Axolotl's rule; the tokenization is the model's "
    "own)",
)


@dataclass(frozen=True, slots=True)
class Tokenized:
    """One masked record before truncation. `cuts` are token indices where exchanges end."""

    input_ids: list[int]
    labels: list[int]
    cuts: tuple[int, ...]
    prefix: int  # leading special tokens added by ftdata (BOS), kept by every truncation
    notes: tuple[Note, ...]
    # Character span of each token after `prefix` in the rendered text, for inspection (preview).
    offsets: Sequence[tuple[int, int]] = field(default=(), compare=False, repr=False)
    # The loss weight of each token (`Rendered.weights` per span, 1 elsewhere), or None: every token weighs 1.
    weights: list[float] | None = None


class WeightedRow(tuple):
    """A kept row `(ids, labels)` that also carries per-token loss weights (`.weights`).

    Still a pair, so every `ids, labels = row` reading rows is unchanged; the engine writes
    `.weights` into the `loss_weights` column (`ftdata.chat.supervision`).
    """

    weights: list[float]

    def __new__(cls, ids: list[int], labels: list[int], weights: list[float]) -> WeightedRow:
        row = super().__new__(cls, (ids, labels))
        row.weights = weights
        return row

    def __reduce__(self) -> Any:
        return (WeightedRow, (self[0], self[1], self.weights))


def row_of(tokenized: Tokenized, limit: int | None = None) -> tuple[list[int], list[int]]:
    """The kept row of a masked record, its first `limit` tokens:
    `(ids, labels)`, a `WeightedRow` when it has weights."""
    ids, labels = (
        (tokenized.input_ids, tokenized.labels)
        if limit is None
        else (tokenized.input_ids[:limit], tokenized.labels[:limit])
    )
    if tokenized.weights is None:
        return ids, labels
    return WeightedRow(ids, labels, tokenized.weights if limit is None else tokenized.weights[:limit])


@dataclass(frozen=True, slots=True)
class _Located:
    """A record whose spans are located and covered; `decode`: the decode check must still run."""

    rendered: Rendered
    ids: list[int]
    offsets: Sequence[tuple[int, int]]
    ranges: list[tuple[int, int]]
    notes: tuple[Note, ...]
    decode: bool


@dataclass(frozen=True, slots=True)
class _Spelling:
    """When a text is spelled exactly by its tokens, so that decoding them can only give it back.

    Holds for byte-level BPE (GPT-2 style: SmolLM2, Llama-3, Qwen2.5, Mistral-Nemo) when the
    tokenizer neither adds text (no `add_prefix_space`, no prepended marker) nor rewrites it
    (no normalizer, or a Unicode normalization form on ASCII text, where it changes nothing):
    the pre-tokenizer hands BPE every byte of the text, BPE only merges adjacent symbols, and
    the only symbol it can lose is a byte with no token of its own. So a text none of whose
    UTF-8 bytes is `missing` decodes back byte for byte, and together with the offsets
    coverage check the trained tokens decode to their span.

        SmolLM2: missing = {0x04, 0x06, ..., 0xc0, 0xc1, 0xf1, ...}
        "a \U00040000 b" -> bytes 61 20 f1 80 80 80 20 62: f1 is missing -> decode it
    """

    missing: bytes  # byte values the vocabulary has no token for
    ascii_only: bool  # a Unicode normalizer: only ASCII text is unchanged by it

    @staticmethod
    def of(backend: Any) -> _Spelling | None:
        # Each part's own JSON (what pickling it writes), not the whole tokenizer's: that one
        # holds the vocabulary and merges, and serializing and parsing it took 0.1 s per build.
        normalizer, pre, decoder = (
            _spec(part) for part in (backend.normalizer, backend.pre_tokenizer, backend.decoder)
        )
        model = backend.model
        unicode_forms = {"NFC", "NFD", "NFKC", "NFKD"}
        if normalizer is not None and normalizer.get("type") not in unicode_forms:
            return None
        if (
            type(model).__name__ != "BPE"
            or (decoder or {}).get("type") != "ByteLevel"
            or model.continuing_subword_prefix
            or model.end_of_word_suffix
            or not _byte_level_only(pre)
        ):
            return None
        missing = bytes(b for b, char in enumerate(_BYTE_CHARS) if model.token_to_id(char) is None)
        return _Spelling(missing, ascii_only=normalizer is not None)

    def exact(self, text: str) -> bool:
        """Whether `text`'s tokens decode back to it by construction (else: decode and compare)."""
        if self.ascii_only and not text.isascii():  # isascii is O(1) in CPython
            return False
        data = text.encode()
        return len(data.translate(None, self.missing)) == len(data)


def _spec(part: Any) -> dict[str, Any] | None:
    """A tokenizer part's settings (`{"type": "ByteLevel", ...}`), or None when the tokenizer has none."""
    return None if part is None else json.loads(part.__getstate__())


def _byte_level_only(pre: Any) -> bool:
    """The pre-tokenizer only splits (keeping every character) and maps bytes, adding nothing."""
    if pre is None:
        return False
    kind = pre.get("type")
    if kind == "Sequence":
        return (
            bool(pre["pretokenizers"])
            and all(map(_byte_level_only_step, pre["pretokenizers"]))
            and any(p.get("type") == "ByteLevel" for p in pre["pretokenizers"])
        )
    return kind == "ByteLevel" and _byte_level_only_step(pre)


def _byte_level_only_step(pre: Any) -> bool:
    kind = pre.get("type")
    if kind == "ByteLevel":
        return not pre.get("add_prefix_space")
    return kind in ("Split", "Digits", "Punctuation") and pre.get("behavior", "Isolated") != "Removed"


def _byte_chars() -> str:
    """GPT-2's byte -> character table (`bytes_to_unicode`): the character that stands for each byte."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return "".join(chars)


_BYTE_CHARS = _byte_chars()


class Masker:
    """Tokenizes rendered records in batches and builds their labels."""

    def __init__(self, tokenizer: Any, *, fast_verify: bool = True):
        self.backend = tokenizer.backend_tokenizer
        with_special = tokenizer("x", add_special_tokens=True)["input_ids"]
        plain = tokenizer("x", add_special_tokens=False)["input_ids"]
        at = _find(with_special, plain)
        self.bos_ids: list[int] = with_special[:at] if at >= 0 else []
        self.border = Border(self.backend)
        self.spelling = _Spelling.of(self.backend) if fast_verify else None

    @property
    def anchor(self) -> str | None:
        """The special token a piece is tokenized after and dropped from (`Border.anchor`): text after
        it starts a fresh token, as generation after a prompt does."""
        return self.border.anchor

    def anchor_before(self, prompt: str) -> str | None:
        """What a reply after `prompt` is tokenized behind (`Border.anchor_before`)."""
        return self.border.anchor_before(prompt)

    def __call__(self, batch: list[Rendered]) -> list[Tokenized | UnusableRecord]:
        # A text with nothing to locate (no span, hole, boundary, literal piece or media item: a pair's
        # prompt) is tokenized without offsets, the Rust tokenizer's cheaper call (8-11% less CPU); its
        # offsets are computed only if read (`preview`).
        bare = [not (r.spans or r.holes or r.boundaries or r.literal or r.media) for r in batch]
        full = iter(self.backend.encode_batch([r.text for r, b in zip(batch, bare) if not b], add_special_tokens=False))
        fast = iter(
            self.backend.encode_batch_fast([r.text for r, b in zip(batch, bare) if b], add_special_tokens=False)
            if any(bare)
            else ()
        )
        located = []
        for r, b in zip(batch, bare):
            e = next(fast if b else full)
            located.append(self._locate(r, e.ids, _LaterOffsets(self.backend, r.text, len(e.ids)) if b else Offsets(e)))
        # One Rust call decodes every trained run of the records whose spelling is not exact by construction.
        runs = [x.ids[i0:i1] for x in located if isinstance(x, _Located) and x.decode for i0, i1 in x.ranges]
        decoded = iter(self.backend.decode_batch(runs, skip_special_tokens=False)) if runs else iter(())
        return [x if isinstance(x, UnusableRecord) else self._finish(x, decoded) for x in located]

    def _locate(self, r: Rendered, ids: list[int], offsets: Sequence[tuple[int, int]]) -> _Located | UnusableRecord:
        """Every span's token range, checked to cover the span's characters, or why not."""
        t = self.border.tokens(r, ids, offsets)
        for (s, e), (i0, i1) in zip(r.spans, t.ranges):
            if problem := _coverage_problem(r.text, s, e, t.offsets, i0, i1):
                return UnusableRecord(f"verification failed: {problem}", field="labels", code=RejectCode.UNVERIFIABLE)
        exact = self.spelling is not None and self.spelling.exact(r.text)
        return _Located(r, t.ids, t.offsets, t.ranges, (*r.notes, REPAIRED) if t.split else r.notes, decode=not exact)

    def _finish(self, x: _Located, decoded: Any) -> Tokenized | UnusableRecord:
        r, ids = x.rendered, x.ids
        if x.decode:
            problems = [_decode_problem(r.text[s:e], next(decoded)) for s, e in r.spans]  # consume every run
            if problem := next((p for p in problems if p), ""):
                return UnusableRecord(f"verification failed: {problem}", field="labels", code=RejectCode.UNVERIFIABLE)
        labels = [IGNORE_INDEX] * len(ids)
        for i0, i1 in x.ranges:
            labels[i0:i1] = ids[i0:i1]
        notes, weights = x.notes, None
        if r.holes:
            problem, widened = _mask_holes(labels, x.offsets, r.holes, r.spans)
            if problem:
                return UnusableRecord(f"verification failed: {problem}", field="labels", code=RejectCode.UNVERIFIABLE)
            notes = (*notes, WIDENED) if widened else notes
        if r.weights:
            weights = [1.0] * len(ids)
            for (i0, i1), w in zip(x.ranges, r.weights):
                weights[i0:i1] = [w] * (i1 - i0)
        # The tokenizer's own BOS, unless the text already starts with it (a chat template that
        # writes `<|begin_of_text|>` itself must not get a second one).
        n = len(self.bos_ids) if self.bos_ids and ids[: len(self.bos_ids)] != self.bos_ids else 0
        cuts = tuple(n + first_at(x.offsets, b) for b in r.boundaries)
        if n:  # copy the rows only when a BOS goes in front
            ids, labels = self.bos_ids + ids, [IGNORE_INDEX] * n + labels
            weights = None if weights is None else [1.0] * n + weights
        return Tokenized(ids, labels, cuts, n, notes, x.offsets, weights)


class _LaterOffsets(Sequence[tuple[int, int]]):
    """The offsets of `text` (`n` tokens), tokenized again with them when an offset is first read."""

    def __init__(self, backend: Any, text: str, n: int):
        self._backend, self._text, self._n = backend, text, n
        self._offsets: list[tuple[int, int]] | None = None

    def _read(self) -> list[tuple[int, int]]:
        if self._offsets is None:
            self._offsets = self._backend.encode(self._text, add_special_tokens=False).offsets
        return self._offsets

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        return self._read()[i]


def _find(haystack: list[int], needle: list[int]) -> int:
    for i in range(len(haystack) - len(needle) + 1):
        if haystack[i : i + len(needle)] == needle:
            return i
    return -1


def _mask_holes(
    labels: list[int],
    offsets: Sequence[tuple[int, int]],
    holes: Sequence[tuple[int, int]],
    spans: Sequence[tuple[int, int]],
) -> tuple[str, bool]:
    """Mask every token wholly inside a hole (train_detail characters that carry no loss).

    Returns (why the holes cannot be applied or '', whether a token crosses a hole's edge).
    A token across an edge keeps its label (Axolotl's rule): it holds trained characters too.

        text     ...  doing| very| well|, thank ...      hole [9, 14): " very" masked
        offsets       (4,9) (9,14) (14,19)
    """
    widened = False
    for s, e in holes:
        if not any(a <= s and e <= b for a, b in spans):
            return f"a train_detail range [{s}, {e}) lies outside the trained turn", False
        i = first_at(offsets, s)
        if i > 0 and offsets[i - 1][1] > s:
            widened = True
        while i < len(offsets) and offsets[i][1] <= e:
            if offsets[i][1] > offsets[i][0]:  # a token with characters (not an empty added piece)
                labels[i] = IGNORE_INDEX
            i += 1
        if i < len(offsets) and offsets[i][0] < e:
            widened = True
    return "", widened


def _coverage_problem(text: str, s: int, e: int, offsets: Sequence[tuple[int, int]], i0: int, i1: int) -> str:
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
    return (
        f"trained tokens decode to {decoded[:40]!r}, not the response {expected[:40]!r} (the tokenizer cannot spell it)"
    )
