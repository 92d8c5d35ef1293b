"""Media in `ftdata preview` and `ftdata stats`, summarised: one marker per item, counts per record.

    <|vision_start|><|image_pad|> x 378<|vision_end|>   ->   [image 512x600, 378 tokens: grace_hopper.jpg]

Preview shows each item as that one marker (and one row of the --tokens table) instead of
hundreds of pad tokens; stats counts items (by kind) and their placeholder tokens per example,
and audio's seconds and tokens.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from ftdata.types import IGNORE_INDEX, Rendered


def marker(placed: Any) -> str:
    """The one-line stand-in of an expanded item."""
    item = placed.item
    name = item.ref[:19] if item.ref.startswith("sha256:") else item.ref.rsplit("/", 1)[-1]
    return f"[{item.kind} {item.size}, {item.expansion.pads} tokens: {name}]"


def media_counts(rendered: Rendered) -> tuple[Counter[str], int]:
    """(items by kind, their placeholder tokens) of one rendered example."""
    return Counter(p.item.kind.value for p in rendered.media), sum(p.item.expansion.pads for p in rendered.media)


def audio_counts(rendered: Rendered) -> tuple[int, int]:
    """(milliseconds of audio, audio placeholder tokens) of one rendered example (what stats reports per record)."""
    clips = [p.item for p in rendered.media if p.item.seconds is not None]
    return round(sum(c.seconds for c in clips) * 1000), sum(c.expansion.pads for c in clips)


def collapse_segments(segments: list[Any], rendered: Rendered) -> list[Any]:
    """Preview segments (runs of characters covering `rendered.text`) with each image region as one marker segment."""
    if not rendered.media:
        return segments
    chars = [(c, seg) for seg in segments for c in seg.text]
    out: list[Any] = []
    at = 0
    for placed in rendered.media:
        out.extend(_runs(chars[at : placed.start]))
        out.append(replace(segments[0], text=marker(placed), trained=False, template=True, kind=""))
        at = placed.end
    out.extend(_runs(chars[at:]))
    return out


def _runs(chars: list[tuple[str, Any]]) -> list[Any]:
    out: list[Any] = []
    for c, seg in chars:
        if out and (out[-1].trained, out[-1].template, out[-1].kind) == (seg.trained, seg.template, seg.kind):
            out[-1] = replace(out[-1], text=out[-1].text + c)
        else:
            out.append(replace(seg, text=c))
    return out


def collapse_tokens(tokens: list[Any], offsets: list[tuple[int, int]], prefix: int, rendered: Rendered) -> list[Any]:
    """The --tokens rows with the tokens of each image region as one row (id -1, the marker, label -100)."""
    if not rendered.media:
        return tokens
    out = list(tokens[:prefix])
    regions = list(rendered.media)
    shown = set()
    for token, (start, end) in zip(tokens[prefix:], offsets):
        inside = next((k for k, p in enumerate(regions) if p.start <= start and end <= p.end), None)
        if inside is None:
            out.append(token)
        elif inside not in shown:
            shown.add(inside)
            out.append(replace(token, id=-1, text=marker(regions[inside]), label=IGNORE_INDEX))
    return out


__all__ = ["audio_counts", "collapse_segments", "collapse_tokens", "marker", "media_counts"]
