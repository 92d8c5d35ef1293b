"""What training a row layout takes beyond TRL's collator (`LayoutTraining`): a layout with training code of its own
holds one as `TRAINING` in the train/ module named for it (`ftdata.train.tree`, `ftdata.train.documents`), and
`ftdata.train.layouts.training` finds it there."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ftdata.tokens.layouts import Layout

__all__ = ["LayoutTraining"]


@dataclass(frozen=True)
class LayoutTraining:
    """What training a layout takes beyond TRL's collator as the layout declares it (`Layout.padding_free`,
    `probed`, `no_media`: read through here).

    `collator` (given the pad id) and `trainer`: its own, in place of TRL's; `wrap`: wraps TRL's collator (outside
    the loss weights' one); `prepare`: readies the model for it; `convert`: its rows as its fallback's, where the
    model cannot train it (`Layout.blocker`), and `fallback_note` the note then (`{model}`, `{why}`)."""

    layout: Layout
    collator: Callable[[int], Any] | None = None
    trainer: Callable[[], type] | None = None
    wrap: Callable[[Any], Any] | None = None
    prepare: Callable[[Any], None] | None = None
    convert: Callable[[Any], Any] | None = None
    fallback_note: str = ""

    @property
    def padding_free(self) -> bool:
        return self.layout.padding_free

    @property
    def probed(self) -> bool:
        return self.layout.probed

    @property
    def no_media(self) -> str | None:
        return self.layout.no_media
