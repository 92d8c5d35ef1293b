"""Codex rollout files (`~/.codex/sessions/YYYY/MM/DD/rollout-*.jsonl`) as conversations.

Each line is `{timestamp, type, payload}`. The `response_item` lines are the Responses API items the model
was given and wrote, in order; the rest is the harness's log. What becomes what:

    session_meta base_instructions  -> the system turn (the instructions Codex sends with every request)
    message, role developer         -> a system turn, where it stands (a template that writes none there
                                       joins it to a user turn: `ftdata.chat.late_system`)
    message, role user / assistant  -> a user turn / assistant content
    reasoning with `content`        -> the assistant turn's reasoning (open models' reasoning_text)
    reasoning with only a `summary` -> left out, counted: the model's own reasoning is encrypted in the file,
                                       and a summary of it is not what the model wrote
    function_call                   -> a tool call (call_id, name, arguments parsed from their JSON text)
    custom_tool_call                -> a tool call whose arguments are {"input": <the free-form input>}
    function_call_output /          -> a tool turn answering its call_id (`output`, or its `content`)
    custom_tool_call_output
    compacted                       -> the conversation ends; the next starts from its `replacement_history`
                                       (the items Codex kept), else from its summary as a user turn
    event_msg, turn_context, other response items (web_search_call, ghost_snapshot, ...) -> left out,
                                       counted by kind (event_msg repeats the items for the interface)

The items of one model response (reasoning, messages, calls) between two inputs make one assistant turn.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ftdata.records.sessions.turns import Conversation, Turns, finish, joined_text

_ROLES = {"developer": "system", "system": "system", "user": "user"}


def conversations(events: Sequence[Mapping[str, Any]], lines: Sequence[int]) -> tuple[list[Conversation], Counter[str]]:
    """The session's conversations (one, or one per compaction) and what was left out, by kind."""
    skipped: Counter[str] = Counter()
    out: list[Conversation] = []
    turns = Turns()
    for event, line in zip(events, lines, strict=True):
        kind, payload = event.get("type"), event.get("payload")
        if not isinstance(payload, Mapping):
            skipped[str(kind)] += 1
        elif kind == "session_meta":
            instructions = payload.get("base_instructions") or payload.get("instructions")
            if isinstance(instructions, Mapping):
                instructions = instructions.get("text")
            if isinstance(instructions, str) and instructions.strip():
                turns.text("system", instructions, line)
        elif kind == "response_item":
            _item(payload, line, turns)
        elif kind == "compacted":
            out.append(finish(turns, f"before compaction at line {line}" if not out else f"segment {len(out)}"))
            skipped.update(turns.skipped)
            turns = Turns()
            history = payload.get("replacement_history")
            if isinstance(history, list):
                for item in history:
                    if isinstance(item, Mapping):
                        _item(item, line, turns)
            elif isinstance(payload.get("message"), str):
                turns.text("user", payload["message"], line)
        else:
            skipped[f"{kind}:{payload.get('type')}" if kind == "event_msg" else str(kind)] += 1
    out.append(finish(turns, f"after compaction {len(out)}" if out else ""))
    skipped.update(turns.skipped)
    return out, skipped


def _item(item: Mapping[str, Any], line: int, turns: Turns) -> None:
    kind = item.get("type")
    if kind == "message":
        role = item.get("role")
        text = joined_text(item.get("content"), turns.skipped, f"{role} content")
        if role == "assistant":
            turns.assistant(line, text=[text])
        elif role in _ROLES:
            turns.text(_ROLES[role], text, line)
        else:
            turns.skipped[f"message:{role}"] += 1
    elif kind == "reasoning":
        texts = [
            str(c.get("text", ""))
            for c in item.get("content") or ()
            if isinstance(c, Mapping) and c.get("type") == "reasoning_text"
        ]
        if texts:
            turns.assistant(line, reasoning=texts)
        else:
            turns.skipped["reasoning summary (the reasoning itself is encrypted)"] += 1
    elif kind in ("function_call", "custom_tool_call"):
        if kind == "function_call":
            arguments = _arguments(item.get("arguments"))
        else:
            arguments = {"input": item.get("input")}
        call = {
            "type": "function",
            "id": item.get("call_id"),
            "function": {"name": item.get("name"), "arguments": arguments},
        }
        turns.assistant(line, calls=[call])
    elif kind in ("function_call_output", "custom_tool_call_output"):
        output = item.get("output")
        if isinstance(output, Mapping):
            output = output.get("content")
        turns.tool(item.get("call_id"), joined_text(output, turns.skipped, "tool output"), line)
    else:
        turns.skipped[f"response_item:{kind}"] += 1


def _arguments(value: Any) -> Any:
    """A call's arguments: Codex writes them as JSON text; text that is not JSON stays text (and is refused
    as arguments, named by its line)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value
