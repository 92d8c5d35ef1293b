"""`ftdata preview`: the first records as the model will see them, with what carries loss.

Each record goes through the build's run loop (`loop.run`, one record per batch: the preview
is the build, reducer `views`), then every character of the rendered text is put in one of four classes:

    trained            inside a token whose label is its id       green background
    masked             record text whose tokens are -100          dim
    template           text the template wrote (headers, default   cyan italic
                       system prompt, date lines, EOS), masked
    trained template   template text that carries loss             green, italic
                       (the end-of-turn marker)

Without colour (not a terminal, `--no-color`) trained text is wrapped in ⟦ ⟧. `--json`
prints one JSON object per line: a header, then one per record (or problem).

Only the requested records are read and tokenized: the loop reads no further than the last one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from itertools import chain
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ftdata.run import loop
from ftdata.run.stage import Ran, Stage
from ftdata.run.seam import Item
from ftdata.run.sft import Measured
from ftdata.run.trees import RecordTrees, record_trees
from ftdata.run.executors import LocalExecutor
from ftdata.chat.markers import RoleMarkers
from ftdata.chat.supervision import describe
from ftdata.outcomes import Note, NoteCode
from ftdata.options import RunOptions, plain
from ftdata.run.report import BuildReport, Reject, TaskChoice
from ftdata.cli.content_spans import RESULTS_ENCODED, content_mask, record_pieces, results_encoded, schema_region
from ftdata.cli.terminal import dumps, escape_controls, unicode_ok
from ftdata.chat.trajectory import SplitRow
from ftdata.tokens.layouts import TREE, built_layout
from ftdata.types import IGNORE_INDEX, TruncationPolicy
from ftdata.media.summary import collapse_segments, collapse_tokens

STYLES = {
    (True, False): "black on green",
    (True, True): "italic black on green",
    (False, False): "dim",
    (False, True): "italic cyan",
}
LEGEND = (("trained", (True, False)), ("masked", (False, False)), ("template text", (False, True)))
# Tool text: schemas the template writes for `tools`, tool results, tool calls (name + arguments).
KINDS = {
    "tools": ("tool schemas", "italic magenta"),
    "result": ("tool results", "magenta"),
    "call": ("tool calls", "bold underline"),
}


@dataclass(frozen=True)
class Glyphs:
    """The characters plain output marks text with: trained text, each tool kind, the record
    rule, and a space and an empty token in the --tokens table."""

    trained: tuple[str, str]
    kinds: dict[str, tuple[str, str]]
    rule: str
    space: str
    empty: str


UNICODE = Glyphs(("⟦", "⟧"), {"tools": ("⟪", "⟫"), "result": ("⟨", "⟩"), "call": ("⦃", "⦄")}, "──", "␣", "∅")
# For output that cannot hold them (cp1252 when redirected on Windows).
ASCII = Glyphs(
    ("[[", "]]"), {"tools": ("{{", "}}"), "result": ("<<", ">>"), "call": ("((", "))")}, "--", "~", "(empty)"
)
OPEN, CLOSE = UNICODE.trained


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of characters of one class; `kind` marks tool text: tools (schemas), result, call."""

    text: str
    trained: bool
    template: bool
    kind: str = ""


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
    response: int | None  # None: not counted
    trained: int
    segments: list[Segment]
    tokens: list[TokenView]
    notes: list[Note] = field(default_factory=list)
    truncation: str = ""
    split_row: SplitRow | None = None  # one of the rows of a record split by history=inference
    tree: RecordTrees | None = None  # history=tree, on a split record's first row: the trees its rows are written as

    def to_json(self, *, with_tokens: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "record", "location": self.location, "format": self.format}
        if self.split_row is not None:
            p = self.split_row
            out["row"] = {
                "index": p.index,
                "count": p.count,
                "turns": list(p.turns),
                "reasons": {str(i): r.value for i, r in p.reasons},
            }
        if self.tree is not None:
            out["tree"] = self.tree.to_dict()
        out["method"] = self.method
        out["counts"] = {"tokens": self.total, "prompt": self.prompt, "response": self.response}
        out["counts"]["trained"] = self.trained
        out["text"] = "".join(s.text for s in self.segments)
        out["segments"] = [asdict(s) for s in self.segments]
        out["notes"] = [note.to_dict() for note in self.notes]
        out["truncation"] = self.truncation or None
        if with_tokens:
            out["tokens"] = [asdict(t) for t in self.tokens]
        return out


# --- building a view ---------------------------------------------------------------------------


def segments_of(text: str, *, offsets: list[tuple[int, int]], labels: list[int], content: list[str]) -> list[Segment]:
    """Split `text` into runs of (trained, kind) characters (`content` from `content_mask`)."""
    trained = [False] * len(text)
    for (start, end), label in zip(offsets, labels):
        if label != IGNORE_INDEX:
            trained[start:end] = [True] * (end - start)
    out: list[Segment] = []
    start = 0
    for i in range(1, len(text) + 1):
        if i == len(text) or (trained[i], content[i]) != (trained[start], content[start]):
            kind = content[start]
            out.append(Segment(text[start:i], trained[start], not kind, "" if kind == "text" else kind))
            start = i
    return out


def build_view(stage: Stage, measured: Measured) -> RecordView:
    """The `RecordView` of one measured example."""
    row, rendered = measured.tokenized, measured.rendered
    offsets = list(row.offsets)  # of the tokens after the BOS ftdata adds, as the masker tokenized them
    labels = row.labels[row.prefix :]
    pieces = record_pieces(measured.example, stage)
    content = content_mask(rendered.text, pieces)
    start, end = schema_region(measured.example, stage)
    content[start:end] = ["tools"] * (end - start)
    prefix_text = [stage.tokenizer.convert_ids_to_tokens(i) for i in row.input_ids[: row.prefix]]
    segments = [Segment(t, False, True) for t in prefix_text]
    segments += collapse_segments(segments_of(rendered.text, offsets=offsets, labels=labels, content=content), rendered)
    tokens = [TokenView(i, t, -100) for i, t in zip(row.input_ids[: row.prefix], prefix_text)]
    tokens += [
        TokenView(i, rendered.text[start:end], label)
        for i, (start, end), label in zip(row.input_ids[row.prefix :], offsets, labels)
    ]
    tokens = collapse_tokens(tokens, offsets, row.prefix, rendered)  # a media item: one marker, not its pad tokens
    return RecordView(
        location=measured.location,
        format=measured.example.format,
        method=rendered.method,
        total=measured.total,
        prompt=measured.prompt,
        response=measured.response,
        trained=measured.trained,
        segments=segments,
        tokens=tokens,
        truncation=_truncation(stage, measured),
        split_row=measured.split_row,
        notes=[*row.notes, *([RESULTS_ENCODED] if results_encoded(rendered.text, pieces) else []), *describe(rendered)],
    )


def _truncation(stage: Stage, measured: Item) -> str:
    opts = stage.options
    if measured.total <= opts.max_length:
        return ""
    if opts.truncation is TruncationPolicy.ERROR:
        return f"{measured.total} tokens > max_length {opts.max_length}: truncation=error stops a build here"
    result = stage.truncate(measured)
    return f"truncation={opts.truncation.value}: {result.reason}" + ("" if result.rows else " (record dropped)")


def describe_training(markers: RoleMarkers) -> str:
    """One line: what a turn trains after the generation prompt, what stops it, tools and reasoning."""
    after = f"{markers.after_prompt!r} + " if markers.after_prompt else ""
    if markers.eot:
        stop = " or ".join(map(repr, markers.stops))
        if markers.eos_appended:  # a closer written only before the next message (Apriel 1.6)
            stop += f" (middle turns) / appended EOS {markers.eos_appended!r} (last turn)"
    else:
        heads = " or ".join(map(repr, markers.stops)) or "nothing"
        stop = f"next header {heads} (middle turns) / appended EOS {markers.eos_appended!r} (last turn)"
    tools = f"calls with {markers.tool_arguments} arguments" if markers.tool_arguments else "no tool calls"
    schemas = "schemas" if markers.renders_tools else "no schemas"
    reasoning = "reasoning" if markers.renders_reasoning else "no reasoning"
    return f"{after}content + {stop}; tools: {schemas}, {tools}; {reasoning}"


def views(stage: Stage, ran: Ran) -> list[RecordView | Reject]:
    """The preview reducer: a view (or a problem) per example of the batch; under history=tree a split record's
    first row also holds the trees the build writes its rows as (`ftdata.run.trees`)."""
    out = [item if isinstance(item, Reject) else build_view(stage, item) for _, item, _ in ran.outcomes]
    if built_layout(stage.options) is not TREE:
        return out
    trees = {grown.record: grown for grown in record_trees(ran, max_length=stage.options.max_length)}
    for (record, _, _), view in zip(ran.outcomes, out):
        grown = trees.pop(record, None)
        if isinstance(view, RecordView) and grown is not None and grown.rows > 1:
            view.tree = grown
    return out


# --- printing ----------------------------------------------------------------------------------


def _visible(token: str, glyphs: Glyphs) -> str:
    return (
        escape_controls(token.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r").replace(" ", glyphs.space))
        or glyphs.empty
    )


def faithful(text: str) -> str:
    """Record text as it is trained, shown: a `\\r` (CSV's `\\r\\n`) and other control characters
    as visible escapes (Rich would drop them), newlines and tabs as they are."""
    return escape_controls(text.replace("\r", "\\r"))


class Printer:
    """Prints the header and records as rich text, plain text or JSON lines."""

    def __init__(self, console: Console, *, as_json: bool, show_tokens: bool, spell: Callable[[str], str] = str):
        self.console = console
        self.as_json = as_json
        self.show_tokens = show_tokens
        self.plain = console.color_system is None or console.no_color
        self.glyphs = UNICODE if unicode_ok(console) else ASCII
        self.spell = spell  # the CLI's spelling of option names in notes (`--system-mode fold`)
        self.said: set[Note] = set()

    def _line(self, text: str | Text) -> None:
        """One line (or block) of output, never re-wrapped: long lines stay whole for pipes."""
        self.console.print(Text(text) if isinstance(text, str) else text, soft_wrap=True, highlight=False)

    def _json(self, obj: dict[str, Any]) -> None:
        self.console.file.write(dumps(obj, self.console) + "\n")
        self.console.file.flush()

    def header(
        self,
        source: str,
        stage: Stage,
        *,
        tokenizer: str,
        task: TaskChoice | None = None,
        rows: str = "",
        trains: bool = True,
    ) -> None:
        """The preview's first lines: source, tokenizer, the task and why (the build summary's `task` line), what
        a row holds (`rows`), template, markers; `trains`: also what the rule trains, the template's warnings
        about it and the legend (a prompt set trains nothing)."""
        renderer, opts = stage.renderer, stage.options
        markers = renderer.markers
        warnings = list(markers.warnings) if markers else []
        if self.as_json:
            self._json(
                {
                    "type": "header",
                    "source": source,
                    "tokenizer": tokenizer,
                    **(task.to_dict() if task is not None else {}),
                    "template": renderer.name,
                    "markers": markers.to_dict() if markers else None,
                    "warnings": warnings,
                    "options": plain(opts),
                }
            )
            return
        print_ = self._line
        print_(f"source     {source}")
        print_(f"tokenizer  {tokenizer}")
        if task is not None:
            print_(f"task       {task.line}")
        if rows:
            print_(f"rows       {rows}")
        if not trains:  # the length limit the task reads: a prompt set's own max_prompt_length, else max_length
            own = "max_prompt_length" in stage.task.rules.own
            limit = (
                f"max_prompt_length={opts.max_prompt_length or opts.max_length}"
                if own
                else f"max_length={opts.max_length}"
            )
            print_(f"template   {renderer.name}  ({limit})")
            if markers:
                print_(
                    f"markers    user {markers.user_header!r}  assistant {markers.assistant_header!r}  system "
                    f"{markers.system_support}"
                )
            return
        print_(f"template   {renderer.name}  (mask={opts.mask.value}, max_length={opts.max_length})")
        if markers:
            print_(
                f"markers    user {markers.user_header!r}  assistant {markers.assistant_header!r}  "
                f"end-of-turn {markers.eot!r}  system {markers.system_support}"
            )
            print_(f"trains     {describe_training(markers)}")
        for warning in warnings:
            print_(Text(f"warning    template {self.spell(warning)}", style="yellow"))
        kinds = KINDS if markers and (markers.renders_tools or markers.tool_arguments) else {}
        if self.plain:
            tools = "".join(
                f", {self.glyphs.kinds[k][0]}{label}{self.glyphs.kinds[k][1]}" for k, (label, _) in kinds.items()
            )
            o, c = self.glyphs.trained
            print_(f"legend     {o}trained{c} (labels = token ids); all other text is masked (-100){tools}")
        else:
            legend = Text("legend     ")
            for label, key in LEGEND:
                legend.append(label, style=STYLES[key]).append("  ")
            for label, style in kinds.values():
                legend.append(label, style=style).append("  ")
            print_(legend)

    def record(self, number: int, view: RecordView) -> None:
        if self.as_json:
            self._json(view.to_json(with_tokens=self.show_tokens))
            return
        counts = f"{view.total} tokens = {view.prompt} prompt + {view.response} response; {view.trained} trained"
        self._line("")
        rule, dot = (self.glyphs.rule, " · " if self.glyphs is UNICODE else " | ")
        self._line(Text(f"{rule} record {number}{dot}{view.location}{dot}{view.format}{dot}{counts}", style="bold"))
        if view.tree is not None:
            self._line(Text(f"tree: {view.tree.describe()}", style="cyan"))
        if view.split_row is not None:
            self._line(Text(f"split: {view.split_row.describe()}", style="cyan"))
        self._line(self._text(view))
        for note in view.notes:
            if note in self.said:
                continue  # boilerplate advice: once per preview
            if note.code in (NoteCode.RESULTS_ENCODED, NoteCode.THINK_BOILERPLATE):
                self.said.add(note)
            self._line(Text(f"note: {self.spell(note.text)}", style="yellow"))
        if view.truncation:
            self._line(Text(f"note: {self.spell(view.truncation)}", style="yellow"))
        if self.show_tokens:
            self.console.print(self._table(view))

    def notes(self, notes: Iterable[Note], fit: str = "") -> None:
        """An item's notes, each once per preview, then what its fit did (`fit`: the reason, when it cut)."""
        for note in notes:
            if note not in self.said:
                self.said.add(note)
                self._line(f"note: {self.spell(note.text)}")
        if fit:
            self._line(f"note: {self.spell(fit)}")

    def problem(self, number: int, reject: Reject) -> None:
        if self.as_json:
            self._json(
                {
                    "type": "problem",
                    "location": reject.location,
                    "stage": reject.stage,
                    "code": reject.code,
                    "reason": reject.reason,
                }
            )
            return
        self._line("")
        rule, dot = (self.glyphs.rule, " · " if self.glyphs is UNICODE else " | ")
        title = (
            f"{rule} record {number}{dot}{reject.location}{dot}PROBLEM ({reject.stage}): {self.spell(reject.reason)}"
        )
        self._line(Text(title, style="bold red"))

    def _text(self, view: RecordView) -> Text:
        text = Text()
        if self.plain:
            inside = False
            opened, closed = self.glyphs.trained
            for seg in view.segments:
                if seg.trained != inside:
                    text.append(opened if seg.trained else closed)
                    inside = seg.trained
                o, c = self.glyphs.kinds.get(seg.kind, ("", ""))
                text.append(f"{o}{faithful(seg.text)}{c}")
            if inside:
                text.append(closed)
            return text
        for seg in view.segments:
            style = STYLES[seg.trained, seg.template]
            if seg.kind:
                style = f"{style} {KINDS[seg.kind][1]}" if seg.trained else KINDS[seg.kind][1]
            text.append(faithful(seg.text), style=style)
        return text

    def _table(self, view: RecordView) -> Table:
        table = Table("#", "id", "token", "label", box=None, pad_edge=False)
        for i, token in enumerate(view.tokens):
            style = "" if self.plain else ("green" if token.label != IGNORE_INDEX else "dim")
            table.add_row(str(i), str(token.id), Text(_visible(token.text, self.glyphs)), str(token.label), style=style)
        return table


def with_fits(stage: Stage, ran: Ran) -> list[tuple[Any, str] | Reject]:
    """A preview reducer of any task: each measured item with what its fit did (the reason it was cut, or ""), or
    its Reject."""
    return [
        item if isinstance(item, Reject) else (item, fit.reason if fit is not None and fit.reason else "")
        for _, item, fit in ran.outcomes
    ]


@dataclass(frozen=True, slots=True)
class Window:
    """How `ftdata preview` shows a task's records: `reduce` makes a view (or a Reject) of each measured item as
    a build's reducer runs, `show(printer, number, view)` prints one; `rows` is the header's line on what a row
    holds (`{task}` and `{unit}` filled in from the stage's task), `trains` whether the header says what is trained,
    `responses` whether the loop keeps each record's response text (SFT's views mark it)."""

    reduce: Callable[[Stage, Ran], list[Any]]
    show: Callable[[Printer, int, Any], None]
    rows: str = ""
    trains: bool = True
    responses: bool = False


def show_window(
    window: Window,
    source: Any,
    stage: Stage,
    *,
    offset: int,
    n: int,
    printer: Printer,
    tokenizer: str,
    task: TaskChoice | None = None,
) -> int:
    """The preview of every task: records `offset` .. `offset + n` through the run loop as a build runs them,
    the header (with the `task` line and what a row holds), then each view numbered from offset + 1 (the rows of a
    split record share its number); return how many records. Under truncation=error a too-long record is shown
    with what a build would do. Read and render errors, and an empty window, surface before the header.

    Raises:
        FtdataError: no records in that window.
        RecordError: a malformed record with on_error=raise (what a build would do).
    """
    parts = loop.run(
        source,
        stage,
        RunOptions(batch_size=1),
        window.reduce,
        report=BuildReport(),
        responses=window.responses,
        lenient=True,
        window=(offset, n),
        on=LocalExecutor(1),
    )
    first = next(parts)  # read errors, and an empty window, surface before any output
    rows = window.rows.format(task=stage.task.task.value, unit=stage.task.unit)
    printer.header(str(source), stage, tokenizer=tokenizer, task=task, rows=rows, trains=window.trains)
    shown = 0
    for item in chain.from_iterable(chain([first], parts)):
        split_row = getattr(item, "split_row", None)
        if split_row is None or split_row.index == 0:  # a record's rows share its number
            shown += 1
        if isinstance(item, Reject):
            printer.problem(offset + shown, item)
        else:
            window.show(printer, offset + shown, item)
    return shown


SFT_WINDOW = Window(views, Printer.record, responses=True)


__all__ = [
    "RESULTS_ENCODED",
    "SFT_WINDOW",
    "Printer",
    "RecordView",
    "Segment",
    "TokenView",
    "build_view",
    "content_mask",
    "show_window",
    "views",
    "Window",
    "with_fits",
]
