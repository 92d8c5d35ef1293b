"""Test helpers shared by the test modules: paths, cached real tokenizers, a reversible byte tokenizer.

Imported as `from support import ...` (not from conftest: tests/train has its own conftest)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FTDATA_SHARED", ROOT.parent / "shared"))
DATASETS = SHARED / "datasets"
TOKENIZERS = SHARED / "tokenizers"
TOKENIZER_NAMES = sorted(p.name for p in TOKENIZERS.iterdir() if (p / "tokenizer.json").is_file()) if TOKENIZERS.is_dir() else []

# Machine-wide things a run may make or use in the developer's ftdata cache: the bundled model, made once per machine
# (`resources.materialised`: 11-13 s from the GGUF, 20 s beside a test run), and the other stacks' venvs.
MACHINE_WIDE = ("smollm2-135m-instruct", "stacks")


def fresh_cache(folder: Path) -> Path:
    """`folder` made an ftdata cache of its own (builds, answers, images) that links the machine-wide folders of the
    cache in use now (`cache_root()`), which tests must not make again; for FTDATA_CACHE."""
    from ftdata.io.resources import cache_root

    folder.mkdir(parents=True, exist_ok=True)
    for name in MACHINE_WIDE:
        (cache_root() / name).mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to(cache_root() / name, target_is_directory=True)
    return folder


_cache: dict[str, object] = {}
_as_loaded: dict[str, str] = {}  # each cached tokenizer's fingerprint when it was loaded (`pristine`)


def tokenizer(name: str | None):
    """A real tokenizer by folder name under ../shared/tokenizers (None = bundled SmolLM2), cached."""
    key = name or "smollm2"
    if key not in _cache:
        _load(name)
    return _cache[key]


def _load(name: str | None) -> None:
    from ftdata.guard.inputs import Digests
    from ftdata.io.resources import load_tokenizer, tokenizer_input

    key, tok = name or "smollm2", load_tokenizer(None if name is None else TOKENIZERS / name)
    _cache[key], _as_loaded[key] = tok, tokenizer_input(tok, Digests()).digest


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_char_tokenizer(*, bos: bool = True, chat_template: str | None = CHATML):
    """A reversible tokenizer: one token per byte, `<s>` added in front like Llama's.

    Special tokens `<s>`, `</s>`, `<|im_start|>`, `<|im_end|>` are single tokens; every other
    character is its UTF-8 bytes. Offsets are exact, so expected labels read as text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    backend.add_special_tokens(specials)
    if bos:
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", backend.token_to_id("<s>"))]
        )
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")
    tok.chat_template = chat_template
    return tok



def pristine(name: str | None):
    """`tokenizer(name)` as its files have it: served while its fingerprint (its folder's bytes and its loaded state,
    as a build takes it) is the one it had when loaded, so never with the truncation another test's transformers call
    left on it; else parsed again. Read it only."""
    from ftdata.guard.inputs import Digests
    from ftdata.io.resources import tokenizer_input

    key = name or "smollm2"
    if key not in _cache or tokenizer_input(_cache[key], Digests()).digest != _as_loaded[key]:
        _load(name)
    return _cache[key]


def trained_text(tok, row) -> str:
    """The text of the trained tokens of a dataset row, decoded."""
    return tok.decode([i for i, label in zip(row["input_ids"], row["labels"]) if label != -100])


def matrix_module():
    """benchmarks/template_matrix.py as a module (loaded once; dataclasses look their module up)."""
    import importlib.util
    import sys

    name = "template_matrix"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "template_matrix.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def peak_of(fn):
    """(what `fn()` returns, the peak of Python's traced memory while it ran, in bytes)."""
    import tracemalloc

    tracemalloc.start()
    try:
        return fn(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def set_day(monkeypatch, day) -> None:
    """Every chat-template render and a build's key read one clock (transformers' `datetime`, which its
    `strftime_now` calls): set here to noon of `day` (a `datetime.date`) for the test."""
    import datetime

    from transformers.utils import chat_template_utils

    class Day(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(day.year, day.month, day.day, 12, tzinfo=tz)

    monkeypatch.setattr(chat_template_utils, "datetime", Day)


def modules_assigning(package: str, name: str) -> set[str]:
    """The modules of the ftdata subpackage `package` ("run", "train") that assign `name` at their top level (a
    plain or an annotated assignment), by dotted name: where a table-free seam finds its implementations."""
    import ast

    out = set()
    for path in sorted((ROOT / "ftdata" / package).glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                out.add(f"ftdata.{package}.{path.stem}")
    return out


def settled(monkeypatch, *modules) -> None:
    """Files written in this test count as settled for the in-process memos of `modules` (`guard.inputs.StatMemo`):
    their clock reads `RACY_NS` and a second later, so what they read from a file just written is kept, and a test
    can show what a kept value is keyed by."""
    import time
    from types import SimpleNamespace

    from ftdata.guard.inputs import RACY_NS

    for module in modules:
        monkeypatch.setattr(module, "time", SimpleNamespace(time_ns=lambda: time.time_ns() + RACY_NS + 10**9))


def same_tick(monkeypatch, module, path) -> None:
    """`module`'s `version_of` (or `stat_of`) gives `path`'s stat as it is now for every later stat of it: as if a
    rewrite came within one tick of the file system's clock (size, modification and change times, inode all kept)."""
    import os

    from ftdata.guard.inputs import stat_of, version_of

    first = version_of(os.stat(path))
    if hasattr(module, "version_of"):
        monkeypatch.setattr(module, "version_of", lambda st: first if st.st_ino == first[3] else version_of(st))
    else:
        monkeypatch.setattr(module, "stat_of", lambda p: first if os.stat(p).st_ino == first[3] else stat_of(p))
