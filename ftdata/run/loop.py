"""The run loop: the one place that reads a source and runs the record engine over it.

    source ──read, filter, limit──▶ batches ──executor──▶ Stage.run ──reduce──▶ one part per batch, in order

`run` does the reading (the filter runs here, where records are read, never in a worker),
the batching, the executor (`ftdata.run.executors`), the counts (each batch's report merged
into the caller's, the filter's rejects included), the empty-input check and the
keep-a-record-whole rule (`Stage.run`). A command is a reducer: a module-level
`reduce(stage, ran) -> part` that runs where the batch ran (so only the part travels back):

    build     stage.reduce: the kept sequences as token arrays, and the rejects for the file
    stats     stats.summaries: each example reduced to a few integers
    preview   preview.views: each example as a view, or its reject

so build, stats and preview count every record the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Generic, TypeVar

from ftdata.run.stage import Ran, Record, Stage
from ftdata.errors import FtdataError
from ftdata.run.executors import Executor, executor
from ftdata.chat.sandbox import compile_filter
from ftdata.options import DataOptions, RunOptions
from ftdata.outcomes import RejectCode, RejectStage
from ftdata.guard.bounds import ReadBounds
from ftdata.guard.inputs import Input
from ftdata.io.readers import read_records
from ftdata.run.report import BuildReport, Reject
from ftdata.guard.limits import RecordOverLimit

__all__ = ["Batch", "StageSpec", "read_batches", "run"]

P = TypeVar("P")
FIRST_BATCH = 64  # records in a run's first batch; each next one doubles, up to the batch size
# The text a batch holds at most, in characters (`Batch.chars`): a batch of long records closes here before its
# record count. 64 agent sessions of 110 KB are 7 MB, ~4 s of one worker's time; two workers given batches of 64,
# 68 and 68 of 200 such records ran 132 records on one of them (13.5 s against 11.1 s in batches of 8). Alpaca's
# 1 KB records fill 512 at 0.5 MB and are batched as before.
BATCH_CHARS = 1_000_000
Reduce = Callable[[Stage, Ran], P]


@dataclass(frozen=True)
class StageSpec(Generic[P]):
    """What a worker needs to run a batch: the data options, the tokenizer and the reducer. Picklable.

    A fast tokenizer pickles as its JSON, config and chat template; a prompt template is
    loaded again from its name or path; `reduce` is a module-level function (pickled by name).
    The filter stays behind (it runs where records are read), so a lambda filter never has
    to cross. The compiled stage is built once per process.
    """

    options: DataOptions
    tokenizer: Any
    reduce: Reduce[P]
    responses: bool = False
    lenient: bool = False
    stage: Stage | None = field(default=None, compare=False, repr=False)
    templates: tuple[Input, ...] = ()  # as this process read them: a worker that reads other bytes stops the build

    @classmethod
    def create(cls, stage: Stage, reduce: Reduce[P], *, responses: bool = False, lenient: bool = False) -> StageSpec[P]:
        options = dataclasses.replace(stage.options, filter=None)
        return cls(options, stage.tokenizer, reduce, responses, lenient, stage, stage.templates)

    def __getstate__(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "stage"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in {**state, "stage": None}.items():
            object.__setattr__(self, name, value)

    def compiled(self) -> Stage:
        """The stage, compiled once per process.

        Raises:
            FtdataError: a template file this worker read is not what the build read (edited while it ran).
        """
        if self.stage is None:
            stage = Stage(self.tokenizer, self.options)
            for read, ours in zip(stage.templates, self.templates):
                if read != ours:
                    raise FtdataError(
                        f"{ours.name} changed while the build ran (a worker read other bytes); build again"
                    )
            object.__setattr__(self, "stage", stage)
        return self.stage  # type: ignore[return-value]  # set above: a frozen spec caches its stage


@dataclass
class Batch:
    """The records of one batch, and the filter's rejects of the records read with them."""

    records: list[Record] = field(default_factory=list)
    filtered: list[Reject] = field(default_factory=list)
    read: int = 0

    def __len__(self) -> int:
        return self.read

    @property
    def chars(self) -> int:
        """The text its records hold, in characters (every string in them, keys aside): what a worker pays to
        render and tokenize them, where a record count says little (110 KB agent sessions, 1 KB Alpaca rows)."""
        return sum(text_size(row) for _, row in self.records)


def text_size(value: object) -> int:
    """The characters of every string (and bytes) in a JSON-like value, keys aside.

    >>> text_size({"messages": [{"role": "user", "content": "Hi"}], "id": 7})
    6
    """
    size, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            size += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return size


def read_batches(
    source: Any, options: DataOptions, *, batch_size: int, window: tuple[int, int] | None = None
) -> Iterator[Batch]:
    """The records of `source` (up to `limit`) in batches of `batch_size` kept records, the first ones
    smaller (`FIRST_BATCH`, doubling up to `batch_size`): a small input still fills every thread or worker,
    and the first results come back sooner. The last ones get smaller again (`_tail`): one full batch is
    held back until the next is read, so the records left at the end are known and re-cut into halving
    batches, and the threads or workers finish together instead of one running the last whole batch
    alone. Batch sizes never change what is built.

    `window` (offset, n): only the kept records offset .. offset + n (the filter's rejects
    are not counted then), read no further than the last of them.
    """
    keep = compile_filter(options.filter)
    start, end = (0, None) if window is None else (window[0], window[0] + window[1])
    kept = chars = 0  # chars: the text of the batch being filled
    smallest = min(FIRST_BATCH, batch_size)
    batch, size = Batch(), smallest
    held: Batch | None = None  # the last full batch, not given out until the one after it is full
    reader = read_records(
        source, reader=options.reader, delimiter=options.delimiter, field=options.field, bounds=ReadBounds.of(options)
    )
    try:
        for location, row in islice(reader, options.limit):
            try:
                dropped: bool | Reject = keep is not None and not keep(row, location)
            except (
                RecordOverLimit
            ) as exc:  # the filter ran past a limit on this record: its reject (on_error=skip) or the error
                dropped = Reject.from_error(exc, location, RejectStage.FILTER, on_error=options.on_error)
            if dropped:
                if window is None:
                    batch.read += 1
                    filtered = Reject(
                        str(location), RejectStage.FILTER, RejectCode.FILTERED, f"filtered: {options.filter} is false"
                    )
                    batch.filtered.append(dropped if isinstance(dropped, Reject) else filtered)
                continue
            kept += 1
            if kept <= start:
                continue
            batch.read += 1
            batch.records.append((location, row))
            chars += text_size(row)
            if len(batch.records) == size or chars >= BATCH_CHARS:
                if size < batch_size or size == smallest:  # a first, smaller batch (or nothing to re-cut): out now
                    yield batch
                else:
                    if held is not None:
                        yield held
                    held = batch
                batch, size, chars = Batch(), min(2 * size, batch_size), 0
            if kept == end:
                break
    except FtdataError:
        if held is not None:  # every batch before the one that failed to read, then the error
            yield held
        raise
    yield from _tail([b for b in (held, batch) if b is not None], smallest)


def _tail(batches: list[Batch], smallest: int) -> Iterator[Batch]:
    """The last records of a run, re-cut into batches that halve down to `smallest` records, or to as many as
    hold a quarter of `BATCH_CHARS` where the records are long (two of 110 KB); the filter's rejects among them
    go with the first."""
    records = [record for b in batches for record in b.records]
    filtered = [reject for b in batches for reject in b.filtered]
    if not records:
        if filtered:
            yield Batch([], filtered, len(filtered))
        return
    mean = sum(b.chars for b in batches) / len(records)
    smallest = max(1, min(smallest, int(BATCH_CHARS / 4 / mean) if mean else smallest))
    at = 0
    while at < len(records):
        size = min(len(records) - at, max(smallest, -(-(len(records) - at) // 2)))
        yield Batch(records[at : at + size], filtered, size + len(filtered))
        at, filtered = at + size, []


def _run_batch(spec: StageSpec[P], batch: Batch) -> tuple[P, BuildReport]:
    """One batch through the stage and the reducer (in this process or a worker); the filter's rejects go first."""
    stage = spec.compiled()
    ran = stage.run(batch.records, responses=spec.responses, lenient=spec.lenient)
    ran.rejects[:0] = batch.filtered
    counts = BuildReport(records=batch.read - len(batch.records))
    for reject in batch.filtered:
        counts.add(reject)
    ran.report = counts.merge(ran.report)
    return spec.reduce(stage, ran), ran.report


def run(
    source: Any,
    stage: Stage,
    options: RunOptions,
    reduce: Reduce[P],
    *,
    report: BuildReport,
    responses: bool = False,
    lenient: bool = False,
    window: tuple[int, int] | None = None,
    progress: Callable[[int], None] | None = None,
    on: Executor | None = None,
    empty_ok: bool = False,
) -> Iterator[P]:
    """Every record of `source` through `stage` on `options.engine`; `reduce`'s part per batch, in batch order.

    Each batch's counts are merged into `report` before its part is yielded; `progress` is
    called with the records read for it (filtered ones included). `responses`: count each
    example's response tokens; `lenient`: see `Stage.run`;
    `window`: see `read_batches`; `on`: an executor instead of the one `options` names;
    `empty_ok`: a source without records is no error (one shard of many).

    Raises:
        FtdataError: `source` has no records (after the window); what the reader or a record raised.
    """
    spec = StageSpec.create(stage, reduce, responses=responses, lenient=lenient)
    batches = read_batches(source, stage.options, batch_size=options.batch_size, window=window)
    work = on or executor(options.engine, options.num_workers, ray_address=options.ray_address)
    for part, counts in work.map(_run_batch, spec, batches):
        report.merge(counts)
        if progress is not None and counts.records:
            progress(counts.records)
        yield part
    if report.records == 0 and not empty_ok:
        where = (
            ""
            if window is None
            else f" to show (offset {window[0]}{', after the filter' if stage.options.filter else ''})"
        )
        raise FtdataError(f"{source}: no records{where}")
