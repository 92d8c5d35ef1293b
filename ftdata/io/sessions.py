"""Agent session files: a JSON Lines file whose lines are one agent session's events is one record.

Claude Code (`~/.claude/projects/<project>/<session>.jsonl`), Codex (`~/.codex/sessions/.../rollout-*.jsonl`)
and Pi (`~/.pi/agent/sessions/.../*.jsonl`) write a session as one JSON event per line. A line alone is no
record (a tool result without its call, a reasoning item without its turn), so `readers.read_jsonl` hands the
whole file over as one row when its first line is such an event:

    {"session_file": {"harness": "claude_code", "events": [...], "lines": [1, 2, 4, ...]}}

`lines` are the file lines of the events (blank lines skipped), so `ftdata.records.sessions` names an event as
`file:line`. A line that cannot be read (bad JSON, a truncated last line as a live session leaves) makes the
row a RecordError at that line: the session is rejected, the other files of a folder build.

The first line decides, by the keys each harness writes on every event (datasets 5.2's agent-trace markers
look at the same fields): Claude Code's `sessionId`/`parentUuid`/`uuid` (or its `summary`,
`file-history-snapshot`, `queue-operation` lines), Codex's `type` + `payload` object, Pi's `session` header.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ftdata.errors import Location, RecordError
from ftdata.types import SESSION_FILE as KEY

_CLAUDE_TYPES = frozenset({"user", "assistant", "system", "progress", "attachment"})
_CLAUDE_HEADS = {"summary": "leafUuid", "file-history-snapshot": "snapshot", "queue-operation": "operation"}
_CODEX_TYPES = frozenset({"session_meta", "response_item", "event_msg", "turn_context", "compacted"})


def harness(row: Any) -> str | None:
    """The harness whose session event `row` is (the first line of a file), else None.

    >>> harness({"type": "session_meta", "payload": {"id": "019e"}}), harness({"type": "user", "text": "hi"})
    ('codex', None)
    """
    if not isinstance(row, Mapping) or not isinstance(kind := row.get("type"), str):
        return None
    if kind in _CLAUDE_TYPES and {"sessionId", "parentUuid"} <= row.keys() and "uuid" in row:
        return "claude_code"
    if (
        (key := _CLAUDE_HEADS.get(kind)) is not None
        and key in row
        and ("sessionId" in row or kind != "queue-operation")
    ):
        return "claude_code"
    if kind in _CODEX_TYPES and isinstance(row.get("payload"), Mapping):
        return "codex"
    if kind == "session" and isinstance(row.get("id"), str) and ("cwd" in row or "version" in row):
        return "pi"
    return None


def gather(
    source: str, name: str, first: tuple[Location, Any], rest: Iterator[tuple[Location, Any]]
) -> dict[str, Any] | RecordError:
    """One session row from a file's `(location, row)` pairs (`first` is the one `harness` named `name`), or
    the RecordError of its first unreadable line."""
    events: list[Any] = []
    lines: list[int] = []
    for location, row in (first, *rest):
        if isinstance(row, RecordError):
            return row
        if not isinstance(row, Mapping):
            return RecordError(
                f"a {name} session event must be a JSON object, got {type(row).__name__}", location=location
            )
        events.append(row)
        lines.append(location.line or 0)
    return {KEY: {"harness": name, "events": events, "lines": lines}}


def session_error(path: str, line: int, message: str) -> RecordError:
    """A line of a session file that is not JSON: the session is rejected at that line."""
    return RecordError(
        f"invalid JSON ({message}): a session file needs every line whole; a session still being written "
        "ends in a cut line: build it when the harness has closed it, or remove the line",
        location=Location(path, line=line),
    )


__all__ = ["gather", "harness", "session_error"]
