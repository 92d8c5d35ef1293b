"""What a chat template reads from the clock, as an input of the build.

Llama 3.x, Granite, gpt-oss and Mistral Small write the day into every prompt (`strftime_now("%d %b %Y")`,
transformers' global: `datetime.now()`). A build's rows hold the day it rendered, so that day is an input like a
file's bytes: a build cached yesterday is not today's build. `clock_input` reads the template's own calls (Jinja's
parser, never a render) and gives what each of them gives now; a call whose format is not a constant gives the
instant, and such a build is never served from the cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime

from jinja2 import TemplateSyntaxError, nodes

from ftdata.chat.sandbox import chat_environment
from ftdata.guard.inputs import Input, InputKind, text_digest

CLOCK = "strftime_now"  # transformers' chat-template global that reads the clock


def clock_formats(source: str) -> tuple[str | None, ...]:
    """The formats of the template's `strftime_now(...)` calls, in order and once each; None for a format that is
    not a constant string. () when the template never calls it; (None,) when it names it but does not parse in
    transformers' environment (its `{% generation %}` tags included): its render fails and says why."""
    if CLOCK not in source:
        return ()
    try:
        tree = chat_environment().parse(source)
    except TemplateSyntaxError:
        return (None,)
    found: dict[str | None, None] = {}
    for call in tree.find_all(nodes.Call):
        if isinstance(call.node, nodes.Name) and call.node.name == CLOCK:
            first = call.args[0] if call.args else None
            found[first.value if isinstance(first, nodes.Const) and isinstance(first.value, str) else None] = None
    return tuple(found)


def _now() -> datetime:
    """The clock a render reads: transformers' `strftime_now` calls its module's `datetime.now()`."""
    from transformers.utils import chat_template_utils

    clock: type[datetime] = getattr(chat_template_utils, "datetime", datetime)
    return clock.now()


def _sources(template: str | Mapping[str, str] | None) -> Iterator[str]:
    if isinstance(template, str):
        yield template
    elif isinstance(template, Mapping):
        yield from (t for t in template.values() if isinstance(t, str))


def clock_input(template: str | Mapping[str, str] | None, *, now: datetime | None = None) -> Input | None:
    """The clock as the template reads it now (`strftime_now('%d %b %Y') = 26 Nov 2026`), or None when it does not."""
    formats = [f for source in _sources(template) for f in clock_formats(source)]
    if not formats:
        return None
    now = now or _now()
    read = "; ".join(
        f"{CLOCK}({f!r}) = {now.strftime(f)}" if f is not None else f"{CLOCK}(...) at {now.isoformat()}"
        for f in dict.fromkeys(formats)
    )
    return Input(InputKind.CLOCK, read, text_digest(read), files=0)


__all__ = ["CLOCK", "clock_formats", "clock_input"]
