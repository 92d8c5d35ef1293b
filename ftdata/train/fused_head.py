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

from collections.abc import Callable
from typing import Any

from ftdata.run.held import Held


def _compact() -> Callable[[Any], bool] | None:
    """Makes TRL's `_use_triton(device)` (which its fused head asks whether to project only the trained positions)
    true on the CPU too; returns TRL's own, or None where there is nothing to change (no TRL, or a TRL without that
    head)."""
    try:
        from trl.trainer import utils as trl_utils
    except ImportError:  # no TRL, or one whose trainers do not import here
        return None
    own = getattr(trl_utils, "_use_triton", None)
    if not callable(own):
        return None

    def compact(device: Any) -> bool:
        return getattr(device, "type", None) == "cpu" or own(device)

    trl_utils._use_triton = compact
    return own


def _own(own: Callable[[Any], bool] | None) -> None:
    if own is not None:
        from trl.trainer import utils as trl_utils

        trl_utils._use_triton = own  # type: ignore[assignment]  # TRL types it for torch.device only


# `with trained_positions_only():` TRL's fused LM head, on the CPU, projects only the trained positions inside.
# Trainings inside at once share it; the last to leave puts TRL's own function back.
trained_positions_only = Held(_compact, _own)
