"""Prompt-set rows out: the prompts a `PromptTask` kept -> an Arrow file -> `datasets.Dataset`.

    task=prompts   prompt (messages, or text)  prompt_ids (list<int32>)  tools (JSON text)  reward columns (typed)

The columns TRL's GRPO/RLOO trainers read: the prompt as they render it, its tokens, and each reward
column in the Arrow type its `reward_columns` type names (`records.reward_types`: lists and structs nested).

    build   prompt_part (the reducer, in the worker) ──▶ PromptRows (the rows file, each row's record)
            ──▶ rows.finish_rows: shuffled, split by record (test_size), the record column dropped
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ftdata.options import DataOptions
from ftdata.records.reward_types import OPEN, SKIP, is_open, parse_kind
from ftdata.run.open_columns import OpenColumns, rewrite
from ftdata.run.rows import RECORD, list_column
from ftdata.run.seam import Part
from ftdata.run.stage import Ran
from ftdata.tokens.packing import flat

__all__ = ["MESSAGE", "PromptPart", "PromptRow", "PromptRows", "arrow_type", "prompt_part", "prompt_schema"]

IDS = pa.list_(pa.int32())
SCALAR_TYPES = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "json": pa.string(),
}


def arrow_type(kind: str) -> pa.DataType:
    """The Arrow type of a reward column's type (`records.reward_types`): lists and structs stay nested."""
    parsed = parse_kind(kind.removesuffix("?"))
    return _arrow(parsed)


def _arrow(kind: Any) -> pa.DataType:
    if kind == OPEN:  # typed by Arrow over the records (`run.open_columns`); no record: no key
        return pa.struct([])
    if isinstance(kind, str):
        return SCALAR_TYPES[kind]
    if kind[0] == "list":
        return pa.list_(_arrow(kind[1]))
    return pa.struct([(key, _arrow(inner)) for key, inner in kind[1]])


MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])


@dataclass(frozen=True, slots=True)
class PromptRow:
    """One output row: the prompt as stored (messages, or text), its token ids, and the reward columns."""

    prompt: list[dict[str, str]] | str
    prompt_ids: list[int]
    columns: dict[str, Any] = field(default_factory=dict)
    tools: str | None = None  # the tool schemas rendered into the prompt, as JSON text


@dataclass
class PromptPart(Part):
    """A build's part of one batch of prompts (made in the worker): the token ids as one flat array, the stored
    prompts and reward columns as lists, each row's record in the batch, the rejects, the counts."""

    ids: tuple[np.ndarray, np.ndarray]
    prompts: list[Any]
    tools: list[str | None]
    columns: dict[str, list[Any]]
    # `groups`, `rejects`, `report`, `read` (prompts read no media file): the `Part` contract

    def units(self) -> tuple[np.ndarray, np.ndarray]:
        """Each row's tokens (its prompt's) and trained tokens (none), as a recipe counts them."""
        return self.ids[1], np.zeros(len(self.ids[1]), dtype=np.int64)


def prompt_part(ran: Ran) -> PromptPart:
    """The build's reducer for prompts: the rows `Stage.run` kept, with the counts a build reports."""
    rows: list[PromptRow] = []
    groups: list[int] = []
    for record, item, result in ran.kept():
        rows.extend(result.rows)
        groups.extend(record for _ in result.rows)
        if item.opens:
            ran.report.prompt_opens[item.opens] += 1
    names = list(rows[0].columns) if rows else []
    out = PromptPart(
        flat([r.prompt_ids for r in rows]),
        [r.prompt for r in rows],
        [r.tools for r in rows],
        {n: [r.columns[n] for r in rows] for n in names},
        groups=np.asarray(groups, dtype=np.int64),
        rejects=ran.rejects,
        report=ran.report,
    )
    out.report.sequences = len(rows)
    out.report.tokens, out.report.trained_tokens = int(out.ids[1].sum()), 0
    return out


def prompt_schema(options: DataOptions, *, text: bool | None = None) -> pa.Schema:
    """The columns of a prompt set: `prompt` (messages, or text with a prompt template), `prompt_ids`, `tools` (the
    schemas rendered into the prompt, JSON text; null without), the reward columns."""
    text = options.template not in (None, "chatml") if text is None else text
    prompt = pa.string() if text else pa.list_(MESSAGE)
    rewards = [(name, arrow_type(kind)) for name, kind in (options.reward_columns or {}).items() if kind != SKIP]
    return pa.schema([("prompt", prompt), ("prompt_ids", IDS), ("tools", pa.string()), *rewards])


class PromptRows:
    """Streams prompt rows into an Arrow IPC file that
    `Dataset.from_file` maps, each with its record's running index."""

    weighted = False

    def __init__(self, path: Path, options: DataOptions):
        self.path = path
        self.rows = 0
        self.records = 0  # records written before the current batch
        self.options = options
        self.schema: pa.Schema | None = None  # from the first batch (a chat template or a prompt template's text)
        self._writer: Any = None
        kinds = {name: kind for name, kind in (options.reward_columns or {}).items() if kind != SKIP}
        self.open = OpenColumns([name for name, kind in kinds.items() if is_open(kind)])

    def add(self, part: PromptPart) -> None:
        base, self.records = self.records, self.records + (int(part.groups.max()) + 1 if len(part.groups) else 0)
        if not len(part.groups):
            return
        typed, changed = self.open.arrays(part.columns)
        if self._writer is None:
            schema = prompt_schema(self.options, text=isinstance(part.prompts[0], str))
            self.schema = self.open.schema(schema.append(pa.field(RECORD, pa.int64())))
            self._writer = pa.ipc.new_stream(str(self.path), self.schema)
        elif changed:  # a wider struct, or values Arrow cannot unify: the rows so far in the new types
            assert self.schema is not None
            self._writer.close()
            self.schema = self.open.schema(self.schema)
            self._writer = rewrite(self.path, self.schema, self.open)
        schema = self.schema
        assert schema is not None  # set with the writer, from the first batch
        values, lengths = part.ids
        columns = [
            pa.array(part.prompts, type=schema.field("prompt").type),
            list_column(np.concatenate([[0], np.cumsum(lengths)]), values),
            pa.array(part.tools, type=pa.string()),
        ]
        columns += [
            typed[name] if name in typed else pa.array(part.columns[name], type=schema.field(name).type)
            for name in schema.names[3:-1]
        ]
        self._writer.write_batch(pa.record_batch([*columns, pa.array(part.groups + base)], schema=schema))
        self.rows += len(part.groups)

    def close(self) -> None:
        if self._writer is None:  # no row: an empty file of the set's columns
            self.schema = prompt_schema(self.options).append(pa.field(RECORD, pa.int64()))
            self._writer = pa.ipc.new_stream(str(self.path), self.schema)
        self._writer.close()
