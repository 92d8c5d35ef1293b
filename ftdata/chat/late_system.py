"""System turns after the first: where a chat template writes them, and the rule where it does not.

Agent harnesses log system steps in the middle of a trajectory (OpenHands: "Added workspace context" after
the user's task), and ATIF allows them. Qwen, Llama 3 and ChatML templates write such a turn as a system turn
where it stands; Gemma, Mistral and prompt templates raise on it or drop it. Where the template does not
write it, its text joins a user turn, the way those templates take a first system prompt: appended to the
user turn just before it, else put before the user turn just after it; with no user turn beside it, it
becomes a user turn itself. A `system_moved` note says so. The text stays context (never trained).

    user, system, assistant   -> user "task\n\nworkspace context", assistant
    assistant, system, user   -> assistant, user "reminder\n\nnext question"
"""

from __future__ import annotations

from dataclasses import replace

from ftdata.chat.probes import PROBE, probe_messages
from ftdata.chat.sentinels import TemplateRender
from ftdata.errors import TemplateError
from ftdata.outcomes import Note, NoteCode
from ftdata.types import Example, Message

__all__ = ["has_late_system", "join_late_systems", "writes_late_system"]


def writes_late_system(render: TemplateRender) -> bool:
    """Whether the template writes a system turn that comes after an exchange (probe renders, no record)."""
    late = [*probe_messages("u1", "a1"), {"role": "system", "content": PROBE["system"]}, *probe_messages("u2", "a2")]
    try:
        return PROBE["system"] in render(late)
    except TemplateError:
        return False


def has_late_system(example: Example) -> bool:
    """Whether a system message comes after the first message."""
    return any(m.role == "system" for m in example.messages[1:])


def join_late_systems(example: Example) -> Example:
    """`example` with each system message after the first joined to a user turn beside it (the module's rule),
    and a `system_moved` note naming the messages moved."""
    msgs, moved = list(example.messages), []
    for i in range(len(msgs) - 1, 0, -1):  # from the end: the indexes before i stay put
        if msgs[i].role != "system":
            continue
        moved.append(i)
        text = msgs[i].content
        if msgs[i - 1].role == "user":
            msgs[i - 1] = replace(msgs[i - 1], content=f"{msgs[i - 1].content}\n\n{text}")
        elif i + 1 < len(msgs) and msgs[i + 1].role == "user":
            msgs[i + 1] = replace(msgs[i + 1], content=f"{text}\n\n{msgs[i + 1].content}")
        else:
            msgs.insert(i + 1, Message("user", text))
        del msgs[i]
    if not moved:
        return example
    where = ", ".join(f"messages[{i}]" for i in sorted(moved))
    note = Note(
        NoteCode.SYSTEM_MOVED,
        f"{where}: a system turn after the first, which the template does not write "
        "there: its text joined the user turn beside it",
    )
    return replace(example, messages=tuple(msgs), notes=(*example.notes, note))
