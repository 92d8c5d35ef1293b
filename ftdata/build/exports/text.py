"""Exports for the stacks that tokenize conversations themselves: the build's records as messages.

    verl      train.parquet: messages (role, content, tool_calls, reasoning_content; per message `loss_mask` 0/1,
              ftdata's choice of trained turns), tools, enable_thinking      data.multiturn.enable=true
    prime-rl  train.parquet: prompt (the messages before the first trained turn), completion (the rest)

The records are read again from the build's input (build.json names it and its sha256), through the build's
own options, and only those the build kept are written, in its row order: the messages as its chat template
got them (`Renderer.chat_messages`: tool-call arguments in the form the template writes). What these stacks
then train is their own tokenization: `ftdata.build.exports.agreement` compares it with the build's rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftdata.chat.render import apply_system, trained_turns
from ftdata.errors import ConfigError, RecordError
from ftdata.guard.bounds import ReadBounds
from ftdata.io.readers import read_records
from ftdata.options import BuildOptions
from ftdata.run.stage import Stage
from ftdata.types import Example, SystemMode


@dataclass(frozen=True)
class Conversation:
    """One kept record as a text stack reads it: its messages as the chat template gets them, which turns the build
    trains, its tools and its chat-template kwargs."""

    record: str
    messages: list[dict[str, Any]]
    trained: list[bool]
    tools: list[Any]
    kwargs: dict[str, Any]


def _data_input(manifest: dict[str, Any], out: Path) -> dict[str, Any]:
    data = [item for item in manifest["inputs"] if item.get("kind") == "data"]
    if len(data) != 1 or "path" not in data[0]:
        raise ConfigError(
            f"{out}: a text export re-reads the build's one data file, and build.json names {len(data)} data inputs "
            "(a recipe build); export each source's own build, or a token-id stack (skyrl, llamafactory, axolotl, "
            "tinker, unsloth)"
        )
    return data[0]


def conversations(out: Path, manifest: dict[str, Any], records: list[str], tokenizer: Any) -> Iterator[Conversation]:
    """The records named in `records` (the build's `record` column, in row order, each once), read again from the
    build's data file with the build's options.

    Raises:
        ConfigError: the build read a recipe or several files, or its data file is gone or changed.
    """
    data = _data_input(manifest, out)
    path, name = Path(data["path"]), str(data["name"])
    if not path.exists():
        raise ConfigError(f"{out}: its data file {path} is gone; a text export reads the records again from it")
    options = BuildOptions.from_mapping(manifest["options"]).data
    stage = Stage(tokenizer, options)
    renderer = stage.renderer
    wanted = set(records)
    found: dict[str, Example] = {}
    read = read_records(
        str(path),
        reader=options.reader,
        delimiter=options.delimiter,
        field=options.field,
        bounds=ReadBounds.of(options),
    )
    for location, row in read:
        key = str(location).replace(str(path), name, 1)
        if key not in wanted or isinstance(row, RecordError):
            continue
        for example in stage.examples(location, row):
            if isinstance(example, Example):
                found.setdefault(key, example)
    missing = [r for r in records if r not in found]
    if missing:
        raise ConfigError(
            f"{out}: {len(missing):,} of the build's records are no longer in {path} (first: {missing[0]}); "
            "build again before exporting"
        )
    kwargs = dict(options.chat_template_kwargs or {})
    for record in records:
        example = found[record]
        if renderer.system_prompt is not None or renderer.system_mode is SystemMode.FOLD:
            example = apply_system(example, renderer.system_prompt, renderer.system_mode)
        yield Conversation(
            record,
            renderer.chat_messages(example),
            trained_turns(example.messages, renderer.mask),
            list(example.tools),
            {**kwargs, **example.template_kwargs},
        )


def verl_rows(items: list[Conversation]) -> dict[str, list[Any]]:
    """The columns of verl's multi-turn SFT Parquet (`MultiTurnSFTDataset`): `messages` with a per-message
    `loss_mask`, `tools` (None for a record without), `enable_thinking` (where the build or a record sets it), and
    `conversation`: the record's messages and tools as exact JSON (verl does not read it; the agreement check does:
    Parquet holds nested values as structs, so a key one record has comes back as null in every other)."""
    messages = []
    for item in items:
        messages.append([{**m, "loss_mask": int(t)} for m, t in zip(item.messages, item.trained, strict=True)])
    thinking = [item.kwargs.get("enable_thinking") for item in items]
    return {
        "messages": messages,
        "tools": [item.tools or None for item in items],
        # verl 0.9.1 calls bool() on each value: a null (pandas NA) raises, so the column is left out when no record
        # sets it (the template's default applies)
        **({"enable_thinking": thinking} if any(v is not None for v in thinking) else {}),
        "conversation": [
            json.dumps({"messages": m, "tools": i.tools}, ensure_ascii=False) for m, i in zip(messages, items)
        ],
    }


def prime_rl_rows(items: list[Conversation]) -> dict[str, list[Any]]:
    """prime-rl's SFT columns: `prompt` (the messages before the first trained turn) and `completion` (the rest)."""
    prompts, completions = [], []
    for item in items:
        first = item.trained.index(True)
        prompts.append(item.messages[:first])
        completions.append(item.messages[first:])
    return {"prompt": prompts, "completion": completions}


STRINGIFIED = (
    "{column}: the records' values mix types that no Parquet column holds (a list in one record, a string in "
    "another); tool-call arguments are written as JSON strings, which the stack passes to the chat template as they are"
)


def write_parquet(columns: dict[str, list[Any]], path: Path) -> list[str]:
    """The columns as one Parquet file; returns notes. Values one Arrow type cannot hold (`messages` whose
    tool-call arguments differ in type between records) are written with the arguments as JSON strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    notes = []
    arrays = {}
    for name, values in columns.items():
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays[name] = pa.array([_arguments_as_strings(v) for v in values])
            notes.append(STRINGIFIED.format(column=name))
    pq.write_table(pa.table(arrays), str(path))
    return notes


def _arguments_as_strings(messages: Any) -> Any:
    if not isinstance(messages, list):
        return messages
    out = []
    for m in messages:
        calls = m.get("tool_calls") if isinstance(m, dict) else None
        if calls:
            m = {
                **m,
                "tool_calls": [
                    {**c, "function": {**c["function"], "arguments": _json(c["function"]["arguments"])}} for c in calls
                ],
            }
        out.append(m)
    return out


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
