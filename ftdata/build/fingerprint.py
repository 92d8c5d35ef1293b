"""A build's key and fingerprint, composed from what it declares it read (`ftdata.guard.inputs`).

    key          every input known before a record is read (DATA, a recipe and its sources, evaluation
                 sets, a config file, prompt and chat templates, the tokenizer and processor folders), by
                 name and content, + the options that are not files + the version: the cache entry's name
    fingerprint  the key + the media files the records named (their manifest's digest): the build's
                 identity in build.json; the key itself when no record names a file

An option that names a file (`template`, `chat_template`, `processor`) enters through the input it
declares, never as its string: the same string naming edited bytes is another build.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from ftdata.guard.inputs import Input, Manifest
from ftdata.options import DataOptions
from ftdata.run.loop import BATCH_CHARS
from ftdata.run.report import REPORT_FORMAT
from ftdata.types import HistoryMode

_NAMED_BY_INPUTS = ("template", "chat_template", "processor")


def build_key(inputs: Sequence[Input], options: DataOptions, *, batch_size: int | None = None) -> str:
    """The cache key of a build that read `inputs` (in declaration order) with `options`. `batch_size`: the run's,
    which shapes the rows of a build that grows trees across the records of a batch (history=tree), and only those,
    with the text that closes a batch (`run.loop.BATCH_CHARS`)."""
    from ftdata import __version__

    h = hashlib.sha256()
    for item in inputs:
        h.update(item.key())
    settings = {k: v for k, v in options.fingerprint().items() if k not in _NAMED_BY_INPUTS}
    if options.history is HistoryMode.TREE and options.shares_trees and batch_size is not None:
        settings["tree_batch_size"] = batch_size
        settings["tree_batch_chars"] = BATCH_CHARS
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(f"ftdata {__version__} report {REPORT_FORMAT}".encode())
    return h.hexdigest()[:16]


def build_fingerprint(key: str, media: Manifest | None) -> str:
    """The identity of a build: its key, and the content of the media files its records named."""
    if not media:
        return key
    return hashlib.sha256(f"{key}\0{media.digest}".encode()).hexdigest()[:16]


__all__ = ["build_fingerprint", "build_key"]
