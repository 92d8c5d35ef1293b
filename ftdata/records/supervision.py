"""Per-message supervision as publishers write it: train flags, loss weights, Axolotl's `train_detail`, and a
record-level `keep_loss` list.

    train / trainable / loss_mask   the turn is trained or not (true/false, 0/1); two that differ are an error
    loss_weight / weight            0: not trained, 1: trained, else a fractional weight (`Message.loss_weight`)
    train_detail                    character spans of the content, end inclusive, trained or not (Axolotl)
    keep_loss (record)              one flag per message (torchtitan)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ftdata.errors import Location, RecordError
from ftdata.types import Message, TrainSpan

# A message's supervision flag under the names its publishers use: ftdata's `train`, verl's `trainable`, the
# `loss_mask` 0/1 of verl and Step-3.5-Flash-SFT; weights (LLaMA-Factory `loss_weight`, ShareGPT `weight`) after them.
TRAIN_FLAGS = ("train", "trainable", "loss_mask")
WEIGHTS = ("loss_weight", "weight")


def _flag(value: Any, *, location: Location, field: str) -> bool:
    """A train flag: true/false, or 0/1.

    Raises:
        RecordError: anything else, naming the field.
    """
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise RecordError(
        f"is {value!r:.40}; a train flag is true/false or 0/1 (a fractional weight goes in loss_weight)",
        location=location,
        field=field,
    )


def train_flag(msg: Mapping[str, Any], *, location: Location, field: str) -> bool | None:
    """A message's own train flag (`TRAIN_FLAGS`; two that differ are an error), or a LLaMA-Factory
    `loss_weight` / `weight`: 0 is not trained, any other weight is trained (its value is read by `_loss_weight`)."""
    flags = {k: _flag(msg[k], location=location, field=f"{field}.{k}") for k in TRAIN_FLAGS if msg.get(k) is not None}
    if len(set(flags.values())) > 1:
        raise RecordError(f"{' and '.join(flags)} differ; keep one train flag", location=location, field=field)
    if flags:
        return next(iter(flags.values()))
    for key in WEIGHTS:
        value = msg.get(key)
        if value is None:
            continue
        if not isinstance(value, bool):
            return _weight(value, location=location, field=f"{field}.{key}") != 0
        return bool(value)
    return None


def keep_loss(
    messages: tuple[Message, ...], value: Any, *, location: Location, field: str = "keep_loss"
) -> tuple[Message, ...]:
    """`messages` with a record-level `keep_loss` list (one true/false or 0/1 per message, as torchtitan's SFT
    data writes it) as their train flags.

    Raises:
        RecordError: not a list of one flag per message, or a flag that contradicts the message's own.
    """
    if value is None:
        return messages
    if not isinstance(value, list) or len(value) != len(messages):
        got = f"{len(value)} items" if isinstance(value, list) else type(value).__name__
        raise RecordError(
            f"must be a list of one true/false (or 0/1) per message: {len(messages)} messages, got {got}",
            location=location,
            field=field,
        )
    out = []
    for i, (message, flag) in enumerate(zip(messages, value)):
        train = _flag(flag, location=location, field=f"{field}[{i}]")
        if message.train is not None and message.train != train:
            raise RecordError(
                f"is {flag!r} but messages[{i}] says train={message.train}; keep one", location=location, field=field
            )
        out.append(replace(message, train=train))
    return tuple(out)


def _weight(value: Any, *, location: Location, field: str) -> float:
    """A loss weight: a finite number >= 0.

    Raises:
        RecordError: naming the field, for a non-number, a negative or a non-finite weight.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise RecordError(
            f"is {value!r}; a loss weight must be a finite number >= 0 (0 = not trained, 1 = trained as usual, "
            "0.5 = half the loss)",
            location=location,
            field=field,
        )
    return float(value)


def loss_weight(msg: Mapping[str, Any], *, location: Location, field: str) -> float | None:
    """The message's fractional loss weight (LLaMA-Factory v1 `loss_weight`, ShareGPT `weight`);
    None for no weight, 0 and 1 (those are the train flag of `_train_flag`)."""
    if any(msg.get(k) is not None for k in TRAIN_FLAGS):
        return None  # a train flag wins, as in `_train_flag`
    for key in WEIGHTS:
        value = msg.get(key)
        if value is None or isinstance(value, bool):
            continue
        weight = _weight(value, location=location, field=f"{field}.{key}")
        return None if weight in (0, 1) else weight
    return None


def train_detail(value: Any, content: str, *, location: Location, field: str) -> tuple[TrainSpan, ...] | None:
    """Axolotl's `train_detail`: `[{"begin_offset", "end_offset", "train"}]`, offsets into the
    content with the end inclusive.

    Raises:
        RecordError: not a list of such objects, or an offset outside the content.
    """
    if value is None:
        return None
    fix = 'give a list of {"begin_offset": int, "end_offset": int, "train": bool} (end inclusive)'
    if not isinstance(value, list):
        raise RecordError(f"must be a list; {fix}", location=location, field=field)
    spans = []
    for j, item in enumerate(value):
        where = f"{field}[{j}]"
        if not isinstance(item, Mapping) or not {"begin_offset", "end_offset"} <= set(item):
            raise RecordError(f"is {item!r:.60}; {fix}", location=location, field=where)
        begin, end, train = item["begin_offset"], item["end_offset"], item.get("train", True)
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (begin, end)) or not isinstance(train, bool):
            raise RecordError(f"is {dict(item)!r:.80}; {fix}", location=location, field=where)
        if not 0 <= begin <= end < len(content):
            raise RecordError(
                f"begin_offset={begin}, end_offset={end} is outside the content's {len(content)} characters "
                f"(offsets 0..{len(content) - 1}, end inclusive)",
                location=location,
                field=where,
            )
        spans.append(TrainSpan(begin, end, train))
    return tuple(spans)


__all__ = ["TRAIN_FLAGS", "keep_loss", "loss_weight", "train_detail", "train_flag"]
