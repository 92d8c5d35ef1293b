"""The record engine: the one loop that formats, renders, verifies and rejects records, for every task.

    (location, row) ──task.examples──▶ items ──task.measure──▶ measured | Reject ──task.fit──▶ rows

`Stage` compiles what every task renders with (the template, the masker, the truncator, the media
seam) and holds one task (`TaskModule`): what it reads from a record, how it renders and verifies,
how it fits max_length, what a row holds and how rows are written. `Stage.measure` is the loop;
`Stage.run` adds the fit and keeps each record whole, and every command reduces what it returns
(`loop.run` drives it over a source): a build (`task.reduce`: the kept rows as arrays), `ftdata
stats` and `ftdata preview` (the task's views). So a record is rejected at the same stage, with the
same code, by every command, whatever its task. The engine never asks which task it holds.

The tasks: the table is `ftdata.types.Task`, one member a task, and the task named `x` is the `TASK` of the module
`ftdata.run.x`, loaded on first use (`task_module`; docs/design.md "Tasks"). So a task is its module and its line:

    sft          ftdata.run.sft          input_ids + labels: assistant turns trained
    preference   ftdata.run.preference   prompt_ids + chosen_ids + rejected_ids: one verified prompt
    kto          ftdata.run.kto          prompt_ids + completion_ids + label (the preference engine, unpaired)
    prompts      ftdata.run.prompts      prompt + prompt_ids + typed reward columns: nothing trained (GRPO/RLOO)

What `run` reads of a measured item and its fit, whatever its task, is typed in `ftdata.run.seam` (`Item`: `example`,
`location`, `total`, `tokenized.notes`, `rendered.method`, `drift`, `split_row`; `Fit`: `rows`, `reason`, `code`);
every task's part of a batch is a `seam.Part`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np
import pyarrow as pa

from ftdata.guard import limits
from ftdata.guard.inputs import Digests, Input, Stat, stat_of
from ftdata.errors import Location, RecordError, UnusableRecord
from ftdata.tokens.masking import Masker, Tokenized
from ftdata.options import DataOptions, RunOptions
from ftdata.outcomes import NoteCode, RejectCode, RejectStage
from ftdata.chat.late_system import has_late_system, join_late_systems
from ftdata.chat.render import Renderer
from ftdata.chat.think import moved
from ftdata.chat.chat_template import load_chat_template
from ftdata.chat.chat_tokens import with_chat_tokens
from ftdata.chat.clock import clock_input
from ftdata.io.resources import processor_input, tokenizer_input
from ftdata.chat.supervision import SupervisedRenderer
from ftdata.run.option_rules import TaskRules, check
from ftdata.run.report import BuildReport, Reject
from ftdata.run.seam import Fit, Item, Part, Rows, SourceStats, TaskState
from ftdata.tokens.truncation import Truncator
from ftdata.types import Example, Task, TruncationPolicy
from ftdata.media.expand import Media, MediaMasker, MediaRenderer

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict
    from transformers import PreTrainedTokenizerBase

Record = tuple[Location, Any]  # a row as its reader yields it: any JSON-like value, or the RecordError it raised
Outcome = tuple[
    int, Item | Reject
]  # (index of the record in its batch, what became of one item: measured, or a Reject)
R = TypeVar("R")  # what a task reads from a row
I = TypeVar("I", bound=Item)  # noqa: E741  # its measured item
F = TypeVar("F", bound=Fit)  # its fit
P = TypeVar("P", bound=Part)  # its part of a batch
S = TypeVar("S", bound=TaskState, covariant=True)  # what it compiles once per stage
ST = TypeVar("ST")
# Records rendered and then tokenized at a time within a batch (`Stage.measure`): small enough that a local
# build's threads alternate between Python (under the GIL) and the tokenizer (without it), large enough that
# the tokenizer's per-call cost stays negligible.
SLICE = 64
SIBLING = "another instance of this record was rejected; a record is kept whole or not at all"


class TaskModule(Protocol[R, I, F, P, S]):
    """One task: what a build makes of records. The engine calls it with itself (`stage`) for what it compiled.

    `Stage.run` drives `examples`, `measure` and `fit`; a build's workers `reduce` each batch, the build
    writes the parts with `open_rows` and makes the dataset with `finish`; its `stats` measures a source for `ftdata
    stats` and a recipe's plan. What the CLI prints of a task is its line in `ftdata.cli.views` (a task without one
    is shown by the CLI's plain views). The types: what it reads from a row (R),
    its measured item (I, an `Item`), its fit (F, a `Fit`), its part of a batch (P, a `Part`), what it compiles
    once per stage (S, frozen).
    """

    task: Task
    columns: tuple[str, ...]  # the columns every row of the task holds: what says a built dataset is its rows
    unit: str  # what a report counts its rows as ("sequences", "pairs", "completions", "prompts")
    rules: TaskRules  # the options it alone reads and those it refuses (`ftdata.run.option_rules`)

    def options(self, options: DataOptions) -> DataOptions:
        """The options the engine runs with for this task (pairs train the final turn: mask=last_assistant)."""
        ...

    def compiled(self, stage: Stage) -> S:
        """What the task reads and renders records with, compiled once per stage from its options (the column
        maps; SFT's response counter, made on first use)."""
        ...

    def examples(self, stage: Stage, location: Location, row: object) -> tuple[R, ...]:
        """What the task reads from one row (raises RecordError: the row is rejected at stage `format`)."""
        ...

    def measure(
        self, stage: Stage, formatted: list[tuple[int, R | Reject]], responses: bool
    ) -> list[tuple[int, I | Reject]]:
        """Render, tokenize and verify the items (rejects passed through), one outcome each, in order."""
        ...

    def fit(self, stage: Stage, item: I, policy: TruncationPolicy | None) -> F:
        """`item` fitted to the task's length limits: its rows and, when anything was cut, why (`Fit`)."""
        ...

    def reduce(self, stage: Stage, ran: Ran[I, F]) -> P:
        """A build's part of one batch (in the worker): the kept rows as arrays and the part contract (`Part`)."""
        ...

    def open_rows(self, path: Path, options: DataOptions) -> Rows[P]:
        """The writer of a build's rows file."""
        ...

    def finish(
        self,
        path: Path,
        options: DataOptions,
        report: BuildReport,
        *,
        splits: dict[str, np.ndarray] | None,
        pad_id: int,
    ) -> Dataset | DatasetDict:
        """The rows file as the build's `Dataset` (or `DatasetDict`), split by record."""
        ...

    def schema(self, options: DataOptions) -> pa.Schema:
        """The columns of the rows `finish` makes (an empty shard of an engine=ray build is this schema)."""
        ...

    def row_units(self, rows: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """Each built row's tokens and trained tokens, counted as its part of a batch counts them (`Part.units`):
        the one definition a build's report, a recipe's plan and a training run's record share."""
        ...

    def stats(
        self, source: Any, stage: Stage, run: RunOptions | None = None, *, progress: Callable[[int], None] | None = None
    ) -> SourceStats:
        """Measure every record of `source` as a build of this task would (`ftdata stats`, a recipe's plan): through
        the run loop, with the same rejects; `progress` is called with the records done after each batch."""
        ...

    def jsonl(self, split: Dataset, tokenizer: PreTrainedTokenizerBase) -> Iterator[dict[str, object]]:
        """A split's rows as `--output-format jsonl` writes them: every column, and the tokens decoded."""
        ...


AnyTask = TaskModule[object, Item, Fit, Part, TaskState]  # a task as the engine holds it, whichever it is


_LOADED: dict[Task, AnyTask] = {}


def module_of(task: Task) -> str:
    """The module that implements `task`: `ftdata.run.` and the task's name (`ftdata.run.preference`). A name, not
    an import: a task module builds on this engine, so the engine loads it on first use, and an added task is its
    module and its `Task` member.

    >>> module_of(Task.KTO)
    'ftdata.run.kto'
    """
    return f"ftdata.run.{task.value}"


def task_module(task: Task | None) -> AnyTask:
    """The `TaskModule` of `task` (None: SFT): the `TASK` of its module (`module_of`)."""
    task = task or Task.SFT
    if task not in _LOADED:
        _LOADED[task] = importlib.import_module(module_of(task)).TASK
    return _LOADED[task]


class Stage:
    """The compiled engine of one set of options: columns, renderer, masker and truncator, and the task.

    Built once per process (see `loop.StageSpec`); `measure` is the record loop, `run` keeps records whole;
    `inputs` declares the files it read (the build's key is made from them).
    """

    def __init__(self, tokenizer: Any, options: DataOptions):
        self.task = task_module(options.task)
        check(options, task=self.task, tasks=[task_module(task) for task in Task])  # options the task refuses
        options = self.task.options(options)
        self._given = tokenizer  # as loaded: what `inputs` declares
        self.chat_template = load_chat_template(options.chat_template) if options.chat_template is not None else None
        if self.chat_template is not None:  # a copy rendering with it; the processor's template gives way too (Vision)
            tokenizer = self.chat_template.applied(tokenizer)
        if options.add_chat_tokens:  # a copy with the template's markers as tokens (the same tokenizer when they are)
            tokenizer = with_chat_tokens(tokenizer)
        self.tokenizer = tokenizer
        self.options = options
        self.media = None  # media items: expanded by the processor's rules, verified per record (ftdata.media)
        if options.processor is not None:
            self.media = Media(options, tokenizer)
            tokenizer = self.tokenizer = self.media.tokenizer  # with the processor's chat template
        # The wrappers below render and mask around the Renderer / Masker they hold and hand it every other attribute.
        self.renderer: Renderer = SupervisedRenderer(Renderer.from_options(tokenizer, options))  # type: ignore[assignment]  # a wrapper (above)
        self.masker: Masker = Masker(tokenizer)
        if self.media is not None:
            self.renderer = MediaRenderer(self.renderer, self.media)  # type: ignore[assignment]  # a wrapper (above)
            self.masker = MediaMasker(self.masker, self.media)  # type: ignore[assignment]  # a wrapper (above)
        self.truncator = Truncator(
            self.renderer, self.masker, max_length=options.max_length, prompt_cut=options.prompt_cut
        )
        self.state = self.task.compiled(self)  # what the task reads and renders records with (its column maps)
        self._probed: dict[str, Stat | None] = {}  # `Example.files` of the records read, as stat'ed, until drained

    def state_as(self, kind: type[ST]) -> ST:
        """What the stage's task compiled (`TaskModule.compiled`), as the task's own type.

        Raises:
            TypeError: the stage holds another task (a bug: a task reads only the stages it compiled).
        """
        if not isinstance(self.state, kind):
            raise TypeError(f"the stage's task compiled a {type(self.state).__name__}, not a {kind.__name__}")
        return self.state

    @property
    def templates(self) -> tuple[Input, ...]:
        """The template files this stage compiled (a prompt template, a `chat_template` file), as read."""
        return (*self.renderer.inputs, *([self.chat_template.input] if self.chat_template else []))

    def inputs(self, digests: Digests) -> tuple[Input, ...]:
        """What this stage read, by content: the tokenizer (its folder's files and its state), the prompt
        template, the chat template file, the processor folder, and the day where the chat template writes it
        (`ftdata.chat.clock`). The images records name are read per record: each batch's are in `Ran.read`."""
        declared = [*self.templates, tokenizer_input(self._given, digests)]
        if self.options.processor is not None:
            declared.append(processor_input(self.options.processor, digests))
        clock = clock_input(getattr(self.tokenizer, "chat_template", None))
        return tuple([*declared, clock] if clock is not None else declared)

    def examples(self, location: Location, row: object) -> tuple[object, ...]:
        """What the task reads from `row` (raises RecordError), a system turn after the first joined to a user turn
        where the template does not write it there (`ftdata.chat.late_system`)."""
        examples = self.task.examples(self, location, row)
        for example in examples:
            if isinstance(example, Example) and example.files:
                self._probed.update((path, stat_of(path)) for path in example.files)
        if not any(isinstance(e, Example) and has_late_system(e) for e in examples) or self.renderer.writes_late_system:
            return examples
        return tuple(join_late_systems(e) if isinstance(e, Example) and has_late_system(e) else e for e in examples)

    def reject(self, exc: RecordError, location: Location, stage: RejectStage) -> Reject:
        """`exc` as a reject at `stage` (on_error=raise: raised, naming the record)."""
        return Reject.from_error(exc, location, stage, on_error=self.options.on_error)

    def measure_examples(self, formatted: list[tuple[int, object]], *, responses: bool = False) -> list[Outcome]:
        """`measure` from the format stage's outcomes on: the task renders, tokenizes and verifies them.

        The limits are read once for the batch (`limits.pinned`), not per render.
        """
        with limits.pinned():
            return self.task.measure(self, formatted, responses)

    def tokenize(self, example: Example) -> Tokenized | UnusableRecord:
        """Render and mask one example, no truncation (render errors raise): for checks of one record."""
        return self.masker([self.renderer(example)])[0]

    def truncate(self, item: Item, *, policy: TruncationPolicy | None = None) -> Fit:
        """`item` fitted to max_length by `policy` (default: the build's), as the task fits it: what build,
        stats and preview all use.

        Raises:
            RecordError: policy `error` and the item is too long (names the record).
        """
        return self.task.fit(self, item, policy)

    def reduce(self, ran: Ran[Item, Fit]) -> Part:
        """The build's part of one batch, as the task makes it."""
        return self.task.reduce(self, ran)

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
        formatted: list[tuple[int, object]] = []
        for record, (location, row) in enumerate(records[start:end], start):
            try:
                formatted.extend((record, example) for example in self.examples(location, row))
            except RecordError as exc:
                if exc is row:  # a reader yields a row it could not read faithfully as its error
                    reject = self.reject(exc, location, RejectStage.READ)
                    if reject.code is RejectCode.MALFORMED:  # a bound passed keeps its own code
                        reject = replace(reject, code=RejectCode.UNREADABLE)
                else:
                    reject = self.reject(exc, location, RejectStage.FORMAT)
                formatted.append((record, reject))
        return self.measure_examples(formatted, responses=responses)

    def run(self, records: list[Record], *, responses: bool = False, lenient: bool = False) -> Ran[Item, Fit]:
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
        ran: Ran[Item, Fit] = Ran(report=report)
        failed: set[int] = set()  # records with a rejected example
        # (the outcome it belongs to, reject): a line goes where its example is, not where it was found (the
        # siblings of a failed example are found last, after the records that share its batch)
        lines: list[tuple[int, Reject]] = []
        noted: set[NoteCode] = set()
        for record, item in self.measure(records, responses=responses):
            if isinstance(item, Reject):
                lines.append((len(ran.outcomes), item))
                ran.outcomes.append((record, item, None))
                failed.add(record)
                continue
            split_row = item.split_row  # a row of a split record (SFT's history=inference)
            if split_row is None or split_row.index == 0:  # an example, however many rows it makes
                report.examples += 1
                report.formats[item.example.format] += 1
                noted = set()  # the note codes counted for this example: once each, whatever its rows
            report.methods[item.rendered.method] += 1
            if item.tokenized.notes:  # counting costs Python calls even when there are none
                report.note(item.tokenized.notes, counted=noted)
                noted.update(n.code for n in item.tokenized.notes)
                report.reasoning_moved += moved(item.tokenized.notes)
            if item.drift:  # a task's rows with recorded token ids (SFT)
                report.count_drift(item.drift)
            result = self.truncate(item, policy=policy)
            if result.code is not None:
                reason = f"{result.reason} ({split_row.describe()})" if split_row is not None else result.reason
                reject = Reject(
                    item.location, RejectStage.TRUNCATE, result.code, reason, kept=bool(result.rows), tokens=item.total
                )
                also = f"{split_row.describe()}: {result.code.value}" if split_row is not None else ""
                if not _joined(ran, lines, record, reject, also=also):
                    lines.append((len(ran.outcomes), reject))
            if not result.rows:
                failed.add(record)
            ran.outcomes.append((record, item, result))
        if failed:
            for i, (record, kept, fit) in enumerate(ran.outcomes):
                if record in failed and fit is not None and fit.rows and not isinstance(kept, Reject):
                    if (
                        kept.split_row is None
                    ):  # a split record's rows go with the one reject naming the row that failed
                        sibling = Reject(kept.location, RejectStage.FORMAT, RejectCode.INCOMPLETE, SIBLING)
                        lines.extend((i, sibling) for _ in fit.rows)
                    ran.outcomes[i] = (record, kept, replace(fit, rows=[]))
        lines.sort(key=lambda line: line[0])  # stable: the lines of one outcome keep their order
        ran.rejects = [reject for _, reject in lines]
        report.count_rejects(ran.rejects, [ran.outcomes[at][0] for at, _ in lines], failed)
        _count_splits(ran)
        # the files this batch's records named or looked for (and those of batches beside it): media, referenced files
        probed, self._probed = self._probed, {}
        ran.read = {**probed, **(self.media.drain() if self.media is not None else {})}
        return ran


def _joined(ran: Ran, lines: list[tuple[int, Reject]], record: int, reject: Reject, *, also: str) -> bool:
    """Whether `reject`, of a row of a split record (`also` names the row and its code), joined the reject its record
    already has (the last of `lines`, as (outcome, reject)): a record is rejected once, by its first row that failed,
    and the rows after it are named there."""
    if not also or reject.kept or not lines or ran.outcomes[lines[-1][0]][0] != record or lines[-1][1].kept:
        return False
    at, first = lines[-1]
    lines[-1] = (at, replace(first, reason=f"{first.reason}; also {also}"))
    return True


def _count_splits(ran: Ran) -> None:
    """The report's split counts: records kept as several rows, the rows added and their tokens."""
    for _, item, result in ran.kept():
        split_row = item.split_row
        if split_row is None:
            continue
        if split_row.index == 0:
            ran.report.split_records += 1
        elif (reason := split_row.reason) is not None:  # a row after the first names why it exists
            ran.report.added_rows[reason.value] += 1
            ran.report.added_tokens += sum(len(ids) for ids, _ in result.rows)


@dataclass
class Ran(Generic[I, F]):
    """What the record engine made of one batch, in order: per example `(record index, its
    measurement or reject, its truncation under the build's policy)` (a record that is not
    kept whole has its rows emptied); every reject as the rejects file lists them; the counts."""

    outcomes: list[tuple[int, I | Reject, F | None]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    report: BuildReport = field(default_factory=BuildReport)
    # The media files read while it ran, as stat'ed (None: no file there): the build's manifest is their union.
    read: dict[str, Stat | None] = field(default_factory=dict)

    def kept(self) -> Iterator[tuple[int, I, F]]:
        """`(record index, measured item, its fit)` of every item that kept rows (`fit.rows`), in order: what a
        build's reducer writes (a reject has no fit)."""
        return (
            (record, item, result)
            for record, item, result in self.outcomes
            if result is not None and result.rows and not isinstance(item, Reject)
        )


__all__ = ["AnyTask", "Outcome", "Ran", "Stage", "TaskModule", "module_of", "task_module"]
