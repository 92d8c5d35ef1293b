"""`ftdata preview` of preference data: each pair's prompt once, then each completion with its trained tokens.

    ── pair 1 · data.json[0] · sharegpt · prompt 53 tokens; chosen 312, rejected 280 (trained)
    prompt    <|im_start|>user\\nHi!<|im_end|>\\n<|im_start|>assistant\\n
    chosen    ⟦Hello! How can I help?<|im_end|>⟧
    rejected  ⟦Go away.<|im_end|>⟧

The rows are the build's (the pair task through the run loop, reducer `pair_views`): the prompt as
inference tokenizes it, alone, and each completion as the model writes it after that prompt. The
text classes and the printer are the SFT preview's (`ftdata.cli.preview`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ftdata.cli.content_spans import content_mask, record_pieces, schema_region
from ftdata.cli.preview import (
    UNICODE,
    Printer,
    RecordView,
    Segment,
    TokenView,
    _truncation,
    Window,
    segments_of,
)
from ftdata.outcomes import Note
from ftdata.run.stage import Ran, Stage
from ftdata.run.preference import MeasuredPair, Side, continuation
from ftdata.run.report import Reject
from ftdata.types import IGNORE_INDEX, Pair

__all__ = ["PAIR_WINDOW", "PairView", "pair_views"]


@dataclass
class PairView:
    """Everything preview shows of one pair: the prompt and each
    completion as `RecordView`s (their segments and tokens)."""

    location: str
    format: str
    method: str
    prompt: RecordView
    completions: dict[str, RecordView]
    notes: list[Note] = field(default_factory=list)
    truncation: str = ""

    def to_json(self, *, with_tokens: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "pair", "location": self.location, "format": self.format, "method": self.method}
        parts = {"prompt": self.prompt, **self.completions}
        out["counts"] = {name: view.total for name, view in parts.items()}
        out.update({name: "".join(s.text for s in view.segments) for name, view in parts.items()})
        out["notes"] = [note.to_dict() for note in self.notes]
        out["truncation"] = self.truncation or None
        if with_tokens:
            out["tokens"] = {name: [asdict(t) for t in view.tokens] for name, view in parts.items()}
        return out


def _part(location: str, segments: list[Segment], tokens: list[TokenView], trained: int) -> RecordView:
    total = len(tokens)
    return RecordView(location, "", "", total, total - trained, trained, trained, segments, tokens)


def _prompt_view(stage: Stage, item: MeasuredPair) -> RecordView:
    """The prompt as inference tokenizes it: every token masked, record text and template text told apart."""
    row, text = item.tokenized, item.rendered.text
    content = content_mask(text, record_pieces(item.example, stage))
    start, end = schema_region(item.example, stage)
    content[start:end] = ["tools"] * (end - start)
    offsets = list(row.offsets)
    prefix = [stage.tokenizer.convert_ids_to_tokens(i) for i in row.input_ids[: row.prefix]]
    segments = [Segment(t, False, True) for t in prefix]
    segments += segments_of(text, offsets=offsets, labels=row.labels[row.prefix :], content=content)
    tokens = [TokenView(i, t, IGNORE_INDEX) for i, t in zip(row.input_ids[: row.prefix], prefix)]
    tokens += [TokenView(i, text[a:b], IGNORE_INDEX) for i, (a, b) in zip(row.input_ids[row.prefix :], offsets)]
    return _part(item.location, segments, tokens, 0)


def _completion_view(stage: Stage, item: MeasuredPair, side: Side, reply: tuple[Any, ...]) -> RecordView:
    """One completion: its tokens (trained, but the tool results between the turns of a trajectory's), over the
    text the template writes for the reply's messages."""
    text = continuation(side.rendered, stage.masker.anchor_before(side.rendered.text[: side.rendered.spans[0][0]]))
    begin, end = text.spans[0][0], text.spans[-1][1]
    shown = text.text[begin:end]
    offsets = [
        (a - begin, b - begin)
        for a, b in list(side.tokenized.offsets)[side.start - side.tokenized.prefix : side.end - side.tokenized.prefix]
    ]
    content = content_mask(shown, record_pieces(replace(item.example, messages=reply, context=""), stage))
    labels = [i if bit else IGNORE_INDEX for i, bit in zip(side.ids, side.mask)]
    segments = segments_of(shown, offsets=offsets, labels=labels, content=content)
    tokens = [TokenView(i, shown[a:b], label) for i, label, (a, b) in zip(side.ids, labels, offsets)]
    return _part(item.location, segments, tokens, sum(side.mask))


def build_pair_view(stage: Stage, item: MeasuredPair) -> PairView:
    """The `PairView` of one measured pair (the note says what truncation does to it)."""
    record = item.record
    names = (
        ("chosen", "rejected")
        if isinstance(record, Pair)
        else (f"completion ({'desirable' if record.label else 'undesirable'})",)
    )
    replies = (
        ((record.chosen, *record.chosen_rest), (record.rejected, *record.rejected_rest))
        if isinstance(record, Pair)
        else ((record.completion, *record.rest),)
    )
    completions = {
        name: _completion_view(stage, item, side, reply) for name, side, reply in zip(names, item.sides, replies)
    }
    return PairView(
        location=item.location,
        format=item.example.format,
        method=item.rendered.method,
        prompt=_prompt_view(stage, item),
        completions=completions,
        notes=list(item.tokenized.notes),
        truncation=_truncation(stage, item),
    )


def pair_views(stage: Stage, ran: Ran) -> list[PairView | Reject]:
    """The preview reducer of pairs: a view (or a problem) per pair of the batch."""
    return [item if isinstance(item, Reject) else build_pair_view(stage, item) for _, item, _ in ran.outcomes]


def show(printer: Printer, number: int, view: PairView) -> None:
    """Print one pair: a rule with its counts, the prompt, each completion, the notes (each once)."""
    if printer.as_json:
        printer._json(view.to_json(with_tokens=printer.show_tokens))
        return
    counts = ", ".join(
        f"{name.split()[0]} {part.total}"
        if part.trained == part.total
        else f"{name.split()[0]} {part.trained} of {part.total}"
        for name, part in view.completions.items()
    )
    rule, dot = (printer.glyphs.rule, " · " if printer.glyphs is UNICODE else " | ")
    printer._line("")
    printer._line(
        f"{rule} pair {number}{dot}{view.location}{dot}{view.format}{dot}prompt {view.prompt.total} tokens; "
        f"{counts} (trained)"
    )
    for name, part in (("prompt", view.prompt), *view.completions.items()):
        printer._line(f"{name}:")
        printer._line(printer._text(part))
        if printer.show_tokens:
            printer.console.print(printer._table(part))
    printer.notes(view.notes, view.truncation)


PAIR_WINDOW = Window(
    pair_views, show, rows="the prompt as inference tokenizes it, then each completion (all of it trained)"
)
