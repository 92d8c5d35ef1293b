"""The prompt/response border: where a record's tokens must start afresh.

At inference a turn's prompt is tokenized alone and the model generates from a fresh token, so
the row's tokens up to a trained span are the prompt's own and the span's are its text's own.
The whole rendered text, tokenized once, gives the same tokens unless something crosses a span
edge (docs/masking.md, section 2.1):

- a token with text on both sides, or one that starts in the prompt:

      <th ink ></ think >         Llama 3: `…<think>` | `</think>4.`   -> <th ink > | </ think >
      think > \\n\\n </             Gemma 3: `…<think>\\n` | `\\n</think>` -> think > \\n | \\n </

- a pre-token of a regex pre-tokenizer, although BPE put a token boundary at the edge: each
  side alone pre-tokenizes differently (Mistral-Nemo, `</think>\\n\\n` | `/<|im_end|>`: `>\\n\\n/`
  is one pre-token; the whole text gives `>\\n\\n` `/` `<`, the reply alone `/<` `|`).

Then the text is tokenized piece by piece, split at every span edge (`Border.split_encode`).
Two overhangs by whitespace only keep a token whole (`token_ranges`).
"""

from __future__ import annotations

import json
import threading
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from ftdata.chat.chat_tokens import copy_backend
from ftdata.outcomes import Note, NoteCode
from ftdata.types import Rendered

REPAIRED = Note(
    NoteCode.REPAIRED,
    "the tokens across a response edge are not those of each side alone; re-tokenized split at the edge",
)


class Offsets(Sequence[tuple[int, int]]):
    """An encoding's offsets, read one token at a time.

    Locating spans needs a few bisections per record (~30 offsets); building the whole
    offsets list costs ~0.15 us per token, a third of what the rest of masking costs.
    """

    __slots__ = ("_encoding", "_n")

    def __init__(self, encoding: Any):
        self._encoding = encoding
        self._n = len(encoding)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:  # an index (bisect and the span rules never slice)
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return self._encoding.token_to_chars(i % self._n)

    def first_at(self, s: int) -> int | None:
        """`bisect_left(self, (s, -1))` (the first token starting at or after character `s`) from
        the token that holds `s`, in three lookups instead of a bisection's eight; None when the
        encoding cannot say (no token holds `s`) or the tokens around do not bound `s` as bisect would."""
        t = self._encoding.char_to_token(s)
        if t is None:  # past the last token (a span that ends the text), or a character no token holds
            return self._n if self._n and self._encoding.token_to_chars(self._n - 1)[0] < s else None
        i = t if self._encoding.token_to_chars(t)[0] >= s else t + 1
        if (i > 0 and self._encoding.token_to_chars(i - 1)[0] >= s) or (
            i < self._n and self._encoding.token_to_chars(i)[0] < s
        ):
            return None
        return i

    def one_word(self, i: int) -> bool:
        """Whether tokens i-1 and i come from one pre-token (the pre-tokenizer's word)."""
        if not 0 < i < self._n:
            return False
        word = self._encoding.token_to_word(i)
        return word is not None and word == self._encoding.token_to_word(i - 1)

    def word(self, i: int) -> tuple[int, int]:
        """The tokens [j0, j1) of token i's pre-token."""
        j0, j1 = i, i + 1
        while self.one_word(j0):
            j0 -= 1
        while self.one_word(j1):
            j1 += 1
        return j0, j1


def first_at(offsets: Sequence[tuple[int, int]], s: int) -> int:
    """The first token whose start is at or after character `s` (starts rise token by token)."""
    if isinstance(offsets, Offsets) and (i := offsets.first_at(s)) is not None:
        return i
    return bisect_left(offsets, (s, -1))


@dataclass(frozen=True, slots=True)
class Tokens:
    """A record's tokens and each span's token range [i0, i1); `split`: tokenized piece by piece
    at the span edges (`REPAIRED`)."""

    ids: list[int]
    offsets: Sequence[tuple[int, int]]
    ranges: list[tuple[int, int]]
    split: bool


class Border:
    """For one tokenizer: each span's tokens in a record, split at the span edges where the whole
    text's tokens are not those of each side alone."""

    def __init__(self, backend: Any):
        self.backend = backend
        self.anchor = _anchor(backend)
        self.added = {i: token.content for i, token in backend.get_added_tokens_decoder().items()}
        # Added tokens that take the whitespace after them (Phi-3's `<|assistant|>`, rstrip): a reply's leading
        # space after one is the prompt token's, in the whole text and so at inference.
        self._stripping = tuple(
            t.content for t in backend.get_added_tokens_decoder().values() if t.rstrip and t.content.strip()
        )
        self.regex = _splits_by_regex(backend)
        self._literal: Any = None
        self._literal_lock = threading.Lock()  # engine=local masks batches on several threads

    def anchor_before(self, prompt: str) -> str | None:
        """What a reply after `prompt` is tokenized behind so that it tokenizes as in the whole text: the prompt's
        last token and the whitespace after it where that token takes the whitespace after it (Phi-3's
        `<|assistant|>\\n`: a reply's leading space goes to it, so `Abd`, not `▁Abd`), else `anchor`.

        >>> b = Border.__new__(Border); b.anchor, b._stripping = "<s>", ("<|assistant|>",)
        >>> b.anchor_before("<|user|>\\nhi<|end|>\\n<|assistant|>\\n"), b.anchor_before("<|user|>\\nhi")
        ('<|assistant|>\\n', '<s>')
        """
        head = prompt.rstrip()
        token = next((t for t in self._stripping if head.endswith(t)), None)
        return prompt[len(head) - len(token) :] if token is not None else self.anchor

    def tokens(self, r: Rendered, ids: list[int], offsets: Sequence[tuple[int, int]]) -> Tokens:
        """The tokens of `r` (the whole text's `ids` and `offsets`, or its pieces) and each span's range."""
        if r.literal:  # control-token text from the data: tokenized piece by piece, as plain text
            ids, offsets = self.split_encode(r)
        ranges = token_ranges(r.text, offsets, r.spans, ids, self.added)
        pieces = None
        crossed = (
            [i for i in _edges(ranges or []) if offsets.one_word(i)]
            if self.regex and isinstance(offsets, Offsets)
            else []
        )
        if ranges is not None and crossed and isinstance(offsets, Offsets):  # crossed: only with Offsets
            # A pre-token across an edge: the pieces alone may pre-tokenize it otherwise. Rare; checked exactly.
            pieces = self.split_encode(r)
            pieces = None if all(_word_kept(ids, offsets, *pieces, i) for i in crossed) else pieces
        if ranges is not None and pieces is None:
            return Tokens(ids, offsets, ranges, split=False)
        ids, offsets = pieces or self.split_encode(r)
        ranges = token_ranges(r.text, offsets, r.spans, ids, self.added)
        assert ranges is not None, "splitting at span edges makes every token lie on one side"
        return Tokens(ids, offsets, ranges, split=True)

    def split_encode(self, r: Rendered) -> tuple[list[int], list[tuple[int, int]]]:
        """Tokenize the text piece by piece, split at every span edge and literal edge.

        A piece is tokenized after an anchor special token and the anchor dropped: that is how
        it tokenizes in the middle of a text. Alone, SentencePiece-style tokenizers (Metaspace
        with `prepend_scheme="first"`: Phi-3, Llama-2, Mistral v1) would prepend a `▁` that is
        not in the text. A literal piece (control-token text from the data) is tokenized alone
        with special tokens split, so `<|im_end|>` in a response trains as `<`, `|`, `im`, ...
        """
        edges = sorted({0, len(r.text), *(x for span in (*r.spans, *r.literal) for x in span)})
        pieces = [(a, b) for a, b in pairwise(edges) if b > a]
        literal = [p in r.literal for p in pieces]
        anchor = self.anchor or ""
        # (prefix length to drop, text to encode) per plain piece; the first piece starts the text.
        inputs = [
            (len(anchor) if a else 0, (anchor if a else "") + r.text[a:b])
            for (a, b), lit in zip(pieces, literal)
            if not lit
        ]
        plain = iter(zip(inputs, self.backend.encode_batch([text for _, text in inputs], add_special_tokens=False)))
        texts = [r.text[a:b] for (a, b), lit in zip(pieces, literal) if lit]
        spelled = iter(self._literal_backend().encode_batch(texts, add_special_tokens=False) if texts else ())
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        for (start, _), lit in zip(pieces, literal):
            if lit:
                drop, enc = 0, next(spelled)
            else:
                (drop, _text), enc = next(plain)
            for token, (a, b) in zip(enc.ids, enc.offsets):
                if b <= drop:
                    continue  # the anchor
                ids.append(token)
                offsets.append((a - drop + start, b - drop + start))
        return ids, offsets

    def _literal_backend(self) -> Any:
        """A copy of the tokenizer that reads control-token text as plain text (made once, when needed)."""
        with self._literal_lock:
            if self._literal is None:
                backend = copy_backend(self.backend)
                backend.encode_special_tokens = True
                self._literal = backend
        return self._literal


def token_ranges(
    text: str,
    offsets: Sequence[tuple[int, int]],
    spans: tuple[tuple[int, int], ...],
    ids: Sequence[int] = (),
    added: Mapping[int, str] | None = None,
) -> list[tuple[int, int]] | None:
    """Token index range [i0, i1) of each span, or None when a token crosses a span edge.

    A token across the start of a span is split there (None): at inference the prompt is
    tokenized alone and the model generates from the span's first character, so Qwen2.5's
    `assistant\\n` + `\\nyo` trains `\\n` `yo`, not the whole-text token `\\n\\n`. Two overhangs
    by whitespace only keep the token whole, on the side of its text:

        <|assistant|>\\n␣ | yo ...    an added token (`ids`, `added`: id -> its text) whose own text
                                     ends in the prompt swallowed whitespace of the span (Phi-3's
                                     <|assistant|>, rstrip): the prompt alone ends with it too, out
        ... yo<|end|>\\n | <|user|>    Phi-3's <|end|> (rstrip) swallows "\\n": stays in

    An added token that *is* whitespace (Gemma 3's `\\n\\n`) is no such case: `<think>\\n` + `\\n</think>`
    makes one `\\n\\n` across the start, the prompt alone ends with `\\n`, so it is split.
    """
    out = []
    for s, e in spans:
        i0 = first_at(offsets, s)
        i1 = first_at(offsets, e)
        if i0 > 0 and offsets[i0 - 1][1] > s:
            a, b = offsets[i0 - 1]
            own = (added or {}).get(ids[i0 - 1], "") if ids else ""
            if text[s:b].strip() or not own.strip() or not text.startswith(own, a) or a + len(own) > s:
                return None
        if i1 > 0 and offsets[i1 - 1][1] > e:
            a, b = offsets[i1 - 1]
            if text[e:b].strip():
                if text[a:e].strip():
                    return None
                i1 -= 1
        out.append((i0, i1))
    return out


def _word_kept(
    ids: list[int], offsets: Offsets, split_ids: list[int], split_offsets: list[tuple[int, int]], i: int
) -> bool:
    """Whether the pre-token that holds tokens i-1 and i tokenizes the same split at the edge between
    them: the same ids over the same characters, ending where it ends (outside it, each side alone
    pre-tokenizes as the whole text does: no lookbehind, and BPE merges within a pre-token)."""
    j0, j1 = offsets.word(i)
    p, q = offsets[j0][0], offsets[j1 - 1][1]
    k0, k1 = bisect_left(split_offsets, (p, -1)), bisect_left(split_offsets, (q, -1))
    return split_ids[k0:k1] == ids[j0:j1] and k1 > k0 and split_offsets[k1 - 1][1] == q


def _edges(ranges: list[tuple[int, int]]) -> list[int]:
    """Token indices where a span's tokens begin or end (the boundary before that token)."""
    return [i for pair in ranges for i in pair]


def _splits_by_regex(backend: Any) -> bool:
    """Whether the pre-tokenizer splits words by a regex (GPT-style: Llama 3, Qwen, Mistral-Nemo,
    DeepSeek): where one word crosses an edge, each side alone may split otherwise. A Metaspace or
    a split on a plain string cuts the same words either way: BPE never merges across a token
    boundary, so each side of one tokenizes as it does alone."""
    pre = None if backend.pre_tokenizer is None else json.loads(backend.pre_tokenizer.__getstate__())
    steps = pre.get("pretokenizers", [pre]) if pre else []
    return any(
        (p.get("type") == "Split" and "Regex" in p.get("pattern", {}))
        or (p.get("type") == "ByteLevel" and p.get("use_regex", True))
        for p in steps
    )


def _anchor(backend: Any) -> str | None:
    """A special token that tokenizes alone and strips nothing around it, or None."""
    for token in backend.get_added_tokens_decoder().values():
        if not token.special or token.lstrip or token.rstrip or token.single_word or not token.content.strip():
            continue
        enc = backend.encode(token.content + "a b", add_special_tokens=False)
        if len(enc.ids) > 1 and enc.offsets[0] == (0, len(token.content)) and enc.offsets[1][0] == len(token.content):
            return token.content
    return None
