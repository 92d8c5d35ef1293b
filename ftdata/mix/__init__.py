"""Recipes: many sources mixed into one build by exact shares, deduplicated and decontaminated.

The parts here are pure functions over counts and texts (docs/recipes.md); the build driver
wires them in:

    recipe.py          Recipe, RecipeSource, load_recipe, is_recipe: the file and its checks
    declared.py        recipe_of: whether a source is a recipe (the one place); open_recipe: a recipe file, or
                       another tool's declaration as a recipe (mix_by all)
    shares.py          plan_mix: which records of each source, how many times
    dedup.py           Deduplicator, find_duplicates: exact and near (MinHash LSH)
    contamination.py   EvalIndex, find_overlaps: word n-gram overlap with evaluation files
    normalise.py       normalise, words: the text that dedup and decontamination compare
"""

from ftdata.mix.contamination import EvalIndex, Overlap, count_by_eval_file, find_overlaps
from ftdata.mix.dedup import Deduplicator, Duplicate, find_duplicates
from ftdata.mix.recipe import Dedup, MixBy, Recipe, RecipeSource, is_recipe, load_recipe
from ftdata.mix.shares import Plan, SourcePlan, SourceSizes, plan_mix

__all__ = [
    "Dedup",
    "Deduplicator",
    "Duplicate",
    "EvalIndex",
    "MixBy",
    "Overlap",
    "Plan",
    "Recipe",
    "RecipeSource",
    "SourcePlan",
    "SourceSizes",
    "count_by_eval_file",
    "find_duplicates",
    "find_overlaps",
    "is_recipe",
    "load_recipe",
    "plan_mix",
]
