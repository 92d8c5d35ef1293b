"""A build's cache key: what identifies the rows a build makes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ftdata.guard import safeio
from ftdata.options import DataOptions
from ftdata.run.report import REPORT_FORMAT


def build_fingerprint(source: Any, tokenizer: Any, options: DataOptions) -> str:
    """Cache key of a build: the source identity, the tokenizer, the data options, the version."""
    from ftdata import __version__

    h = hashlib.sha256()
    h.update(safeio.source_id(source).encode())
    h.update(str(getattr(tokenizer, "name_or_path", "")).encode())
    h.update(hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).digest())
    h.update(str(getattr(tokenizer, "chat_template", "")).encode())
    h.update(json.dumps(options.fingerprint(), sort_keys=True, default=str).encode())
    h.update(__version__.encode())
    h.update(f"report {REPORT_FORMAT}".encode())
    return h.hexdigest()[:16]


def recipe_fingerprint(recipe: Any, tokenizer: Any, options: DataOptions) -> str:
    """What identifies a recipe build: the recipe file, every source file's content, the tokenizer, the options."""
    h = hashlib.sha256(build_fingerprint(recipe.origin, tokenizer, options).encode())
    for spec in recipe.sources:
        plain = {k: getattr(v, "value", v) for k, v in spec.options.items()}
        h.update(json.dumps([spec.name, spec.weight, spec.epochs_max, plain], sort_keys=True, default=str).encode())
        for path in spec.files():
            h.update(safeio.source_id(path).encode())
    return h.hexdigest()[:16]


__all__ = ["build_fingerprint", "recipe_fingerprint"]
