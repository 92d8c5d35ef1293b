"""`ftdata preview`: the first records as the model will see them, with what carries loss.

Each record is rendered and masked by the pipeline's own `Stage` (so the preview is the
build), then every character of the rendered text is put in one of four classes:

    trained            inside a token whose label is its id       green background
    masked             record text whose tokens are -100          dim
    template           text the template wrote (headers, default   cyan italic
                       system prompt, date lines, EOS), masked
    trained template   template text that carries loss             green, italic
                       (the end-of-turn marker)

Without colour (not a terminal, `--no-color`) trained text is wrapped in ⟦ ⟧. `--json`
prints one JSON object per line: a header, then one per record (or problem).

Only the requested records are read and tokenized: the reader is a stream, cut by islice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ftdata.errors import Location
from ftdata.formats import compile_filter
from ftdata.measure import Inspector, Measured
from ftdata.pipeline import Stage
from ftdata.render import apply_system
from ftdata.report import Reject
from ftdata.truncation import truncate
from ftdata.types import IGNORE_INDEX, Example, SystemMode, TruncationPolicy

STYLES = {
    (True, False): "black on green",
    (True, True): "italic black on green",
    (False, False): "dim",
    (False, True): "italic cyan",
}
LEGEND = (("trained", (True, False)), ("masked", (False, False)), ("template text", (False, True)))
OPEN, CLOSE = "⟦", "⟧"


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of characters of one class."""

    text: str
    trained: bool
    template: bool


@dataclass(frozen=True, slots=True)
class TokenView:
    """One token: its id, the text it covers, and its label (-100 = no loss)."""

    id: int
    text: str
    label: int


@dataclass
class RecordView:
    """Everything preview shows about one example."""

    location: str
    format: str
    method: str
    total: int
    prompt: int
    response: int
    trained: int
    segments: list[Segment]
    tokens: list[TokenView]
    notes: list[str] = field(default_factory=list)
    truncation: str = ""

    def to_json(self, *, with_tokens: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "record", "location": self.location, "format": self.format}
        out["method"] = self.method
        out["counts"] = {"tokens": self.total, "prompt": self.prompt, "response": self.response}
        out["counts"]["trained"] = self.trained
        out["text"] = "".join(s.text for s in self.segments)
        out["segments"] = [asdict(s) for s in self.segments]
        out["notes"] = self.notes
        out["truncation"] = self.truncation or None
        if with_tokens:
            out["tokens"] = [asdict(t) for t in self.tokens]
        return out


# --- building a view ---------------------------------------------------------------------------


def record_pieces(example: Example, stage: Stage) -> list[str]:
    """The texts a record contributes to the rendering, in order (system prompt option included)."""
    renderer = stage.renderer
    if renderer.system_prompt is not None or renderer.system_mode is SystemMode.FOLD:
        example = apply_system(example, renderer.system_prompt, renderer.system_mode)
    pieces: list[str] = []
    context = example.context
    for message in example.messages:
        pieces.append(message.content)
        if message.role == "user" and context:
            pieces.append(context)
            context = ""
    return pieces


def content_mask(text: str, pieces: Iterable[str]) -> list[bool]:
    """Which characters of `text` come from the record: each piece located in order.

    A piece the template rewrote (not found whole) is located line by line; text that is
    found nowhere counts as template text.
    """
    mask = [False] * len(text)
    cursor = 0
    for piece in pieces:
        for part in _parts(text, piece.strip(), cursor):
            at = text.find(part, cursor)
            if at < 0:
                continue
            mask[at : at + len(part)] = [True] * len(part)
            cursor = at + len(part)
    return mask


def _parts(text: str, piece: str, cursor: int) -> list[str]:
    if not piece:
        return []
    if text.find(piece, cursor) >= 0:
        return [piece]
    return [line.strip() for line in piece.splitlines() if line.strip()]


def _offsets(stage: Stage, measured: Measured) -> list[tuple[int, int]]:
    """Character offsets of the record's tokens (without the BOS that ftdata adds)."""
    rendered, row = measured.rendered, measured.tokenized
    encoding = stage.tokenizer.backend_tokenizer.encode(rendered.text, add_special_tokens=False)
    if encoding.ids == row.input_ids[row.prefix :]:
        return list(encoding.offsets)
    # The masker re-tokenized this record split at span edges (see masking.REPAIRED).
    return stage.masker.split_encode(rendered)[1]


def segments_of(
    text: str, *, offsets: list[tuple[int, int]], labels: list[int], content: list[bool]
) -> list[Segment]:
    """Split `text` into runs of (trained, template) characters."""
    trained = [False] * len(text)
    for (start, end), label in zip(offsets, labels):
        if label != IGNORE_INDEX:
            trained[start:end] = [True] * (end - start)
    out: list[Segment] = []
    start = 0
    for i in range(1, len(text) + 1):
        if i == len(text) or (trained[i], content[i]) != (trained[start], content[start]):
            out.append(Segment(text[start:i], trained[start], not content[start]))
            start = i
    return out


def build_view(stage: Stage, measured: Measured) -> RecordView:
    """The `RecordView` of one measured example."""
    row, rendered = measured.tokenized, measured.rendered
    offsets = _offsets(stage, measured)
    labels = row.labels[row.prefix :]
    content = content_mask(rendered.text, record_pieces(measured.example, stage))
    prefix_text = [stage.tokenizer.convert_ids_to_tokens(i) for i in row.input_ids[: row.prefix]]
    segments = [Segment(t, False, True) for t in prefix_text]
    segments += segments_of(rendered.text, offsets=offsets, labels=labels, content=content)
    tokens = [TokenView(i, t, -100) for i, t in zip(row.input_ids[: row.prefix], prefix_text)]
    tokens += [
        TokenView(i, rendered.text[start:end], label)
        for i, (start, end), label in zip(row.input_ids[row.prefix :], offsets, labels)
    ]
    return RecordView(
        location=measured.location, format=measured.example.format, method=rendered.method,
        total=measured.total, prompt=measured.prompt, response=measured.response, trained=measured.trained,
        segments=segments, tokens=tokens, notes=list(row.notes), truncation=_truncation(stage, measured),
    )  # fmt: skip


def _truncation(stage: Stage, measured: Measured) -> str:
    opts = stage.options
    if measured.total <= opts.max_length:
        return ""
    if opts.truncation is TruncationPolicy.ERROR:
        return f"{measured.total} tokens > max_length {opts.max_length}: truncation=error stops a build here"
    result = truncate(measured.tokenized, max_length=opts.max_length, policy=opts.truncation)
    return f"truncation={opts.truncation.value}: {result.reason}" + ("" if result.rows else " (record dropped)")


def select(
    records: Iterable[tuple[Location, Any]], *, filter: Any, offset: int, n: int
) -> Iterator[tuple[Location, Any]]:
    """Records `offset` .. `offset + n` (after the filter), read lazily."""
    keep = compile_filter(filter)
    if keep is not None:
        records = ((loc, row) for loc, row in records if keep(row, loc))
    return islice(records, offset, offset + n)


def views(stage: Stage, records: Iterable[tuple[Location, Any]]) -> Iterator[RecordView | Reject]:
    """A view (or a problem) per example of `records`, one at a time."""
    for item in Inspector(stage).run(records, batch_size=1):
        yield item if isinstance(item, Reject) else build_view(stage, item)


# --- printing ----------------------------------------------------------------------------------


def _visible(token: str) -> str:
    return token.replace("\n", "\\n").replace("\t", "\\t").replace(" ", "␣") or "∅"


class Printer:
    """Prints the header and records as rich text, plain text or JSON lines."""

    def __init__(self, console: Console, *, as_json: bool, show_tokens: bool):
        self.console = console
        self.as_json = as_json
        self.show_tokens = show_tokens
        self.plain = console.color_system is None or console.no_color

    def _line(self, text: str | Text) -> None:
        """One line (or block) of output, never re-wrapped: long lines stay whole for pipes."""
        self.console.print(Text(text) if isinstance(text, str) else text, soft_wrap=True, highlight=False)

    def _json(self, obj: dict[str, Any]) -> None:
        self.console.file.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.console.file.flush()

    def header(self, source: str, stage: Stage, *, tokenizer: str) -> None:
        renderer, opts = stage.renderer, stage.options
        markers = renderer.markers
        warnings = list(markers.warnings) if markers else []
        if self.as_json:
            self._json({
                "type": "header", "source": source, "tokenizer": tokenizer,
                "template": renderer.name, "markers": markers.to_dict() if markers else None,
                "warnings": warnings, "options": opts.fingerprint_fields(),
            })  # fmt: skip
            return
        print_ = self._line
        print_(f"source     {source}")
        print_(f"tokenizer  {tokenizer}")
        print_(f"template   {renderer.name}  (mask={opts.mask.value}, max_length={opts.max_length})")
        if markers:
            print_(
                f"markers    user {markers.user_header!r}  assistant {markers.assistant_header!r}  "
                f"end-of-turn {markers.eot!r}  system {markers.system_support}"
            )
        for warning in warnings:
            print_(Text(f"warning    template {warning}", style="yellow"))
        if self.plain:
            print_(f"legend     {OPEN}trained{CLOSE} (labels = token ids); all other text is masked (-100)")
        else:
            legend = Text("legend     ")
            for label, key in LEGEND:
                legend.append(label, style=STYLES[key]).append("  ")
            print_(legend)

    def record(self, number: int, view: RecordView) -> None:
        if self.as_json:
            self._json(view.to_json(with_tokens=self.show_tokens))
            return
        counts = (
            f"{view.total} tokens = {view.prompt} prompt + {view.response} response; {view.trained} trained"
        )
        self._line("")
        self._line(Text(f"── record {number} · {view.location} · {view.format} · {counts}", style="bold"))
        self._line(self._text(view))
        for note in view.notes:
            self._line(Text(f"note: {note}", style="yellow"))
        if view.truncation:
            self._line(Text(f"note: {view.truncation}", style="yellow"))
        if self.show_tokens:
            self.console.print(self._table(view))

    def problem(self, number: int, reject: Reject) -> None:
        if self.as_json:
            self._json({"type": "problem", "location": reject.location, "stage": reject.stage, "reason": reject.reason})
            return
        self._line("")
        title = f"── record {number} · {reject.location} · PROBLEM ({reject.stage}): {reject.reason}"
        self._line(Text(title, style="bold red"))

    def _text(self, view: RecordView) -> Text:
        text = Text()
        if self.plain:
            inside = False
            for seg in view.segments:
                if seg.trained != inside:
                    text.append(OPEN if seg.trained else CLOSE)
                    inside = seg.trained
                text.append(seg.text)
            if inside:
                text.append(CLOSE)
            return text
        for seg in view.segments:
            text.append(seg.text, style=STYLES[seg.trained, seg.template])
        return text

    def _table(self, view: RecordView) -> Table:
        table = Table("#", "id", "token", "label", box=None, pad_edge=False)
        for i, token in enumerate(view.tokens):
            style = "" if self.plain else ("green" if token.label != IGNORE_INDEX else "dim")
            table.add_row(str(i), str(token.id), Text(_visible(token.text)), str(token.label), style=style)
        return table


def run(
    stage: Stage,
    records: Iterable[tuple[Location, Any]],
    *,
    printer: Printer,
    source: str,
    tokenizer: str,
    start: int = 1,
) -> int:
    """Print the header and one view per example (numbered from `start`); return how many.

    Raises:
        RecordError: a malformed record with on_error=raise (what a build would do).
    """
    printer.header(source, stage, tokenizer=tokenizer)
    shown = 0
    for shown, item in enumerate(views(stage, records), start=1):
        if isinstance(item, Reject):
            printer.problem(start + shown - 1, item)
        else:
            printer.record(start + shown - 1, item)
    return shown


__all__ = ["Printer", "RecordView", "Segment", "TokenView", "build_view", "content_mask", "run", "select", "views"]
