"""The reference packer (test-only): one packed row from the rows of a bin, a Python loop
over plain lists. `output.write_packed` builds the same rows column-wise, a batch of bins at
a time; the tests check it against this one (tests/tokens/test_packing.py, tests/build/test_pipeline.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ftdata.errors import ConfigError, RecordError
from ftdata.options import pad_multiple
from ftdata.types import IGNORE_INDEX, PackedRow


def _columns(row: Mapping[str, Sequence[int]], n: int) -> tuple[Sequence[int], Sequence[int]]:
    """`input_ids` and `labels` of row `n`, checked to be consistent and unpadded."""
    ids, labels = row["input_ids"], row["labels"]
    if len(labels) != len(ids):
        raise RecordError(
            f"row {n} has {len(ids)} input_ids but {len(labels)} labels; they must match", field="labels"
        )
    mask = row.get("attention_mask")
    if mask is not None and (len(mask) != len(ids) or 0 in mask):
        raise RecordError(
            f"row {n} has an attention_mask with padding or the wrong length; pack unpadded rows",
            field="attention_mask",
        )
    return ids, labels


def pack_rows(
    rows: Sequence[Mapping[str, Sequence[int]]], *, pad_to_multiple_of: int | None = None, pad_id: int = 0
) -> PackedRow:
    """Concatenate token rows into one packed row.

    `position_ids` restart at 0 for each sequence, `seq_lengths` lists each sequence's
    length, `attention_mask` is all 1 (no padding by default), and the FIRST label of every
    sequence becomes `IGNORE_INDEX`::

        rows  [7 8 9] labels [-100 8 9]   and   [4 5] labels [4 5]

        input_ids      7    8    9    4    5
        labels      -100    8    9 -100    5
        position_ids   0    1    2    0    1
        seq_lengths [3, 2]

    Why the first label: a causal LM's loss predicts `labels[t]` from the logits at `t-1`.
    The label at a sequence's first position would be predicted from the *previous*
    sequence's last token, i.e. learned across the boundary. Alone, that label is never a
    target (nothing precedes it), so masking it makes the packed loss exactly the sum of the
    separate losses; no trained token other than a sequence's first is touched. ftdata
    sequences start with prompt tokens, so that first token is untrained anyway (except
    under `train_on_prompt`, where it was never a real target either).

    With `pad_to_multiple_of`, each sequence is followed by `pad_id` tokens up to the next
    multiple (label -100, attention_mask 0, positions continuing), and `seq_lengths` holds
    the padded lengths (see the module docstring).

    Raises:
        ConfigError: `rows` is empty, or `pad_to_multiple_of` is not an integer >= 1.
        RecordError: a row is empty, its labels do not match its input_ids, or its
            attention_mask has padding.
    """
    if not rows:
        raise ConfigError("pack_rows needs at least one row, got none")
    multiple = 1 if pad_to_multiple_of is None else pad_multiple(pad_to_multiple_of)
    input_ids: list[int] = []
    labels: list[int] = []
    attention_mask: list[int] = []
    position_ids: list[int] = []
    seq_lengths: list[int] = []
    for n, row in enumerate(rows):
        ids, row_labels = _columns(row, n)
        if not ids:
            raise RecordError(f"row {n} is empty; drop empty rows before packing", field="input_ids")
        pads = -len(ids) % multiple
        input_ids.extend([*ids, *[pad_id] * pads])
        labels.append(IGNORE_INDEX)
        labels.extend([*row_labels[1:], *[IGNORE_INDEX] * pads])
        attention_mask.extend([1] * len(ids) + [0] * pads)
        position_ids.extend(range(len(ids) + pads))
        seq_lengths.append(len(ids) + pads)
    return PackedRow(
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=labels,
        position_ids=position_ids,
        seq_lengths=seq_lengths,
    )
