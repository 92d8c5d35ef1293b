"""Claude Code session files (`~/.claude/projects/<project>/<session>.jsonl`) as conversations.

Each line is an event: `user` and `assistant` events hold the API messages (`message.role`, `message.content`
blocks), chained by `uuid`/`parentUuid`; everything else is the harness's own log. What becomes what:

    assistant event            -> a piece of an assistant turn: `text` blocks its content, `thinking` its
                                  reasoning, `tool_use` its tool calls (id, name, input as arguments); the
                                  events of one response (same `message.id`) make one turn
    user event, string content -> a user turn, `isMeta` ones included (hook feedback, command caveats, skill
                                  text: sent to the model, only hidden from the person)
    user event, tool_result    -> one tool turn per block, answering its `tool_use_id` (text blocks of the
                                  same event follow as a user turn)
    compact_boundary           -> the conversation ends; the one after it starts with Claude Code's summary
                                  (`isCompactSummary`), as the model read it
    isSidechain events         -> a conversation of their own per `agentId` (a sub-agent's context)
    a synthetic or API-error assistant event (`model: <synthetic>`, `isApiErrorMessage`) -> kept as
                                  context, never trained: the harness wrote it, not the model
    anything else (progress, file-history-snapshot, summary titles, system events, attachments,
                   redacted_thinking, images) -> left out, counted by kind

The thread: Claude Code appends every branch (a rewind or an edited prompt starts one from an earlier
event) to the file. A conversation is the chain of `parentUuid` links from its last event back to its
root, plus the tool results of its calls that hang off the chain beside it (parallel calls: each result's
parent is its own tool_use event). Events on no conversation's chain are an abandoned branch: counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ftdata.records.sessions.turns import Conversation, Turns, finish, joined_text

MESSAGE_EVENTS = ("user", "assistant")


def conversations(events: Sequence[Mapping[str, Any]], lines: Sequence[int]) -> tuple[list[Conversation], Counter[str]]:
    """The session's conversations (its own first, then each sidechain's) and what was left out, by kind."""
    skipped: Counter[str] = Counter()
    groups: dict[str | None, list[int]] = {}
    for i, event in enumerate(events):
        kind = event.get("type")
        if kind == "system" and event.get("subtype") == "compact_boundary":
            groups.setdefault(_group(event), []).append(i)
        elif kind in MESSAGE_EVENTS and isinstance(event.get("message"), Mapping):
            groups.setdefault(_group(event), []).append(i)
        else:
            name = f"{kind}:{event.get('subtype')}" if kind == "system" and event.get("subtype") else str(kind)
            skipped[name] += 1
    by_uuid = {e["uuid"]: i for i, e in enumerate(events) if isinstance(e.get("uuid"), str)}
    out: list[Conversation] = []
    for group, members in _by_root(groups, events, by_uuid):
        threads = _threads(events, members, by_uuid)
        chosen = {i for thread in threads for i in thread}
        if lost := sum(1 for i in members if i not in chosen):
            skipped["event on an abandoned branch"] += lost
        for k, thread in enumerate(threads):
            turns = Turns()
            for i in thread:
                _event(events[i], lines[i], turns)
            label = f"sidechain {group}" if group is not None else ""
            if k:
                label = f"{label} after compaction {k}".strip()
            out.append(finish(turns, label))
            skipped.update(turns.skipped)
    return out, skipped


def _by_root(
    groups: dict[str | None, list[int]], events: Sequence[Mapping[str, Any]], by_uuid: dict[str, int]
) -> list[tuple[str | None, list[int]]]:
    """The groups, with sidechain events that name no `agentId` (older Claude Code) split by the event their
    chain starts from: each Task call's sub-agent started a context of its own."""
    out: list[tuple[str | None, list[int]]] = []
    for group, members in groups.items():
        if group != "agent":
            out.append((group, members))
            continue
        roots: dict[int, list[int]] = {}
        for i in members:
            roots.setdefault(_root(events, i, by_uuid), []).append(i)
        out += [(f"agent {k + 1}" if len(roots) > 1 else group, part) for k, part in enumerate(roots.values())]
    return out


def _root(events: Sequence[Mapping[str, Any]], at: int, by_uuid: dict[str, int]) -> int:
    seen = {at}
    while isinstance(parent := events[at].get("parentUuid"), str) and (up := by_uuid.get(parent)) is not None:
        if up in seen:
            break
        seen.add(up)
        at = up
    return at


def _group(event: Mapping[str, Any]) -> str | None:
    if event.get("isSidechain") is not True:
        return None
    agent = event.get("agentId")
    return str(agent) if agent is not None else "agent"


def _threads(events: Sequence[Mapping[str, Any]], members: list[int], by_uuid: dict[str, int]) -> list[list[int]]:
    """The event indices of each conversation of a group, in file order: one per compaction segment."""
    if not all(isinstance(events[i].get("uuid"), str) for i in members):
        return [members]  # no chain to follow: the file's order is the conversation's
    ends = [by_uuid[p] for i in members if isinstance(p := events[i].get("logicalParentUuid"), str) and p in by_uuid]
    ends.append(members[-1])
    member = set(members)
    threads = []
    for end in ends:
        chain: set[int] = set()
        at: int | None = end
        while at is not None and at not in chain:
            chain.add(at)
            parent = events[at].get("parentUuid")
            at = by_uuid.get(parent) if isinstance(parent, str) else None
        calls = {c for i in chain for c in _call_ids(events[i])}
        for i in members:  # the results of parallel calls hang beside the chain
            parent = events[i].get("parentUuid")
            if (
                i not in chain
                and isinstance(parent, str)
                and by_uuid.get(parent) in chain
                and _answers(events[i], calls)
            ):
                chain.add(i)
        threads.append(sorted(chain & member))
    return threads


def _call_ids(event: Mapping[str, Any]) -> list[str]:
    content = event.get("message", {}).get("content") if event.get("type") == "assistant" else None
    return [b["id"] for b in content or () if isinstance(b, Mapping) and b.get("type") == "tool_use" and "id" in b]


def _answers(event: Mapping[str, Any], calls: set[str]) -> bool:
    content = event.get("message", {}).get("content") if event.get("type") == "user" else None
    return (
        isinstance(content, list)
        and bool(content)
        and all(
            isinstance(b, Mapping) and b.get("type") == "tool_result" and b.get("tool_use_id") in calls for b in content
        )
    )


def _event(event: Mapping[str, Any], line: int, turns: Turns) -> None:
    if event.get("type") == "system":  # compact_boundary: where the thread starts again
        return
    message = event["message"]
    content = message.get("content")
    if event["type"] == "assistant":
        _assistant(event, message, content, line, turns)
        return
    if not isinstance(content, list):
        turns.text("user", joined_text(content, turns.skipped, "user content"), line)
        return
    rest = []
    for block in content:
        if isinstance(block, Mapping) and block.get("type") == "tool_result":
            turns.tool(block.get("tool_use_id"), joined_text(block.get("content"), turns.skipped, "tool result"), line)
        else:
            rest.append(block)
    if rest:
        turns.text("user", joined_text(rest, turns.skipped, "user content"), line)


def _assistant(event: Mapping[str, Any], message: Mapping[str, Any], content: Any, line: int, turns: Turns) -> None:
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else [{"type": "text", "text": content or ""}]:
        kind = block.get("type") if isinstance(block, Mapping) else type(block).__name__
        if kind == "text":
            text.append(str(block.get("text", "")))
        elif kind == "thinking":
            reasoning.append(str(block.get("thinking", "")))
        elif kind == "tool_use":
            call = {"name": block.get("name"), "arguments": block.get("input") or {}}
            calls.append({"type": "function", "id": block.get("id"), "function": call})
        else:
            turns.skipped[f"assistant content:{kind}"] += 1
    synthetic = message.get("model") == "<synthetic>" or event.get("isApiErrorMessage") is True
    response = message.get("id") if isinstance(message.get("id"), str) else None
    turns.assistant(
        line, text=text, reasoning=reasoning, calls=calls, response=response, train=False if synthetic else None
    )
