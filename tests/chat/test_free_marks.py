"""`sentinels.free_marks`: the private-use characters a text does not hold, in code-point order, read from the text
as an array of code points; checked against `set(text)`, the definition it replaced."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from ftdata.chat.sentinels import free_marks

PLANES = ((0xE000, 0xF900), (0xF0000, 0xFFFFE), (0x100000, 0x10FFFE))


def reference(text: str, n: int) -> list[str]:
    used = set(text)
    every = itertools.chain.from_iterable(range(a, b) for a, b in PLANES)
    return list(itertools.islice((chr(c) for c in every if chr(c) not in used), n))


near = st.sampled_from([0xE000, 0xE001, 0xE002, 0xF8FF, 0xF900, 0xF0000, 0xF0001, 0x10FFFD, 0x1F600, 0xD800, 0x41])
chars = st.one_of(st.characters(), near.map(chr))


@settings(max_examples=300, deadline=None)
@given(st.lists(chars, max_size=40).map("".join))
def test_the_marks_are_those_set_of_the_text_gave(text: str) -> None:
    assert list(itertools.islice(free_marks(text), 8)) == reference(text, 8)


def test_a_text_that_holds_the_first_area_whole_gets_marks_from_the_planes() -> None:
    text = "".join(map(chr, range(0xE000, 0xF900))) + "\ud800 a lone surrogate, é, 😀"
    marks = list(itertools.islice(free_marks(text), 3))
    assert marks == ["\U000f0000", "\U000f0001", "\U000f0002"]
    assert not any(m in text for m in marks)
