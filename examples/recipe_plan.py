"""Plan the three-source recipe in examples/recipe.yaml with ftdata.mix's parts: read, dedup,
decontaminate, plan (the build driver does the same on rendered records, then builds).

    python examples/recipe_plan.py    # output shown in docs/recipes.md
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ftdata.errors import Location, RecordError
from ftdata.formats import to_examples
from ftdata.mix import Deduplicator, EvalIndex, RecipeSource, SourceSizes, load_recipe, plan_mix
from ftdata.readers import read_records

RECIPE = Path(__file__).with_name("recipe.yaml")


def texts(source: RecipeSource) -> Iterator[tuple[Location, str]]:
    """(location, text) of every usable record; the driver uses the rendered text instead."""
    options = source.build_options().data
    for path in source.files():
        for location, row in read_records(path):
            try:
                examples = to_examples(row, location, format=options.format, roles=options.roles)
            except RecordError:
                continue  # the driver rejects it, with its reason
            yield location, "\n".join(m["content"] for e in examples for m in e.chat_messages())


def main() -> None:
    recipe = load_recipe(RECIPE)
    records = [list(texts(s)) for s in recipe.sources]
    dedup = Deduplicator(recipe.dedup)
    removed = {d.key for rs in records for key, text in rs if (d := dedup.check(key, text))}
    evals = EvalIndex.from_files(recipe.eval_files(), n=recipe.ngram)
    contaminated = {key for rs in records for key, text in rs if key not in removed and evals.check(text)}
    print(f"{len(removed)} duplicates, {len(contaminated)} overlap the evaluation file")
    kept = [[key for key, _ in rs if key not in removed and key not in contaminated] for rs in records]
    plan = plan_mix(
        [SourceSizes(s.name, [1] * len(k), s.weight, s.epochs_max) for s, k in zip(recipe.sources, kept)],
        total=recipe.total, seed=recipe.seed, unit=recipe.mix_by.value,
    )  # fmt: skip
    for s in plan.sources:
        print(f"{s.name}: {s.records} records ({s.repeats} repeats) of {s.available}, "
              f"share {s.share:.2%} (target {s.target_share:.0%})")  # fmt: skip


if __name__ == "__main__":
    main()
