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
    compact_boundary           -> the conversation ends (at `logicalParentUuid`, else at the event before it);
                                  the one after it starts with Claude Code's summary (`isCompactSummary`)
    isSidechain events         -> a conversation of their own per `agentId` (a sub-agent's context)
    a synthetic or API-error assistant event (`model: <synthetic>`, `isApiErrorMessage`) -> kept as
                                  context, never trained: the harness wrote it, not the model
    anything else (progress, file-history-snapshot, summary titles, system events, attachments,
                   redacted_thinking, images) -> left out, counted by kind

The thread: Claude Code appends every branch (a rewind or an edited prompt starts one from an earlier
event) to the file. A conversation is the chain of `parentUuid` links from its last event back to its
root, plus what hangs off the chain beside it: the other fragments of its responses and the results of
their calls (parallel calls: each tool_use is an event, each result the child of its own, and the session
goes on from the last result written). Events on no conversation's chain are an abandoned branch: counted.
A conversation whose first event continues an event that is not in the file (the summarising call of a
compaction, `subagents/agent-acompact-*.jsonl`, reads the whole session, which is in the session's file) is
not built, and counted: its context is not here.
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
        chosen = {i for thread, _ in threads for i in thread}
        for i in members:
            if i not in chosen:  # off every conversation: the context of a conversation elsewhere, or a branch left
                elsewhere = _chain(events, i, by_uuid)[1] is not None
                skipped[
                    "event that goes on from one not in this file" if elsewhere else "event on an abandoned branch"
                ] += 1
        for k, (thread, outside) in enumerate(threads):
            if outside is not None:  # a compaction call, a resumed session: the context is in another file
                skipped["conversation that goes on from an event not in this file"] += 1
                continue
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


def _threads(
    events: Sequence[Mapping[str, Any]], members: list[int], by_uuid: dict[str, int]
) -> list[tuple[list[int], str | None]]:
    """The event indices of each conversation of a group, in file order (one per compaction segment), each with
    the uuid its first event continues from when that event is not in the file (its context is elsewhere)."""
    if not all(isinstance(events[i].get("uuid"), str) for i in members):
        return [(members, None)]  # no chain to follow: the file's order is the conversation's
    ends = []
    for b in members:  # a compaction ends a segment: at the event Claude Code names, else the last one before it
        if events[b].get("type") == "system":
            logical = by_uuid.get(str(events[b].get("logicalParentUuid")))
            before = [i for i in members if i < b and events[i].get("type") != "system"]
            end = logical if logical is not None and logical < b else (before[-1] if before else None)
            if end is not None:
                ends.append(end)
    ends.append(members[-1])
    member = set(members)
    threads = []
    for end in ends:
        chain, outside = _chain(events, end, by_uuid)
        _recover(events, members, chain, by_uuid)
        threads.append((sorted(chain & member), outside))
    return threads


def _chain(events: Sequence[Mapping[str, Any]], end: int, by_uuid: dict[str, int]) -> tuple[set[int], str | None]:
    """The events from `end` back to its root along `parentUuid`, and the parent the root names when that is not
    in the file."""
    chain: set[int] = set()
    at: int | None = end
    while at is not None and at not in chain:
        chain.add(at)
        parent = events[at].get("parentUuid")
        if isinstance(parent, str) and parent not in by_uuid:
            return chain, parent
        at = by_uuid.get(parent) if isinstance(parent, str) else None
    return chain, None


def _recover(events: Sequence[Mapping[str, Any]], members: list[int], chain: set[int], by_uuid: dict[str, int]) -> None:
    """Add to `chain` the events of the same context that hang beside it: Claude Code writes a response's parallel
        tool_use blocks as a chain of events and each result as the child of its own tool_use, then goes on from the
        last result written. A fragment of a response in the chain, or a result of a call in the chain, whose parent is
        in the chain, belongs to it (repeated: a fragment hangs off another; hook progress events between them are
    passed over)."""
    member = set(members)
    grown = True
    while grown:
        grown = False
        responses = {_response(events[i]) for i in chain} - {None}
        calls = {c for i in chain for c in _call_ids(events[i])}
        for i in members:
            if i in chain or _member_parent(events, i, by_uuid, member) not in chain:
                continue
            if _response(events[i]) in responses or _answers(events[i], calls):
                chain.add(i)
                grown = True


def _member_parent(
    events: Sequence[Mapping[str, Any]], i: int, by_uuid: dict[str, int], member: set[int]
) -> int | None:
    """The nearest ancestor of event `i` that is a message event (hook `progress` events sit between a tool_use
    and the next fragment of its response)."""
    seen: set[int] = set()
    at = by_uuid.get(str(events[i].get("parentUuid")))
    while at is not None and at not in member and at not in seen:
        seen.add(at)
        at = by_uuid.get(str(events[at].get("parentUuid")))
    return at


def _response(event: Mapping[str, Any]) -> str | None:
    message = event.get("message") if event.get("type") == "assistant" else None
    found = message.get("id") if isinstance(message, Mapping) else None
    return found if isinstance(found, str) else None


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
