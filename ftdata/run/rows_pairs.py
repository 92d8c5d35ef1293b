"""Preference rows out: the pairs a `PairStage` kept -> an Arrow file -> `datasets.Dataset`.

    task=preference   prompt_ids  chosen_ids  rejected_ids     list<int32> each
                      (+ chosen_mask  rejected_mask             list<int8>: completions of several messages)
    task=kto          prompt_ids  completion_ids  label        list<int32>, list<int32>, bool
                      (+ completion_mask                        list<int8>)

A completion of several messages (an agent trajectory after the divergence: `run.trajectory_pairs`) holds
tokens the model reads, not writes (tool results): its mask is 1 on the tokens trained, 0 on those; a build
with no such completion writes no mask column (every completion token is trained, as TRL's collators train it).

The columns TRL's preference collators read (`DataCollatorForPreference`,
`DataCollatorForUnpairedPreference`): they add no BOS and no EOS and make the attention and
completion masks themselves, so a row holds nothing else. `prompt_ids` holds the tokenizer's BOS
where inference adds one; each completion ends with its stop token.

    build   pair_part (the reducer, in the worker) ──▶ PairRows (the rows file, each row's record)
            ──▶ rows.finish_rows: shuffled, split by record (test_size), the record column dropped
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ftdata.run.stage import Ran
from ftdata.tokens.packing import flat
from ftdata.run.seam import Part
from ftdata.run.rows import RECORD, list_column
from ftdata.types import Task

__all__ = [
    "COMPLETIONS",
    "MASKS",
    "row_sums",
    "PairPart",
    "PairRow",
    "PairRows",
    "jsonl_pair_rows",
    "pair_part",
    "pair_schema",
]

COMPLETIONS = {Task.PREFERENCE: ("chosen_ids", "rejected_ids"), Task.KTO: ("completion_ids",)}
MASKS = {Task.PREFERENCE: ("chosen_mask", "rejected_mask"), Task.KTO: ("completion_mask",)}
IDS = pa.list_(pa.int32())
MASK = pa.list_(pa.int8())


@dataclass(frozen=True, slots=True)
class PairRow:
    """One output row: the prompt's tokens and each completion's (chosen, rejected; or a KTO completion)."""

    prompt: list[int]
    completions: tuple[list[int], ...]
    label: bool | None = None  # KTO: the completion is desirable
    masks: tuple[list[int], ...] | None = None  # each completion's trained tokens (1); None: every token

    @property
    def length(self) -> int:
        """The longest sequence the trainer makes of the row: the prompt and its longer completion."""
        return len(self.prompt) + max(map(len, self.completions))

    @property
    def tokens(self) -> int:
        return len(self.prompt) + self.trained

    @property
    def trained(self) -> int:
        """Completion tokens that carry loss."""
        return sum(map(sum, self.masks)) if self.masks is not None else sum(map(len, self.completions))


def pair_schema(task: Task) -> pa.Schema:
    """The columns of `task`'s rows, as written to the output."""
    fields = [("prompt_ids", IDS), *((name, IDS) for name in COMPLETIONS[task])]
    return pa.schema([*fields, ("label", pa.bool_())] if task is Task.KTO else fields)


@dataclass
class PairPart(Part):
    """A build's output for one batch of pairs, made in the worker: the kept rows as flat token columns
    (`prompt_ids`, then each completion's: every row's tokens in one int32 array and each row's length),
    KTO's labels, each row's record in the batch, the rejects, the counts. Arrays, not lists of rows: a
    worker process sends them back as a few buffers, and the parent writes them without a Python loop."""

    columns: list[tuple[np.ndarray, np.ndarray]]
    labels: np.ndarray | None  # `groups`, `rejects`, `report`, `read` (pairs read no media file): the `Part` contract
    masks: list[tuple[np.ndarray, np.ndarray]] | None = None  # each completion's mask (flat, lengths); None: all 1

    @property
    def size(self) -> int:
        """Rows in the part."""
        return len(self.groups)

    def units(self) -> tuple[np.ndarray, np.ndarray]:
        """Each row's tokens and trained tokens, as a recipe counts them (`pair_units`)."""
        prompt, *completions = (lengths for _, lengths in self.columns)
        return pair_units(prompt, completions, None if self.masks is None else [row_sums(*m) for m in self.masks])


def pair_units(
    prompt: np.ndarray, completions: list[np.ndarray], trained: list[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A pair's (or KTO row's) tokens and trained tokens, from each row's prompt and completion lengths: what the
    row holds, the prompt once and each completion once (a trainer that runs prompt + chosen and prompt + rejected
    reads the prompt twice; a row holds it once), and its completions, trained (`trained`: each completion's
    trained tokens, where masks leave some out)."""
    total = np.zeros(len(prompt), dtype=np.int64)
    for lengths in completions:
        total += lengths
    if trained is None:
        return prompt + total, total
    return prompt + total, np.asarray(np.sum(trained, axis=0, dtype=np.int64))


def row_sums(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each row's sum of a flat column (`values`, `lengths` per row)."""
    ends = np.cumsum(lengths)
    sums = np.concatenate([[0], np.cumsum(values, dtype=np.int64)])
    return (sums[ends] - sums[ends - lengths]).astype(np.int64)


def pair_part(ran: Ran) -> PairPart:
    """The build's reducer for pairs: the rows `Stage.run` kept (after the whole-record rule), with the counts
    a build reports: a row is a sequence, its tokens the prompt's and the completions', the completions' trained."""
    rows: list[PairRow] = []
    groups: list[int] = []
    for record, _, result in ran.kept():
        rows.extend(result.rows)
        groups.extend(record for _ in result.rows)
    columns = [flat([row.prompt for row in rows])]
    columns += [flat([row.completions[i] for row in rows]) for i in range(len(rows[0].completions) if rows else 0)]
    labels = np.array([row.label for row in rows], dtype=bool) if rows and rows[0].label is not None else None
    masks = None
    if any(row.masks is not None for row in rows):
        masks = [
            flat([row.masks[i] if row.masks is not None else [1] * len(row.completions[i]) for row in rows])
            for i in range(len(rows[0].completions))
        ]
    out = PairPart(
        columns, labels, masks, groups=np.asarray(groups, dtype=np.int64), rejects=ran.rejects, report=ran.report
    )
    tokens, trained = out.units()
    out.report.sequences = len(rows)
    out.report.tokens, out.report.trained_tokens = int(tokens.sum()), int(trained.sum())
    return out


class PairRows:
    """Streams pair rows into an Arrow IPC file that `Dataset.from_file` maps, each with its record's running index."""

    weighted = False  # pairs carry no loss weights (the SFT rows' `ArrowRows` may)

    def __init__(self, path: Path, *, task: Task):
        self.path = path
        self.task = task
        self.rows = 0
        self.records = 0  # records written before the current batch
        self.schema = pair_schema(task).append(pa.field(RECORD, pa.int64()))
        self.masked = False  # the mask columns, from the first batch with a completion of several messages
        self._writer = pa.ipc.new_stream(str(path), self.schema)

    def add(self, part: PairPart) -> None:
        base, self.records = self.records, self.records + (int(part.groups.max()) + 1 if len(part.groups) else 0)
        if not part.size:
            return
        if part.masks is not None and not self.masked:
            self._add_masks()
        columns = [list_column(np.concatenate([[0], np.cumsum(lengths)]), values) for values, lengths in part.columns]
        if self.task is Task.KTO:
            columns.append(pa.array(part.labels, type=pa.bool_()))
        if self.masked:
            ones = [(np.ones(int(lengths.sum()), dtype=np.int8), lengths) for _, lengths in part.columns[1:]]
            for values, lengths in part.masks or ones:
                columns.append(list_column(np.concatenate([[0], np.cumsum(lengths)]), values.astype(np.int8)))
        self._writer.write_batch(pa.record_batch([*columns, pa.array(part.groups + base)], schema=self.schema))
        self.rows += part.size

    def _add_masks(self) -> None:
        """The mask columns added: the rows written so far again, each completion token trained (1)."""
        self._writer.close()
        with pa.OSFile(str(self.path), "rb") as source:  # into memory: the file is written again
            table = pa.ipc.open_stream(source).read_all()
        fields = [*pair_schema(self.task), *(pa.field(name, MASK) for name in MASKS[self.task])]
        self.schema = pa.schema([*fields, pa.field(RECORD, pa.int64())])
        self._writer = pa.ipc.new_stream(str(self.path), self.schema)
        for batch in table.to_batches():
            masks = [_ones_like(batch.column(name)) for name in COMPLETIONS[self.task]]
            names = [*pair_schema(self.task).names]
            self._writer.write_batch(
                pa.record_batch([*(batch.column(n) for n in names), *masks, batch.column(RECORD)], schema=self.schema)
            )
        self.masked = True

    def close(self) -> None:
        self._writer.close()


def _ones_like(column: pa.Array) -> pa.Array:
    """A mask of 1 for every token of a list column."""
    lengths = np.asarray(column.value_lengths().fill_null(0), dtype=np.int64)
    return list_column(np.concatenate([[0], np.cumsum(lengths)]), np.ones(int(lengths.sum()), dtype=np.int8))


def jsonl_pair_rows(split: Any, tokenizer: Any, *, batch_size: int = 256) -> Iterator[dict[str, Any]]:
    """Pair rows with every column plus each one decoded: `prompt`, and `chosen`/`rejected` (or `completion`)."""
    names = [c for c in split.column_names if c.endswith("_ids")]
    for batch in split.iter(batch_size=batch_size):
        decoded = {name: tokenizer.batch_decode(batch[name], skip_special_tokens=False) for name in names}
        for i in range(len(batch[names[0]])):
            row = {name.removesuffix("_ids"): decoded[name][i] for name in names}
            row.update({column: values[i] for column, values in batch.items()})
            yield row
