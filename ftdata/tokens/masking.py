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

A record that carries its template's constant text (`Rendered.constants`: a prompt template's
`### Instruction:` lines) is tokenized piece by piece where the tokenizer's pre-tokenizer is
proven to split at every border of the constants (`ftdata.tokens.reuse.Constants`): the
constants' ids are reused, the record's own text tokenized without offsets (split into words in
Python where `ftdata.tokens.words` is proven for the tokenizer; a text seen twice before served
its ids, `ftdata.tokens.repeats`), and the ids are the whole text's, exactly. Its spans are each
one piece, checked the same way: covered exactly (by the bytes their tokens spell, where the
spelling holds, else by offsets) and decoded where the decode can fail. `Masker(tokenizer,
reuse=False)` tokenizes every text whole (the tests compare).
"""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ftdata.errors import UnusableRecord
from ftdata.outcomes import Note, NoteCode, RejectCode
from ftdata.tokens.border import REPAIRED, Border, Offsets, first_at
from ftdata.tokens.repeats import KEEP_BYTES, Repeats, ids_cost
from ftdata.tokens.reuse import Constants, Pieces, plain_backend, shape
from ftdata.tokens.spelling import Spelling
from ftdata.tokens.stretches import Stretches
from ftdata.tokens.words import Words
from ftdata.types import IGNORE_INDEX, Rendered

# Texts at least this long are encoded one at a time and their encodings let go once located: Rust encodings kept
# alive until a batch ends made every later encode slower (40 agent sessions of ~25,000 tokens, one core: 2.96 s
# in one `encode_batch` kept, 2.07 s one at a time with each let go after its offsets were read).
LET_GO_CHARS = 32_768
# Record text is split into words here (`tokens.words`) once a build has tokenized this many characters of it without
# offsets: the proof that the split gives the tokenizer's ids costs ~75 ms, once a process, and the Rust tokenizer
# takes about that long for 500,000 characters.
WORDS_FROM_CHARS = 500_000

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
    edges: Mapping[int, int] | None = None  # assembled from pieces: the token index at each piece's start


class Masker:
    """Tokenizes rendered records in batches and builds their labels."""

    def __init__(self, tokenizer: Any, *, fast_verify: bool = True, reuse: bool = True):
        self.tokenizer = tokenizer
        self.backend = tokenizer.backend_tokenizer
        self._options = (fast_verify, reuse)
        self._read_tokenizer()

    def _read_tokenizer(self) -> None:
        """What the masker knows of its tokenizer, read (again) for the tokenizer as it stands (`reuse.shape`): a
        token added after the masker was made changes the ids of every text holding it."""
        fast_verify, reuse = self._options
        self.shape = shape(self.backend)
        with_special = self.tokenizer("x", add_special_tokens=True)["input_ids"]
        plain = self.tokenizer("x", add_special_tokens=False)["input_ids"]
        at = _find(with_special, plain)
        self.bos_ids: list[int] = with_special[:at] if at >= 0 else []
        self.border = Border(self.backend)
        self.spelling = Spelling.of(self.backend) if fast_verify else None
        self.constants = Constants(self.backend) if reuse else None
        self.stretches = Stretches(self.backend) if reuse else None
        self.repeats: Repeats[tuple[int, ...]] | None = Repeats(ids_cost, KEEP_BYTES) if reuse else None
        self.words: Words | None = None
        self._chars: int | None = 0  # characters tokenized without offsets so far (None: Words.of asked)
        self._threads: set[int] = set()  # the threads that have tokenized with this masker

    def share_memos(self, other: Masker) -> None:
        """Keep and serve texts seen twice in `other`'s memos (`repeats`, `stretches`) where both maskers tokenize with
        the one backend, as it stands: their ids are the same. A recipe's sources each have a masker, and each masker's
        memos have a bound of their own (12 MiB of ids, 45 MiB of stretches), so without this a build's memory grew
        with its number of sources. A masker whose tokenizer changes later makes memos of its own again."""
        if other.backend is not self.backend or other.shape != self.shape:
            return
        if self.repeats is not None and other.repeats is not None:
            self.repeats = other.repeats
        if self.stretches is not None and other.stretches is not None:
            self.stretches = other.stretches

    @property
    def anchor(self) -> str | None:
        """The special token a piece is tokenized after and dropped from (`Border.anchor`): text after
        it starts a fresh token, as generation after a prompt does."""
        return self.border.anchor

    def anchor_before(self, prompt: str) -> str | None:
        """What a reply after `prompt` is tokenized behind (`Border.anchor_before`)."""
        return self.border.anchor_before(prompt)

    def __call__(self, batch: list[Rendered]) -> list[Tokenized | UnusableRecord]:
        if shape(self.backend) != self.shape:
            self._read_tokenizer()
        # A text with nothing to locate (no span, hole, boundary, literal piece or media item: a pair's
        # prompt) is tokenized without offsets (`_ids`); its offsets are computed only if read (`preview`).
        bare = [not (r.spans or r.holes or r.boundaries or r.literal or r.media) for r in batch]
        pieced = self._pieced(batch, bare)
        whole = [not b and p is None for b, p in zip(bare, pieced)]
        full = self._whole([r.text for r, w in zip(batch, whole) if w])
        fast = self._ids([r.text for r, b in zip(batch, bare) if b])
        exact = [
            self.spelling is not None and p is not None and self.spelling.exact(r.text) for r, p in zip(batch, pieced)
        ]
        encoded = self._encode_pieces(batch, pieced, exact)
        # each pieced record's own pieces: start -> (ids, encoding or None), the ids read once (each read of an
        # encoding's `ids` makes a new list)
        own = [None if p is None else {s: next(encoded) for s, _, ids in p if ids is None} for p in pieced]
        counted = self._counted(batch, own, exact)
        located = []
        for r, b, p, o, c, x in zip(batch, bare, pieced, own, counted, exact):
            if p is not None and o is not None:
                located.append(self._joined(r, p, o, c, exact=x))
                continue
            if b:
                ids = next(fast)[0]
                located.append(self._locate(r, ids, _LaterOffsets(self.backend, r.text, len(ids))))
                continue
            e = next(full)
            found = self._locate(r, e.ids, Offsets(e))
            located.append(self._let_go(found) if len(r.text) >= LET_GO_CHARS else found)
        # One Rust call decodes every trained run of the records whose spelling is not exact by construction.
        runs = [x.ids[i0:i1] for x in located if isinstance(x, _Located) and x.decode for i0, i1 in x.ranges]
        decoded = iter(self.backend.decode_batch(runs, skip_special_tokens=False)) if runs else iter(())
        return [x if isinstance(x, UnusableRecord) else self._finish(x, decoded) for x in located]

    def _whole(self, texts: list[str]) -> Iterator[Any]:
        """The encodings of whole texts, with offsets, in order: those that repeat stretches of earlier texts
        assembled from their stretches (`tokens.stretches`), the other short ones in one call, a long one alone when
        its turn comes, so that its encoding is let go (`_let_go`) before the next one is made."""
        stretches = self.stretches if self.stretches is not None and texts and self.stretches.usable else None
        plans = stretches.plans(texts) if stretches is not None else [None] * len(texts)
        short = [t for t, p in zip(texts, plans) if p is None and len(t) < LET_GO_CHARS]
        batch = iter(self.backend.encode_batch(short, add_special_tokens=False) if short else ())
        for text, plan in zip(texts, plans):
            if plan is not None and stretches is not None:
                yield stretches.assemble(plan)
            else:
                yield self.backend.encode(text, add_special_tokens=False) if len(text) >= LET_GO_CHARS else next(batch)

    def _let_go(self, x: _Located | UnusableRecord) -> _Located | UnusableRecord:
        """A long record located on its encoding, without it: the exchange cuts read from it now, its offsets read
        again (`_LaterOffsets`) only if a later step reads them (a record with holes keeps them: it reads them)."""
        if not isinstance(x, _Located) or not isinstance(x.offsets, Offsets) or x.rendered.holes:
            return x
        edges = {b: first_at(x.offsets, b) for b in x.rendered.boundaries}
        return replace(x, offsets=_LaterOffsets(self.backend, x.rendered.text, len(x.ids)), edges=edges)

    def _pieced(self, batch: list[Rendered], bare: list[bool]) -> list[Pieces | None]:
        """Each record's pieces where its template constants' ids are reused (`tokens.reuse.Constants`): only for
        records whose spans are each one piece of record text and whose exchange ends fall between pieces."""
        if self.constants is None or not any(r.constants for r in batch):
            return [None] * len(batch)
        plain = [bool(r.constants) and not (b or r.holes or r.literal or r.media) for r, b in zip(batch, bare)]
        found = self.constants.pieces([(r.text, r.constants) if p else ("", ()) for r, p in zip(batch, plain)])
        out: list[Pieces | None] = []
        for r, pieces in zip(batch, found):
            if pieces is not None:
                own = {(s, e) for s, e, ids in pieces if ids is None}
                starts = {s for s, _, _ in pieces} | {len(r.text)}
                if not all(span in own for span in r.spans) or not all(b in starts for b in r.boundaries):
                    pieces = None
            out.append(pieces)
        return out

    def _encode_pieces(self, batch: list[Rendered], pieced: list[Pieces | None], exact: list[bool]) -> Iterator[_Piece]:
        """Every piece of record text to tokenize, in order, as (ids, encoding): without offsets (`_ids`), but a
        span's with its offsets where its coverage cannot be counted in bytes (`Spelling`)."""
        texts: list[str] = []
        offsets: list[bool] = []
        counted = self.spelling is not None and self.spelling.sizes is not None
        for r, pieces, x in zip(batch, pieced, exact):
            for s, e, ids in pieces or ():
                if ids is None:
                    texts.append(r.text[s:e])
                    offsets.append(not (x and counted) and (s, e) in r.spans)
        if not texts:
            return iter(())
        spans = [t for t, k in zip(texts, offsets) if k]
        rest = [t for t, k in zip(texts, offsets) if not k]
        with_offsets = iter(self.backend.encode_batch(spans, add_special_tokens=False) if spans else ())
        fast = self._ids(rest)
        return iter([_with_ids(next(with_offsets)) if k else next(fast) for k in offsets])

    def _ids(self, texts: list[str]) -> Iterator[_Piece]:
        """Each text's (ids, encoding), without offsets: a text seen twice before served its ids (`tokens.repeats`),
        one twice in `texts` tokenized once, the others split into words here where `tokens.words` answers (no
        encoding), else tokenized by the Rust tokenizer's cheaper call (8-11% less CPU than with offsets).

        Words only while one thread tokenizes with this masker (a worker process, a build on one core): where several
        build threads share it (engine=local on more cores), the Rust call releases the GIL, so one thread encodes
        while the others run Python, and words would hold it (measured on two cores: 30% less CPU, the wall no
        shorter; with more threads the GIL would bound it)."""
        if not texts:
            return iter(())
        self._threads.add(threading.get_ident())
        alone = len(self._threads) == 1
        if alone and self._chars is not None:
            self._chars += sum(map(len, texts))
            if self._chars >= WORDS_FROM_CHARS:
                self.words, self._chars = Words.of(self.backend), None
        repeats = self.repeats if self.repeats is not None and plain_backend(self.backend) else None
        if repeats is None:  # a backend left truncating or padding gives other ids than the text's own
            return iter(self._tokenized(texts, alone))
        served = repeats.served(texts)
        todo = [t for t, ids in zip(texts, served) if ids is None]
        unique = list(dict.fromkeys(todo))
        made = dict(zip(unique, self._tokenized(unique, alone)))
        repeats.keep((t, tuple(made[t][0])) for t, again in zip(todo, repeats.seen(todo)) if again)
        out: list[_Piece] = []
        given: set[str] = set()
        for text, ids in zip(texts, served):
            if ids is not None:
                out.append((list(ids), None))
            elif text in given:  # the same text again in this batch: a list of its own
                out.append((list(made[text][0]), None))
            else:
                given.add(text)
                out.append(made[text])
        return iter(out)

    def _tokenized(self, texts: list[str], alone: bool) -> list[_Piece]:
        """Each text's (ids, encoding) from the words where one thread tokenizes (`_ids`), else the Rust tokenizer."""
        made = self.words.encode(texts) if self.words is not None and alone else [None] * len(texts)
        left = [t for t, ids in zip(texts, made) if ids is None]
        rust = iter(self.backend.encode_batch_fast(left, add_special_tokens=False) if left else ())
        return [(ids, None) if ids is not None else _with_ids(next(rust)) for ids in made]

    def _counted(
        self, batch: list[Rendered], own: list[dict[int, _Piece] | None], exact: list[bool]
    ) -> list[list[bool | None]]:
        """For each record's spans, whether their tokens spell their bytes (`Spelling.covers`; None: not counted,
        read the offsets), counted for every exact pieced record of the batch in one pass over their ids."""
        out: list[list[bool | None]] = [[None] * len(r.spans) for r in batch]
        wanted = [
            (i, k, o[s][0], r.text[s:e])
            for i, (r, o, x) in enumerate(zip(batch, own, exact))
            if o is not None and x
            for k, (s, e) in enumerate(r.spans)
        ]
        if wanted and self.spelling is not None:
            counts = self.spelling.covers_all([(ids, text) for _, _, ids, text in wanted])
            for (i, k, _, _), count in zip(wanted, counts):
                out[i][k] = count
        return out

    def _joined(
        self,
        r: Rendered,
        pieces: Pieces,
        own: dict[int, _Piece],
        counted: list[bool | None],
        *,
        exact: bool,
    ) -> _Located | UnusableRecord:
        """A record's ids as its pieces' ids joined (each constant's reused), each span checked to be covered
        exactly by its tokens: in bytes where its tokens spell it (`counted`: `_counted`'s, for an `exact` record),
        else by their offsets."""
        ids: list[int] = []
        edges: dict[int, int] = {}
        for s, _, constant in pieces:
            edges[s] = len(ids)
            ids += own[s][0] if constant is None else constant
        edges[len(r.text)] = len(ids)
        for (s, e), count in zip(r.spans, counted):
            if count is False:
                problem = f"trained tokens do not spell the {len(r.text[s:e].encode())} bytes of the response"
            elif count is None:
                piece, enc = own[s]
                if exact:  # encoded without offsets, for a count the sizes could not give
                    enc = self.backend.encode(r.text[s:e], add_special_tokens=False)
                problem = _coverage_problem(r.text, s, e, _Shifted(Offsets(enc), s), 0, len(piece))
            else:
                problem = ""
            if problem:
                return UnusableRecord(f"verification failed: {problem}", field="labels", code=RejectCode.UNVERIFIABLE)
        offsets = _LaterOffsets(self.backend, r.text, len(ids))
        ranges = [(edges[s], edges[e]) for s, e in r.spans]
        return _Located(r, ids, offsets, ranges, r.notes, decode=not exact, edges=edges)

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
        cuts = tuple(n + (x.edges[b] if x.edges is not None else first_at(x.offsets, b)) for b in r.boundaries)
        if n:  # copy the rows only when a BOS goes in front
            ids, labels = self.bos_ids + ids, [IGNORE_INDEX] * n + labels
            weights = None if weights is None else [1.0] * n + weights
        return Tokenized(ids, labels, cuts, n, notes, x.offsets, weights)


def _with_ids(encoding: Any) -> tuple[list[int], Any]:
    return encoding.ids, encoding


# A piece of record text tokenized: its ids and its Rust encoding (None: split into words here, `tokens.words`).
_Piece = tuple[list[int], Any]


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


class _Shifted(Sequence[tuple[int, int]]):
    """A piece's offsets as offsets in the whole text: each moved by the piece's start."""

    def __init__(self, offsets: Sequence[tuple[int, int]], start: int):
        self._offsets, self._start = offsets, start

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, i: Any) -> Any:  # an index (the coverage check reads two)
        a, b = self._offsets[i]
        return a + self._start, b + self._start


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
