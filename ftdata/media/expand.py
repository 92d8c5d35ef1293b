"""Images through the record engine: expand each placeholder exactly as the processor does, mask
through the expansion, verify every record, and say where each image sits in its row.

    messages   user: "\\ufffcWhat is this?"  (Message.media = ("cat.png",))
    render     <|im_start|>user\\n\\ufffcWhat is this?<|im_end|>\\n<|im_start|>assistant\\nA cat.<|im_end|>\\n
                                                                          [~~~~~~~~~~~~~~~~~~) trained span
    template   \\ufffc -> <|vision_start|><|image_pad|><|vision_end|>   (what the chat template writes for an image part)
    processor  <|image_pad|> -> <|image_pad|> x 378                      (get_text_with_replacements, with offsets)
    mask       the trained spans moved by the expansion; the image is never inside one
    tokenize   ...<|vision_start|><|image_pad|><|vision_end|>...   one pad per run, then 377 more pad ids spliced in

The masking rule runs on the rendering with one character per image, so every assistant turn is
located exactly as in a text record (docs/masking.md); the expansion only moves character
offsets, which `processor.get_text_with_replacements` reports. After tokenizing, each record is
verified: as many image-pad tokens as the images' counts, each image's tokens inside its
expanded text, the processor's count equal to what the tokenizer made of it, and no image token
carrying loss. A record that fails any of these is rejected with the reason. The text is
tokenized with each run of image pads written once and the run spliced back in as ids
(`ftdata.media.splice`): the pads cost nothing to tokenize, and where each run's one
pad lands is checked per record (docs/vision.md, "How the image tokens are tokenized and checked").

`VisionRenderer` and `VisionMasker` wrap the build's renderer and masker, so truncation (which
re-renders shortened conversations) goes through the same expansion: an image is whole or absent.
"""

from __future__ import annotations

import copy
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ftdata.chat.regions import sentinel
from ftdata.errors import ConfigError, UnusableRecord
from ftdata.outcomes import RejectCode
from ftdata.tokens.masking import Tokenized
from ftdata.types import IGNORE_INDEX, Example, Rendered
from ftdata.records.media import MEDIA, example_media
from ftdata.media.images import Headers, ImageInfo, default_store
from ftdata.media.processors import Counter, Expansion, family, load_processor
from ftdata.media.splice import Splicer


@dataclass(frozen=True, slots=True)
class Placed:
    """One image in an expanded rendering: what it is, what it became, and where (characters)."""

    info: ImageInfo
    expansion: Expansion
    start: int  # first character of its expanded text
    end: int


def template_image_text(processor: Any) -> str:
    """What the processor's chat template writes for one image part (Qwen-VL: `<|vision_start|><|image_pad|><|vision_end|>`).

    Found by rendering a user turn with and without an image part; a template that writes
    nothing for it (or has none: a text model's template in the folder) stands the image in as the
    family's own (Qwen-VL's `<|vision_start|><|image_pad|><|vision_end|>`) or the processor's image token.
    """
    fallback = family(processor).image_text or str(processor.image_token)
    template = getattr(processor, "chat_template", None) or getattr(processor.tokenizer, "chat_template", None)
    mark = "\ue000"
    renders = []
    for parts in ([{"type": "image"}, {"type": "text", "text": mark}], [{"type": "text", "text": mark}]):
        try:
            renders.append(processor.tokenizer.apply_chat_template(
                [{"role": "user", "content": parts}], chat_template=template, tokenize=False))  # fmt: skip
        except Exception:  # noqa: BLE001 - any template error: fall back to the family's image text
            return fallback
    with_image, without = renders
    i = 0
    while i < min(len(with_image), len(without)) and with_image[i] == without[i]:
        i += 1
    j = 0
    while j < min(len(with_image), len(without)) - i and with_image[-1 - j] == without[-1 - j]:
        j += 1
    text = with_image[i : len(with_image) - j]
    return text if processor.image_token in text and text.count(processor.image_token) == 1 else fallback


PACKABLE = ("qwen2-vl", "qwen2.5-vl", "gemma3")
"""Processor families whose packed rows the training collator keeps apart (tests/vision_train/test_media_isolation.py)."""


class Vision:
    """The compiled image side of one build: the processor, its counter, the header reader and the budgets.

    Built once per process from the options (a worker loads the processor folder again).
    """

    def __init__(self, options: Any, tokenizer: Any):
        """Raises:
            ConfigError: packing for a family whose packed rows are not proven isolated (`PACKABLE`);
                the processor cannot be loaded (see `load_processor`).
        """
        spec = options.processor
        self.processor = load_processor(spec, tokenizer=tokenizer if isinstance(spec, (str, Path)) else None)
        name = family(self.processor).name
        if options.packing and name not in PACKABLE:
            raise ConfigError(
                f"packing=True with a {name} processor: packed rows are proven isolated (each sequence's logits equal "
                f"to it alone) only for {', '.join(PACKABLE)} (docs/vision.md); build without packing"
            )  # fmt: skip
        # The build renders with the processor's chat template (a model folder's chat_template.json may
        # differ from its tokenizer's): the tokenizer is copied with it, not changed.
        template = self.processor.chat_template
        if isinstance(template, str) and template != getattr(tokenizer, "chat_template", None):
            tokenizer = copy.copy(tokenizer)
            tokenizer.chat_template = template
        self.tokenizer = tokenizer
        self.counter = Counter(self.processor)
        self.image_text = template_image_text(self.processor)
        self.placeholder = self.counter.placeholder
        store = Path(options.image_dir).expanduser() if options.image_dir else default_store()
        self.headers = Headers(store=store, max_pixels=options.max_image_pixels)
        self.max_images = options.max_images
        vocab = tokenizer.get_vocab()
        sample = self.image_text.replace(self.placeholder, self.counter.expansion(224, 224).text)
        specials = [t for t in tokenizer.all_special_tokens + list(getattr(tokenizer, "added_tokens_encoder", {})) if t in sample]
        self.media_ids = np.array(sorted({vocab[t] for t in specials if t in vocab} | {self.counter.pad_id}), dtype=np.int64)
        self.media_id_set = frozenset(int(i) for i in self.media_ids)
        self.pad_id = self.counter.pad_id
        lead = self.image_text.index(self.placeholder)  # characters before the processor's replacement
        self.splicer = Splicer(tokenizer.backend_tokenizer, pad=self.counter.pad, pad_id=self.pad_id, lead=lead)

    # --- references ------------------------------------------------------------------------
    def images(self, example: Example) -> list[tuple[ImageInfo, Expansion]]:
        """Every image of `example`, read from its header and counted.

        Raises:
            UnusableRecord: a placeholder without an image or the reverse, too many images, or an
                image that cannot be used (missing, URL, unreadable, over the pixel budget).
        """
        for i, m in enumerate(example.messages):
            n = m.content.count(MEDIA)
            if n != len(m.media) or None in m.media:
                given = len([r for r in m.media if r is not None])
                raise UnusableRecord(
                    f"{n} image placeholder(s) but {given} image(s); give one image per placeholder (an images "
                    "column for {'type': 'image'} parts and <image> tags)", location=example.source,
                    field=f"messages[{i}].content", code=RejectCode.MEDIA_MISMATCH,
                )  # fmt: skip
        refs = example_media(example)
        if self.max_images is not None and len(refs) > self.max_images:
            raise UnusableRecord(
                f"{len(refs)} images > max_images {self.max_images}; raise max_images or split the record",
                location=example.source, field="messages", code=RejectCode.MEDIA_TOO_MANY,
            )  # fmt: skip
        base = _base(example)
        out = []
        k = 0
        for i, m in enumerate(example.messages):
            for ref in m.media:
                try:
                    info = self.headers.info(ref, base=base, field=f"messages[{i}].content")
                except UnusableRecord as exc:
                    raise UnusableRecord(f"image {k}: {exc.reason}", location=example.source, field=exc.field, code=exc.code) from None
                out.append((info, self.counter.expansion(info.width, info.height)))
                k += 1
        return out

    # --- expansion -------------------------------------------------------------------------
    def expand(self, example: Example, rendered: Rendered) -> Rendered:
        """`rendered` with each image placeholder expanded as the processor expands it, spans moved.

        Raises:
            UnusableRecord: the template did not write every image, or wrote one inside a trained span.
        """
        images = self.images(example)
        text = rendered.text
        positions = [i for i, c in enumerate(text) if c == MEDIA] if MEDIA in text else []
        if not images and not positions:
            return rendered
        if len(positions) != len(images):
            raise UnusableRecord(
                f"the template wrote {len(positions)} of the record's {len(images)} images", location=example.source,
                field="messages", code=RejectCode.MEDIA_MISMATCH,
            )  # fmt: skip
        for k, p in enumerate(positions):
            if any(s <= p < e for s, e in rendered.spans):
                raise UnusableRecord(
                    f"image {k} is in a trained turn; a model writes no image tokens: move the image to a user turn",
                    location=example.source, field="messages", code=RejectCode.MEDIA_IN_RESPONSE,
                )  # fmt: skip
        # Token text the data holds as plain text (special_tokens_in_data="text": a user's "<image>") is no image,
        # but the processor takes every image token for one: same-length private-use stand-ins while expanding.
        runs = _stand_ins(text, [text[s:e] for s, e in rendered.literal])
        src = "".join(runs[text[s:e]] if k % 2 else text[s:e] for k, (s, e) in enumerate(_cuts(rendered.literal, len(text)))) if runs else text
        # 1. each placeholder -> the template's image text; 2. the processor's own expansion, with offsets.
        pieces, last = [], 0
        for p in positions:
            pieces += [src[last:p], self.image_text]
            last = p + 1
        staged = "".join([*pieces, src[last:]])
        expanded, offsets = self.processor.get_text_with_replacements([staged], images_replacements=[e.text for _, e in images])
        final, replaced = expanded[0], offsets[0] if offsets else []
        for token, run in runs.items():
            final = final.replace(run, token)
        if len(replaced) != len(images):
            raise UnusableRecord(
                f"the processor found {len(replaced)} image token(s) for {len(images)} images", location=example.source,
                field="messages", code=RejectCode.MEDIA_MISMATCH,
            )  # fmt: skip
        lead = self.image_text.index(self.placeholder)
        placed, shifts, moved = [], [], 0
        for k, ((info, exp), p, item) in enumerate(zip(images, positions, replaced)):
            start = p + moved  # where this image's text starts in `final`
            size = len(self.image_text) - len(self.placeholder) + len(item["replacement"])
            if item["new_span"][0] != start + lead:  # the processor's offsets and ours agree
                raise UnusableRecord(f"image {k}: expansion offsets disagree", location=example.source, code=RejectCode.MEDIA_UNVERIFIABLE)
            placed.append(Placed(info, exp, start, start + size))
            moved += size - 1
            shifts.append((p, moved))

        def at(x: int) -> int:  # a character offset of `rendered.text` in `final`
            i = bisect_left(positions, x)  # placeholders strictly before x
            return x + (shifts[i - 1][1] if i else 0)

        return replace(
            rendered, text=final, spans=tuple((at(s), at(e)) for s, e in rendered.spans),
            boundaries=tuple(at(b) for b in rendered.boundaries), literal=tuple((at(s), at(e)) for s, e in rendered.literal),
            holes=tuple((at(s), at(e)) for s, e in rendered.holes), media=tuple(placed),
        )  # fmt: skip

    # --- verification ----------------------------------------------------------------------
    def verify(self, row: Tokenized, rendered: Rendered) -> str:
        """Why the tokenized record does not hold its images exactly ('' when it does)."""
        ids = np.asarray(row.input_ids, dtype=np.int64)
        pads = np.flatnonzero(ids == self.pad_id)
        placed: tuple[Placed, ...] = rendered.media
        expected = sum(p.expansion.pads for p in placed)
        if len(pads) != expected:
            return f"{len(pads)} image-pad tokens in the row, the images' expansions hold {expected}"
        labels = np.asarray(row.labels, dtype=np.int64)
        trained = np.isin(ids, self.media_ids) & (labels != IGNORE_INDEX)
        if trained.any():
            return f"image token at position {int(np.flatnonzero(trained)[0])} carries loss"
        offsets, first = row.offsets, 0
        for k, p in enumerate(placed):
            mine = pads[first : first + p.expansion.pads]
            first += p.expansion.pads
            lo, hi = (offsets[int(j) - row.prefix] for j in (mine[0], mine[-1]))
            if lo[0] < p.start or hi[1] > p.end:
                return f"image {k}: its pad tokens lie outside its expanded text"
            counted = p.expansion.pads
            if self.counter.family.counts == "span":
                counted = bisect_right(offsets, p.end, key=lambda o: o[1]) - bisect_left(offsets, p.start, key=lambda o: o[0])
            if counted != p.expansion.tokens:
                return f"image {k}: the processor counts {p.expansion.tokens} tokens, the tokenizer made {counted}"
        return ""

    # --- rows ------------------------------------------------------------------------------
    def row_images(self, ids: Any, example: Example) -> list[dict[str, Any]]:
        """The `images` column of a row of `example`'s rendering: each whole image's reference, size, tokens, start.

        A row that is a prefix of the rendering (keep_start) holds the images whose tokens it holds whole.
        """
        pads = np.flatnonzero(np.asarray(ids, dtype=np.int64) == self.pad_id)
        out, first = [], 0
        for info, exp in self.images(example):
            if first + exp.pads > len(pads):
                break
            out.append({"ref": info.ref, "width": info.width, "height": info.height, "tokens": exp.pads, "start": int(pads[first])})
            first += exp.pads
        return out

    def media_cut(self, item: Any, limit: int) -> int:
        """Where a token-level cut at `limit` must fall so that no image is cut: `limit`, or the start of the image it would cut."""
        tok, placed = item.tokenized, item.rendered.media
        for p in placed:
            i0 = tok.prefix + bisect_left(tok.offsets, p.start, key=lambda o: o[0])
            i1 = tok.prefix + bisect_left(tok.offsets, p.end, key=lambda o: o[0])
            if i0 < limit < i1:
                return i0
        return limit


    def truncated(self, item: Any, result: Any, *, limit: int) -> Any:
        """`result` (the truncation of a record with images) with no image cut: a token-level cut
        (keep_start) moved before the image it would cut; a record whose response fits but not with
        its images rejected as `media_too_long`."""
        from ftdata.tokens.truncation import Truncated

        if result.rows and not result.conversations and len(result.rows[0][0]) < item.total:  # keep_start: a prefix
            cut = self.media_cut(item, len(result.rows[0][0]))
            if cut < len(result.rows[0][0]):
                ids, labels = result.rows[0][0][:cut], result.rows[0][1][:cut]
                if not any(x != IGNORE_INDEX for x in labels):
                    return Truncated([], f"no response left: the cut at {limit} tokens falls in an image, which is never cut", RejectCode.NO_RESPONSE_LEFT)
                return Truncated([(ids, labels)], f"{result.reason}; moved to token {cut} to keep an image whole", result.code)
        response_fits = sum(1 for x in item.tokenized.labels if x != IGNORE_INDEX) + item.tokenized.prefix <= limit
        if not result.rows and result.code in (RejectCode.RESPONSE_TOO_LONG, RejectCode.NO_RESPONSE_LEFT) and response_fits:
            n, tokens = len(item.rendered.media), sum(p.expansion.tokens for p in item.rendered.media)
            return Truncated([], f"{result.reason}: its {n} image(s) take {tokens} tokens and are never cut; raise max_length "
                             "or lower the processor's max_pixels", RejectCode.MEDIA_TOO_LONG)  # fmt: skip
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
    """The folder of the data file a record came from (relative image paths start there)."""
    source = getattr(example.source, "source", None)
    if not source:
        return None
    path = Path(str(source))
    return path.parent if path.is_file() else None


class _Wrapped:
    """A stage part with images handled around it; everything else is the part's own."""

    def __init__(self, inner: Any, vision: Vision):
        self.inner = inner
        self.vision = vision

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class VisionRenderer(_Wrapped):
    """The build's renderer, with each image expanded (`Vision.expand`): what the masker and truncation see."""

    def __call__(self, example: Example) -> Rendered:
        rendered = self.inner(example)
        if not rendered.media and (MEDIA in rendered.text or any(m.media for m in example.messages)):
            return self.vision.expand(example, rendered)
        return rendered


class VisionMasker(_Wrapped):
    """The build's masker: a record with images is tokenized with one pad per run of pads, the runs
    spliced back in (`ftdata.media.splice`), and verified (`Vision.verify`)."""

    @property
    def media_ids(self) -> frozenset[int]:
        """The ids of every image token (pads and the family's markers): never trained, never cut."""
        return self.vision.media_id_set

    def __call__(self, batch: list[Rendered]) -> list[Any]:
        compact = [self.vision.splicer.compact(r) if r.media else None for r in batch]
        out = self.inner([r if c is None else c.rendered for r, c in zip(batch, compact)])
        for i, (rendered, c, row) in enumerate(zip(batch, compact, out)):
            if not rendered.media or not isinstance(row, Tokenized):
                continue
            row = self.vision.splicer.splice(row, c) if c is not None else row
            why = row if isinstance(row, str) else self.vision.verify(row, rendered)
            out[i] = UnusableRecord(f"image verification failed: {why}", field="images", code=RejectCode.MEDIA_UNVERIFIABLE) if why else row
        return out


def no_processor(example: Example) -> None:
    """Refuse a record with images in a build without a processor.

    Raises:
        UnusableRecord: `media_no_processor`.
    """
    if any(m.media for m in example.messages):
        raise UnusableRecord(
            "the record has images but the build has no processor; give --processor DIR (processor=...) "
            "with the vision-language model's folder", location=example.source, field="messages",
            code=RejectCode.MEDIA_NO_PROCESSOR,
        )  # fmt: skip


__all__ = ["Placed", "Vision", "VisionMasker", "VisionRenderer", "no_processor", "template_image_text"]
