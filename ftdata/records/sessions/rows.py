"""Rows that others publish from agent traces: one conversation per row, beside columns about the run.

    datasets' agent-trace reader    harness, session_id, messages, tools, metadata, prompt, sent_at,
    (its Parquet/JSONL export)      num_user_messages, num_tool_calls, trace, file_path
    prime-rl traces-to-HF           messages, tools (JSON text), trainable, branch_index, trace_id, reward,
    (tools/convert_traces_to_hf_    stop_condition, has_error, is_truncated, task, run, timing and usage columns
    dataset.py)

`trace_row` returns the `messages` record of such a row, for `formats` to read as any: its `messages` and
`tools` as published (JSON text decoded: `datasets` stores Json features as text in Parquet, prime-rl
encodes its tools so), and a note naming every other column with a value, which the build does not use
(a reward, an error flag: filter the rows on them before building). What a row says about training is
honoured: teich's `masked: true` on a message is `train: false`; prime-rl's `trainable: false` (an agent
its run did not train) makes every assistant turn `train: false`, so the row trains nothing and is rejected
as such. prime-rl writes a provider's opaque `reasoning_details` where it has no reasoning text: no
template can write it, so it is left out, with a note; a `custom` tool call becomes a call whose arguments
are `{"input": ...}`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ftdata.errors import Location, RecordError
from ftdata.outcomes import Note, NoteCode

AGENT_TRACE_KEYS = frozenset({"harness", "session_id", "messages"})
PRIME_RL_KEYS = frozenset({"messages", "trace_id", "branch_index"})
_CONVERSATION = ("messages", "tools")


def kind(row: Any) -> str | None:
    """Whose trace row `row` is: "agent-trace" (datasets), "prime-rl", or None."""
    if not isinstance(row, Mapping):
        return None
    if AGENT_TRACE_KEYS <= row.keys() and isinstance(row.get("harness"), str):
        return "agent-trace"
    if PRIME_RL_KEYS <= row.keys():
        return "prime-rl"
    return None


def trace_row(row: Mapping[str, Any], location: Location) -> tuple[dict[str, Any], list[Note]] | None:
    """The `messages` record of a published trace row and its notes, or None for any other row.

    Raises:
        RecordError: `messages` or `tools` JSON text that does not parse.
    """
    who = kind(row)
    if who is None:
        return None
    out: dict[str, Any] = {}
    for key in _CONVERSATION:
        value = _decoded(row.get(key), location, key)
        if isinstance(value, list):
            value = [_decoded(v, location, f"{key}[{i}]") for i, v in enumerate(value)]
        if value is not None:
            out[key] = value
    notes: list[Note] = []
    untrained = who == "prime-rl" and row.get("trainable") is False
    if isinstance(messages := out.get("messages"), list):
        out["messages"] = [_message(m, untrained) for m in messages]
        opaque = sum(1 for m in messages if isinstance(m, Mapping) and _opaque(m))
        if opaque:
            text = (
                f"{opaque} assistant turn(s) carry only the provider's opaque reasoning_details: left out "
                "(no template writes it)"
            )
            notes.append(Note(NoteCode.AGENT_TRACE_COLUMNS, text))
    if untrained:
        text = f"prime-rl marks agent {row.get('agent')!r} not trainable (trainable: false): its turns are not trained"
        notes.append(Note(NoteCode.AGENT_TRACE_COLUMNS, text))
    unused = [k for k, v in row.items() if k not in _CONVERSATION and v not in (None, "", [], {}, "null", "[]", "{}")]
    if unused:
        what = (
            f"a {row['harness']} agent-trace row (datasets)" if who == "agent-trace" else "a prime-rl traces-to-HF row"
        )
        notes.append(
            Note(NoteCode.AGENT_TRACE_COLUMNS, f"{what}: built from messages and tools; not used: {', '.join(unused)}")
        )
    return out, notes


def _decoded(value: Any, location: Location, field: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise RecordError(f"must be JSON text (as published): {exc.msg}", location=location, field=field) from None


def _opaque(message: Mapping[str, Any]) -> bool:
    return message.get("reasoning_details") is not None and message.get("reasoning_content") is None


def _message(message: Any, untrained: bool) -> Any:
    if not isinstance(message, Mapping):
        return message
    out = {k: v for k, v in message.items() if k not in ("masked", "reasoning_details")}
    if message.get("masked") is True and "train" not in message:
        out["train"] = False
    if untrained and message.get("role") == "assistant" and "train" not in message:
        out["train"] = False
    if isinstance(calls := message.get("tool_calls"), list):
        out["tool_calls"] = [_call(c) for c in calls]
    return out


def _call(call: Any) -> Any:
    """A verifiers `custom` call ({"type": "custom", "custom": {"name", "input"}}) as a function call."""
    if isinstance(call, Mapping) and call.get("type") == "custom" and isinstance(custom := call.get("custom"), Mapping):
        function = {"name": custom.get("name"), "arguments": {"input": custom.get("input")}}
        return {"type": "function", **({"id": call["id"]} if "id" in call else {}), "function": function}
    return call
