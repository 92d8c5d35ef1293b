"""The record engine: the one loop that formats, renders, masks and rejects records.

    (location, row) ──format──▶ Example ──render──▶ Rendered ──mask──▶ Measured | Reject

`Stage.measure` is that loop; `Stage.run` adds truncation and keeps each record whole, and
every command reduces what it returns (`loop.run` drives it over a source): a build
(`chunk` flattens the kept sequences into token arrays), `ftdata stats` (reduces each
example to a few integers) and `ftdata preview` (shows each example). So a record is
rejected at the same stage, with the same code, by every command. Token counts of one example:

    total    every token of the example, with the BOS that ftdata adds
    response tokens of the assistant turns plus their end-of-turn markers: what carries loss
             under mask=all_assistant (per-message `train` flags in the data still apply)
    trained  tokens that carry loss under the chosen mask
    prompt   total - response
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from itertools import chain
from typing import Any

import numpy as np

from ftdata.guard import limits
from ftdata.guard.inputs import Digests, Input, Stat
from ftdata.errors import Location, RecordError, UnusableRecord
from ftdata.records.formats import FIELD_ALIASES, Columns, to_examples
from ftdata.records.preference import detect_task, looks_like_preference, preference_columns, to_pairs
from ftdata.tokens.masking import Masker, Tokenized, WeightedRow, row_of
from ftdata.options import DataOptions
from ftdata.outcomes import RejectCode, RejectStage
from ftdata.chat.markers import shared_renders
from ftdata.chat.render import Renderer, trained_turns
from ftdata.chat.think import moved
from ftdata.chat.trajectory import SplitRow, split
from ftdata.chat.chat_template import load_chat_template
from ftdata.chat.chat_tokens import with_chat_tokens
from ftdata.io.resources import processor_input, tokenizer_input
from ftdata.chat.supervision import SupervisedRenderer, flagged
from ftdata.run.drift import Drift, recorded, token_drift
from ftdata.run.report import BuildReport, Reject
from ftdata.tokens.truncation import Truncated, Truncator
from ftdata.types import Example, HistoryMode, MaskPolicy, Rendered, Task, TruncationPolicy, count_trained
from ftdata.records.media import attach_columns
from ftdata.media.expand import Media, MediaMasker, MediaRenderer, no_processor

Record = tuple[Location, Any]
# Records rendered and then tokenized at a time within a batch (`Stage.measure`): small enough that a local
# build's threads alternate between Python (under the GIL) and the tokenizer (without it), large enough that
# the tokenizer's per-call cost stays negligible.
SLICE = 64
SIBLING = "another instance of this record was rejected; a record is kept whole or not at all"


@dataclass(frozen=True, slots=True)
class Measured:
    """One example, rendered and masked (not truncated). `response` is counted only when asked for."""

    example: Example
    rendered: Rendered
    tokenized: Tokenized
    response: int | None = None
    part: SplitRow | None = None  # one row of a record split by history=inference (`ftdata.chat.trajectory`)
    drift: tuple[Drift, ...] = ()  # its trained turns' recorded token ids against the trained tokens (`ftdata.run.drift`)

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
        return self.total - (self.response or 0)


Outcome = tuple[int, "Measured | Reject"]  # (index of the record in its batch, what became of one example)


@dataclass
class Chunk:
    """A build's output for one batch: flat token arrays, every reject (for the file) and the counts."""

    ids: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    groups: np.ndarray  # record index in the batch, per sequence: the held-out split keeps records whole
    rejects: list[Reject] = field(default_factory=list)
    report: BuildReport = field(default_factory=BuildReport)
    media: list[list[dict[str, Any]]] | None = None  # per sequence, its `media` column (a build with a processor only)
    # Per token: the loss weight (1 for a sequence without weights); None when no sequence of the batch has any.
    weights: np.ndarray | None = None
    read: dict[str, Stat | None] = field(default_factory=dict)  # the media files the batch read (`Ran.read`)
    sources: list[str] = field(default_factory=list)  # per sequence, its record's location (the `record` column)

    @property
    def records(self) -> int:
        return self.report.records


class Stage:
    """The compiled engine of one set of options: columns, renderer and masker.

    Built once per process (see `loop.StageSpec`); `measure` is the record loop, `run` keeps records whole;
    `inputs` declares the files it read (the build's key is made from them).
    """

    def __init__(self, tokenizer: Any, options: DataOptions):
        self._given = tokenizer  # as loaded: what `inputs` declares
        self.chat_template = load_chat_template(options.chat_template) if options.chat_template is not None else None
        if self.chat_template is not None:  # a copy rendering with it; the processor's template gives way too (Vision)
            tokenizer = self.chat_template.applied(tokenizer)
        if options.add_chat_tokens:  # a copy with the template's markers as tokens (the same tokenizer when they are)
            tokenizer = with_chat_tokens(tokenizer)
        self.tokenizer = tokenizer
        self.options = options
        # Every key is checked once, over SFT's fields and preference data's (`--columns chosen=good` in a
        # preference build, or in an SFT build that trains pairs' chosen side); the SFT reader gets its own.
        self.pair_columns = preference_columns(options.columns)  # to tell preference-shaped rows apart
        self.columns = Columns({name: column for name, column in self.pair_columns.explicit.items() if name in FIELD_ALIASES})
        self.media = None  # media items: expanded by the processor's rules, verified per record (ftdata.media)
        if options.processor is not None:
            self.media = Media(options, tokenizer)
            tokenizer = self.tokenizer = self.media.tokenizer  # with the processor's chat template
        self.renderer = SupervisedRenderer(Renderer.from_options(tokenizer, options))  # type: ignore[assignment]
        self.masker = Masker(tokenizer)
        if self.media is not None:
            self.renderer, self.masker = MediaRenderer(self.renderer, self.media), MediaMasker(self.masker, self.media)
        self.truncator = Truncator(self.renderer, self.masker, max_length=options.max_length, prompt_cut=options.prompt_cut)
        self._responses: Renderer | None = None  # the all_assistant renderer, for response counts
        self._responses_lock = threading.Lock()  # engine=local measures batches on several threads

    @property
    def templates(self) -> tuple[Input, ...]:
        """The template files this stage compiled (a prompt template, a `chat_template` file), as read."""
        return (*self.renderer.inputs, *([self.chat_template.input] if self.chat_template else []))

    def inputs(self, digests: Digests) -> tuple[Input, ...]:
        """What this stage read, by content: the tokenizer (its folder's files and its state), the prompt
        template, the chat template file and the processor folder. The images records name are read per
        record: each batch's are in `Ran.read`."""
        declared = [*self.templates, tokenizer_input(self._given, digests)]
        if self.options.processor is not None:
            declared.append(processor_input(self.options.processor, digests))
        return tuple(declared)

    def examples(self, location: Location, row: Any) -> tuple[Example, ...]:
        if looks_like_preference(row, self.pair_columns) is not None and (chosen := self._chosen(location, row)) is not None:
            examples = chosen
        else:
            examples = to_examples(row, location, format=self.options.format, columns=self.columns, roles=self.options.roles)
        if self.media is not None:  # the row's media columns (`images`), for <image> tags and bare {"type": "image"} parts
            return attach_columns(examples, row, location) if isinstance(row, Mapping) else examples
        for example in examples:
            no_processor(example)
        return examples

    def _chosen(self, location: Location, row: Any) -> tuple[Example, ...] | None:
        """A preference-shaped row in an SFT build. Told task=sft, a pair trains its chosen conversation (a KTO
        row: its conversation, the label unread: None); else the data mixes shapes and the build stops here.

        Raises:
            RecordError: the task was detected from the data's first record, which was SFT-shaped.
        """
        if self.options.task is Task.SFT:
            if looks_like_preference(row, self.pair_columns) is Task.PREFERENCE:
                return tuple(p.chosen_example() for p in to_pairs(row, location, columns=self.pair_columns, roles=self.options.roles))
            return None
        task = detect_task(row, location, columns=self.pair_columns)  # a label to ask about: asks
        raise RecordError(
            f"is {task.value} data (chosen/rejected or a true/false label) but the build is SFT: the data's first "
            f"record is SFT data, or a source read once (a pipe) is not read ahead; choose with --task {task.value} "
            "or --task sft, or split the file by shape",
            location=location,
        )  # fmt: skip

    def _reject(self, exc: RecordError, location: Location, stage: RejectStage) -> Reject:
        return Reject.from_error(exc, location, stage, on_error=self.options.on_error)

    def measure(self, records: list[Record], *, responses: bool = False) -> list[Outcome]:
        """Format, render and mask `records` (one tokenizer call); an outcome per example, in order.

        A row the reader could not read is rejected at stage `read`, a row that is not a
        valid record at `format`, an example the template cannot render faithfully at
        `render`, one whose trained tokens fail the check at `verify`. `responses`: also
        count each example's response tokens (a second masking pass when mask is not
        all_assistant).

        Records are measured `SLICE` at a time, each slice rendered and then tokenized: the threads of a
        local build then take turns (one renders, holding the GIL, while another tokenizes without it)
        instead of rendering a whole batch at once and tokenizing at once, in lockstep.

        Raises:
            RecordError: a malformed record with on_error="raise".
        """
        out: list[Outcome] = []
        for at in range(0, len(records), SLICE):
            out += self._measure(records, at, at + SLICE, responses)
        return out

    def _measure(self, records: list[Record], start: int, end: int, responses: bool) -> list[Outcome]:
        """`measure` of records[start:end], each outcome with its index in `records`."""
        formatted: list[tuple[int, Example | Reject]] = []
        for record, (location, row) in enumerate(records[start:end], start):
            try:
                formatted.extend((record, example) for example in self.examples(location, row))
            except RecordError as exc:
                if exc is row:  # a reader yields a row it could not read faithfully as its error
                    reject = self._reject(exc, location, RejectStage.READ)
                    if reject.code is RejectCode.MALFORMED:  # a bound passed keeps its own code
                        reject = replace(reject, code=RejectCode.UNREADABLE)
                else:
                    reject = self._reject(exc, location, RejectStage.FORMAT)
                formatted.append((record, reject))
        return self.measure_examples(formatted, responses=responses)

    def measure_examples(self, formatted: list[tuple[int, Example | Reject]], *, responses: bool = False) -> list[Outcome]:
        """`measure` from the format stage's outcomes on: render and mask the examples, keep the rejects.

        The limits are read once for the batch (`limits.pinned`), not per render.
        """
        with limits.pinned():
            return self._measure_examples(formatted, responses)

    def _measure_examples(self, formatted: list[tuple[int, Example | Reject]], responses: bool) -> list[Outcome]:
        out: list[Any] = []
        todo: list[tuple[int, Example, Rendered, SplitRow | None]] = []  # (position in `out`, example, rendering, row of a split)
        for record, example in formatted:
            if isinstance(example, Reject):
                out.append((record, example))
                continue
            try:
                rows = self._rows(example)
            except RecordError as exc:
                out.append((record, self._reject(exc, example.source, RejectStage.RENDER)))
                continue
            for row, rendered, part in rows:
                todo.append((len(out), row, rendered, part))
                out.append((record, None))
        masked = self.masker([r for _, _, r, _ in todo]) if todo else []
        counts = self._response_counts([e for _, e, _, _ in todo], masked) if responses else [None] * len(todo)
        for (i, example, rendered, part), row, response in zip(todo, masked, counts):
            if isinstance(row, UnusableRecord):
                reason = f"{row.reason} ({part.describe()})" if part is not None else row.reason
                item: Measured | Reject = Reject(str(example.source), RejectStage.VERIFY, row.code, reason)
            else:
                drift = token_drift(example, row, self.options)
                if self.options.recorded_ids and any(d.differ for d in drift):
                    row, drift = recorded(row, example, drift, self.tokenizer)
                if any(d.differ for d in drift):
                    row = replace(row, notes=(*row.notes, *(d.note() for d in drift if d.differ)))
                item = Measured(example, rendered, row, response, part, drift)
            out[i] = (out[i][0], item)
        return out

    def _rows(self, example: Example) -> list[tuple[Example, Rendered, SplitRow | None]]:
        """The example's rows: one, or under history=inference the fewest that train every turn as inference
        sees it (`ftdata.chat.trajectory`). A multi-turn record's renders are shared among its checks and rows.

        Raises:
            RecordError: the record cannot be rendered (or one of its rows cannot).
        """
        if self.options.history is not HistoryMode.INFERENCE or sum(m.role == "assistant" for m in example.messages) < 2:
            return [(example, self.renderer(example), None)]
        with shared_renders(every=True):
            first = self.renderer(example)
            if not first.unheld:
                return [(example, first, None)]
            trained = [i for i, t in enumerate(trained_turns(flagged(example.messages), self.options.mask)) if t]
            return split(self.renderer, example, trained, first)

    def _response_counts(self, examples: list[Example], masked: list[Tokenized | UnusableRecord]) -> list[int]:
        if self.options.mask is MaskPolicy.ALL_ASSISTANT:
            return [count_trained(m.labels) if isinstance(m, Tokenized) else 0 for m in masked]
        with self._responses_lock:
            if self._responses is None:
                self._responses = Renderer.from_options(self.tokenizer, self.options, mask=MaskPolicy.ALL_ASSISTANT)
        rendered: list[Rendered | None] = []
        for example in examples:
            try:
                rendered.append(self._responses(example))
            except RecordError:
                rendered.append(None)
        rows = iter(self.masker([r for r in rendered if r is not None]))
        counts = []
        for r in rendered:
            row = next(rows) if r is not None else None
            counts.append(count_trained(row.labels) if isinstance(row, Tokenized) else 0)
        return counts

    def tokenize(self, example: Example) -> Tokenized | UnusableRecord:
        """Render and mask one example, no truncation (render errors raise): for checks of one record."""
        return self.masker([self.renderer(example)])[0]

    def truncate(self, item: Measured, *, policy: TruncationPolicy | None = None) -> Truncated:
        """`item` fitted to max_length by `policy` (default: the build's): what build, stats and preview all use.

        A record that fits costs nothing more; an over-long one is shortened as a conversation
        and rendered again (`ftdata.tokens.truncation`).

        Raises:
            RecordError: policy `error` and the record is too long (names the record).
        """
        if item.total <= self.options.max_length:
            return Truncated([row_of(item.tokenized)])
        try:
            with limits.pinned():
                result = self.truncator(item.example, item.tokenized, policy=policy or self.options.truncation)
        except UnusableRecord as exc:  # what the cut left cannot be trained (no assistant turn left): a reject
            return Truncated([], exc.reason, exc.code or RejectCode.NO_ASSISTANT)
        except limits.RecordOverLimit as exc:  # a re-render past a limit: rejected like the first render's (on_error)
            reject = self._reject(exc, item.example.source, RejectStage.TRUNCATE)
            return Truncated([], reject.reason, reject.code)
        except RecordError as exc:
            raise RecordError(exc.reason, location=item.example.source, field=exc.field) from None
        if self.media is not None and item.rendered.media:  # a media item is whole or absent, never cut
            result = self.media.truncated(item, result, limit=self.options.max_length)
        return result

    def run(self, records: list[Record], *, responses: bool = False, lenient: bool = False) -> Ran:
        """Measure and truncate `records`, keeping each record whole: what every command reduces.

        A record with several examples (self-instruct `instances`) is kept whole or not at
        all: the surviving sequences of a record with a rejected (or dropped) example are
        dropped, each with a reject, so the record is not counted as rejected yet half kept.
        `lenient`: under truncation=error a too-long record is dropped (with its reject) where
        a build stops: what stats and preview show.

        Raises:
            RecordError: a malformed record with on_error="raise"; a too-long one under truncation=error.
        """
        policy = TruncationPolicy.DROP if lenient and self.options.truncation is TruncationPolicy.ERROR else None
        report = BuildReport(records=len(records))
        ran = Ran(report=report)
        failed: set[int] = set()  # records with a rejected example
        for record, item in self.measure(records, responses=responses):
            if isinstance(item, Reject):
                ran.rejects.append(item)
                ran.outcomes.append((record, item, None))
                failed.add(record)
                continue
            report.examples += 1
            report.formats[item.example.format] += 1
            report.methods[item.rendered.method] += 1
            if item.tokenized.notes:  # counting costs Python calls even when there are none
                report.note(item.tokenized.notes)
                report.reasoning_moved += moved(item.tokenized.notes)
            if drift := getattr(item, "drift", ()):  # a preference pair has no recorded ids
                report.count_drift(drift)
            result = self.truncate(item, policy=policy)
            if result.code is not None:
                part = getattr(item, "part", None)  # a preference pair is one row
                reason = f"{result.reason} ({part.describe()})" if part is not None else result.reason
                ran.rejects.append(
                    Reject(item.location, RejectStage.TRUNCATE, result.code, reason, kept=bool(result.rows), tokens=item.total)
                )  # fmt: skip
            if not result.rows:
                failed.add(record)
            ran.outcomes.append((record, item, result))
        if failed:
            for i, (record, item, result) in enumerate(ran.outcomes):
                if record in failed and result is not None and result.rows:
                    if getattr(item, "part", None) is None:  # a split record's rows go with the one reject naming the row that failed
                        ran.rejects.extend(Reject(item.location, RejectStage.FORMAT, RejectCode.INCOMPLETE, SIBLING) for _ in result.rows)  # type: ignore[union-attr]
                    ran.outcomes[i] = (record, item, replace(result, rows=[]))
        for reject in ran.rejects:
            report.add(reject)
        _count_splits(ran)
        if self.media is not None:  # the media files this batch's records named (and those of batches beside it)
            ran.read = self.media.drain()
        return ran


def _count_splits(ran: Ran) -> None:
    """The report's split counts: records kept as several rows, the rows added and their tokens."""
    for _, item, result in ran.outcomes:
        part = getattr(item, "part", None)
        if part is None or result is None or not result.rows:
            continue
        if part.index == 0:
            ran.report.split_records += 1
        else:
            ran.report.added_rows[part.reason.value] += 1  # type: ignore[union-attr]  # a row after the first has one
            ran.report.added_tokens += sum(len(ids) for ids, _ in result.rows)


def chunk(ran: Ran, *, media: Media | None = None) -> Chunk:
    """A build's batch: the kept sequences of `ran` flattened into token arrays, with its rejects and counts.

    `media` (a build with a processor): each sequence's `media` column too (`Media.column`).
    """
    seqs: list[tuple[list[int], list[int]]] = []
    groups: list[int] = []  # per sequence: its record in the batch
    where: list[str] = []  # per sequence: its record's location
    columns: list[list[dict[str, Any]]] | None = [] if media is not None else None
    for record, item, result in ran.outcomes:
        if result is not None and result.rows:
            seqs.extend(result.rows)
            groups.extend(record for _ in result.rows)
            where.extend(item.location for _ in result.rows)
            if columns is not None:  # a row of the record as measured reuses its items; a shortened one reads them again
                sources = result.conversations or (item.example,) * len(result.rows)  # type: ignore[union-attr]
                columns.extend(
                    media.column(ids, example, placed=item.rendered.media if example is item.example else None)  # type: ignore[union-attr]
                    for (ids, _), example in zip(result.rows, sources)
                )  # fmt: skip
    report = ran.report
    out = Chunk(
        *_flatten(seqs), np.asarray(groups, dtype=np.int64), ran.rejects, report, media=columns, weights=_weights(seqs),
        read=ran.read, sources=where,
    )  # fmt: skip
    report.sequences = len(seqs)
    report.tokens = int(out.lengths.sum())
    report.trained_tokens = int((out.labels != -100).sum())
    return out


@dataclass
class Ran:
    """What the record engine made of one batch, in order: per example `(record index, its
    measurement or reject, its truncation under the build's policy)` (a record that is not
    kept whole has its rows emptied); every reject as the rejects file lists them; the counts."""

    outcomes: list[tuple[int, Measured | Reject, Truncated | None]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    report: BuildReport = field(default_factory=BuildReport)
    # The media files read while it ran, as stat'ed (None: no file there): the build's manifest is their union.
    read: dict[str, Stat | None] = field(default_factory=dict)


def _weights(seqs: list[tuple[list[int], list[int]]]) -> np.ndarray | None:
    """The loss weights of `seqs` laid end to end (1 for a row without them), or None when no row has any."""
    if not any(isinstance(row, WeightedRow) for row in seqs):
        return None
    return np.fromiter(
        chain.from_iterable(row.weights if isinstance(row, WeightedRow) else [1.0] * len(row[0]) for row in seqs),
        dtype=np.float32, count=sum(len(row[0]) for row in seqs),
    )  # fmt: skip


def flat(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """`lists` as (every value in one int32 array, each list's length): a list of ints converted in C
    (`np.fromiter` over a chain pulls each value through Python, 5x slower)."""
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    return np.array(list(chain.from_iterable(lists)), dtype=np.int32), lengths


def _flatten(seqs: list[tuple[list[int], list[int]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, labels, lengths) of `seqs` as flat arrays."""
    ids, lengths = flat([ids for ids, _ in seqs])
    labels, _ = flat([labels for _, labels in seqs])
    return ids, labels, lengths


__all__ = ["Chunk", "Measured", "Outcome", "Ran", "Stage", "chunk", "flat"]
