"""A prompt set's object columns (`struct`, `list[struct]`: `records.reward_types.OPEN`) typed by Arrow itself.

The type of such a column is what `pa.array` infers for the records' values, as `datasets.Dataset.from_list`
gives a user: the union of the objects' keys (a key a record lacks is null there), each key's values unified
(int and float: float). verifiers' `info` is `{}` in one record and `{index, source}` in another: the column
is `struct<index: int64, source: string>`, the first row `{index: null, source: null}`.

Rows are written batch by batch: each batch is typed on its own and unified with the file's type so far; a
wider type (a key first seen in a later batch) widens the rows written before it (`OpenColumns.recast`).
Where Arrow cannot unify the values (an int in one record and a string in another, in one key; `datasets`
refuses such records too) the column is each value's JSON text, the rows before it too, and the file's
schema says why (`JSON_TEXT`): the build notes it (`json_text_notes`).

An engine=ray build types each shard's rows in its worker; the driver unifies the shards' schemas the same way,
in shard order (`OpenColumns.take`), and each shard's rows are cast to them (`OpenColumns.cast`) before they are
written. `{}` in every record is `struct<>`, which Parquet cannot store (`check_parquet`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from ftdata.errors import ConfigError
from ftdata.outcomes import Note, NoteCode

__all__ = ["JSON_TEXT", "OpenColumns", "check_parquet", "json_text_notes", "open_names", "rewrite"]

JSON_TEXT = b"ftdata.json_text"  # schema metadata: {column: why Arrow cannot type it} for columns stored as JSON text
_CANNOT = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


def _json(values: Sequence[Any]) -> pa.Array:
    return pa.array(
        [None if v is None else json.dumps(v, ensure_ascii=False, sort_keys=True, allow_nan=False) for v in values],
        type=pa.string(),
    )


def _unified(name: str, a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """The type Arrow unifies column `name`'s `a` and `b` to (struct keys joined, int and float to float, null to
    either); Arrow's error names the column."""
    schemas = [pa.schema([(name, a)]), pa.schema([(name, b)])]
    return pa.unify_schemas(schemas, promote_options="permissive").field(0).type


class OpenColumns:
    """The Arrow types of a rows file's object columns, as the batches written so far unify them."""

    def __init__(self, names: Sequence[str]):
        self.names = tuple(names)
        self.types: dict[str, pa.DataType] = {}
        self.json: dict[str, str] = {}  # column -> why Arrow cannot unify its values

    def arrays(self, columns: Mapping[str, Sequence[Any]]) -> tuple[dict[str, pa.Array], bool]:
        """One batch's object columns as arrays of the file's types, and whether those types changed (the rows
        written before must be recast to them)."""
        out: dict[str, pa.Array] = {}
        changed = False
        for name in self.names:
            values = columns[name]
            if name not in self.json:
                try:
                    array = pa.array(values)
                    changed = self._widen(name, array.type) or changed
                    if name not in self.json:
                        out[name] = array.cast(self.types[name])
                        continue
                except _CANNOT as exc:
                    changed = self._text(name, exc) or changed
            out[name] = _json(values)
        return out, changed

    def take(self, schema: pa.Schema) -> None:
        """Unify the types of rows written elsewhere (an engine=ray shard's, `schema`) into these, as a batch's are:
        a column that shard stored as JSON text is JSON text here too."""
        why = json.loads((schema.metadata or {}).get(JSON_TEXT, b"{}"))
        for name in self.names:
            if name in why and name not in self.json:
                self.json[name], self.types[name] = why[name], pa.string()
            elif name not in self.json:
                self._widen(name, schema.field(name).type)

    def _widen(self, name: str, kind: pa.DataType) -> bool:
        """Column `name`'s type unified with `kind`; whether it changed (JSON text where Arrow cannot unify)."""
        before = self.types.get(name)
        try:
            self.types[name] = kind if before is None else _unified(name, before, kind)
        except _CANNOT as exc:
            return self._text(name, exc)
        return before is not None and self.types[name] != before

    def _text(self, name: str, exc: Exception) -> bool:
        """Column `name` is JSON text from now on (Arrow's `exc` says why); whether it had another type."""
        self.json[name] = str(exc).splitlines()[0]
        changed = name in self.types
        self.types[name] = pa.string()
        return changed

    def schema(self, schema: pa.Schema) -> pa.Schema:
        """`schema` with the object columns' types, and the columns stored as JSON text in its metadata."""
        for name in self.names:
            if name in self.types:
                schema = schema.set(schema.get_field_index(name), pa.field(name, self.types[name]))
        return schema.with_metadata({JSON_TEXT: json.dumps(self.json).encode()}) if self.json else schema

    def recast(self, batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
        """A batch written before the types changed, in `schema`'s types: a struct widened (the new keys null),
        or each value's JSON text."""
        columns = []
        for name, column in zip(batch.schema.names, batch.columns):
            target = schema.field(name).type
            if column.type == target:
                columns.append(column)
            elif name in self.json:
                columns.append(_json(column.to_pylist()))
            else:
                columns.append(column.cast(target))
        return pa.record_batch(columns, schema=schema)

    def cast(self, table: pa.Table) -> pa.Table:
        """`table` (rows typed before every batch or shard was seen) in these types (`recast`)."""
        schema = self.schema(table.schema)
        return pa.Table.from_batches([self.recast(batch, schema) for batch in table.to_batches()], schema=schema)

    def notes(self) -> tuple[Note, ...]:
        """The notes of the columns stored as JSON text (`json_text_notes`)."""
        return _notes(self.json)


def rewrite(path: Path, schema: pa.Schema, open_columns: OpenColumns) -> Any:
    """The rows file at `path` (an Arrow IPC stream, closed) written again in `schema`; the writer, open for more."""
    with pa.OSFile(str(path), "rb") as source:  # read into memory: the file is replaced below
        batches = list(pa.ipc.open_stream(source))
    widened = path.with_suffix(".wide")
    writer = pa.ipc.new_stream(str(widened), schema)
    for batch in batches:
        writer.write_batch(open_columns.recast(batch, schema))
    widened.replace(path)  # the open writer keeps writing the same file, now at `path`
    return writer


def json_text_notes(path: Path) -> tuple[Note, ...]:
    """The notes of a rows file whose object columns Arrow could not type (stored as JSON text)."""
    with pa.ipc.open_stream(str(path)) as reader:
        meta = reader.schema.metadata or {}
    return _notes(json.loads(meta.get(JSON_TEXT, b"{}")))


def _notes(why: Mapping[str, str]) -> tuple[Note, ...]:
    return tuple(
        Note(
            NoteCode.JSON_TEXT,
            f"column {name}: Arrow cannot unify its values ({reason}), as datasets cannot; stored as JSON text",
        )
        for name, reason in why.items()
    )


def open_names(schema: pa.Schema) -> list[str]:
    """The columns of a task's schema (`TaskModule.schema`) whose types the records decide: an object column
    (`struct`, `list[struct]`) stands there as a struct with no field (`rows_prompts.arrow_type`)."""
    return [field.name for field in schema if fieldless(field.type)]


def check_parquet(schema: pa.Schema) -> None:
    """Refuse what Parquet cannot store: an object column that is `{}` in every record (`struct<>`, which the
    Arrow output keeps).

    Raises:
        ConfigError: naming the column and the way out.
    """
    for field in schema:
        if fieldless(field.type):
            raise ConfigError(
                f"column {field.name} is {{}} in every record ({field.type}): Parquet cannot store a struct with no "
                f"field; write Arrow (output_format='arrow', engine=local or processes), or leave the column out "
                f"(reward_columns={{{field.name!r}: 'skip'}})"
            )


def fieldless(kind: pa.DataType) -> bool:
    """Whether `kind` holds a struct with no field (what Parquet cannot store), at any depth."""
    if pa.types.is_struct(kind):
        return kind.num_fields == 0 or any(fieldless(kind.field(i).type) for i in range(kind.num_fields))
    return pa.types.is_list(kind) and fieldless(kind.value_type)
