"""The process state under `accelerate launch` / `torchrun` (or a plain single process)."""

from __future__ import annotations

from typing import Any


def process_state() -> Any:
    """accelerate's `PartialState`, created so that CPU-only multi-process runs work too.

    `PartialState` is a singleton fixed by its first creation: created plainly on a machine
    without CUDA it ignores `torchrun`'s WORLD_SIZE and every process trains alone (and the
    Trainer's later `use_cpu=True` cannot change that). Passing `cpu=True` there selects gloo.
    """
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())
