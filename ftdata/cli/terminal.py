"""Terminal safety: data never reaches the terminal as control characters.

A record can hold escape sequences (OSC 52 writes the clipboard, `ESC[2J` clears the
screen, `ESC]8` forges links). Everything ftdata prints to a terminal goes through
`SafeConsole`, which shows such characters escaped (`\\x1b`) instead of emitting them;
Rich's own styling codes are added after this step and are unaffected.

    >>> escape_controls("a\\x1b]52;c;SGVsbG8=\\x07b")
    'a\\\\x1b]52;c;SGVsbG8=\\\\x07b'
"""

from __future__ import annotations

import codecs
import json
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from rich.console import Console, Group
from rich.segment import Segment
from rich.table import Table

# C0 controls except newline and tab, DEL, and the C1 controls (U+0080-U+009F: U+009B is a CSI).
_CONTROLS = [c for c in range(0x20) if c not in (0x09, 0x0A)] + [0x7F, *range(0x80, 0xA0)]
_ESCAPES = {c: f"\\x{c:02x}" for c in _CONTROLS}


def escape_controls(text: str) -> str:
    """`text` with every terminal control character written as a visible `\\xNN` escape."""
    return text.translate(_ESCAPES)


# The non-ASCII characters ftdata itself prints: preview's markers, rules and token glyphs, stats' bars.
GLYPHS = "⟦⟧⟪⟫⟨⟩⦃⦄─␣∅█▏·"


def is_utf(encoding: str | None) -> bool:
    """True when text in `encoding` can hold any character (UTF-8, -16, -32)."""
    try:
        return codecs.lookup(encoding or "ascii").name.startswith("utf")
    except LookupError:
        return False


def fit_output_encoding(*streams: TextIO) -> None:
    """Make `streams` (default: stdout and stderr) unable to raise `UnicodeEncodeError`.

    Output redirected on Windows is cp1252 (`PYTHONIOENCODING=cp1252` does the same anywhere):
    a `⟦` or a Chinese record would end the command with a traceback. A character the encoding
    lacks is written as a `\\u27e6` escape instead; ftdata's own markers switch to ASCII
    (`unicode_ok` is then False).
    """
    for stream in streams or (sys.stdout, sys.stderr):
        if not is_utf(getattr(stream, "encoding", None)) and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def unicode_ok(console: Console) -> bool:
    """True when `console`'s output encoding can write ftdata's non-ASCII markers."""
    try:
        GLYPHS.encode(console.encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def dumps(obj: Any, console: Console, **kwargs: Any) -> str:
    """`json.dumps` for `console`: non-ASCII text as is on a UTF stream, `\\uXXXX` escapes elsewhere."""
    return json.dumps(obj, ensure_ascii=not is_utf(console.encoding), **kwargs)


def _rstripped(text: str) -> str:
    return "".join(line.rstrip(" ") + "\n" for line in text.splitlines())


class SafeConsole(Console):
    """A Rich console that escapes control characters in everything it renders; tables printed
    to a pipe or file carry no trailing spaces (Rich pads every cell to its column's width)."""

    def on_broken_pipe(self) -> None:
        """A closed pipe (`ftdata preview | head`) is a reader that has seen enough, not an
        error: print nothing more and let the command end (the CLI exits 0); Rich would exit 1."""
        self.quiet = True
        raise BrokenPipeError(32, "Broken pipe")

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if self.is_terminal or not any(isinstance(o, (Table, Group)) for o in objects):
            super().print(*objects, **kwargs)
            return
        with self.capture() as captured:
            super().print(*objects, **kwargs)
        self.file.write(_rstripped(captured.get()))

    def render(self, renderable: Any, options: Any = None) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control or segment.text.isprintable():
                yield segment
            else:
                yield Segment(escape_controls(segment.text), segment.style)
