"""Generation and scoring shared by `ftdata eval` on text runs (`evaluate.py`) and on
runs whose model reads media (`media_eval.py`): settings, left-padded batches, sacreBLEU, the report.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftdata.errors import ConfigError
from ftdata.train.samples import Sample, strip_end_markers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class GenerationSettings:
    """How answers are generated."""

    max_new_tokens: int = 128
    num_beams: int = 1  # 1 = greedy
    batch_size: int = 8

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "num_beams", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {name}={value!r}")


@dataclass
class EvalReport:
    """Per-sample answers and corpus BLEU of the base and the fine-tuned model."""

    run_dir: Path
    rows: list[dict[str, str]]  # prompt, reference, base (when compared), tuned
    bleu: dict[str, float]  # {"tuned": .., "base": ..}
    skipped: int  # sequences without a prompt (e.g. trained on the whole text)
    settings: GenerationSettings
    files: dict[str, str] = field(default_factory=dict)
    loss: dict[str, float] = field(default_factory=dict)  # mean eval loss by model (vision-language runs)

    def scores(self) -> dict[str, Any]:
        """BLEU, and loss and perplexity when measured: what the report files and run.json keep."""
        out: dict[str, Any] = {"bleu": self.bleu}
        if self.loss:
            out["loss"] = {name: round(value, 6) for name, value in self.loss.items()}
            out["perplexity"] = {name: round(perplexity(value), 4) for name, value in self.loss.items()}
        return out


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """sacreBLEU corpus score (0-100) of `hypotheses` against one reference each."""
    import sacrebleu

    return round(float(sacrebleu.corpus_bleu(hypotheses, [references]).score), 2)


def generate(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[tuple[int, ...]],
    *,
    settings: GenerationSettings,
    stop_ids: set[int],
) -> list[str]:
    """Greedy (or beam) answers to token-id prompts, batched, prompt stripped, in input order."""
    import torch

    device = next(model.parameters()).device
    answers: dict[int, str] = {}
    for batch, ids, mask, _ in left_padded(prompts, tokenizer, settings.batch_size):
        with torch.no_grad():
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=settings.max_new_tokens,
                num_beams=settings.num_beams,
                do_sample=False,
                eos_token_id=sorted(stop_ids),
                pad_token_id=pad_id(tokenizer),
            )
        for row, i in enumerate(batch):
            answers[i] = str(tokenizer.decode(out[row, ids.shape[1] :], skip_special_tokens=True)).strip()
    return [answers[i] for i in range(len(prompts))]


def pad_id(tokenizer: Any) -> int:
    """The id generation pads with: the pad token, else the end of sequence."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def left_padded(
    prompts: Sequence[Sequence[int]], tokenizer: Any, batch_size: int
) -> Iterator[tuple[list[int], Any, Any, list[int]]]:
    """Batches of `prompts` for generation, shortest first (similar lengths share a batch): (their
    indexes, ids, attention mask, each row's left padding). Left padding: every prompt ends where
    generation starts."""
    import torch

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in batch)
        ids = torch.full((len(batch), width), pad_id(tokenizer), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        shifts = [width - len(prompts[i]) for i in batch]
        for row, (i, shift) in enumerate(zip(batch, shifts)):
            ids[row, shift:] = torch.tensor(prompts[i])
            mask[row, shift:] = 1
        yield batch, ids, mask, shifts


def rows_and_references(
    tokenizer: PreTrainedTokenizerBase, samples: list[Sample], answers: dict[str, list[str]]
) -> tuple[list[dict[str, str]], list[str]]:
    """Table rows (prompt, reference, base, tuned) and the reference texts."""
    special = set(tokenizer.all_special_ids)
    references = [
        str(tokenizer.decode(strip_end_markers(s.reference_ids, special), skip_special_tokens=True)).strip()
        for s in samples
    ]
    rows = []
    for i, sample in enumerate(samples):
        row = {"prompt": str(tokenizer.decode(list(sample.prompt_ids))), "reference": references[i]}
        row.update({name: outputs[i] for name, outputs in answers.items()})  # "base" (if any), then "tuned"
        rows.append(row)
    return rows, references


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf
