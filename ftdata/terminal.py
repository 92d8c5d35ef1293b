"""Terminal safety: data never reaches the terminal as control characters.

A record can hold escape sequences (OSC 52 writes the clipboard, `ESC[2J` clears the
screen, `ESC]8` forges links). Everything ftdata prints to a terminal goes through
`SafeConsole`, which shows such characters escaped (`\\x1b`) instead of emitting them;
Rich's own styling codes are added after this step and are unaffected.

    >>> escape_controls("a\\x1b]52;c;SGVsbG8=\\x07b")
    'a\\\\x1b]52;c;SGVsbG8=\\\\x07b'
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.segment import Segment

# C0 controls except newline and tab, DEL, and the C1 controls (U+0080-U+009F: U+009B is a CSI).
_CONTROLS = [c for c in range(0x20) if c not in (0x09, 0x0A)] + [0x7F, *range(0x80, 0xA0)]
_ESCAPES = {c: f"\\x{c:02x}" for c in _CONTROLS}


def escape_controls(text: str) -> str:
    """`text` with every terminal control character written as a visible `\\xNN` escape."""
    return text.translate(_ESCAPES)


class SafeConsole(Console):
    """A Rich console that escapes control characters in everything it renders."""

    def render(self, renderable: Any, options: Any = None) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control or segment.text.isprintable():
                yield segment
            else:
                yield Segment(escape_controls(segment.text), segment.style)
