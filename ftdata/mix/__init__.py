"""Recipes: many sources mixed into one build by exact shares, deduplicated and decontaminated.

The parts here are pure functions over counts and texts; the build driver wires them in.
"""
