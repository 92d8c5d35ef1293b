"""Which characters of a rendered record come from the record, and of what kind: a message's text, a tool's
result, a tool call's name and arguments, or the text the template writes for the record's tools (the rest is the
template's own). What `ftdata preview` colours; found by locating the record's pieces in the rendered text in order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from ftdata.chat.render import apply_system
from ftdata.errors import FtdataError
from ftdata.outcomes import Note, NoteCode
from ftdata.run.stage import Stage
from ftdata.types import Example, SystemMode

__all__ = ["RESULTS_ENCODED", "content_mask", "record_pieces", "results_encoded", "schema_region"]


def record_pieces(example: Example, stage: Stage) -> list[tuple[str, str]]:
    """The texts a record contributes to the rendering, in order, each with its kind: `text`
    (a message content), `result` (a tool's result) or `call` (a tool call's name and argument
    values). The system prompt option is applied first, as the renderer does."""
    renderer = stage.renderer
    if renderer.system_prompt is not None or renderer.system_mode is SystemMode.FOLD:
        example = apply_system(example, renderer.system_prompt, renderer.system_mode)
    pieces: list[tuple[str, str]] = []
    context = example.context
    for message in example.messages:
        if message.reasoning:
            pieces.append((message.reasoning, "text"))
        pieces.append((message.content, "result" if message.role == "tool" else "text"))
        for call in message.tool_calls:
            pieces.append((call.name, "call"))
            args = call.arguments if isinstance(call.arguments, dict) else _json_object(call.arguments)
            pieces += [(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False), "call") for v in args.values()]
        if message.role == "user" and context:
            pieces.append((context, "text"))
            context = ""
    return pieces


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def content_mask(text: str, pieces: Iterable[tuple[str, str]]) -> list[str]:
    """The kind of every character of `text`: a piece's kind where it comes from the record,
    '' for template text. Each piece is located in order; a piece the template rewrote (not
    found whole) is located line by line; text found nowhere counts as template text.
    """
    mask = [""] * len(text)
    cursor = 0
    for piece, kind in pieces:
        for part in _parts(text, piece.strip(), cursor, encoded=kind == "result"):
            at = text.find(part, cursor)
            if at < 0:
                continue
            mask[at : at + len(part)] = [kind] * len(part)
            cursor = at + len(part)
    return mask


def schema_region(example: Example, stage: Stage) -> tuple[int, int]:
    """[start, end) of the text the chat template writes for the record's `tools` ((0, 0) when none):
    where its rendering changes when the tools are left out."""
    renderer = stage.renderer
    if not example.tools or renderer.chat is None:
        return 0, 0
    if renderer.system_prompt is not None or renderer.system_mode is SystemMode.FOLD:
        example = apply_system(example, renderer.system_prompt, renderer.system_mode)
    try:
        msgs = renderer.chat_messages(example)
        kwargs = example.template_kwargs
        with_tools = renderer.chat(msgs, tools=example.tools, kwargs=kwargs)
        without = renderer.chat(msgs, kwargs=kwargs)
    except FtdataError:
        return 0, 0
    # Characters, not tokens: Qwen's `.\n\n` is one token, and the schema starts after its `.`.
    # An edge inside a control token (`<|system|>` vs `<|user|>` share `<|`) moves out to its edge.
    added = _added_tokens(stage.tokenizer)
    start = len(os.path.commonprefix([with_tools, without]))
    for token in added:
        start = _outside(with_tools, token, start, to_end=False)
    tail = 0
    while tail < len(without) - start and with_tools[-1 - tail] == without[-1 - tail]:
        tail += 1
    end = len(with_tools) - tail
    for token in added:
        end = _outside(with_tools, token, end, to_end=True)
    return (start, end) if end > start else (0, 0)


def _added_tokens(tokenizer: Any) -> list[str]:
    return [t.content for t in tokenizer.backend_tokenizer.get_added_tokens_decoder().values() if len(t.content) > 1]


def _outside(text: str, token: str, at: int, *, to_end: bool) -> int:
    """`at`, or the start (end, `to_end`) of an occurrence of `token` in `text` that `at` falls inside."""
    found = text.find(token, max(0, at - len(token) + 1))
    if found != -1 and found < at < found + len(token):
        return found + len(token) if to_end else found
    return at


RESULTS_ENCODED = Note(
    NoteCode.RESULTS_ENCODED,
    "the chat template JSON-encodes tool results again: a result is written as a quoted string with its quotes "
    'and newlines escaped ("{\\"key\\": ...}"), and the model sees (and learns to read) it that way',
)


def _json_string(piece: str) -> str | None:
    """`piece` as the JSON string a template's `tojson` writes (None when that is `piece` itself)."""
    quoted = json.dumps(piece, ensure_ascii=False)
    return quoted if quoted != piece else None


def _parts(text: str, piece: str, cursor: int, *, encoded: bool = False) -> list[str]:
    if not piece:
        return []
    if text.find(piece, cursor) >= 0:
        return [piece]
    if encoded and (quoted := _json_string(piece)) and text.find(quoted, cursor) >= 0:
        return [quoted]
    return [line.strip() for line in piece.splitlines() if line.strip()]


def results_encoded(text: str, pieces: Iterable[tuple[str, str]]) -> bool:
    """True when a tool result is in `text` only JSON-encoded again (Llama 3.x's `tojson` of a string result)."""
    for piece, kind in pieces:
        if kind == "result" and piece.strip() and piece.strip() not in text:
            quoted = _json_string(piece.strip())
            if quoted and quoted in text:
                return True
    return False
