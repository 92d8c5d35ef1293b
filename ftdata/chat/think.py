"""Reasoning written inside an assistant's content: `<think>…</think>answer`, as DeepSeek-R1 distills and
most open reasoning sets store it.

A chat template that writes reasoning (`reasoning_content` / `thinking`) writes it in its own syntax
(`<think>\\n…\\n</think>\\n\\n`, `<seed:think>`, gpt-oss's analysis channel) and by its own rules for
history turns. Left in the content, the block would be written as the answer's text: twice over
(an empty think block, then the content's own), in the wrong markup, or rejected where `<think>` is a
control token of the tokenizer. So a leading think block of an assistant content is the turn's
reasoning: `lift` moves it there, and the template decides how to write it — on the turns the template
writes reasoning on (Gemma 4 writes it only on a turn that calls tools: on its other turns the block stays
content). A template that never writes reasoning gets the content as it is, trained as the template writes it.
Where `<think>`/`</think>` are tokens of the tokenizer and the template itself writes them (QwQ, DeepSeek-V3.x,
Nemotron Nano 2 open or close a think block in the generation prompt, or cut the block out of the content),
the leading block's tags are the template's syntax, not control text injected by the data: they stay the
tokenizer's own tokens (`template_tags`, `syntax_free`). Anywhere else such a tag is control text as before.

>>> from ftdata.types import Example, Message
>>> from ftdata.errors import Location
>>> ex = Example((Message("user", "2+2?"), Message("assistant", "<think>\\nAdd.\\n</think>\\n\\n4")), Location("d"))
>>> lifted, turns = lift(ex)
>>> lifted.messages[1].reasoning, lifted.messages[1].content, turns
('Add.', '4', (1,))
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import replace

from ftdata.outcomes import Note, NoteCode
from ftdata.types import Example, Message

# A leading block: whitespace, the opener, the reasoning (up to the first closer), the closer.
OPEN, CLOSE = "<think>", "</think>"
_LEADING = re.compile(r"\s*<think>(.*?)</think>", re.DOTALL)
MOVED = (
    "messages[{i}]: the leading <think>…</think> of the content is the turn's reasoning; the chat template writes it"
)


def lift(example: Example, *, writes: Callable[[Message], bool] = lambda m: True) -> tuple[Example, tuple[int, ...]]:
    """`example` with each assistant content's leading think block moved into the turn's reasoning, and the
    indices of the turns moved. A turn that has reasoning already, whose content carries character spans
    (`train_detail`, which the move would shift), or whose reasoning the template does not write (`writes`
    says no: the block stays content, trained as the template writes it), is left as it is."""
    messages, turns = list(example.messages), []
    for i, m in enumerate(messages):
        if (
            m.role != "assistant"
            or m.reasoning is not None
            or m.train_detail is not None
            or "</think>" not in m.content
        ):
            continue
        if not writes(m):
            continue
        if (block := _LEADING.match(m.content)) is None:
            continue
        messages[i] = replace(m, reasoning=block[1].strip() or None, content=m.content[block.end() :].lstrip())
        turns.append(i)
    return (replace(example, messages=tuple(messages)), tuple(turns)) if turns else (example, ())


def carries(example: Example) -> bool:
    """Whether an assistant turn of `example` carries reasoning: a reasoning field, or a leading think block."""
    return any(
        m.role == "assistant" and (bool(m.reasoning) or ((block := _LEADING.match(m.content)) and block[1].strip()))
        for m in example.messages
    )


def written(example: Example, text: str) -> bool:
    """Whether `text` (a rendering of `example`) writes the reasoning of one of its assistant turns."""
    for m in example.messages:
        block = _LEADING.match(m.content) if m.role == "assistant" else None
        thought = (m.reasoning or (block[1] if block else "")).strip() if m.role == "assistant" else ""
        if thought and thought in text:
            return True
    return False


def notes(turns: Iterable[int]) -> tuple[Note, ...]:
    """One `reasoning_moved` note per turn moved (a build counts them: trained turns whose block was moved)."""
    return tuple(Note(NoteCode.REASONING_MOVED, MOVED.format(i=i)) for i in turns)


def moved(found: tuple[Note, ...]) -> int:
    """How many turns of a rendering had their think block moved into reasoning."""
    return sum(note.code is NoteCode.REASONING_MOVED for note in found)


def template_tags(template: str, controls: Iterable[str]) -> frozenset[str]:
    """The think tags that are control tokens of the tokenizer (`controls`) and that the chat template (its
    source, `template`) writes itself: in a leading think block of an assistant content they are its syntax."""
    return frozenset(tag for tag in (OPEN, CLOSE) if tag in controls and tag in template)


def syntax_free(content: str, tags: frozenset[str]) -> str:
    """An assistant content without the template's own tags (`tags`) of its leading think block: what the
    control-token check looks at. Any other control text, or a tag past the block, is still there.

    >>> syntax_free("<think>a</think>b <think>", frozenset({OPEN, CLOSE}))
    'ab <think>'
    """
    if not tags or (block := _LEADING.match(content)) is None:
        return content
    opener = content[: block.start(1)]
    kept = opener.replace(OPEN, "", 1) if OPEN in tags else opener
    return kept + block[1] + ("" if CLOSE in tags else CLOSE) + content[block.end() :]
