"""Typed content parts that are not text or media: a message's reasoning and tool calls written as parts.

LLaMA-Factory v1 writes every message's content as a list of `{"type": ..., "value": ...}` parts
(`src/llamafactory/v1/utils/types.py`: text, reasoning, tool_call, image_url, video_url, audio_url):

    {"role": "assistant", "content": [{"type": "reasoning", "value": "2+2 is 4."},
                                      {"type": "text", "value": "4"},
                                      {"type": "tool_call", "value": "{\\"name\\": \\"f\\", \\"arguments\\": {}}"}]}
        -> the message's reasoning "2+2 is 4.", its content [text "4"], its tool_calls [f()]

`lift` moves those parts to the message's own fields, so every template writes them in its own syntax and the
inference rule applies to them as to any reasoning or call; text and media parts stay where
`ftdata.records.media` reads them. A message that gives reasoning both as a part and as a field, or tool calls both
ways, is an error (neither is dropped). Video parts are refused by name: no processor family here reads video.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ftdata.errors import Location, RecordError
from ftdata.records import tools

REASONING_PARTS = ("reasoning", "thinking")
CALL_PARTS = ("tool_call", "function_call")
VIDEO_PARTS = ("video", "video_url")


def _value(part: Mapping[str, Any], key: str) -> Any:
    """The part's payload: LLaMA-Factory's `value`, else the key named after its type (`{"type": "reasoning",
    "reasoning": ...}`), else `text`."""
    for name in ("value", key, "text"):
        if part.get(name) is not None:
            return part[name]
    return None


def lift(msg: Mapping[str, Any], content_key: str, *, location: Location, field: str) -> Mapping[str, Any]:
    """`msg` with its reasoning and tool-call parts moved to `reasoning_content` and `tool_calls` (the message
    itself when its content has none).

    Raises:
        RecordError: a part's value is not what its type needs, reasoning or calls given twice, a video part.
    """
    parts = msg.get(content_key)
    if not isinstance(parts, list) or not any(isinstance(p, Mapping) for p in parts):
        return msg
    kept: list[Any] = []
    thoughts: list[str] = []
    calls: list[Any] = []
    for i, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, Mapping) else None
        where = f"{field}.{content_key}[{i}]"
        if kind in REASONING_PARTS:
            text = _value(part, kind)
            if not isinstance(text, str):
                raise RecordError(f"a {kind} part needs text, got {text!r:.40}", location=location, field=where)
            thoughts.append(text)
        elif kind in CALL_PARTS:
            calls.extend(tools.function_call_turn(_value(part, kind), location=location, field=where))
        elif kind in VIDEO_PARTS:
            raise RecordError(
                "is a video part; ftdata reads text, image and audio parts (no processor family here reads video): "
                "drop the video or the record",
                location=location,
                field=where,
            )
        else:
            kept.append(part)
    if not thoughts and not calls:
        return msg
    lifted: dict[str, Any] = {**msg, content_key: kept}
    if thoughts:
        if tools.reasoning(msg, location=location, field=field) is not None:
            raise RecordError(
                "has reasoning both as a content part and as a field; keep one", location=location, field=field
            )
        lifted["reasoning_content"] = "".join(thoughts)
    if calls:
        if msg.get("tool_calls"):
            raise RecordError(
                "has tool calls both as content parts and in tool_calls; keep one", location=location, field=field
            )
        lifted["tool_calls"] = [{"name": c.name, "arguments": c.arguments, "id": c.id} for c in calls]
    return lifted


__all__ = ["lift"]
