"""Runs: the record engine (`engine.Stage`), the one run loop over a source (`loop.run`), where
the work runs (`executors`), and the one build driver (`driver.build`); `stats` and the Ray
shard build (`ray_build`) are reducers and outputs of the same loop.
"""
