"""`ftdata eval RUN` on a DPO/KTO run: the preference accuracy of the base and the tuned model.

A held-out pair counts as right for a model when it gives the chosen completion a higher
log-probability than the rejected one, after the same prompt:

    log p(completion | prompt) = sum over the completion's tokens t of log p(t | prompt, tokens before t)

    accuracy = right pairs / pairs        margin = mean of log p(chosen) - log p(rejected)

A DPO run's held-out rows are pairs. A KTO run's are unpaired rows: rows with the same prompt are
paired, the first desirable completion against the first undesirable one; rows left without a
partner are counted as skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftdata.types import Task


@dataclass(frozen=True, slots=True)
class HeldOutPair:
    """One held-out prompt with its chosen and rejected completion (token ids, as trained)."""

    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ScoringSettings:
    """How the log-probabilities are computed: sequences per forward pass."""

    batch_size: int = 8


@dataclass
class PreferenceReport:
    """Per pair, each model's log-prob margin (chosen - rejected); per model, the accuracy and mean margin."""

    run_dir: Path
    rows: list[dict[str, Any]]  # prompt, chosen, rejected (decoded), then a margin per model
    accuracy: dict[str, float]  # {"base": .., "tuned": ..}
    margin: dict[str, float]
    skipped: int  # KTO rows without a partner of the other label
    settings: ScoringSettings
    files: dict[str, str] = field(default_factory=dict)

    def scores(self) -> dict[str, Any]:
        """What the report files and run.json keep."""
        return {"preference_accuracy": self.accuracy, "mean_logp_margin": self.margin}


def held_out_pairs(
    rows: Iterable[Mapping[str, Any]], task: Task, *, limit: int | None = None
) -> tuple[list[HeldOutPair], int]:
    """Up to `limit` pairs from a run's eval rows, and how many (KTO) rows had no partner.

    >>> rows = [{"prompt_ids": [1], "completion_ids": [5], "label": False},
    ...         {"prompt_ids": [1], "completion_ids": [4], "label": True},
    ...         {"prompt_ids": [2], "completion_ids": [6], "label": True}]
    >>> held_out_pairs(rows, Task.KTO)
    ([HeldOutPair(prompt_ids=(1,), chosen_ids=(4,), rejected_ids=(5,))], 1)
    """
    if task is Task.PREFERENCE:
        pairs = [HeldOutPair(tuple(r["prompt_ids"]), tuple(r["chosen_ids"]), tuple(r["rejected_ids"])) for r in rows]
        return pairs[:limit], 0
    by_prompt: dict[tuple[int, ...], dict[bool, list[tuple[int, ...]]]] = {}
    total = 0
    for row in rows:
        total += 1
        by_prompt.setdefault(tuple(row["prompt_ids"]), {True: [], False: []})[bool(row["label"])].append(
            tuple(row["completion_ids"])
        )
    pairs = [
        HeldOutPair(prompt, sides[True][0], sides[False][0])
        for prompt, sides in by_prompt.items()
        if sides[True] and sides[False]
    ]
    return pairs[:limit], total - 2 * len(pairs)


def completion_logps(
    model: Any, items: Sequence[tuple[Sequence[int], Sequence[int]]], *, batch_size: int, pad_id: int
) -> list[float]:
    """log p(completion | prompt) of each `(prompt_ids, completion_ids)`, summed over the completion's tokens.

    Sequences go in batches of `batch_size` (similar lengths together), left-padded with explicit
    positions, so every completion ends at the last position and the model computes the logits of
    the last `longest completion` positions only (`logits_to_keep`), not of every prompt token.
    """
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]) + len(items[i][1]))
    out: dict[int, float] = {}
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = max(len(items[i][0]) + len(items[i][1]) for i in batch)
        keep = (
            max(len(items[i][1]) for i in batch) + 1
        )  # + 1: the last prompt position predicts the first completion token
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            sequence = [*items[i][0], *items[i][1]]
            ids[row, width - len(sequence) :] = torch.tensor(sequence)
            mask[row, width - len(sequence) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                use_cache=False,
                logits_to_keep=keep,
            ).logits
        for row, i in enumerate(batch):
            n = len(items[i][1])
            # logits[:, j] is position width - keep + j;
            # the completion's n tokens are predicted by the n positions before the last
            logps = torch.log_softmax(logits[row, keep - 1 - n : keep - 1].float(), dim=-1)
            out[i] = float(logps.gather(-1, ids[row, width - n :].to(logps.device).unsqueeze(-1)).sum())
    return [out[i] for i in range(len(items))]


def pair_margins(model: Any, pairs: Sequence[HeldOutPair], *, settings: ScoringSettings, pad_id: int) -> list[float]:
    """log p(chosen) - log p(rejected) of each pair under `model`."""
    items = [(p.prompt_ids, side) for p in pairs for side in (p.chosen_ids, p.rejected_ids)]
    logps = completion_logps(model, items, batch_size=settings.batch_size, pad_id=pad_id)
    return [logps[2 * i] - logps[2 * i + 1] for i in range(len(pairs))]


def preference_report(
    run_dir: Path,
    tokenizer: Any,
    pairs: Sequence[HeldOutPair],
    margins: Mapping[str, list[float]],
    *,
    skipped: int,
    settings: ScoringSettings,
) -> PreferenceReport:
    """The report of `margins` ({model name: a margin per pair}): accuracy = share of margins > 0."""
    rows = []
    for i, pair in enumerate(pairs):
        row: dict[str, Any] = {
            "prompt": tokenizer.decode(pair.prompt_ids),
            "chosen": tokenizer.decode(pair.chosen_ids),
            "rejected": tokenizer.decode(pair.rejected_ids),
        }
        rows.append(row | {name: round(values[i], 4) for name, values in margins.items()})
    accuracy = {name: round(sum(m > 0 for m in values) / len(values), 4) for name, values in margins.items()}
    margin = {name: round(sum(values) / len(values), 4) for name, values in margins.items()}
    return PreferenceReport(
        run_dir=run_dir, rows=rows, accuracy=accuracy, margin=margin, skipped=skipped, settings=settings
    )
