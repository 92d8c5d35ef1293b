"""Fixtures shared by the tests; helpers live in support.py."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings
from support import SHARED, make_char_tokenizer, tokenizer

# CI runs the same examples every time (a red main must be reproducible); locally Hypothesis explores.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def smol():
    """The bundled SmolLM2-135M-Instruct tokenizer."""
    return tokenizer(None)


@pytest.fixture(scope="session")
def char_tok():
    """A reversible one-token-per-byte tokenizer with a ChatML template and a Llama-style BOS."""
    return make_char_tokenizer()


def pytest_collection_modifyitems(config, items):
    needs_shared = pytest.mark.skip(reason=f"shared resources not found at {SHARED}")
    for item in items:
        if "shared" in item.keywords and not SHARED.is_dir():
            item.add_marker(needs_shared)
