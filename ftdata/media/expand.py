"""Media through the record engine: expand each placeholder exactly as the processor does, mask
through the expansion, verify every record, and say where each item sits in its row.

    messages   user: "\\ufffcWhat is this?"  (Message.media = (Ref(image, "cat.png"),))
    render     <|im_start|>user\\n\\ufffcWhat is this?<|im_end|>\\n<|im_start|>assistant\\nA cat.<|im_end|>\\n
                                                                          [~~~~~~~~~~~~~~~~~~) trained span
    template   \\ufffc -> <|vision_start|><|image_pad|><|vision_end|>   (the chat template's image part)
    processor  <|image_pad|> -> <|image_pad|> x 378                      (get_text_with_replacements, with offsets)
    mask       the trained spans moved by the expansion; an item is never inside one
    tokenize   ...<|vision_start|><|image_pad|><|vision_end|>...   one pad per run, then 377 more pad ids spliced in

The masking rule runs on the rendering with one character per item, so every assistant turn is
located exactly as in a text record (docs/masking.md); the expansion only moves character
offsets, which `processor.get_text_with_replacements` reports. After tokenizing, each record is
verified: as many placeholder tokens of each kind as its items' counts, each item's tokens inside
its expanded text, the processor's count equal to what the tokenizer made of it, and no media
token carrying loss. A record that fails any of these is rejected with the reason. The text is
tokenized with each run of placeholder tokens written once and the run spliced back in as ids
(`ftdata.media.splice`): the pads cost nothing to tokenize, and where each run's one pad lands
is checked per record (docs/media.md, "How the media tokens are tokenized and checked").

Everything here is the same for every medium; what differs (header facts, the family's count) is
each medium's own (`ftdata.media.medium.Medium`). `MediaRenderer` and `MediaMasker` wrap the
build's renderer and masker, so truncation (which re-renders shortened conversations) goes
through the same expansion: an item is whole or absent.
"""

from __future__ import annotations

import copy
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ftdata.chat.chat_template import with_template
from ftdata.chat.sentinels import sentinel
from ftdata.errors import ConfigError, UnusableRecord
from ftdata.media.audio import AudioMedium
from ftdata.media.families import FAMILIES, family
from ftdata.media.images import ImageMedium, default_store
from ftdata.media.medium import Item, Medium
from ftdata.media.processors import load_processor
from ftdata.media.splice import Splicer
from ftdata.outcomes import Note, NoteCode, RejectCode
from ftdata.records.media import MEDIA, MediaKind, example_media
from ftdata.tokens.masking import Tokenized
from ftdata.types import IGNORE_INDEX, Example, Rendered


@dataclass(frozen=True, slots=True)
class Placed:
    """One item in an expanded rendering: what it is, and where its text is (characters)."""

    item: Item
    start: int  # first character of its expanded text (the template's text for the part, expanded)
    end: int
    lead: int  # characters of the template's text before the processor's replacement


def template_text(processor: Any, kind: MediaKind, placeholder: str, fallback: str, *, index: int = 0) -> str:
    """What the processor's chat template writes for the part of `kind` that is the record's `index`-th of that kind
    (Qwen-VL's image: `<|vision_start|><|image_pad|><|vision_end|>`; Qwen2-Audio's clips are numbered:
    `Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n`, then `Audio 2: ...`).

    Found by rendering a user turn with `index + 1` and with `index` such parts; a template that writes nothing
    for it (or has none: a text model's template in the folder) stands the item in as `fallback`.
    """
    template = getattr(processor, "chat_template", None) or getattr(processor.tokenizer, "chat_template", None)
    mark = "\ue000"
    renders = []
    for n in (index + 1, index):
        parts = [*({"type": kind.value} for _ in range(n)), {"type": "text", "text": mark}]
        try:
            renders.append(
                processor.tokenizer.apply_chat_template(
                    [{"role": "user", "content": parts}], chat_template=template, tokenize=False
                )
            )
        except Exception:  # noqa: BLE001 - any template error: fall back to the family's text
            return fallback
    with_item, without = renders
    i = 0
    while i < min(len(with_item), len(without)) and with_item[i] == without[i]:
        i += 1
    j = 0
    while j < min(len(with_item), len(without)) - i and with_item[-1 - j] == without[-1 - j]:
        j += 1
    text = with_item[i : len(with_item) - j]
    return text if text.count(placeholder) == 1 else fallback


class Media:
    """The compiled media side of one build: the processor, one `Medium` per kind it reads, the budgets.

    Built once per process from the options (a worker loads the processor folder again).
    """

    def __init__(self, options: Any, tokenizer: Any):
        """Raises:
        ConfigError: packing for a family whose packed rows are not proven isolated; the processor
            cannot be loaded (see `load_processor`).
        """
        spec = options.processor
        self.processor = load_processor(spec, tokenizer=tokenizer if isinstance(spec, (str, Path)) else None)
        fam = family(self.processor)
        if options.packing and not fam.packable:
            proven = ", ".join(f.name for f in FAMILIES.values() if f.packable)
            raise ConfigError(
                f"packing=True with a {fam.name} processor: packed rows are proven isolated (each sequence's logits "
                "equal "
                f"to it alone) only for {proven} (docs/media.md); build without packing"
            )
        if (
            options.chat_template is not None
        ):  # the build's chat_template (the tokenizer holds it) wins over the folder's
            self.processor = copy.copy(self.processor)
            self.processor.chat_template = tokenizer.chat_template
        # The build renders with the processor's chat template (a model folder's chat_template.json may
        # differ from its tokenizer's): the tokenizer is copied with it, not changed.
        template = self.processor.chat_template
        if isinstance(template, str):
            tokenizer = with_template(tokenizer, template)
        self.tokenizer = tokenizer
        store = Path(options.image_dir).expanduser() if options.image_dir else default_store()
        media: list[Medium] = []
        if fam.image is not None:
            media.append(ImageMedium(self.processor, store=store, max_pixels=options.max_image_pixels))
        if fam.audio is not None:
            media.append(AudioMedium(self.processor, store=store, window=options.audio_window))
        self.media: dict[MediaKind, Medium] = {m.kind: m for m in media}
        self.max_images = options.max_images
        self.texts = {m.kind: template_text(self.processor, m.kind, m.placeholder, m.text) for m in media}
        self._nth: dict[tuple[MediaKind, int], str] = {(kind, 0): text for kind, text in self.texts.items()}
        # each marker looked up alone: the whole vocabulary as a dict (get_vocab) took 0.16-0.44 s of every build
        token_id = tokenizer.backend_tokenizer.token_to_id
        specials = set(tokenizer.all_special_tokens) | set(getattr(tokenizer, "added_tokens_encoder", {}))
        ids = {m.pad_id for m in media}
        for m in media:  # the markers around an item too (Qwen's <|vision_start|>): never trained, never cut
            sample = self.texts[m.kind].replace(m.placeholder, m.sample().text)
            ids |= {i for t in specials if t in sample and (i := token_id(t)) is not None}
        self.media_ids = np.array(sorted(ids), dtype=np.int64)
        self.media_id_set = frozenset(int(i) for i in self.media_ids)
        self.pad_ids = {kind: m.pad_id for kind, m in self.media.items()}
        self.splicer = Splicer(tokenizer.backend_tokenizer, {kind: (m.pad, m.pad_id) for kind, m in self.media.items()})

    def text_of(self, kind: MediaKind, index: int) -> str:
        """What the template writes for the record's `index`-th item of `kind` (a template may number them)."""
        key = (kind, index)
        found = self._nth.get(key)
        if found is None:
            found = template_text(self.processor, kind, self.media[kind].placeholder, self.texts[kind], index=index)
            if len(self._nth) < 4096:
                self._nth[key] = found
        return found

    # --- references ------------------------------------------------------------------------
    def items(self, example: Example) -> list[Item]:
        """Every media item of `example`, read from its header and counted.

        Raises:
            UnusableRecord: a placeholder without an item or the reverse, a kind the processor does not
                read, too many images, or an item that cannot be used (missing, URL, unreadable, over a
                budget, refused by the processor).
        """
        for i, m in enumerate(example.messages):
            n = m.content.count(MEDIA)
            if n != len(m.media) or (n and not all(r.value is not None for r in m.media)):
                given = len([r for r in m.media if r.value is not None])
                raise UnusableRecord(
                    f"{n} media placeholder(s) but {given} item(s); give one item per placeholder (an images "
                    "column for {'type': 'image'} parts and <image> tags)",
                    location=example.source,
                    field=f"messages[{i}].content",
                    code=RejectCode.MEDIA_MISMATCH,
                )
        refs = example_media(example)
        if len(self.media) < len(MediaKind) and any(r.kind not in self.media for r in refs):
            unread = "/".join(sorted({r.kind.value for r in refs if r.kind not in self.media}))
            raise UnusableRecord(
                f"the record has {unread} items but processor {type(self.processor).__name__} reads none; "
                "give a processor that does",
                location=example.source,
                field="messages",
                code=RejectCode.MEDIA_NO_PROCESSOR,
            )
        images = sum(r.kind is MediaKind.IMAGE for r in refs) if self.max_images is not None else 0
        if self.max_images is not None and images > self.max_images:
            raise UnusableRecord(
                f"{images} images > max_images {self.max_images}; raise max_images or split the record",
                location=example.source,
                field="messages",
                code=RejectCode.MEDIA_TOO_MANY,
            )
        base = _base(example)
        out: list[Item] = []
        for i, m in enumerate(example.messages):
            for ref in m.media:
                try:
                    out.append(self.media[ref.kind].item(ref.value, base=base, field=f"messages[{i}].content"))
                except UnusableRecord as exc:
                    raise UnusableRecord(
                        f"{ref.kind} {len(out)}: {exc.reason}", location=example.source, field=exc.field, code=exc.code
                    ) from None
        return out

    # --- expansion -------------------------------------------------------------------------
    def expand(self, example: Example, rendered: Rendered) -> Rendered:
        """`rendered` with each placeholder expanded as the processor expands it, spans moved.

        Raises:
            UnusableRecord: the template did not write every item, or wrote one inside a trained span.
        """
        items = self.items(example)
        text = rendered.text
        positions = [i for i, c in enumerate(text) if c == MEDIA] if MEDIA in text else []
        if not items and not positions:
            return rendered
        if len(positions) != len(items):
            raise UnusableRecord(
                f"the template wrote {len(positions)} of the record's {len(items)} media items",
                location=example.source,
                field="messages",
                code=RejectCode.MEDIA_MISMATCH,
            )
        for k, p in enumerate(positions):
            if any(s <= p < e for s, e in rendered.spans):
                raise UnusableRecord(
                    f"{items[k].kind} {k} is in a trained turn; a model writes no {items[k].kind} tokens: move it "
                    "to a user turn",
                    location=example.source,
                    field="messages",
                    code=RejectCode.MEDIA_IN_RESPONSE,
                )
        # Token text the data holds as plain text (special_tokens_in_data="text": a user's "<image>") is no item,
        # but the processor takes every placeholder token for one: same-length private-use stand-ins while expanding.
        runs = _stand_ins(text, [text[s:e] for s, e in rendered.literal])
        src = (
            "".join(
                runs[text[s:e]] if k % 2 else text[s:e] for k, (s, e) in enumerate(_cuts(rendered.literal, len(text)))
            )
            if runs
            else text
        )
        # 1. each placeholder -> the template's text for its kind; 2. the processor's own expansion, with offsets.
        seen: Counter[MediaKind] = Counter()
        texts = []  # each item's template text: its kind's, numbered where the template numbers them
        for item in items:
            texts.append(self.text_of(item.kind, seen[item.kind]))
            seen[item.kind] += 1
        pieces, last = [], 0
        for p, text_k in zip(positions, texts):
            pieces += [src[last:p], text_k]
            last = p + 1
        staged = "".join([*pieces, src[last:]])
        given = {m.replacements: [i.expansion.text for i in items if i.kind is kind] for kind, m in self.media.items()}
        expanded, offsets = self.processor.get_text_with_replacements([staged], **given)
        final, replaced = expanded[0], offsets[0] if offsets else []
        for token, run in runs.items():
            final = final.replace(run, token)
        if len(replaced) != len(items):
            raise UnusableRecord(
                f"the processor found {len(replaced)} placeholder token(s) for {len(items)} media items",
                location=example.source,
                field="messages",
                code=RejectCode.MEDIA_MISMATCH,
            )
        placed, shifts, moved = [], [], 0
        for k, (item, p, found, text_k) in enumerate(zip(items, positions, replaced, texts)):
            start, lead = (
                p + moved,
                text_k.index(self.media[item.kind].placeholder),
            )  # where this item's text starts in `final`
            size = len(text_k) - len(found["text"]) + len(found["replacement"])
            if (
                found["new_span"][0] != start + lead or found["type"] != item.kind
            ):  # the processor's offsets and ours agree
                raise UnusableRecord(
                    f"{item.kind} {k}: expansion offsets disagree",
                    location=example.source,
                    code=RejectCode.MEDIA_UNVERIFIABLE,
                )
            placed.append(Placed(item, start, start + size, lead))
            moved += size - 1
            shifts.append((p, moved))

        def at(x: int) -> int:  # a character offset of `rendered.text` in `final`
            i = bisect_left(positions, x)  # placeholders strictly before x
            return x + (shifts[i - 1][1] if i else 0)

        cut = [
            Note(
                NoteCode.AUDIO_CUT,
                f"audio {k}: {p.item.dropped:.2f} s past the processor's window dropped "
                "(audio_window=cut): the row holds what the processor keeps",
            )
            for k, p in enumerate(placed)
            if p.item.dropped > 0
        ]
        return replace(
            rendered,
            text=final,
            spans=tuple((at(s), at(e)) for s, e in rendered.spans),
            notes=(*rendered.notes, *cut),
            boundaries=tuple(at(b) for b in rendered.boundaries),
            literal=tuple((at(s), at(e)) for s, e in rendered.literal),
            holes=tuple((at(s), at(e)) for s, e in rendered.holes),
            media=tuple(placed),
        )

    # --- verification ----------------------------------------------------------------------
    def verify(self, row: Tokenized, rendered: Rendered) -> str:
        """Why the tokenized record does not hold its items exactly ('' when it does)."""
        ids = np.asarray(row.input_ids, dtype=np.int64)
        placed: tuple[Placed, ...] = rendered.media
        pads = {kind: np.flatnonzero(ids == m.pad_id) for kind, m in self.media.items()}
        expected_of = dict.fromkeys(pads, 0)
        for p in placed:
            expected_of[p.item.kind] += p.item.expansion.pads
        for kind, found in pads.items():
            expected = expected_of[kind]
            if len(found) != expected:
                return f"{len(found)} {kind} placeholder tokens in the row, the {kind}s' expansions hold {expected}"
        labels = np.asarray(row.labels, dtype=np.int64)
        trained = np.isin(ids, self.media_ids) & (labels != IGNORE_INDEX)
        if trained.any():
            return f"media token at position {int(np.flatnonzero(trained)[0])} carries loss"
        offsets, used = row.offsets, dict.fromkeys(pads, 0)
        for k, p in enumerate(placed):
            kind, exp = p.item.kind, p.item.expansion
            own = pads[kind][used[kind] : used[kind] + exp.pads]
            used[kind] += exp.pads
            lo, hi = (offsets[int(j) - row.prefix] for j in (own[0], own[-1]))
            if lo[0] < p.start or hi[1] > p.end:
                return f"{kind} {k}: its placeholder tokens lie outside its expanded text"
            counted = exp.pads
            if self.media[kind].spans:
                counted = bisect_right(offsets, p.end, key=lambda o: o[1]) - bisect_left(
                    offsets, p.start, key=lambda o: o[0]
                )
            if counted != exp.tokens:
                return f"{kind} {k}: the processor counts {exp.tokens} tokens, the tokenizer made {counted}"
        return ""

    # --- rows ------------------------------------------------------------------------------
    def drain(self) -> dict[str, tuple[int, int, int, int] | None]:
        """The media files every medium read since the last drain (the build's media manifest, `Ran.read`)."""
        return {path: stat for medium in self.media.values() for path, stat in medium.drain().items()}

    def column(self, ids: Any, example: Example, *, placed: tuple[Placed, ...] | None = None) -> list[dict[str, Any]]:
        """The `media` column of a row of `example`'s rendering: each whole item's kind, reference, start, tokens, size.

        `placed`: the items of that rendering when the caller has them (read again from `example` otherwise).
        A row that is a prefix of the rendering (keep_start) holds the items whose tokens it holds whole.
        """
        ids = np.asarray(ids, dtype=np.int64)
        pads = {kind: np.flatnonzero(ids == pad_id) for kind, pad_id in self.pad_ids.items()}
        used = dict.fromkeys(pads, 0)
        out = []
        for item in self.items(example) if placed is None else (p.item for p in placed):
            first = used[item.kind]
            if first + item.expansion.pads > len(pads[item.kind]):
                break
            out.append(item.column(int(pads[item.kind][first])))
            used[item.kind] += item.expansion.pads
        return out

    def tokens(self, ids: Any) -> int:
        """The placeholder tokens of every kind in `ids` (what stats counts per row)."""
        found = set(self.pad_ids.values())
        return sum(1 for t in ids if t in found)

    def media_cut(self, item: Any, limit: int) -> int:
        """Where a token-level cut at `limit` must fall so that no item
        is cut: `limit`, or the start of the item it would cut."""
        tok, placed = item.tokenized, item.rendered.media
        for p in placed:
            i0 = tok.prefix + bisect_left(tok.offsets, p.start, key=lambda o: o[0])
            i1 = tok.prefix + bisect_left(tok.offsets, p.end, key=lambda o: o[0])
            if i0 < limit < i1:
                return i0
        return limit

    def truncated(self, item: Any, result: Any, *, limit: int) -> Any:
        """`result` (the truncation of a record with media) with no item cut: a token-level cut
        (keep_start) moved before the item it would cut; a record whose response fits but not with
        its items rejected as `media_too_long`."""
        from ftdata.tokens.truncation import Truncated

        if result.rows and not result.conversations and len(result.rows[0][0]) < item.total:  # keep_start: a prefix
            cut = self.media_cut(item, len(result.rows[0][0]))
            if cut < len(result.rows[0][0]):
                ids, labels = result.rows[0][0][:cut], result.rows[0][1][:cut]
                if not any(x != IGNORE_INDEX for x in labels):
                    return Truncated(
                        [],
                        f"no response left: the cut at {limit} tokens falls in a media item, which is never cut",
                        RejectCode.NO_RESPONSE_LEFT,
                    )
                return Truncated(
                    [(ids, labels)], f"{result.reason}; moved to token {cut} to keep a media item whole", result.code
                )
        response_fits = sum(1 for x in item.tokenized.labels if x != IGNORE_INDEX) + item.tokenized.prefix <= limit
        too_long = (RejectCode.RESPONSE_TOO_LONG, RejectCode.PROMPT_TOO_LONG, RejectCode.NO_RESPONSE_LEFT)
        if not result.rows and result.code in too_long and response_fits:
            kinds = Counter(p.item.kind.value for p in item.rendered.media)
            what = ", ".join(f"{n} {kind}(s)" for kind, n in kinds.items())
            tokens = sum(p.item.expansion.tokens for p in item.rendered.media)
            smaller = (
                "shorten the clips" if set(kinds) == {MediaKind.AUDIO.value} else "lower the processor's max_pixels"
            )
            return Truncated(
                [],
                f"{result.reason}: its {what} take {tokens} tokens and are never cut; raise max_length or {smaller}",
                RejectCode.MEDIA_TOO_LONG,
            )
        return result


def _stand_ins(text: str, tokens: list[str]) -> dict[str, str]:
    """Each distinct token -> a run, as long as it, of a private-use character in neither `text` nor another run."""
    runs: dict[str, str] = {}
    for token in dict.fromkeys(tokens):
        runs[token] = sentinel(text, *runs.values()) * len(token)
    return runs


def _cuts(spans: tuple[tuple[int, int], ...], size: int) -> list[tuple[int, int]]:
    """[0, size) cut at sorted, disjoint `spans`: the pieces between them at even indexes, the spans at odd ones."""
    out, last = [], 0
    for s, e in spans:
        out += [(last, s), (s, e)]
        last = e
    return [*out, (last, size)]


def _base(example: Example) -> Path | None:
    """The folder of the data file a record came from (relative paths start there)."""
    source = getattr(example.source, "source", None)
    if not source:
        return None
    path = Path(str(source))
    return path.parent if path.is_file() else None


class _Wrapped:
    """A stage part with media handled around it; everything else is the part's own."""

    def __init__(self, inner: Any, media: Media):
        self.inner = inner
        self.media = media

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class MediaRenderer(_Wrapped):
    """The build's renderer, with each item expanded (`Media.expand`): what the masker and truncation see."""

    def __call__(self, example: Example, *, history: bool = True) -> Rendered:
        rendered = self.inner(example, history=history)
        if not rendered.media and (MEDIA in rendered.text or any(m.media for m in example.messages)):
            return self.media.expand(example, rendered)
        return rendered


class MediaMasker(_Wrapped):
    """The build's masker: a record with media is tokenized with one pad per run of pads, the runs
    spliced back in (`ftdata.media.splice`), and verified (`Media.verify`)."""

    @property
    def media_ids(self) -> frozenset[int]:
        """The ids of every media token (pads and the family's markers): never trained, never cut."""
        return self.media.media_id_set

    def __call__(self, batch: list[Rendered]) -> list[Any]:
        compact = [self.media.splicer.compact(r) if r.media else None for r in batch]
        out = self.inner([r if c is None else c.rendered for r, c in zip(batch, compact)])
        for i, (rendered, c, row) in enumerate(zip(batch, compact, out)):
            if not rendered.media or not isinstance(row, Tokenized):
                continue
            row = self.media.splicer.splice(row, c) if c is not None else row
            why = row if isinstance(row, str) else self.media.verify(row, rendered)
            out[i] = (
                UnusableRecord(f"media verification failed: {why}", field="media", code=RejectCode.MEDIA_UNVERIFIABLE)
                if why
                else row
            )
        return out


def no_processor(example: Example) -> None:
    """Refuse a record with media in a build without a processor.

    Raises:
        UnusableRecord: `media_no_processor`.
    """
    kinds = sorted({r.kind.value for m in example.messages for r in m.media})
    if kinds:
        raise UnusableRecord(
            f"the record has {'/'.join(k + 's' for k in kinds)} but the build has no processor; give --processor DIR "
            "(processor=...) with the model's folder",
            location=example.source,
            field="messages",
            code=RejectCode.MEDIA_NO_PROCESSOR,
        )


__all__ = ["Media", "MediaMasker", "MediaRenderer", "Placed", "no_processor", "template_text"]
