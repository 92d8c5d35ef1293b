"""Media in records: content parts, tags and columns read into messages, for every kind of media.

Every media item becomes one placeholder character, `MEDIA` (U+FFFC, the Unicode object
replacement character), in its message's text, and a `Ref` (its kind and what the record gives
for it) goes to `Message.media`, one per placeholder, in order. The chat template renders the
placeholder as text; the media stage (`ftdata.media.expand`) replaces it by what the processor
expands the item to.

    {"role": "user", "content": [{"type": "image", "image": "cat.png"},
                                 {"type": "text", "text": "What is this?"}]}
        -> Message("user", "\\ufffcWhat is this?", media=(Ref(IMAGE, "cat.png"),))

How records name each kind is one row of `SHAPES` (docs/media.md):
- content parts: `{"type": "image", "image": PATH}`, `{"type": "image_url", "image_url": {"url": PATH or data: URI}}`
  (also `url`/`path` keys, as transformers' chat templates take them);
- TRL: `{"type": "image"}` parts without a reference, the items in the row's `images` column, in order;
  a row whose messages hold no placeholder at all gets its column's items before the first user text,
  as TRL's `prepare_multimodal_messages` puts them (noted: `media_placed`);
- LLaMA-Factory / ShareGPT: `<image>` tags in the text and an `images` column;
- Hugging Face datasets with an `Image` feature: the column's values (`{"bytes", "path"}` or PIL images).

Audio the same way: `{"type": "audio", "audio"|"path"|"url": ...}` and `{"type": "audio_url", ...}` parts
(transformers), OpenAI's `{"type": "input_audio", "input_audio": {"data": BASE64, "format": "wav"}}`, `<audio>`
tags with an `audios` column (LLaMA-Factory), and a datasets `Audio` column read undecoded (`{"bytes", "path"}`).

Text parts are joined with nothing between them (what OpenAI and the Qwen-VL templates write).
This module imports nothing heavy: formats.py uses it on every record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from ftdata.errors import Location, RecordError, UnusableRecord
from ftdata.outcomes import Note, NoteCode, RejectCode
from ftdata.types import Example, Message

MEDIA = "\ufffc"
"""The placeholder of one media item in a message's text (U+FFFC OBJECT REPLACEMENT CHARACTER)."""


class MediaKind(StrEnum):
    """A kind of media a record can carry (the `kind` of a row's `media` item)."""

    IMAGE = "image"
    AUDIO = "audio"


@dataclass(frozen=True, slots=True)
class Ref:
    """One media item a message names: its kind, and what the record gives for it (a path, a URL or
    data: URI, bytes, a datasets value; None for a bare placeholder that takes the row's column)."""

    kind: MediaKind
    value: Any = None


@dataclass(frozen=True, slots=True)
class Shape:
    """How records name one kind of media."""

    kind: MediaKind
    part_types: tuple[str, ...]  # a content part's "type" (or, with no type, a key it holds)
    keys: tuple[str, ...]  # where a part holds its reference, the first found wins ({"url": ...} under *_url)
    columns: tuple[str, ...]  # a row's column of items, for bare parts and tags (the first present)
    tag: str  # LLaMA-Factory's placeholder in text, an item only in a row with such a column


SHAPES = (
    Shape(
        MediaKind.IMAGE,
        ("image", "image_url", "input_image"),
        ("image", "image_url", "url", "path", "value"),  # `value`: LLaMA-Factory v1's {"type": "image_url", "value"}
        ("images", "image"),
        "<image>",
    ),
    # OpenAI's {"type": "input_audio", "input_audio": {"data": BASE64, "format": "wav"}} keeps its mapping whole.
    Shape(
        MediaKind.AUDIO,
        ("audio", "input_audio", "audio_url"),
        ("audio", "input_audio", "audio_url", "url", "path", "value"),
        ("audios", "audio"),
        "<audio>",
    ),
)
MEDIA_COLUMNS = tuple(c for s in SHAPES for c in s.columns)
PLACED = (
    "{n} {kind}(s) placed before the first user text: the messages hold no placeholder (TRL's "
    "prepare_multimodal_messages)"
)


def kind_of(part: Any) -> MediaKind | None:
    """The media kind of a content part, or None for text (or anything else)."""
    if not isinstance(part, Mapping):
        return None
    kind = part.get("type")
    for shape in SHAPES:
        if kind in shape.part_types or (kind is None and any(k in part for k in shape.part_types)):
            return shape.kind
    return None


def has_media(content: Any) -> bool:
    """Whether a message's content is a list with a media part."""
    return isinstance(content, list) and any(kind_of(p) is not None for p in content)


def content_parts(parts: list[Any], *, location: Location, field: str) -> tuple[str, tuple[Ref, ...]]:
    """(text with one `MEDIA` per media part, the parts' `Ref`s in order).

    Raises:
        RecordError: a part that is neither text nor media, or a text part that is not a string.
        UnusableRecord: a text that holds `MEDIA` itself (`media_mismatch`).
    """
    texts: list[str] = []
    media: list[Ref] = []
    for i, part in enumerate(parts):
        where = f"{field}[{i}]"
        kind = kind_of(part)
        if isinstance(part, str):
            texts.append(part)
        elif kind is not None:
            texts.append(MEDIA)
            media.append(Ref(kind, _reference(part, _SHAPE[kind])))
        elif (
            isinstance(part, Mapping)
            and part.get("type", "text") == "text"
            and isinstance(part.get("text", part.get("value")), str)
        ):
            texts.append(part.get("text", part.get("value")))
        else:
            raise RecordError(
                f"has a content part {str(part)[:60]!r} that is neither text nor media; ftdata reads "
                "{'type': 'text', 'text': ...}, {'type': 'image', 'image': PATH} / {'type': 'image_url', ...} and "
                "{'type': 'audio', 'audio': PATH} / {'type': 'input_audio', ...} parts",
                location=location,
                field=where,
            )
        if MEDIA in texts[-1] and kind is None:
            raise UnusableRecord(
                "the text holds U+FFFC, the character ftdata stands each media item in with; remove it from the text",
                location=location,
                field=where,
                code=RejectCode.MEDIA_MISMATCH,
            )
    return "".join(texts), tuple(media)


def _reference(part: Mapping[str, Any], shape: Shape) -> Any:
    """What a media part points at: a path, a URL or data: URI,
    inline bytes, or None (TRL's bare `{"type": "image"}`)."""
    for key in shape.keys:
        value = part.get(key)
        if isinstance(value, Mapping) and key.endswith("_url"):
            value = value.get("url")
        if value is not None:
            return value
    return None


_SHAPE = {s.kind: s for s in SHAPES}


def attach_columns(examples: tuple[Example, ...], row: Mapping[str, Any], location: Location) -> tuple[Example, ...]:
    """Each kind's column (`images`, ...) given to the placeholders that carry no reference, in order.

    Placeholders are TRL's bare `{"type": "image"}` parts or, when there are none, LLaMA-Factory's
    `<image>` tags (read as items only in a row with such a column); when the messages name no item
    of the kind at all, the column's items go before the first user text, as TRL places them.

    Raises:
        UnusableRecord: the placeholders and the column's items differ in number (`media_mismatch`).
    """
    for shape in SHAPES:
        column = next((c for c in shape.columns if row.get(c) is not None), None)
        if column is None:
            continue
        value = row[column]
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if items:
            examples = tuple(_attach(example, shape, column, items, location) for example in examples)
    return examples


def _attach(example: Example, shape: Shape, column: str, items: list[Any], location: Location) -> Example:
    messages = list(example.messages)
    named = [r for m in messages for r in m.media if r.kind is shape.kind]
    notes = example.notes
    if not any(r.value is None for r in named):  # no bare parts: LLaMA-Factory tags
        messages = [_tags_to_media(m, shape) for m in messages]
        if not named and not any(MEDIA in m.content for m in messages):  # no placeholder at all: TRL's placement
            messages, notes = (
                _placed(messages, shape, len(items)),
                (*notes, Note(NoteCode.MEDIA_PLACED, PLACED.format(n=len(items), kind=shape.kind))),
            )
    slots = sum(1 for m in messages for r in m.media if r.kind is shape.kind and r.value is None)
    if slots != len(items):
        raise UnusableRecord(
            f"{slots} {shape.kind} placeholder(s) in the messages but {len(items)} {shape.kind}(s) in column "
            f"{column!r}; "
            f"give one placeholder ({{'type': '{shape.kind}'}} part or {shape.tag} tag) per {shape.kind}",
            location=location,
            field=column,
            code=RejectCode.MEDIA_MISMATCH,
        )
    given = iter(items)

    def filled(m: Message) -> Message:
        refs = tuple(Ref(r.kind, next(given)) if r.kind is shape.kind and r.value is None else r for r in m.media)
        return replace(m, media=refs) if refs != m.media else m

    return replace(example, messages=tuple(filled(m) for m in messages), notes=notes)


def _tags_to_media(message: Message, shape: Shape) -> Message:
    """`message` with each of `shape`'s tags a placeholder, its slot in text order among the message's items."""
    if shape.tag not in message.content:
        return message
    named = iter(message.media)
    media: list[Ref] = []
    pieces = message.content.split(shape.tag)
    for k, piece in enumerate(pieces):
        media.extend(next(named) for _ in range(piece.count(MEDIA)))
        if k < len(pieces) - 1:
            media.append(Ref(shape.kind))
    return replace(message, content=MEDIA.join(pieces), media=tuple(media))


def _placed(messages: list[Message], shape: Shape, n: int) -> list[Message]:
    """`n` bare placeholders of `shape` before the first user message's text (TRL's `prepare_multimodal_messages`)."""
    at = next((i for i, m in enumerate(messages) if m.role == "user"), None)
    if at is None:
        return messages
    m = messages[at]
    messages[at] = replace(m, content=MEDIA * n + m.content, media=(*(Ref(shape.kind) for _ in range(n)), *m.media))
    return messages


def example_media(example: Example) -> list[Ref]:
    """Every media item of `example`, in the order of its messages."""
    return [ref for m in example.messages for ref in m.media]


__all__ = [
    "MEDIA",
    "MEDIA_COLUMNS",
    "SHAPES",
    "MediaKind",
    "Ref",
    "Shape",
    "attach_columns",
    "content_parts",
    "example_media",
    "has_media",
    "kind_of",
]
