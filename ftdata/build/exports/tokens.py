"""Exports for the stacks that take token ids: ftdata's own ids and masks, in each stack's columns and files.

    skyrl         train.parquet: input_ids, loss_mask (full sequence, 0/1)      pretokenized_dataset_paths
    llamafactory  tokenized/ (save_to_disk: train, validation): input_ids,       tokenized_path
                  attention_mask, labels
    axolotl       train.parquet: input_ids, attention_mask, labels               datasets: [{path, ds_type: parquet}]
    unsloth       dataset/ (save_to_disk): the build's rows as built             SFTTrainer(train_dataset=...)
    tinker        train.jsonl: one `tinker.Datum` a line (model_input tokens,    tinker.Datum(model_input=...,
                  loss_fn_inputs target_tokens + weights, shifted by one)          loss_fn_inputs=...)

Preference pairs (a `task=preference` build: the prompt's ids, each completion's) go to the stacks whose DPO
takes token ids:

    llamafactory  tokenized/: chosen_input_ids, chosen_attention_mask, chosen_labels and the same for rejected
                  (its PairwiseDatasetProcessor's columns: the prompt then the completion, the prompt's labels -100)
    unsloth       dataset/: the build's own pair rows, which TRL's DPOTrainer (under Unsloth) takes as processed

Labels are never shifted (the model shifts), except tinker's Datum, which holds the targets: input tokens
`ids[:-1]`, `target_tokens` `ids[1:]`, `weights[i]` the weight of `target_tokens[i]`
(tinker-cookbook's `datum_from_model_input_weights`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftdata.build.exports.rows import TokenRow
from ftdata.types import IGNORE_INDEX

# A split's name in each stack's files (ftdata's `test` split is LLaMA-Factory's `validation`).
_LF_SPLITS = {"train": "train", "test": "validation"}


def _parquet(rows: list[TokenRow], path: Path, columns: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({name: pa.array([fn(row) for row in rows], type=kind) for name, (fn, kind) in columns.items()})
    pq.write_table(table, str(path))


def _int_lists() -> Any:
    import pyarrow as pa

    return pa.list_(pa.int32())


def write_skyrl(splits: dict[str, list[TokenRow]], folder: Path) -> list[str]:
    """`train.parquet` (and `test.parquet`): `input_ids` + full-sequence 0/1 `loss_mask`, unpadded
    (`skyrl/train/dataset/pretokenized.py`)."""
    names = []
    for split, rows in splits.items():
        _parquet(
            rows,
            folder / f"{split}.parquet",
            {"input_ids": (lambda r: r.input_ids, _int_lists()), "loss_mask": (lambda r: r.loss_mask, _int_lists())},
        )
        names.append(f"{split}.parquet")
    return names


def write_axolotl(splits: dict[str, list[TokenRow]], folder: Path) -> list[str]:
    """`train.parquet` (and `test.parquet`): a pretokenized dataset (`input_ids`, `attention_mask`, `labels`)."""
    names = []
    for split, rows in splits.items():
        _parquet(
            rows,
            folder / f"{split}.parquet",
            {
                "input_ids": (lambda r: r.input_ids, _int_lists()),
                "attention_mask": (lambda r: [1] * len(r.input_ids), _int_lists()),
                "labels": (lambda r: r.labels, _int_lists()),
            },
        )
        names.append(f"{split}.parquet")
    return names


def _hf_rows(rows: list[TokenRow]) -> dict[str, list[list[int]]]:
    return {
        "input_ids": [r.input_ids for r in rows],
        "attention_mask": [[1] * len(r.input_ids) for r in rows],
        "labels": [r.labels for r in rows],
    }


def write_llamafactory(splits: dict[str, list[TokenRow]], folder: Path) -> list[str]:
    """`tokenized/`: a `DatasetDict.save_to_disk` folder (`train`, `validation`), what LLaMA-Factory's
    `tokenized_path` loads instead of preprocessing."""
    import datasets

    dataset = datasets.DatasetDict(
        {_LF_SPLITS[split]: datasets.Dataset.from_dict(_hf_rows(rows)) for split, rows in splits.items()}
    )
    dataset.save_to_disk(str(folder / "tokenized"))
    return ["tokenized"]


def write_unsloth(splits: dict[str, Any], folder: Path) -> list[str]:
    """`dataset/`: the build's own rows (`DatasetDict.save_to_disk`, its `record` column left out), which TRL's
    SFTTrainer (under Unsloth) takes as processed: `labels` used as they are, packed rows' `position_ids` and
    `seq_lengths` by its padding-free path; tree rows (`splits` then holds their split rows as `TokenRow`s)."""
    import datasets

    out = {}
    for name, split in splits.items():
        if isinstance(split, list):
            out[name] = datasets.Dataset.from_dict(_hf_rows(split))
        else:
            out[name] = split.remove_columns([c for c in ("record",) if c in split.column_names])
    datasets.DatasetDict(out).save_to_disk(str(folder / "dataset"))
    return ["dataset"]


def datum(row: TokenRow) -> dict[str, Any]:
    """One `tinker.Datum` as JSON: `model_input` as `tinker.ModelInput` validates it, `loss_fn_inputs` as `Datum`
    takes them (lists it converts to int64 / float32 tensors): the next-token targets of `row` and their weights
    (1, or the token's loss weight, where trained; else 0), shifted as tinker-cookbook's
    `datum_from_model_input_weights` shifts them."""
    ids = row.input_ids
    weights = [
        (row.weights[i] if row.weights else 1.0) if label != IGNORE_INDEX else 0.0 for i, label in enumerate(row.labels)
    ]
    return {
        "model_input": {"chunks": [{"type": "encoded_text", "tokens": ids[:-1]}]},
        "loss_fn_inputs": {"target_tokens": ids[1:], "weights": weights[1:]},
    }


def write_tinker(splits: dict[str, list[TokenRow]], folder: Path) -> list[str]:
    """`train.jsonl` (and `test.jsonl`): one Datum a line (`tinker.Datum(model_input=tinker.ModelInput.model_validate(
    d["model_input"]), loss_fn_inputs=d["loss_fn_inputs"])`)."""
    names = []
    for split, rows in splits.items():
        with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(datum(row)) + "\n")
        names.append(f"{split}.jsonl")
    return names


MEDIA = (
    "images",
    "videos",
    "audios",
)  # LLaMA-Factory's pairwise rows carry them (None: a text pair); its collator reads
# them by key


def write_llamafactory_pairs(splits: dict[str, Any], folder: Path, columns: tuple[str, ...]) -> list[str]:
    """`tokenized/`: the build's pairs as LLaMA-Factory's `PairwiseDatasetProcessor` writes them for `stage: dpo`
    (each side the shared prompt then that completion; the prompt's labels -100; `images`, `videos`, `audios` None),
    loaded by `tokenized_path`."""
    import datasets

    prompt_col, *completion_cols = columns  # the pair task's: the prompt's ids, the chosen and rejected completions'

    def side(rows: Any, name: str) -> dict[str, list[list[int]]]:
        completions = rows[completion_cols[("chosen", "rejected").index(name)]]
        ids = [p + c for p, c in zip(rows[prompt_col], completions)]
        labels = [[IGNORE_INDEX] * len(p) + c for p, c in zip(rows[prompt_col], completions)]
        return {
            f"{name}_input_ids": ids,
            f"{name}_attention_mask": [[1] * len(i) for i in ids],
            f"{name}_labels": labels,
        }

    dataset = datasets.DatasetDict(
        {
            _LF_SPLITS[name]: datasets.Dataset.from_dict(
                {**side(split, "chosen"), **side(split, "rejected"), **dict.fromkeys(MEDIA, [None] * len(split))}
            )
            for name, split in splits.items()
        }
    )
    dataset.save_to_disk(str(folder / "tokenized"))
    return ["tokenized"]
