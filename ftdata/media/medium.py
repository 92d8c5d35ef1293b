"""One medium through a build: the protocol every kind of media implements, and one item of a record.

    medium.item(ref_value, base=..., field=...)  ->  Item(kind, ref, expansion, width/height | seconds)
                 header facts (no pixels, no samples) ─┘      └─ the family's count and the processor's expansion

A medium (images: `ftdata.media.images.ImageMedium`) reads an item's header facts, counts its tokens
with the family's rule and asks the processor for its expansion; everything after that is the same
for every medium (`ftdata.media.expand`): the placeholder becomes what the chat template writes for
one part of the kind, the processor expands it, the row is spliced and verified, and the row's
`media` column (`ftdata.media.column`) holds per item its kind, reference, start, tokens and size.
The collator (`ftdata.train.media_collator`) is the only place an item's pixels or samples exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ftdata.records.media import MediaKind


@dataclass(frozen=True, slots=True)
class Expansion:
    """What one item becomes in the text: the processor's replacement of its placeholder token."""

    text: str  # the replacement of the processor's placeholder
    tokens: int  # the processor's own count (`families.Counts` says what it counts)
    pads: int  # the placeholder tokens the features fill (`Medium.pad` in `text`)


@dataclass(frozen=True, slots=True)
class Item:
    """One media item of a record, read from its header and counted: what the row stores of it."""

    kind: MediaKind
    ref: str  # the file's absolute path, or `sha256:<hex>` for inline bytes
    expansion: Expansion
    width: int | None = None  # images: the size the processor sees (EXIF orientation applied)
    height: int | None = None
    seconds: float | None = None  # audio: the clip's length (its header's frames at its own rate)
    dropped: float = 0.0  # audio: seconds past the processor's window that it drops (audio_window="cut")

    def column(self, start: int) -> dict[str, Any]:
        """The row's `media` item: `start` is the index in `input_ids` of its first placeholder token."""
        return {
            "kind": self.kind.value,
            "ref": self.ref,
            "start": start,
            "tokens": self.expansion.pads,
            "width": self.width,
            "height": self.height,
            "seconds": self.seconds,
        }

    @property
    def size(self) -> str:
        return size_text(self.column(0))


def size_text(item: Mapping[str, Any]) -> str:
    """How people read a `media` item's size: `320x240`, `2.90 s`."""
    return f"{item['width']}x{item['height']}" if item.get("seconds") is None else f"{item['seconds']:.2f} s"


class Medium(Protocol):
    """One kind of media with one processor: header facts and the family's count, per item."""

    kind: MediaKind
    placeholder: str  # the processor's token for one item in text (`image_token`), replaced by the expansion
    pad: str  # the token the item's features fill, repeated `Expansion.pads` times
    pad_id: int
    replacements: str  # the keyword of `processor.get_text_with_replacements` that takes this kind's expansions
    spans: bool  # the processor's count is the whole expansion's tokens (`families.Counts.SPAN`), not the pads
    text: str  # what a chat template that writes nothing for a part of this kind stands the item in as

    def sample(self) -> Expansion:
        """The expansion of a typical item (to find the marker tokens the family writes around its pads)."""
        ...

    def drain(self) -> dict[str, tuple[int, int, int, int] | None]:
        """The files this medium read since the last drain, as stat'ed (None: no file there): a cached
        build's media manifest is their union (`ftdata.guard.inputs.Manifest`)."""
        ...

    def item(self, value: Any, *, base: Path | None, field: str) -> Item:
        """One item from what a record gives for it.

        Raises:
            UnusableRecord: a typed media reject (missing, URL, unreadable, over a budget, refused by the processor).
        """
        ...


__all__ = ["Expansion", "Item", "Medium", "size_text"]
