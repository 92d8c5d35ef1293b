"""Fixtures shared by the tests; helpers live in support.py."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from support import SHARED, fresh_cache, make_char_tokenizer, tokenizer

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


_CACHE = pytest.StashKey[Path]()


def pytest_configure(config):
    """Each test process caches its builds (and stores the images builds write) in a folder of its own, removed at its
    end: a build an earlier run left in the developer's cache (~/.cache/ftdata/builds) would be served where the test
    builds, and would make a second run faster than the first."""
    mine = fresh_cache(Path(tempfile.mkdtemp(prefix="ftdata-tests-cache-")))  # the machine-wide folders linked
    config.stash[_CACHE] = mine
    os.environ["FTDATA_CACHE"] = str(mine)
    os.environ["FTDATA_IMAGE_DIR"] = str(mine / "images")
    _share_the_cores()
    _one_command_per_app()


def _share_the_cores() -> None:
    """Under pytest-xdist, each worker's torch (and the processes it starts) takes its share of the cores: torch's
    OpenMP threads, one per core in every worker, spin against each other's (two workers on 2 cores: a training
    test took 80 s beside another where it takes 56 s with a thread each). `OMP_NUM_THREADS` set by hand is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))


def _one_command_per_app() -> None:
    """typer's `CliRunner.invoke` builds the app's click command on every call (29 ms for ftdata's: ~20 s of CPU in
    a full run's ~650 calls); no test changes an app after its first call, so each app's is built once. Click makes
    a new context for every call, so nothing one call parses reaches the next."""
    import typer.testing

    real, built = typer.testing._get_command, {}

    def get_command(app):
        if id(app) not in built:
            built[id(app)] = (app, real(app))  # the app held: its id is never another's
        return built[id(app)][1]

    typer.testing._get_command = get_command


def pytest_unconfigure(config):
    if (mine := config.stash.get(_CACHE, None)) is not None:
        shutil.rmtree(mine, ignore_errors=True)  # the links go, not what they point to


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


def pytest_collection_finish(session):
    """What collection made alive (torch, transformers, TRL, the test modules: most of a worker's heap) is frozen, and
    the full collections that walk what came after are rarer (after 100 middle-generation passes instead of 10).

    Each full collection walked the whole heap with the GIL held. On the chat, tokens, media and train tests (`-n 2`,
    the two versions alternated twice), full collections took 91 and 94 s of the two workers' time before, 24 and 25
    s after (`gc.callbacks` timing), and the run's user CPU went 700 / 733 s -> 674 / 682 s. Cyclic garbage is
    still collected; only what was alive at the end of collection is skipped (mostly modules, alive as long as the
    worker). A build leaves a heap its caller froze as it is (`run.executors._quiet_collector`)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(700, 10, 100)
