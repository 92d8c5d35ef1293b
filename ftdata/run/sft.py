"""SFT: records -> conversations -> assistant turns trained, everything else masked (`ftdata.run.stage`'s first task).

    row ──records.formats──▶ Example(s) ──render (history=inference: a row per turn inference sees
        otherwise)──▶ Rendered ──mask + verify──▶ Measured ──fit max_length (tokens.truncation)──▶ rows
        ──reduce──▶ SftPart (flat token arrays) ──rows.ArrowRows──▶ rows.finish (split, pack, pad)

Token counts of one example (`Measured`):

    total    every token of the example, with the BOS that ftdata adds
    response tokens of the assistant turns plus their end-of-turn markers: what carries loss
             under mask=all_assistant (per-message `train` flags in the data still apply)
    trained  tokens that carry loss under the chosen mask
    prompt   total - response
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ftdata.chat.renderer import shared_renders
from ftdata.chat.render import Renderer, trained_turns
from ftdata.chat.supervision import flagged
from ftdata.chat.trajectory import SplitRow, split
from ftdata.errors import Location, RecordError, UnusableRecord
from ftdata.guard import limits
from ftdata.media.column import MEDIA_FIELD, MEDIA_TYPE
from ftdata.media.expand import Media, no_processor
from ftdata.options import DataOptions, RunOptions
from ftdata.outcomes import RejectCode, RejectStage
from ftdata.records.formats import FIELD_ALIASES, Columns, to_examples
from ftdata.records.media import attach_columns
from ftdata.records.preference import detect_task, looks_like_preference, preference_columns, to_pairs
from ftdata.run.drift import Drift, recorded, token_drift
from ftdata.run.stage import Ran, Stage, TaskModule
from ftdata.tokens.packing import flat
from ftdata.run.option_rules import TaskRules
from ftdata.run.report import BuildReport, Reject
from ftdata.run.seam import Once, Part
from ftdata.run.rows import RECORD, TOKENS_SCHEMA, ArrowRows, finish
from ftdata.run.trees import batch_trees
from ftdata.run.stats import DataStats, collect
from ftdata.tokens.masking import Tokenized, WeightedRow, row_of
from ftdata.tokens.layouts import TREE, built_layout
from ftdata.tokens.truncation import Truncated
from ftdata.types import IGNORE_INDEX, Example, MaskPolicy, Rendered, Task, TruncationPolicy, count_trained

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict
    from transformers import PreTrainedTokenizerBase

__all__ = ["TASK", "SftPart", "Measured", "SftState", "SftTask", "sft_part", "jsonl_rows", "trained_runs"]


@dataclass(frozen=True, slots=True)
class Measured:
    """One example, rendered and masked (not truncated). `response` is counted only when asked for."""

    example: Example
    rendered: Rendered
    tokenized: Tokenized
    response: int | None = None
    split_row: SplitRow | None = None  # one row of a record split by history=inference (`ftdata.chat.trajectory`)
    drift: tuple[
        Drift, ...
    ] = ()  # its trained turns' recorded token ids against the trained tokens (`ftdata.run.drift`)

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


@dataclass
class SftPart(Part):
    """A build's output for one batch: flat token arrays, and the `Part` contract (each sequence's record in the
    batch, every reject for the file, the counts, the media files the batch read)."""

    ids: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    media: list[list[dict[str, Any]]] | None = None  # per sequence, its `media` column (a build with a processor only)
    # Per token: the loss weight (1 for a sequence without weights); None when no sequence of the batch has any.
    weights: np.ndarray | None = None
    sources: list[str] = field(default_factory=list)  # per sequence, its record's location (the `record` column)
    positions: np.ndarray | None = None  # history=tree: per token, its depth in its record's tree (`tokens.tree`)

    def units(self) -> tuple[np.ndarray, np.ndarray]:
        """Each row's tokens and trained tokens, as a recipe counts them."""
        return self.lengths, trained_per_row(self.labels, self.lengths)


def trained_per_row(labels: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The trained tokens (label != -100) of each row of `labels` laid end to end, rows `lengths` long (none empty)."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    trained = np.add.reduceat(labels != IGNORE_INDEX, starts) if len(lengths) else np.zeros(0, dtype=np.int64)
    return trained.astype(np.int64)


@dataclass(frozen=True, slots=True)
class SftState:
    """What the SFT task reads and renders records with, compiled once per stage."""

    # Every key is checked once, over SFT's fields and preference data's (`--columns chosen=good` in a
    # preference build, or in an SFT build that trains pairs' chosen side); the SFT reader gets its own.
    pair_columns: Columns  # to tell preference-shaped rows apart
    columns: Columns
    responses: Once[Renderer]  # the all_assistant renderer that counts response tokens, made on first use

    @classmethod
    def of(cls, stage: Stage) -> SftState:
        pair_columns = preference_columns(stage.options.columns)
        columns = Columns({name: column for name, column in pair_columns.explicit.items() if name in FIELD_ALIASES})
        return cls(
            pair_columns,
            columns,
            Once(lambda: Renderer.from_options(stage.tokenizer, stage.options, mask=MaskPolicy.ALL_ASSISTANT)),
        )


class SftTask:
    """The SFT task (`TaskModule`): assistant turns trained, verified per record."""

    task = Task.SFT
    columns: tuple[str, ...] = ("input_ids", "labels")
    unit = "sequences"
    rules = TaskRules()  # refuses only other tasks' own options

    def options(self, options: DataOptions) -> DataOptions:
        return options

    def compiled(self, stage: Stage) -> SftState:
        return SftState.of(stage)

    def examples(self, stage: Stage, location: Location, row: Any) -> tuple[Example, ...]:
        """The row's conversations (self-instruct `instances`: several); a preference-shaped row: see `_chosen`."""
        state = stage.state_as(SftState)
        if (
            looks_like_preference(row, state.pair_columns) is not None
            and (chosen := _chosen(stage, location, row)) is not None
        ):
            examples = chosen
        else:
            examples = to_examples(
                row, location, format=stage.options.format, columns=state.columns, roles=stage.options.roles
            )
        if stage.options.input_join is not None:
            examples = tuple(e.with_input_joined(stage.options.input_join) for e in examples)
        if isinstance(row, Mapping):  # the row's media columns (`images`), for <image> tags and bare image parts
            examples = attach_columns(examples, row, location)
        if stage.media is None:  # media a text build would drop: the record is refused, naming --processor
            for example in examples:
                no_processor(example)
        return examples

    def measure(
        self, stage: Stage, formatted: list[tuple[int, Example | Reject]], responses: bool
    ) -> list[tuple[int, Measured | Reject]]:
        """Render and mask the examples (one tokenizer call), under history=inference one row per turn that
        inference sees otherwise (`ftdata.chat.trajectory`); drift against recorded ids noted."""
        out: list[Any] = []
        todo: list[
            tuple[int, Example, Rendered, SplitRow | None]
        ] = []  # (position in `out`, example, rendering, row of a split)
        for record, example in formatted:
            if isinstance(example, Reject):
                out.append((record, example))
                continue
            try:
                rows = _rows(stage, example)
            except RecordError as exc:
                out.append((record, stage.reject(exc, example.source, RejectStage.RENDER)))
                continue
            for conversation, rendered, split_row in rows:
                todo.append((len(out), conversation, rendered, split_row))
                out.append((record, None))
        masked = stage.masker([r for _, _, r, _ in todo]) if todo else []
        counts = _response_counts(stage, [e for _, e, _, _ in todo], masked) if responses else [None] * len(todo)
        for (i, example, rendered, split_row), row, response in zip(todo, masked, counts):
            if isinstance(row, UnusableRecord):
                reason = f"{row.reason} ({split_row.describe()})" if split_row is not None else row.reason
                item: Measured | Reject = Reject(str(example.source), RejectStage.VERIFY, row.code, reason)
            else:
                drift = token_drift(example, row, stage.options)
                if stage.options.recorded_ids and any(d.differ for d in drift):
                    row, drift = recorded(row, example, drift, stage.tokenizer)
                if any(d.differ or d.stop_only for d in drift):
                    row = replace(row, notes=(*row.notes, *(d.note() for d in drift if d.differ or d.stop_only)))
                item = Measured(example, rendered, row, response, split_row, drift)
            out[i] = (out[i][0], item)
        return out

    def fit(self, stage: Stage, item: Measured, policy: TruncationPolicy | None) -> Truncated:
        """`item` fitted to max_length by `policy` (default: the build's): what build, stats and preview all use.

        A record that fits costs nothing more; an over-long one is shortened as a conversation
        and rendered again (`ftdata.tokens.truncation`).

        Raises:
            RecordError: policy `error` and the record is too long (names the record).
        """
        if item.total <= stage.options.max_length:
            return Truncated([row_of(item.tokenized)])
        try:
            with limits.pinned():
                result = stage.truncator(item.example, item.tokenized, policy=policy or stage.options.truncation)
        except UnusableRecord as exc:  # what the cut left cannot be trained (no assistant turn left): a reject
            return Truncated([], exc.reason, exc.code or RejectCode.NO_ASSISTANT)
        except limits.RecordOverLimit as exc:  # a re-render past a limit: rejected like the first render's (on_error)
            reject = stage.reject(exc, item.example.source, RejectStage.TRUNCATE)
            return Truncated([], reject.reason, reject.code)
        except RecordError as exc:
            raise RecordError(exc.reason, location=item.example.source, field=exc.field) from None
        if stage.media is not None and item.rendered.media:  # a media item is whole or absent, never cut
            result = stage.media.truncated(item, result, limit=stage.options.max_length)
        return result

    def reduce(self, stage: Stage, ran: Ran[Measured, Truncated]) -> SftPart:
        tree = stage.options.max_length if built_layout(stage.options) is TREE else None
        return sft_part(ran, media=stage.media, tree=tree, across=stage.options.shares_trees)

    def open_rows(self, path: Path, options: DataOptions) -> ArrowRows:
        return ArrowRows(path, media=options.processor is not None, tree=built_layout(options) is TREE)

    def finish(
        self,
        path: Path,
        options: DataOptions,
        report: BuildReport,
        *,
        splits: dict[str, np.ndarray] | None,
        pad_id: int,
    ) -> Dataset | DatasetDict:
        return finish(path, options, report, pad_id=pad_id, splits=splits)

    def stats(
        self, source: Any, stage: Stage, run: RunOptions | None = None, *, progress: Callable[[int], None] | None = None
    ) -> DataStats:
        return collect(source, stage, run, progress=progress)

    def jsonl(self, split: Dataset, tokenizer: PreTrainedTokenizerBase) -> Iterator[dict[str, object]]:
        return jsonl_rows(split, tokenizer)

    def row_units(self, rows: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """Every token of a row (packed: of its sequences and padding) and those with a label."""
        labels = rows.column("labels")
        labels = labels.combine_chunks() if isinstance(labels, pa.ChunkedArray) else labels  # a Table's, or a batch's
        lengths = pc.list_value_length(labels).to_numpy(zero_copy_only=False).astype(np.int64)
        return lengths, trained_per_row(labels.flatten().to_numpy(zero_copy_only=False), lengths)

    def schema(self, options: DataOptions) -> pa.Schema:
        layout = built_layout(options)  # packed rows (trees too, when packed) are the token columns and the layout's
        if options.packing:
            return layout.schema(TOKENS_SCHEMA)
        schema = layout.schema(ArrowRows.SCHEMA.remove(ArrowRows.SCHEMA.get_field_index(RECORD)))
        return schema.append(pa.field(MEDIA_FIELD, MEDIA_TYPE)) if options.processor is not None else schema


TASK: TaskModule[Example, Measured, Truncated, SftPart, SftState] = SftTask()


def _rows(stage: Stage, example: Example) -> Sequence[tuple[Example, Rendered, SplitRow | None]]:
    """The example's rows: one, or under history=inference the fewest that train every turn as inference
    sees it (`ftdata.chat.trajectory`). A multi-turn record's renders are shared among its checks and rows.

    Raises:
        RecordError: the record cannot be rendered (or one of its rows cannot).
    """
    assistants = [i for i, m in enumerate(example.messages) if m.role == "assistant"]
    # One assistant turn is a history turn too when messages follow it (tool results, a user's interrupt, as
    # agent sessions end): Qwen3 drops its reasoning there, so it may need a row of its own.
    if not stage.options.history.exact or assistants in ([], [len(example.messages) - 1]):
        return [(example, stage.renderer(example), None)]
    with shared_renders(every=True):
        first = stage.renderer(example)
        if not first.unheld:
            return [(example, first, None)]
        trained = [i for i, t in enumerate(trained_turns(flagged(example.messages), stage.options.mask)) if t]
        return split(stage.renderer, example, trained, first)


def _response_counts(stage: Stage, examples: list[Example], masked: list[Tokenized | UnusableRecord]) -> list[int]:
    """Each example's response tokens: its trained tokens under mask=all_assistant."""
    if stage.options.mask is MaskPolicy.ALL_ASSISTANT:
        return [count_trained(m.labels) if isinstance(m, Tokenized) else 0 for m in masked]
    responses = stage.state_as(SftState).responses.get()  # the all_assistant renderer, built on first use
    rendered: list[Rendered | None] = []
    for example in examples:
        try:
            rendered.append(responses(example))
        except RecordError:
            rendered.append(None)
    rows = iter(stage.masker([r for r in rendered if r is not None]))
    counts = []
    for r in rendered:
        row = next(rows) if r is not None else None
        counts.append(count_trained(row.labels) if isinstance(row, Tokenized) else 0)
    return counts


def _chosen(stage: Stage, location: Location, row: Any) -> tuple[Example, ...] | None:
    """A preference-shaped row in an SFT build. Told task=sft, a pair trains its chosen conversation (a KTO
    row: its conversation, the label unread: None); else the data mixes shapes and the build stops here.

    Raises:
        RecordError: the task was detected from the data's first record, which was SFT-shaped.
    """
    columns = stage.state_as(SftState).pair_columns
    if stage.options.task is Task.SFT:
        if looks_like_preference(row, columns) is Task.PREFERENCE:
            return tuple(
                p.chosen_example() for p in to_pairs(row, location, columns=columns, roles=stage.options.roles)
            )
        return None
    task = detect_task(row, location, columns=columns)  # a label to ask about: asks
    raise RecordError(
        f"is {task.value} data (chosen/rejected or a true/false label) but the build is SFT: the data's first "
        f"record is SFT data, or a source read once (a pipe) is not read ahead; choose with --task {task.value} "
        "or --task sft, or split the file by shape",
        location=location,
    )


def sft_part(
    ran: Ran[Measured, Truncated], *, media: Media | None = None, tree: int | None = None, across: bool = False
) -> SftPart:
    """A build's batch: the kept sequences of `ran` flattened into token arrays, with its rejects and counts.

    `media` (a build with a processor): each sequence's `media` column too (`Media.column`). `tree` (history=tree:
    the build's max_length): each record's rows as prefix trees of at most that many tokens (`tokens.tree`);
    `across` (`tree_across_records`): records that start with the same tokens share a tree.
    """
    if tree is not None:
        return _tree_part(ran, max_length=tree, across=across)
    seqs: list[tuple[list[int], list[int]]] = []
    groups: list[int] = []  # per sequence: its record in the batch
    where: list[str] = []  # per sequence: its record's location
    columns: list[list[dict[str, Any]]] | None = [] if media is not None else None
    for record, item, result in ran.kept():
        seqs.extend(result.rows)
        groups.extend(record for _ in result.rows)
        where.extend(item.location for _ in result.rows)
        if columns is not None:  # a row of the record as measured reuses its items; a shortened one reads them again
            sources = result.conversations or (item.example,) * len(result.rows)
            columns.extend(
                media.column(ids, example, placed=item.rendered.media if example is item.example else None)  # type: ignore[union-attr]  # columns is set only with media
                for (ids, _), example in zip(result.rows, sources)
            )
    report = ran.report
    out = SftPart(
        *_flatten(seqs),
        groups=np.asarray(groups, dtype=np.int64),
        rejects=ran.rejects,
        report=report,
        media=columns,
        weights=_weights(seqs),
        read=ran.read,
        sources=where,
    )
    report.sequences = len(seqs)
    report.tokens = int(out.lengths.sum())
    report.trained_tokens = int((out.labels != -100).sum())
    return out


def _tree_part(ran: Ran[Measured, Truncated], *, max_length: int, across: bool) -> SftPart:
    """`sft_part` under history=tree: the kept rows of the batch grown into trees (`run.trees.batch_trees`: with
    `across`, records that start alike share one); `tokens` counts what is forwarded (each tree's unique tokens).
    A tree's record index (`groups`) is its first record's, so a held-out split keeps the records of a tree together."""
    trees = batch_trees(ran, max_length=max_length, across=across)
    columns = [s.tree for s in trees]  # each tree's columns are arrays already: laid end to end as they are

    def joined(column: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(column).astype(dtype, copy=False) if column else np.zeros(0, dtype=dtype)

    weighted = any(t.weights is not None for t in columns)
    report = ran.report
    out = SftPart(
        joined([t.ids for t in columns], np.int32),
        joined([t.labels for t in columns], np.int32),
        np.fromiter((len(t.ids) for t in columns), dtype=np.int64, count=len(columns)),
        groups=np.asarray([s.records[0] for s in trees], dtype=np.int64),
        rejects=ran.rejects,
        report=report,
        weights=(
            joined([t.weights if t.weights is not None else np.ones(len(t.ids)) for t in columns], np.float32)
            if weighted
            else None
        ),
        read=ran.read,
        sources=[s.location for s in trees],
        positions=joined([t.positions for t in columns], np.int32),
    )
    report.sequences = len(trees)
    report.tokens = int(out.lengths.sum())
    report.trained_tokens = int((out.labels != -100).sum())
    return out


def _weights(seqs: list[tuple[list[int], list[int]]]) -> np.ndarray | None:
    """The loss weights of `seqs` laid end to end (1 for a row without them), or None when no row has any."""
    if not any(isinstance(row, WeightedRow) for row in seqs):
        return None
    return np.fromiter(
        chain.from_iterable(row.weights if isinstance(row, WeightedRow) else [1.0] * len(row[0]) for row in seqs),
        dtype=np.float32,
        count=sum(len(row[0]) for row in seqs),
    )


def _flatten(seqs: list[tuple[list[int], list[int]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, labels, lengths) of `seqs` as flat arrays."""
    ids, lengths = flat([ids for ids, _ in seqs])
    labels, _ = flat([labels for _, labels in seqs])
    return ids, labels, lengths


def trained_runs(ids: list[int], labels: list[int]) -> list[list[int]]:
    """The token ids of each contiguous run of trained labels.

    ids [5, 6, 7, 8, 9], labels [-100, 6, 7, -100, 9] -> [[6, 7], [9]]
    """
    runs: list[list[int]] = []
    previous = False
    for token, label in zip(ids, labels):
        trained = label != IGNORE_INDEX
        if trained and not previous:
            runs.append([])
        if trained:
            runs[-1].append(token)
        previous = trained
    return runs


def jsonl_rows(split: Any, tokenizer: Any, *, batch_size: int = 256) -> Iterator[dict[str, Any]]:
    """Rows with every column plus `text` (the decoded row) and `trained` (decoded trained runs)."""
    for batch in split.iter(batch_size=batch_size):
        texts = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=False)
        for i, text in enumerate(texts):
            runs = trained_runs(batch["input_ids"][i], batch["labels"][i])
            row = {"text": text, "trained": tokenizer.batch_decode(runs, skip_special_tokens=False) if runs else []}
            row.update({column: values[i] for column, values in batch.items()})
            yield row
