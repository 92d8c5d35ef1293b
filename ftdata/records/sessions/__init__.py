"""Raw agent sessions (Claude Code, Codex, Pi) and Hugging Face agent-trace rows as chats.

A session file is one record (`ftdata.io.sessions` reads it whole): its events become OpenAI messages with
tool calls, tool results and reasoning, which `formats` reads as any `messages` record; every trained
assistant turn is then what the model wrote, in the context it was given, as the chat machinery guarantees
for any conversation. One reader per harness (`claude_code`, `codex`, `pi`) says what each event becomes.

Why ftdata's own reader, not `datasets`' agent-trace path (which parses through the `teich` package):
teich makes a training set out of a session, not the session's conversation. It drops and reorders events
(empty or "..." assistant fragments, local command output, reasoning moved before text), folds harness
context into invented system text ("Claude Code available skills: ..."), and gives every call a JSON
schema of its own making (built-in guesses per harness, and schemas inferred from the arguments seen), none
of which the model was shown. Here nothing is rewritten: each message is an event of the file (errors name
its `file:line`), what no model context held is left out and counted by kind in a note, sub-agent
sidechains and compaction segments are conversations of their own, and the record has no tool schemas
because the file has none (a note says so; the template renders the calls without a tool list). The rows
`datasets` writes from such files (`harness`, `session_id`, `messages`, `tools`, `metadata`, ...) are read
too, and so are prime-rl's traces-to-HF rows (`rows.trace_row`): their messages and tools as published, the
other columns named in a note.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ftdata.errors import Location, RecordError, UnusableRecord
from ftdata.outcomes import Note, NoteCode, RejectCode
from ftdata.records.sessions import claude_code, codex, pi
from ftdata.records.sessions.turns import Conversation
from ftdata.types import SESSION_FILE, SESSION_HARNESSES

READERS = {"claude_code": claude_code.conversations, "codex": codex.conversations, "pi": pi.conversations}
NAMES = {"claude_code": "Claude Code", "codex": "Codex", "pi": "Pi"}


def harness(row: Any) -> str | None:
    """The harness of a session row (`ftdata.io.sessions.gather`'s), else None."""
    session = row.get(SESSION_FILE) if isinstance(row, Mapping) else None
    name = session.get("harness") if isinstance(session, Mapping) else None
    return name if name in SESSION_HARNESSES else None


@dataclass(frozen=True, slots=True)
class Session:
    """A session file read: its conversations (the session's own first), and what a build says of it."""

    harness: str
    conversations: list[Conversation]
    notes: list[Note]


def read(row: Mapping[str, Any], location: Location, name: str) -> Session:
    """The conversations of session row `row` read as harness `name`'s.

    Raises:
        RecordError: `row` is not a session file of `name` (given as a format for another file).
        UnusableRecord: the session holds no conversation (each of its events left out, or its context in
            another file), the reason saying what was left out.
    """
    session = row.get(SESSION_FILE)
    if harness(row) != name or not isinstance(session, Mapping):
        raise RecordError(
            f"format {name!r} needs a {NAMES[name]} session file (a .jsonl of its events, read whole); "
            f"this record is {'a ' + NAMES[harness(row) or ''] + ' session' if harness(row) else 'not a session file'}",
            location=location,
        )
    conversations, skipped = READERS[name](session["events"], session["lines"])
    notes = _notes(name, skipped)
    if not any(c.messages for c in conversations):
        raise UnusableRecord(
            f"the session holds no conversation to build; {notes[0].text}",
            location=location,
            code=RejectCode.NO_ASSISTANT,
        )
    return Session(name, [c for c in conversations if c.messages], notes)


def _notes(name: str, skipped: Counter[str]) -> list[Note]:
    notes = []
    if skipped:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))
        notes.append(
            Note(NoteCode.SESSION_LEFT_OUT, f"{NAMES[name]} session: left out (no model context held them): {kinds}")
        )
    # Codex writes its base instructions into the file; Claude Code and Pi write neither prompt nor schemas.
    what = "tool schemas" if name == "codex" else "tool schemas and no system prompt"
    text = f"{NAMES[name]} session: the file holds no {what}: built without them (the template writes no tool list)"
    notes.append(Note(NoteCode.SESSION_NO_TOOLS, text))
    return notes


def line_of(location: Location, conversation: Conversation, field: str | None) -> Location:
    """`file:line` of the event a `messages[i]...` field came from (the file itself for any other field)."""
    if field and field.startswith("messages["):
        i = int(field[len("messages[") : field.index("]")])
        if i < len(conversation.lines):
            return Location(location.source, line=conversation.lines[i])
    return location
