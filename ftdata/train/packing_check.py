"""`ftdata check-packing`: may packed rows be forwarded as one row on this model? For users of other trainers.

The model is loaded as it is (no LoRA, no quantization) and a few documents are forwarded three ways, each
compared with the documents alone (`packing_probe.py`):

1. `packed`: one row as TRL's padding-free collator sends it (restarting `position_ids`, `seq_idx`,
   `cu_seq_lens_*`, no mask): what a trainer that passes everything gets. transformers refuses it outright on
   a model whose kernels are missing; that refusal is reported as the figure.
2. `position_ids` only: what docs/packing.md asks of the least a trainer must pass.
3. the route `ftdata train` takes on this model and machine.

The documents are those of the first rows of DATA (a folder `ftdata build` wrote, or a `save_to_disk` folder),
or, without DATA, three short texts tokenized with the model's tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError
from ftdata.train.architecture import Architecture, Route, inspect_model
from ftdata.train.config import Precision
from ftdata.train.packing_probe import ProbeResult, probe_documents, run_probe

SAMPLE_TEXTS = (
    "The sky is blue because air scatters short wavelengths of sunlight more than long ones.",
    "A cat has four legs, whiskers and a tail; it sleeps for most of the day.",
    "Two plus two is four, and four times four is sixteen.",
)


@dataclass(frozen=True, slots=True)
class PackingReport:
    """What `ftdata check-packing` measured on one model."""

    model: str
    architecture: Architecture
    packed: ProbeResult | str  # the packed row with seq_idx / cu_seq_lens, or why transformers refuses it
    route: ProbeResult  # the route ftdata train takes (its `packed_leak`: position_ids only)

    @property
    def isolated(self) -> bool:
        """Packed rows as one row keep documents apart on this model and machine."""
        return isinstance(self.packed, ProbeResult) and self.packed.passed

    def to_dict(self) -> dict[str, Any]:
        packed = self.packed.to_dict() if isinstance(self.packed, ProbeResult) else {"error": self.packed}
        return {
            "model": self.model,
            **self.architecture.to_dict(),
            "packed_row": packed,
            "train_route": self.route.to_dict(),
            "isolated": self.isolated,
        }


def check_model_packing(
    model: str | None,
    data: str | Path | None = None,
    *,
    precision: Precision = Precision.AUTO,
    tokenizer: str | None = None,
) -> PackingReport:
    """Probe packed rows on `model` (a local folder; None: the bundled SmolLM2) with the documents of `data`.

    Raises:
        ConfigError: no such model, or `data` is not a folder of built rows.
    """
    from ftdata.io.resources import is_bundled, load_tokenizer
    from ftdata.train.config import Quantization
    from ftdata.train.model import load_base_model, resolve_device, resolve_model_path, with_pad_token

    path = resolve_model_path(model)
    device = resolve_device(precision)
    folder = tokenizer if tokenizer is not None else None if is_bundled(model) else str(path)
    tok = with_pad_token(load_tokenizer(folder))
    loaded = load_base_model(path, quantization=Quantization.NONE, device=device, trainable=False)
    samples = [{"input_ids": tok(t, add_special_tokens=False)["input_ids"]} for t in SAMPLE_TEXTS]
    rows = _rows(data) if data is not None else samples
    documents = probe_documents(rows)
    architecture = inspect_model(loaded, device=device.kind)
    try:
        packed: ProbeResult | str = run_probe(loaded, documents, route=Route.PACKED, pad_token_id=tok.pad_token_id)
    except (ValueError, RuntimeError, NotImplementedError) as exc:
        packed = f"transformers refuses the packed row: {str(exc).splitlines()[0]}"
    route = run_probe(loaded, documents, route=architecture.route, pad_token_id=tok.pad_token_id)
    return PackingReport(model=str(model or "smollm2"), architecture=architecture, packed=packed, route=route)


def _rows(data: str | Path) -> list[dict[str, Any]]:
    """The first rows of the train split of a built folder."""
    from datasets import Dataset, DatasetDict

    from ftdata.build.load import is_build_output
    from ftdata.build.load import load as load_build
    from ftdata.train.data import is_saved_dataset

    path = Path(data).expanduser()
    if is_build_output(path):
        built: Any = load_build(path).dataset
    elif is_saved_dataset(path):
        from datasets import load_from_disk

        built = load_from_disk(str(path))
    else:
        raise ConfigError(
            f"{data} is not a folder of built rows: run `ftdata build DATA -o OUT --packing` and give OUT"
        )
    train = built["train"] if isinstance(built, DatasetDict) else built
    if not isinstance(train, Dataset) or "input_ids" not in train.column_names or train.num_rows == 0:
        raise ConfigError(f"{data} holds no SFT rows (input_ids): check-packing probes the rows of an SFT build")
    return list(train.select(range(min(8, train.num_rows))))
