"""Fine-tuning on ftdata's rows with TRL's SFTTrainer (DPOTrainer, KTOTrainer, GRPOTrainer for preference rows and
prompt sets): QLoRA / LoRA, checkpoints, evaluation.

The only part of ftdata that imports torch, trl, peft and bitsandbytes. Importing this
package is cheap: the heavy modules load when `train` or `evaluate_run` is first used.

    >>> from ftdata.train import TrainConfig, train
    >>> config = TrainConfig(data="alpaca.json", data_options={"template": "alpaca"}, max_steps=20)
    >>> result = train(config)  # doctest: +SKIP
    >>> result.run_dir  # doctest: +SKIP
    PosixPath('runs/20250101-120000')
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ftdata.train.config import Interval, Precision, Quantization, TrainConfig

if TYPE_CHECKING:
    from ftdata.train.run import evaluate_run
    from ftdata.train.generation import EvalReport
    from ftdata.train.run import TrainResult, resume_config, train

__all__ = [
    "EvalReport",
    "Interval",
    "Precision",
    "Quantization",
    "TrainConfig",
    "TrainResult",
    "evaluate_run",
    "resume_config",
    "train",
]


def _drop_kernel_hub_notice(record: logging.LogRecord) -> bool:
    """bitsandbytes logs, when it is imported on a CPU with AVX512-BF16, that the optional
    `kernels` package (a CPU 4-bit kernel fetched from the Hugging Face hub) is missing. ftdata
    never fetches from the hub, so the notice is noise in every `ftdata train` / `eval`."""
    return "kernels-community" not in record.getMessage()


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_drop_kernel_hub_notice)

_LAZY = {
    "train": "ftdata.train.run",
    "resume_config": "ftdata.train.run",
    "TrainResult": "ftdata.train.run",
    "evaluate_run": "ftdata.train.run",
    "EvalReport": "ftdata.train.generation",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ftdata.train' has no attribute {name!r}")
