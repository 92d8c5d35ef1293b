"""Images in records: content parts, `<image>` tags and an `images` column, read into messages.

Every image becomes one placeholder character, `MEDIA` (U+FFFC, the Unicode object
replacement character), in its message's text, and its reference goes to `Message.media`
(one per placeholder, in order). The chat template renders the placeholder as text; the
vision stage (`ftdata.media.expand`) replaces it by what the processor expands the image to.

    {"role": "user", "content": [{"type": "image", "image": "cat.png"},
                                 {"type": "text", "text": "What is this?"}]}
        -> Message("user", "\\ufffcWhat is this?", media=("cat.png",))

Shapes read (docs/vision.md):
- OpenAI parts: `{"type": "image", "image": PATH}`, `{"type": "image_url", "image_url": {"url": PATH or data: URI}}`
  (also `url`/`path` keys, as transformers' chat templates take them);
- TRL: `{"type": "image"}` parts without a reference, the images in the row's `images` column, in order;
- LLaMA-Factory / ShareGPT: `<image>` tags in the text and an `images` column;
- Hugging Face datasets with an `Image` feature: the column's values (`{"bytes", "path"}` or PIL images).

Text parts are joined with nothing between them (what OpenAI and the Qwen-VL templates write).
This module imports nothing heavy: formats.py uses it on every record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ftdata.errors import Location, RecordError, UnusableRecord
from ftdata.outcomes import RejectCode
from ftdata.types import Example

MEDIA = "\ufffc"
"""The placeholder of one image in a message's text (U+FFFC OBJECT REPLACEMENT CHARACTER)."""

TAG = "<image>"  # LLaMA-Factory's placeholder, read as an image only where the row has an `images` column
IMAGE_COLUMNS = ("images", "image")
_IMAGE_TYPES = ("image", "image_url", "input_image")


def is_image_part(part: Any) -> bool:
    return isinstance(part, Mapping) and (part.get("type") in _IMAGE_TYPES or (
        part.get("type") is None and ("image" in part or "image_url" in part)))  # fmt: skip


def has_media(content: Any) -> bool:
    """Whether a message's content is a list with an image part."""
    return isinstance(content, list) and any(map(is_image_part, content))


def content_parts(parts: list[Any], *, location: Location, field: str) -> tuple[str, tuple[Any, ...]]:
    """(text with one `MEDIA` per image, the images' references in order; None for a part without one).

    Raises:
        RecordError: a part that is neither text nor image, or a text part that is not a string.
    """
    texts: list[str] = []
    media: list[Any] = []
    for i, part in enumerate(parts):
        where = f"{field}[{i}]"
        if isinstance(part, str):
            texts.append(part)
        elif is_image_part(part):
            texts.append(MEDIA)
            media.append(_reference(part))
        elif isinstance(part, Mapping) and part.get("type", "text") == "text" and isinstance(part.get("text", part.get("value")), str):
            texts.append(part.get("text", part.get("value")))
        else:
            raise RecordError(
                f"has a content part {str(part)[:60]!r} that is neither text nor image; ftdata reads "
                "{'type': 'text', 'text': ...} and {'type': 'image', 'image': PATH} / {'type': 'image_url', ...} parts",
                location=location, field=where,
            )  # fmt: skip
        if MEDIA in texts[-1] and not is_image_part(part):
            raise UnusableRecord(
                "the text holds U+FFFC, the character ftdata stands each image in with; remove it from the text",
                location=location, field=where, code=RejectCode.MEDIA_MISMATCH,
            )  # fmt: skip
    return "".join(texts), tuple(media)


def _reference(part: Mapping[str, Any]) -> Any:
    """What an image part points at: a path, a URL or data: URI, inline bytes, or None (TRL's bare `{"type": "image"}`)."""
    for key in ("image", "image_url", "url", "path"):
        value = part.get(key)
        if isinstance(value, Mapping) and key == "image_url":
            value = value.get("url")
        if value is not None:
            return value
    return None


def attach_images(examples: tuple[Example, ...], row: Mapping[str, Any], location: Location) -> tuple[Example, ...]:
    """The row's `images` (or `image`) column given to the placeholders that carry no reference, in order.

    Placeholders are TRL's bare `{"type": "image"}` parts or, when there are none, LLaMA-Factory's
    `<image>` tags (read as images only in a row with such a column).

    Raises:
        UnusableRecord: the placeholders and the column's images differ in number (`media_mismatch`).
    """
    column = next((c for c in IMAGE_COLUMNS if row.get(c) is not None), None)
    if column is None:
        return examples
    value = row[column]
    images = list(value) if isinstance(value, (list, tuple)) else [value]
    if not images:
        return examples
    out = []
    for example in examples:
        messages = list(example.messages)
        if not any(None in m.media for m in messages):  # no bare parts: LLaMA-Factory tags
            messages = [_tags_to_media(m) for m in messages]
        slots = sum(m.media.count(None) for m in messages)
        if slots != len(images):
            raise UnusableRecord(
                f"{slots} image placeholder(s) in the messages but {len(images)} image(s) in column {column!r}; "
                "give one placeholder ({'type': 'image'} part or <image> tag) per image",
                location=location, field=column, code=RejectCode.MEDIA_MISMATCH,
            )  # fmt: skip
        given = iter(images)
        messages = [replace(m, media=tuple(next(given) if r is None else r for r in m.media)) if None in m.media else m for m in messages]
        out.append(replace(example, messages=tuple(messages)))
    return tuple(out)


def _tags_to_media(message: Any) -> Any:
    if TAG not in message.content:
        return message
    n = message.content.count(TAG)
    return replace(message, content=message.content.replace(TAG, MEDIA), media=(*message.media, *([None] * n)))


def example_media(example: Example) -> list[Any]:
    """Every image reference of `example`, in the order of its messages."""
    return [ref for m in example.messages for ref in m.media]


__all__ = ["IMAGE_COLUMNS", "MEDIA", "TAG", "attach_images", "content_parts", "example_media", "has_media", "is_image_part"]
