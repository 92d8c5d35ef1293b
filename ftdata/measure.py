"""Inspect records one by one with the pipeline's `Stage`: format, render, mask; no truncation.

`ftdata preview` and `ftdata stats` run on this. It takes the same code paths as a build (what
they show is what a build does) but keeps every record whole instead of flattening it into
Arrow chunks. Token counts of one record:

    total    every token of the record, with the BOS that ftdata adds
    response tokens of the assistant turns plus their end-of-turn markers: what carries loss
             under mask=all_assistant (per-message `train` flags in the data still apply)
    trained  tokens that carry loss under the chosen mask
    prompt   total - response
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ftdata.errors import Location, RecordError, UnusableRecord
from ftdata.masking import Tokenized
from ftdata.pipeline import Stage
from ftdata.render import Renderer
from ftdata.report import Reject
from ftdata.types import Example, MaskPolicy, Rendered, count_trained


@dataclass(frozen=True, slots=True)
class Measured:
    """One example, rendered and masked, with its response token count."""

    example: Example
    rendered: Rendered
    tokenized: Tokenized
    response: int

    @property
    def location(self) -> str:
        return str(self.example.source)

    @property
    def total(self) -> int:
        return len(self.tokenized.input_ids)

    @property
    def trained(self) -> int:
        return count_trained(self.tokenized.labels)

    @property
    def prompt(self) -> int:
        return self.total - self.response


class Inspector:
    """Runs a `Stage` over records and yields a `Measured` or a `Reject` per example.

    Malformed records raise `RecordError` when `on_error="raise"` (as a build would) and
    become rejects with `on_error="skip"`; unusable records are always rejects.
    """

    def __init__(self, stage: Stage):
        self.stage = stage
        opts = stage.options
        # Response counts need the all_assistant spans; other masks render a second time.
        self._responses: Renderer | None = None
        if opts.mask is not MaskPolicy.ALL_ASSISTANT:
            self._responses = Renderer.from_options(stage.tokenizer, opts, mask=MaskPolicy.ALL_ASSISTANT)

    def _reject(self, exc: RecordError, location: Location, stage: str) -> Reject:
        return Reject.from_error(exc, location, stage, on_error=self.stage.options.on_error)

    def examples(self, records: Iterable[tuple[Location, Any]]) -> Iterator[Example | Reject]:
        """Format each record into its examples (or a reject)."""
        for location, row in records:
            try:
                yield from self.stage.examples(location, row)
            except RecordError as exc:
                yield self._reject(exc, location, "format")

    def measure(self, examples: Sequence[Example]) -> list[Measured | Reject]:
        """Render and mask a batch of examples (one tokenizer call for the batch)."""
        results: list[Measured | Reject | None] = [None] * len(examples)
        todo: list[tuple[int, Example, Rendered]] = []
        for i, example in enumerate(examples):
            try:
                todo.append((i, example, self.stage.renderer(example)))
            except RecordError as exc:
                results[i] = self._reject(exc, example.source, "render")
        masked = self.stage.masker([r for _, _, r in todo]) if todo else []
        responses = self._response_counts([e for _, e, _ in todo], masked)
        for (i, example, rendered), row, response in zip(todo, masked, responses):
            if isinstance(row, UnusableRecord):
                results[i] = Reject(str(example.source), "verify", row.reason)
            else:
                results[i] = Measured(example, rendered, row, response)
        return [r for r in results if r is not None]

    def _response_counts(self, examples: list[Example], masked: list[Tokenized | UnusableRecord]) -> list[int]:
        if self._responses is None:
            return [count_trained(m.labels) if isinstance(m, Tokenized) else 0 for m in masked]
        rendered: list[Rendered | None] = []
        for example in examples:
            try:
                rendered.append(self._responses(example))
            except RecordError:
                rendered.append(None)
        ok = [r for r in rendered if r is not None]
        rows = iter(self.stage.masker(ok) if ok else [])
        counts = []
        for r in rendered:
            row = next(rows) if r is not None else None
            counts.append(count_trained(row.labels) if isinstance(row, Tokenized) else 0)
        return counts

    def run(self, records: Iterable[tuple[Location, Any]], *, batch_size: int) -> Iterator[Measured | Reject]:
        """Measure every example of `records`, in source order, `batch_size` at a time."""
        batch: list[Example] = []
        for item in self.examples(records):
            if isinstance(item, Reject):
                yield from self.measure(batch)
                batch = []
                yield item
                continue
            batch.append(item)
            if len(batch) >= batch_size:
                yield from self.measure(batch)
                batch = []
        yield from self.measure(batch)
