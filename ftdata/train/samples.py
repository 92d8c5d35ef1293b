"""Recover (prompt, reference) pairs from built token rows, for generation-based evaluation.

A row's labels say where the response is, so nothing but the built dataset is needed:

    input_ids  <s> user: hi  assistant:  hello <eot>  user: ...
    labels     -100 ...           -100   hello <eot>  -100 ...
               |---- prompt ----------|-- reference --|

The prompt is every token before the first trained one; the reference is the first run of
trained tokens (the first assistant reply) without its end-of-turn marker. A row is cut into
the sequences its layout holds first (`ftdata.tokens.layouts`: a packed row's documents, a tree's paths).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ftdata.tokens.layouts import layout_of
from ftdata.types import IGNORE_INDEX


@dataclass(frozen=True)
class Sample:
    """One evaluation prompt and the tokens the model was trained to answer with."""

    row: int  # dataset row
    sequence: int  # sequence within a packed row (0 when unpacked)
    prompt_ids: tuple[int, ...]
    reference_ids: tuple[int, ...]  # trained tokens, end-of-turn marker included


def sequences(row: Mapping[str, Any]) -> Iterator[tuple[list[int], list[int]]]:
    """The (input_ids, labels) of each sequence in a row, as its layout holds them (`Layout.sequences`): one, or
    several when packed.

    seq_lengths [3, 2]:  ids a b c d e  ->  (a b c), (d e)
    """
    return layout_of(row).sequences(row)


def split_prompt(ids: Sequence[int], labels: Sequence[int]) -> tuple[list[int], list[int]] | None:
    """(prompt, reference) token ids of one sequence; None when it has no prompt or no trained token.

    Padding after the sequence is dropped with the rest of the untrained tail.
    """
    first = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), None)
    if not first:  # None: nothing trained; 0: trained from the first token, so there is no prompt
        return None
    end = first
    while end < len(labels) and labels[end] != IGNORE_INDEX:
        end += 1
    return list(ids[:first]), list(ids[first:end])


def extract_samples(rows: Iterable[Mapping[str, Any]], *, limit: int | None = None) -> tuple[list[Sample], int]:
    """Up to `limit` samples from dataset rows, and how many sequences had no prompt to use.

    Example:
        >>> rows = [{"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4]}]
        >>> extract_samples(rows)[0][0].prompt_ids
        (1, 2)
    """
    samples: list[Sample] = []
    skipped = 0
    for r, row in enumerate(rows):
        for s, (ids, labels) in enumerate(sequences(row)):
            if limit is not None and len(samples) >= limit:
                return samples, skipped
            pair = split_prompt(ids, labels)
            if pair is None:
                skipped += 1
                continue
            samples.append(Sample(r, s, tuple(pair[0]), tuple(pair[1])))
    return samples, skipped


def strip_end_markers(ids: Sequence[int], special_ids: set[int]) -> list[int]:
    """Drop trailing special tokens (EOS, `<|im_end|>`, `<|eot_id|>`, ...) from a reference."""
    end = len(ids)
    while end > 0 and ids[end - 1] in special_ids:
        end -= 1
    return list(ids[:end])


def end_marker_ids(samples: Iterable[Sample], special_ids: set[int]) -> set[int]:
    """The special tokens the references end with: generation must stop at them too."""
    return {s.reference_ids[-1] for s in samples if s.reference_ids and s.reference_ids[-1] in special_ids}
