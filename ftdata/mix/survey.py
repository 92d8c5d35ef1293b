"""`ftdata stats recipe.yaml`: each source measured as `ftdata stats` measures it, and the mixture it would give.

Every source runs through the stats reducer (`stats.collect`: the build's rejects, its
truncation) with its own options; the planner then draws the shares from what each source
has. Deduplication and decontamination read the rendered texts of the whole build and are
left to it: the table says what the sources hold before them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.table import Table

from ftdata.mix.build import recipe_stages
from ftdata.run.stage import Stage
from ftdata.mix.recipe import MixBy, Recipe
from ftdata.mix.shares import SourceSizes, plan_mix
from ftdata.options import RunOptions

__all__ = ["survey", "survey_table"]


def survey(
    recipe: Recipe, *, tokenizer: Any, run: RunOptions, progress: Callable[[int], None] | None = None
) -> list[dict[str, Any]]:
    """One row per source: records, rejects, examples, tokens, trained tokens, and the planned draw.

    Raises:
        ConfigError: a share the sources cannot meet (the planner names the source).
        FtdataError: a source with no usable record.
    """
    rows, units = [], []
    for spec, stage in zip(recipe.sources, recipe_stages(recipe, tokenizer)):
        measured = [_measure(path, stage, run, progress) for path in spec.files()]
        per = {
            "records": np.concatenate([np.ones(len(m.tokens), dtype=np.int64) for m in measured]),
            "tokens": np.concatenate([m.tokens for m in measured]),
            "trained_tokens": np.concatenate([m.trained for m in measured]),
        }
        units.append(per)
        rows.append(
            {
                "source": spec.name,
                "files": len(measured),
                "records": sum(m.records for m in measured),
                "rejected": sum(m.rejected for m in measured),
                "examples": len(per["records"]),
                "tokens": int(per["tokens"].sum()),
                "trained_tokens": int(per["trained_tokens"].sum()),
                "epochs_max": spec.epochs_max,
            }
        )
    unit = recipe.mix_by.unit
    plan = plan_mix(
        [SourceSizes(s.name, u[unit], s.weight, s.epochs_max) for s, u in zip(recipe.sources, units)],
        total=recipe.total,
        seed=recipe.seed,
        unit=unit,
        every=recipe.mix_by is MixBy.ALL,
    )
    for row, sp in zip(rows, plan.sources):
        row.update(
            target_share=round(sp.target_share, 6), planned=sp.records, repeats=sp.repeats, share=round(sp.share, 6)
        )
    return rows


@dataclass(frozen=True, slots=True)
class _Measured:
    """One file of a source as the planner reads it: records read and
    rejected, each example's (or pair's) tokens and trained tokens."""

    records: int
    rejected: int
    tokens: np.ndarray
    trained: np.ndarray


def _measure(path: str, stage: Stage, run: RunOptions, progress: Callable[[int], None] | None) -> _Measured:
    """`ftdata stats` of one file, as the source's task measures it (`planned`: its rows' tokens and trained tokens)."""
    return _Measured(*stage.task.stats(path, stage, run, progress=progress).planned())


def survey_table(rows: list[dict[str, Any]], *, unit: str) -> Table:
    """The rows of `survey` as a table; shares in `unit` (the recipe's mix_by)."""
    table = Table(box=None, pad_edge=False)
    for name in (
        "source",
        "records",
        "rejected",
        "tokens",
        "trained",
        "target",
        "draws",
        "repeats",
        f"share of {unit.replace('_', ' ')}",
    ):
        table.add_column(name, justify="left" if name == "source" else "right")
    for r in rows:
        table.add_row(
            r["source"],
            f"{r['records']:,}",
            f"{r['rejected']:,}",
            f"{r['tokens']:,}",
            f"{r['trained_tokens']:,}",
            f"{r['target_share']:.1%}",
            f"{r['planned']:,}",
            f"{r['repeats']:,}",
            f"{r['share']:.2%}",
        )
    return table
