"""Fixtures shared by the tests; helpers live in support.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings
from support import SHARED, make_char_tokenizer, tokenizer

# tests/ mirrors the package, one folder per package, and a test module imports another's helpers by basename
# (`from test_chat_tools import template_tokenizer`) across folders: each folder is importable, as pytest's prepend
# mode makes the folder of every collected file, also when one file runs alone (basenames are unique across folders).
for _folder in sorted(p for p in Path(__file__).resolve().parent.iterdir() if p.is_dir() and any(p.glob("test_*.py"))):
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))

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
