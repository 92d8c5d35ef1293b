"""Pi coding agent session files (`~/.pi/agent/sessions/<cwd>/<time>_<id>.jsonl`) as conversations.

The first line is the `session` header; `message` entries hold the agent's messages (`message.role`):

    user                      -> a user turn (text blocks; images left out, counted)
    assistant                 -> an assistant turn: `text` its content, `thinking` its reasoning, `toolCall`
                                 its tool calls (id, name, arguments)
    assistant with stopReason -> left out, counted: pi sends no errored or aborted response back to the
      error / aborted            model (`transform-messages.ts`), so no model context held it
    toolResult                -> a tool turn answering its `toolCallId`
    custom                    -> a user turn (pi sends an extension's message as one)
    bashExecution, branchSummary, compactionSummary -> left out, counted: pi sends them wrapped in text of
                                 its own that the file does not hold
    compaction                -> the conversation ends; the next starts at its `firstKeptEntryId` (the
                                 summary pi puts before it is in its own wrapper: left out, counted)
    model_change, thinking_level_change, session_info, label, custom, ... -> left out, counted

Entries carry `id`/`parentId` (version 2 on): a conversation is the chain from the last entry back to the
root; entries off it (an abandoned branch, `/tree`) are counted. Version 1 files have no ids: file order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ftdata.records.sessions.turns import Conversation, Turns, finish, joined_text


def conversations(events: Sequence[Mapping[str, Any]], lines: Sequence[int]) -> tuple[list[Conversation], Counter[str]]:
    """The session's conversations (one, or one per compaction) and what was left out, by kind."""
    skipped: Counter[str] = Counter()
    entries = [i for i, e in enumerate(events) if e.get("type") != "session"]
    thread = _thread(events, entries)
    if lost := len(entries) - len(thread):
        skipped["entry on an abandoned branch"] += lost
    by_id = {events[i].get("id"): i for i in thread if isinstance(events[i].get("id"), str)}
    out: list[Conversation] = []
    turns = Turns()
    for i in thread:
        event = events[i]
        kind = event.get("type")
        if kind == "message" and isinstance(event.get("message"), Mapping):
            _message(event["message"], lines[i], turns)
        elif kind == "compaction":
            out.append(finish(turns, f"before compaction at line {lines[i]}" if not out else f"segment {len(out)}"))
            skipped.update(turns.skipped)
            turns = Turns()
            turns.skipped["compaction summary (pi's own wrapper)"] += 1
            start = by_id.get(event.get("firstKeptEntryId"))
            for j in [k for k in thread if start is not None and start <= k < i]:
                if events[j].get("type") == "message" and isinstance(events[j].get("message"), Mapping):
                    _message(events[j]["message"], lines[j], turns)
        else:
            skipped[str(kind)] += 1
    out.append(finish(turns, f"after compaction {len(out)}" if out else ""))
    skipped.update(turns.skipped)
    return out, skipped


def _thread(events: Sequence[Mapping[str, Any]], entries: list[int]) -> list[int]:
    if not entries or not all(isinstance(events[i].get("id"), str) for i in entries):
        return entries
    by_id = {events[i]["id"]: i for i in entries}
    chain: set[int] = set()
    at: int | None = entries[-1]
    while at is not None and at not in chain:
        chain.add(at)
        parent = events[at].get("parentId")
        at = by_id.get(parent) if isinstance(parent, str) else None
    return sorted(chain)


def _message(message: Mapping[str, Any], line: int, turns: Turns) -> None:
    role = message.get("role")
    content = message.get("content")
    if role in ("user", "custom"):
        turns.text("user", joined_text(content, turns.skipped, f"{role} content"), line)
    elif role == "toolResult":
        turns.tool(message.get("toolCallId"), joined_text(content, turns.skipped, "tool result"), line)
    elif role == "assistant" and message.get("stopReason") in ("error", "aborted"):
        turns.skipped[f"assistant response ({message['stopReason']})"] += 1
    elif role == "assistant":
        text, reasoning, calls = [], [], []
        for block in content if isinstance(content, list) else [{"type": "text", "text": content or ""}]:
            kind = block.get("type") if isinstance(block, Mapping) else type(block).__name__
            if kind == "text":
                text.append(str(block.get("text", "")))
            elif kind == "thinking":
                reasoning.append(str(block.get("thinking", "")))
            elif kind == "toolCall":
                call = {"name": block.get("name"), "arguments": block.get("arguments") or {}}
                calls.append({"type": "function", "id": block.get("id"), "function": call})
            else:
                turns.skipped[f"assistant content:{kind}"] += 1
        turns.assistant(line, text=text, reasoning=reasoning, calls=calls)
    else:
        turns.skipped[f"message:{role}"] += 1
