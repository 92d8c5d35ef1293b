"""`ftdata export OUT --to STACK,...`: one build, the files each training stack loads, beside the build.

    OUT/export-skyrl/          train.parquet         input_ids, loss_mask           (SkyRL pretokenized SFT)
    OUT/export-llamafactory/   tokenized/            input_ids, attention_mask, labels (LLaMA-Factory tokenized_path)
    OUT/export-axolotl/        train.parquet         input_ids, attention_mask, labels (axolotl pretokenized)
    OUT/export-tinker/         train.jsonl           tinker Datum: model_input, loss_fn_inputs (shifted)
    OUT/export-unsloth/        dataset/              the build's rows (TRL's SFTTrainer, under Unsloth)
    OUT/export-verl/           train.parquet         messages (+ per-message loss_mask), tools, enable_thinking
    OUT/export-prime-rl/       train.parquet         prompt, completion (messages)
    OUT/export-*/export.json   what was written, from which build (fingerprint), rows, tokens, trained tokens

A preference build goes to LLaMA-Factory (its pairwise `tokenized/` columns) and Unsloth (the pair rows, for TRL's
DPOTrainer); a prompt set to verl's RL Parquet.

Each folder is written whole under a temporary name and renamed into place (`safeio.OutputDir`, as `ftdata
build` writes its files); OUT then owns it, so a later build into OUT removes it with the rest of the old build.
Token-id stacks get the build's own ids and masks; the stacks that tokenize messages themselves get the records
(their agreement with the build: `agreement.py`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftdata.build.exports import prompts, text, tokens
from ftdata.build.exports.rows import RECORD, TokenRow, has_weights, token_rows
from ftdata.build.load import load
from ftdata.errors import ConfigError
from ftdata.guard.safeio import OutputDir
from ftdata.io.resources import load_tokenizer
from ftdata.run.stage import task_module
from ftdata.tokens.layouts import layout_of
from ftdata.types import Task

MANIFEST = "export.json"
PREFIX = "export-"  # OUT/export-<stack>


@dataclass(frozen=True)
class Stack:
    """One stack: what it reads (`kind`: token ids or messages), which row layouts it trains as built (the others
    are written as plain sequences: packed rows per document, tree rows as their split rows), and how it is fed."""

    name: str
    kind: str  # "tokens" | "text"
    trains: tuple[str, ...]  # layouts written as built
    config: tuple[str, ...]  # the lines of its config that consume the export ({dir}: the export folder)
    weights: bool = False  # takes per-token loss weights


STACKS: dict[str, Stack] = {
    s.name: s
    for s in (
        Stack(
            "skyrl",
            "tokens",
            ("plain",),
            ("python -m skyrl.train.main_sft ... \"pretokenized_dataset_paths=['{dir}/train.parquet']\"",),
        ),
        Stack("llamafactory", "tokens", ("plain",), ("tokenized_path: {dir}/tokenized",)),
        Stack(
            "axolotl",
            "tokens",
            ("plain",),
            ("datasets:", "  - path: {dir}/train.parquet", "    ds_type: parquet", "    type:  # none: pretokenized"),
        ),
        Stack(
            "tinker",
            "tokens",
            ("plain",),
            (
                "rows = [json.loads(line) for line in open('{dir}/train.jsonl')]",
                "datums = [tinker.Datum(model_input=tinker.ModelInput.model_validate(d['model_input']), "
                "loss_fn_inputs=d['loss_fn_inputs']) for d in rows]",
            ),
            weights=True,
        ),
        Stack(
            "unsloth",
            "tokens",
            ("plain", "packed"),
            (
                "dataset = datasets.load_from_disk('{dir}/dataset')",
                "SFTTrainer(model=model, train_dataset=dataset['train'], args=SFTConfig(...))",
            ),
            weights=False,
        ),
        Stack(
            "verl",
            "text",
            (),
            (
                "data.train_files={dir}/train.parquet data.multiturn.enable=true data.multiturn.messages_key=messages "
                "data.multiturn.tools_key=tools data.multiturn.enable_thinking_key=enable_thinking",
            ),
        ),
        Stack("prime-rl", "text", (), ("[data]", 'name = "{dir}"  # a folder of train.parquet: prompt, completion')),
    )
}


def parse_stacks(value: str | list[str]) -> list[str]:
    """`skyrl,verl` (or a list) as stack names, each known, in the order given, each once."""
    names = [n.strip() for part in ([value] if isinstance(value, str) else value) for n in part.split(",")]
    names = [n for n in dict.fromkeys(names) if n]
    unknown = [n for n in names if n not in STACKS]
    if unknown or not names:
        raise ConfigError(
            f"--to names no stack ftdata exports to: {', '.join(unknown) or '(empty)'}; choose from {', '.join(STACKS)}"
        )
    return names


@dataclass
class Exported:
    """One stack's export: its folder and manifest."""

    stack: str
    folder: Path
    manifest: dict[str, Any]


def export(out: str | Path, stacks: str | list[str], *, tokenizer: Any = None) -> list[Exported]:
    """Write the files each of `stacks` loads into OUT/export-<stack>/, from the SFT build in `out`.

    Raises:
        ConfigError: `out` is no build, not an SFT build, or a stack cannot take what it holds.
    """
    names = parse_stacks(stacks)
    built = load(out)
    folder = Path(out).expanduser()
    manifest = built.manifest or {}
    task = built.report.task
    takes = {"sft": list(STACKS), "prompts": list(PROMPT_STACKS), "preference": list(PAIR_STACKS)}.get(task, [])
    if refused := [n for n in names if n not in takes]:
        raise ConfigError(
            f"{folder}: a {task} build; {', '.join(refused)} cannot take it: ftdata exports SFT builds to every stack,"
            f" prompt sets to {', '.join(PROMPT_STACKS)} and preference pairs to {', '.join(PAIR_STACKS)} (the "
            "others train no pairs from token ids)"
        )
    splits = dict(built.dataset) if isinstance(built.dataset, dict) else {"train": built.dataset}
    done = []
    with OutputDir(folder) as target:
        for name in names:
            stack = STACKS[name]
            with target.write(PREFIX + name) as tmp:
                tmp.mkdir()
                if task == "prompts":
                    record = _write_prompts(stack, splits, tmp, folder, manifest)
                elif task == "preference":
                    record = _write_pairs(stack, splits, tmp, folder, manifest, task)
                else:
                    record = _write(stack, splits, tmp, folder, manifest, tokenizer)
                (tmp / MANIFEST).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            done.append(Exported(name, folder / (PREFIX + name), record))
        target.finish(adding=True)
    return done


PAIR_STACKS = {
    "llamafactory": ("stage: dpo", "tokenized_path: {dir}/tokenized"),
    "unsloth": (
        "dataset = datasets.load_from_disk('{dir}/dataset')",
        "DPOTrainer(model=model, train_dataset=dataset['train'], args=DPOConfig(...))",
    ),
}


def _write_pairs(
    stack: Stack, splits: dict[str, Any], tmp: Path, out: Path, manifest: dict[str, Any], task: str
) -> dict[str, Any]:
    """A preference build's pairs in the stack's DPO input (`tokens.write_llamafactory_pairs`; Unsloth: the rows)."""
    columns = task_module(Task(task)).columns  # the pair task's: the prompt's ids, then each completion's
    if stack.name == "unsloth":
        files = tokens.write_unsloth(splits, tmp)
    else:
        files = tokens.write_llamafactory_pairs(splits, tmp, columns)
    completions = columns[1:]
    counts = {
        name: {
            "pairs": len(split),
            "completion_tokens": sum(len(ids) for column in completions for ids in split[column]),
        }
        for name, split in splits.items()
    }
    return {
        "stack": stack.name,
        "task": "preference",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build": str(out),
        "fingerprint": manifest.get("fingerprint"),
        "tokenizer": manifest.get("tokenizer"),
        "files": files,
        "counts": counts,
        "config": [line.format(dir=out / (PREFIX + stack.name)) for line in PAIR_STACKS[stack.name]],
        "notes": [],
    }


PROMPT_STACKS = {"verl": ("data.train_files={dir}/train.parquet data.prompt_key=prompt  # RL (PPO, GRPO)",)}


def _write_prompts(
    stack: Stack, splits: dict[str, Any], tmp: Path, out: Path, manifest: dict[str, Any]
) -> dict[str, Any]:
    rewards = list((manifest.get("options") or {}).get("reward_columns") or {})
    data = [Path(str(i.get("name"))).name for i in manifest.get("inputs", []) if i.get("kind") == "data"]
    files = prompts.write_verl_rl(splits, tmp, source=data[0] if len(data) == 1 else "ftdata", rewards=rewards)
    return {
        "stack": stack.name,
        "task": "prompts",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build": str(out),
        "fingerprint": manifest.get("fingerprint"),
        "tokenizer": manifest.get("tokenizer"),
        "files": files,
        "counts": {name: {"rows": len(split)} for name, split in splits.items()},
        "config": [line.format(dir=out / (PREFIX + stack.name)) for line in PROMPT_STACKS[stack.name]],
        "notes": [
            f"reward_model.ground_truth is the {rewards[0]!r} column as the data holds it: check that the reward "
            "function reads that form"
        ],
    }


def _write(
    stack: Stack,
    splits: dict[str, Any],
    tmp: Path,
    out: Path,
    manifest: dict[str, Any],
    tokenizer: Any,
) -> dict[str, Any]:
    built_layout = layout_of(next(iter(splits.values()))).name
    rows = {name: list(token_rows(split)) for name, split in splits.items()}
    notes = []
    if built_layout not in stack.trains and built_layout != "plain":
        notes.append(_unfold_note(built_layout, stack.name))
    if any(has_weights(split) for split in splits.values()) and not stack.weights:
        notes.append(f"{stack.name} takes no per-token loss weights: the build's loss_weights are left out")
    if stack.kind == "text":
        files, counts = _write_text(stack, rows, tmp, out, manifest, tokenizer, notes)
        notes.append(
            f"{stack.name} tokenizes the messages itself: check what it trains against the build with "
            f"scripts/stacks/agree.py {stack.name} {out}"
        )
    else:
        as_built = stack.name == "unsloth" and built_layout != "tree"  # the build's own rows, packed ones too
        files = _WRITERS[stack.name](splits if as_built else rows, tmp)
        counts = _counts(rows)
        if as_built:
            counts = {name: {**c, "rows": len(splits[name])} for name, c in counts.items()}
    return {
        "stack": stack.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build": str(out),
        "fingerprint": manifest.get("fingerprint"),
        "tokenizer": manifest.get("tokenizer"),
        "layout": {"built": built_layout, "written": _written_layout(stack, built_layout)},
        "files": files,
        "counts": counts,
        "config": [line.format(dir=out / (PREFIX + stack.name)) for line in stack.config],
        "notes": notes,
    }


def _written_layout(stack: Stack, built: str) -> str:
    if stack.kind == "text":
        return "records"
    if built in stack.trains or built == "plain":
        return built
    return "split rows" if built == "tree" else "plain (one document a row)"


def _unfold_note(built: str, stack: str) -> str:
    if built == "tree":
        return (
            f"{stack} cannot attend along a tree: each tree is written as its split rows (every trained token once, "
            "in its own context: the trained tokens of history=inference)"
        )
    return f"{stack} reads one document a row: each packed row is written as its documents"


def _counts(rows: dict[str, list[TokenRow]]) -> dict[str, dict[str, int]]:
    return {
        name: {
            "rows": len(split),
            "tokens": sum(len(r.input_ids) for r in split),
            "trained_tokens": sum(r.trained for r in split),
        }
        for name, split in rows.items()
    }


def _write_text(
    stack: Stack,
    rows: dict[str, list[TokenRow]],
    tmp: Path,
    out: Path,
    manifest: dict[str, Any],
    tokenizer: Any,
    notes: list[str],
) -> tuple[list[str], dict[str, dict[str, int]]]:
    if any(r.record is None for split in rows.values() for r in split):
        raise ConfigError(
            f"{out}: packed rows keep no record locations; {stack.name} reads records: build without --packing"
        )
    tok = tokenizer if tokenizer is not None else load_tokenizer(_tokenizer_path(manifest, out))
    files, counts = [], {}
    for name, split in rows.items():
        records = list(dict.fromkeys(str(r.record) for r in split))
        items = list(text.conversations(out, manifest, records, tok))
        columns = text.verl_rows(items) if stack.name == "verl" else text.prime_rl_rows(items)
        notes.extend(
            n for n in text.write_parquet({RECORD: records, **columns}, tmp / f"{name}.parquet") if n not in notes
        )
        files.append(f"{name}.parquet")
        counts[name] = {"records": len(items), **_counts({name: split})[name]}
    return files, counts


def _tokenizer_path(manifest: dict[str, Any], out: Path) -> str:
    for item in manifest.get("inputs", []):
        if item.get("kind") == "tokenizer":
            return str(item.get("path") or item["name"])
    return str(manifest.get("tokenizer"))


_WRITERS: dict[str, Callable[[Any, Path], list[str]]] = {
    "skyrl": tokens.write_skyrl,
    "llamafactory": tokens.write_llamafactory,
    "axolotl": tokens.write_axolotl,
    "tinker": tokens.write_tinker,
    "unsloth": tokens.write_unsloth,
}
