"""The probe of packed rows on the model itself: a few documents forwarded packed and alone, no grad.

`ftdata train` runs it before step 1 whenever its rows are packed, and `ftdata check-packing` runs it for
users of other trainers. It forwards the documents the way the run will (`architecture.Route`):

- `packed`: one row, as TRL's padding-free collator makes it (restarting `position_ids`, `seq_idx`,
  `cu_seq_lens_*`, no attention mask);
- `documents`: the row regrouped per document into a right-padded batch (`documents.py`);

then each document alone, and compares the logits. The largest |delta logit| must stay under a tolerance that
fits the dtype, relative to the largest |logit| (at least 1): fp32 2e-5 (a Jamba-sized leak, 1.8e-3, fails;
attention-only models differ by ~3e-7), bf16 3e-2, fp16 1e-2.

It also measures what a trainer that forwards the packed row with restarting `position_ids` alone would
get (`packed_leak`), the figure docs/packing.md quotes per family.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import torch

from ftdata.errors import ConfigError
from ftdata.train.architecture import Architecture, Route, inspect_model
from ftdata.train.layouts import training as layout_training
from ftdata.tokens.layouts import SEQ_LENGTHS, layout_of

# Largest |delta logit| / max(1, largest |logit|) allowed, by compute dtype.
TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 3e-2, torch.float16: 1e-2}
BUDGET = 384  # tokens forwarded packed (each document at most half of it, at least two documents)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What the probe measured."""

    route: Route
    documents: int
    tokens: int
    max_abs_dlogit: float
    max_abs_logit: float
    tolerance: float  # absolute: the dtype's relative tolerance x max(1, max_abs_logit)
    dtype: str
    packed_leak: float | str | None = None  # the row with position_ids only: its figure, or why it cannot run

    @property
    def passed(self) -> bool:
        return self.max_abs_dlogit <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route.value,
            "documents": self.documents,
            "tokens": self.tokens,
            "max_abs_dlogit": self.max_abs_dlogit,
            "max_abs_logit": self.max_abs_logit,
            "tolerance": self.tolerance,
            "dtype": self.dtype,
            "passed": self.passed,
            **({"packed_leak": self.packed_leak} if self.packed_leak is not None else {}),
        }

    def describe(self) -> str:
        """e.g. 'max |delta logit| 2.4e-07 <= 1.2e-04 over 3 documents (212 tokens), route packed, fp32'."""
        sign = "<=" if self.passed else ">"
        return (
            f"max |delta logit| {self.max_abs_dlogit:.2g} {sign} {self.tolerance:.2g} over {self.documents} "
            f"documents ({self.tokens} tokens), route {self.route.value}, {self.dtype}"
        )


def probe_documents(rows: Iterable[Mapping[str, Any]], *, budget: int = BUDGET) -> list[list[int]]:
    """Documents of the first rows (each cut to half the budget), at most `budget` tokens, at least two
    (the one document of a row holding one is used twice: its second copy must not see the first).

    >>> probe_documents([{"input_ids": [1, 2, 3, 4, 5], "seq_lengths": [3, 2]}], budget=8)
    [[1, 2, 3], [4, 5]]
    """
    docs: list[list[int]] = []
    total = 0
    for row in rows:
        ids, start = list(row["input_ids"]), 0
        for length in layout_of(row).lengths(row):
            doc = ids[start : start + length][: budget // 2]
            start += length
            if len(docs) >= 2 and total + len(doc) > budget:
                return docs
            docs.append(doc)
            total += len(doc)
    return docs * 2 if len(docs) == 1 else docs


def run_probe(model: Any, documents: Sequence[Sequence[int]], *, route: Route, pad_token_id: int) -> ProbeResult:
    """Forward `documents` as `route` sends them and each alone; compare the logits (see the module doc).

    The model is put in eval mode for the probe (dropout off) and back in the mode it had.
    """
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = [_logits(model, {"input_ids": torch.tensor([doc])})[0] for doc in documents]
            together = _together(model, documents, route=route, pad_token_id=pad_token_id)
            leak = _leak(model, documents, alone)
    finally:
        model.train(training)
    delta = max(float((a - t).abs().max()) for a, t in zip(alone, together))
    scale = max(float(a.abs().max()) for a in alone)
    return ProbeResult(
        route=route,
        documents=len(documents),
        tokens=sum(map(len, documents)),
        max_abs_dlogit=delta,
        max_abs_logit=scale,
        tolerance=TOLERANCE[_param_dtype(model)] * max(1.0, scale),
        dtype=str(_param_dtype(model)).removeprefix("torch."),
        packed_leak=leak,
    )


def _together(model: Any, documents: Sequence[Sequence[int]], *, route: Route, pad_token_id: int) -> list[torch.Tensor]:
    """Each document's logits when forwarded with the others, as `route` batches them."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    row = {"input_ids": [t for doc in documents for t in doc], SEQ_LENGTHS: [len(doc) for doc in documents]}
    training = layout_training(route.value)  # the layout packed rows train as: collated so
    collator = DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=training.padding_free)
    batch = (training.wrap(collator) if training.wrap is not None else collator)([row])
    if route is Route.PACKED:
        logits = _logits(model, batch)[0]
        starts = torch.tensor([0, *row[SEQ_LENGTHS]]).cumsum(0).tolist()
        return [logits[a:b] for a, b in pairwise(starts)]
    logits = _logits(model, batch)
    return [logits[i, : len(doc)] for i, doc in enumerate(documents)]


def _leak(model: Any, documents: Sequence[Sequence[int]], alone: list[torch.Tensor]) -> float | str:
    """max |delta logit| of the documents forwarded as one row with restarting position_ids only."""
    ids = torch.tensor([[t for doc in documents for t in doc]])
    positions = torch.cat([torch.arange(len(doc)) for doc in documents])[None]
    try:
        logits = _logits(model, {"input_ids": ids, "position_ids": positions})[0]
    except (ValueError, RuntimeError, NotImplementedError) as exc:
        return f"cannot run: {str(exc).splitlines()[0]}"
    starts = torch.tensor([0, *map(len, documents)]).cumsum(0).tolist()
    return max(float((a - logits[s:e]).abs().max()) for a, (s, e) in zip(alone, pairwise(starts)))


def _logits(model: Any, batch: Mapping[str, Any]) -> torch.Tensor:
    device = next(model.parameters()).device
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items() if k != "labels"}
    return model(**inputs, use_cache=False).logits.float()


def _param_dtype(model: Any) -> torch.dtype:
    """The compute dtype: the first floating parameter's that is not fp32, else fp32."""
    kinds = {p.dtype for p in model.parameters() if p.is_floating_point()}
    return next((d for d in (torch.bfloat16, torch.float16) if d in kinds), torch.float32)


def refusal(result: ProbeResult, architecture: Architecture) -> str:
    """The one line of a failed probe: the figure, the layer kinds and the fix."""
    kinds = ", ".join(f"{k.name} x{k.layers}" for k in architecture.kinds) or "no recognised sequence layer"
    need = ", ".join(architecture.kernels)
    fix = "train on rows built without --packing"
    if architecture.kernels and architecture.missing:
        fix = f"install {need} (CUDA) or {fix}"
    return (
        f"packed rows leak between documents on this model ({architecture.model_type}: {kinds}): "
        f"{result.describe()}; {fix}"
    )


@dataclass(frozen=True, slots=True)
class PackingCheck:
    """The model's sequence layers, the route its packed rows take, and the probe of that route."""

    architecture: Architecture
    probe: ProbeResult | None  # None for a model that reads media (its collator isolates packed rows itself)

    @property
    def route(self) -> Route:
        return self.architecture.route

    def to_dict(self) -> dict[str, Any]:
        return {**self.architecture.to_dict(), "probe": self.probe.to_dict() if self.probe is not None else None}


def check_packed_rows(
    model: Any, rows: Iterable[Mapping[str, Any]], *, device: str, pad_token_id: int, media: bool = False
) -> PackingCheck:
    """Inspect `model`'s layers, choose the route of packed rows and probe it on the first `rows`.

    Raises:
        ConfigError: the probe fails (one line: the figure, the layer kinds, the fix), or a model that reads
            media has layers that carry state along the row (its collator sends packed rows as one row).
    """
    architecture = inspect_model(model, device=device)
    if media:
        if architecture.state_kinds:
            names = ", ".join(f"{k.name} x{k.layers}" for k in architecture.state_kinds)
            raise ConfigError(
                f"packed rows with media cannot be kept apart on {architecture.model_type} "
                f"({names} carry state along the row): build without --packing"
            )
        return PackingCheck(architecture, None)
    result = run_probe(model, probe_documents(rows), route=architecture.route, pad_token_id=pad_token_id)
    if not result.passed:
        raise ConfigError(refusal(result, architecture))
    return PackingCheck(architecture, result)
