"""Shared fixtures: real tokenizers from ../shared/tokenizers, the bundled SmolLM2, real datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FTDATA_SHARED", ROOT.parent / "shared"))
DATASETS = SHARED / "datasets"
TOKENIZERS = SHARED / "tokenizers"
TOKENIZER_NAMES = sorted(p.name for p in TOKENIZERS.iterdir() if (p / "tokenizer.json").is_file()) if TOKENIZERS.is_dir() else []

_cache: dict[str, object] = {}


def tokenizer(name: str | None):
    """A real tokenizer by folder name under ../shared/tokenizers (None = bundled SmolLM2), cached."""
    from ftdata.resources import load_tokenizer

    key = name or "smollm2"
    if key not in _cache:
        _cache[key] = load_tokenizer(None if name is None else TOKENIZERS / name)
    return _cache[key]


@pytest.fixture(scope="session")
def smol():
    return tokenizer(None)


def pytest_collection_modifyitems(config, items):
    needs_shared = pytest.mark.skip(reason=f"shared resources not found at {SHARED}")
    for item in items:
        if "shared" in item.keywords and not SHARED.is_dir():
            item.add_marker(needs_shared)
