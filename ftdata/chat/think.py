"""Reasoning written inside an assistant's content: `<think>…</think>answer`, as DeepSeek-R1 distills and
most open reasoning sets store it.

A chat template that writes reasoning (`reasoning_content` / `thinking`) writes it in its own syntax
(`<think>\\n…\\n</think>\\n\\n`, `<seed:think>`, gpt-oss's analysis channel) and by its own rules for
history turns. Left in the content, the block would be written as the answer's text: twice over
(an empty think block, then the content's own), in the wrong markup, or rejected where `<think>` is a
control token of the tokenizer. So a leading think block of an assistant content is the turn's
reasoning: `lift` moves it there, and the template decides how to write it. A template that never
writes reasoning gets the content as it is (trained as text, or rejected where `<think>` is a control
token, as before).

>>> from ftdata.types import Example, Message
>>> from ftdata.errors import Location
>>> ex = Example((Message("user", "2+2?"), Message("assistant", "<think>\\nAdd.\\n</think>\\n\\n4")), Location("d"))
>>> lifted, turns = lift(ex)
>>> lifted.messages[1].reasoning, lifted.messages[1].content, turns
('Add.', '4', (1,))
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from ftdata.outcomes import Note, NoteCode
from ftdata.types import Example

# A leading block: whitespace, the opener, the reasoning (up to the first closer), the closer.
_LEADING = re.compile(r"\s*<think>(.*?)</think>", re.DOTALL)
MOVED = "messages[{i}]: the leading <think>…</think> of the content is the turn's reasoning; the chat template writes it"


def lift(example: Example) -> tuple[Example, tuple[int, ...]]:
    """`example` with each assistant content's leading think block moved into the turn's reasoning, and the
    indices of the turns moved. A turn that has reasoning already, or whose content carries character spans
    (`train_detail`, which the move would shift), is left as it is."""
    messages, turns = list(example.messages), []
    for i, m in enumerate(messages):
        if m.role != "assistant" or m.reasoning is not None or m.train_detail is not None or "</think>" not in m.content:
            continue
        if (block := _LEADING.match(m.content)) is None:
            continue
        messages[i] = replace(m, reasoning=block[1].strip() or None, content=m.content[block.end() :].lstrip())
        turns.append(i)
    return (replace(example, messages=tuple(messages)), tuple(turns)) if turns else (example, ())


def notes(turns: Iterable[int]) -> tuple[Note, ...]:
    """One `reasoning_moved` note per turn moved (a build counts them: trained turns whose block was moved)."""
    return tuple(Note(NoteCode.REASONING_MOVED, MOVED.format(i=i)) for i in turns)


def moved(found: tuple[Note, ...]) -> int:
    """How many turns of a rendering had their think block moved into reasoning."""
    return sum(note.code is NoteCode.REASONING_MOVED for note in found)
