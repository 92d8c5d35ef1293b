"""Runs: the record engine (`stage.Stage`), the one run loop over a source (`loop.run`), where
the work runs (`executors`), what a run counts (`report`), the token rows it writes and turns into
a dataset (`rows`), and the `stats` reducer. Building into OUT, the cache and Ray shards sit above,
in `ftdata.build`.
"""
