"""The LM head on the CPU: only the positions whose next token is trained go through it.

TRL's trainers (SFT, DPO, KTO, GRPO) patch the model with a fused LM head (`trl.trainer.utils.add_fused_lm_head`):
it returns each position's log-probability of its label without the whole `(batch, length, vocabulary)` logits. On
a Triton device (CUDA, XPU) it projects only the positions whose label is not -100. Elsewhere it projects every
position, because an XLA device (Neuron) would compile again for every new count of trained positions.

The CPU compiles nothing, so there the projection of every prompt, padding and media position onto the
vocabulary is pure waste. On a small model it is most of a step: for a 64-wide model with Qwen's 151,665 tokens
the head is over a hundred times the work of its two layers. While `trained_positions_only()` is entered, the
CPU takes the Triton devices' path. A position's log-probability, entropy and accuracy are computed the same way,
from its own hidden state, and the untrained positions are zeros as before (`tests/train/test_fused_head.py`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_LOCK = threading.Lock()
_HELD: list[Any] = [0, None]  # [trainings inside, TRL's own choice while one is]


@contextmanager
def trained_positions_only() -> Iterator[None]:
    """TRL's fused LM head, on the CPU, projects only the trained positions while this is entered (a TRL without
    that head is left as it is). Trainings inside at once share it; the last to leave puts TRL's choice back."""
    try:
        from trl.trainer import utils as trl_utils
    except ImportError:  # no TRL, or one whose trainers do not import here: nothing to change
        yield
        return
    if not callable(getattr(trl_utils, "_use_triton", None)):
        yield
        return
    with _LOCK:
        if _HELD[0] == 0:
            _HELD[1] = trl_utils._use_triton
            trl_utils._use_triton = _compact_on_cpu(_HELD[1])  # type: ignore[assignment]  # TRL types it for torch.device only
        _HELD[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            _HELD[0] -= 1
            if _HELD[0] == 0:
                trl_utils._use_triton = _HELD[1]
                _HELD[1] = None


def _compact_on_cpu(own: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """TRL's `_use_triton(device)` (which the fused head asks whether to project only the trained positions), true
    also on the CPU."""

    def compact(device: Any) -> bool:
        return getattr(device, "type", None) == "cpu" or own(device)

    return compact
