"""What a build tokenized with, as it encodes: the chat template text, the tokenizer's files, the class that loaded
them and the ids it gives a fixed probe (`TokenizerPrint`, build.json's `serving.tokenizer`); and whether that class
encodes like the folder's own `tokenizer.json` read by the `tokenizers` library (`raw_check`).

The same files load as another class beside another config.json (transformers v5 routes Granite, and a Phi-3 folder
without config.json, to classes that rebuild the pre-tokenizer): the ids change while every file digest stays the
same. A server (vLLM, TGI, llama.cpp) that loads the folder otherwise feeds the model ids the rows never held. So the
print holds the probe's ids, and every build encodes a sample of its own texts both ways once.

    tokenizer.json ──tokenizers.Tokenizer.from_file──▶ ids A ┐
    folder ──ftdata's load (transformers' class)─────▶ ids B ┴─ the first token where A != B, both sides decoded
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftdata.guard.inputs import Stat, StatMemo, stat_of, text_digest

__all__ = [
    "PROBE_CHAT",
    "PROBE_TEXT",
    "RawCheck",
    "TokenizerPrint",
    "first_difference",
    "print_of",
    "raw_check",
    "template_mismatch",
    "token_pair",
    "tokenizer_mismatch",
]

# Spaces after a line break, runs of spaces, digits, accents, CJK, an emoji, a tab: what pre-tokenizers split apart.
PROBE_TEXT = "hi\nhi there,  two  spaces\t1234567 Ünïcödé 漢字 🙂\n\n  indented"
PROBE_CHAT = ({"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"})
RAW_SAMPLE = 32  # the build's own texts the raw check encodes both ways
# ... and their tokens in all: 32 packed rows of 1,024, but not 32 agent trajectories of 25,000 tokens each (their
# two encodes cost more than building 20 of them); the row that passes it is cut there, a text all the same.
RAW_TOKENS = 32_768
_FILES = (".json", ".jinja", ".txt", ".model", ".tiktoken")  # what a tokenizer loader parses of its folder


def _sha(data: str | bytes) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def _folder(tokenizer: Any) -> Path | None:
    folder = Path(str(getattr(tokenizer, "name_or_path", "") or "")).expanduser()
    return folder if str(folder) not in ("", ".") and folder.is_dir() else None


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _probe_render(tokenizer: Any, template: str) -> str | None:
    """`PROBE_CHAT` rendered by `template`; None where the template refuses it (one that requires tools, or raises
    on a plain chat): the records' own renderings are compared then."""
    try:
        return str(tokenizer.apply_chat_template(list(PROBE_CHAT), chat_template=template, tokenize=False))
    except Exception:  # noqa: BLE001 - the template's own error on a probe: no probe, not a failed build
        return None


def probe_chat_ids(tokenizer: Any, template: str | None) -> list[int]:
    """The ids of `PROBE_CHAT` rendered by `template` (None, or a template that refuses it: []), tokenized as a
    build tokenizes a rendering."""
    rendered = _probe_render(tokenizer, template) if template else None
    return _ids(tokenizer, rendered) if rendered is not None else []


@dataclass(frozen=True)
class TokenizerPrint:
    """The chat template (its sha256 and text) and the tokenizer as it encodes: its files by sha256, the class
    that loaded them, the ids of `PROBE_TEXT` and of `PROBE_CHAT` rendered; `digest`: all of it but the template."""

    tokenizer_class: str
    files: dict[str, str]
    probe_ids: list[int]
    chat_ids: list[int]
    template_sha256: str | None = None
    chat_template: str | None = field(default=None, repr=False)

    @property
    def digest(self) -> str:
        state = [self.tokenizer_class, sorted(self.files.items()), self.probe_ids, self.chat_ids]
        return _sha(json.dumps(state))[:16]

    @property
    def template_digest(self) -> str:
        return (self.template_sha256 or "none")[:16]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "digest": self.digest}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenizerPrint:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


def print_of(tokenizer: Any) -> TokenizerPrint:
    """The print of a loaded tokenizer (its folder's files when `name_or_path` is a folder; else none)."""
    folder = _folder(tokenizer)
    files = (
        {p.name: _sha(p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in _FILES}
        if folder is not None
        else {}
    )
    template = getattr(tokenizer, "chat_template", None)
    template = template if isinstance(template, str) else None
    return TokenizerPrint(
        tokenizer_class=type(tokenizer).__name__,
        files=files,
        probe_ids=_ids(tokenizer, PROBE_TEXT),
        chat_ids=probe_chat_ids(tokenizer, template),
        template_sha256=_sha(template) if template is not None else None,
        chat_template=template,
    )


def _decoded(decode: Any, piece: Any, ids: Sequence[int], k: int, *, pieces: bool) -> str:
    """Token `k` of `ids` decoded (or, `pieces`, as the vocabulary spells it: two tokens that decode alike), with
    its id; '(end)' past the end."""
    if k >= len(ids):
        return "(end)"
    return f"{(piece(int(ids[k])) if pieces else decode([int(ids[k])]))!r} ({ids[k]})"


def token_pair(tokenizer: Any, a: Sequence[int], b: Sequence[int], k: int, other: Any = None) -> tuple[str, str]:
    """Token `k` of `a` and of `b`, each decoded with its id; as vocabulary pieces where they decode alike."""
    return _both(tokenizer, a, b, k, other)


def _both(tokenizer: Any, a: Sequence[int], b: Sequence[int], k: int, other: Any = None) -> tuple[str, str]:
    """Token `k` of `a` (decoded by `tokenizer`) and of `b` (by `other`, a `tokenizers.Tokenizer`, else
    `tokenizer`): decoded, or as vocabulary pieces where they decode to the same text (`hi` vs `▁hi`)."""

    def mine(ids: list[int]) -> str:
        return str(tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False))

    def theirs(ids: list[int]) -> str:
        return str(other.decode(ids, skip_special_tokens=False)) if other is not None else mine(ids)

    mine_piece = tokenizer.convert_ids_to_tokens
    theirs_piece = other.id_to_token if other is not None else mine_piece
    same = k < len(a) and k < len(b) and mine([int(a[k])]) == theirs([int(b[k])])
    return (
        _decoded(mine, mine_piece, a, k, pieces=same),
        _decoded(theirs, theirs_piece, b, k, pieces=same),
    )


def _pair(tokenizer: Any, built: Sequence[int], now: Sequence[int], k: int) -> str:
    old, new = _both(tokenizer, built, now, k)
    return f"built {old} vs now {new}"


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """The first position where `a` and `b` differ (one ending first counts), or None when they are equal."""
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return k
    return None if len(a) == len(b) else min(len(a), len(b))


@dataclass(frozen=True)
class RawCheck:
    """The build's texts encoded by the class ftdata loaded and by `tokenizers` on the folder's `tokenizer.json`:
    how many, how many differ, and the first difference in one line (`line`; None when all agree). `skipped`:
    why nothing was compared (no tokenizer.json to read)."""

    texts: int
    differ: int = 0
    line: str | None = None
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


_RAW: StatMemo[Any] = StatMemo(8)  # by the file's name and `Stat`
_RAW_BYTES: dict[str, Any] = {}  # by the sha256 of the bytes parsed, the most recently loaded last
_RAW_BYTES_LIMIT = 4
_RAW_LOCK = threading.Lock()


def _raw_tokenizer(path: str, version: Stat | None) -> Any:
    """`tokenizers.Tokenizer` of a `tokenizer.json`, loaded once per file as it is (its `Stat` in the key), and once
    per content: a file whose stat cannot be trusted yet (changed too recently) or another file with the same bytes
    (a copy of the folder) is read and hashed, and the tokenizer parsed from those bytes before is served."""
    from tokenizers import Tokenizer

    found = _RAW.get(path, version)
    if found is None:
        taken = time.time_ns()
        data = Path(path).read_bytes()
        digest = text_digest(data)
        with _RAW_LOCK:
            found = _RAW_BYTES.get(digest)
        if found is None:
            found = Tokenizer.from_buffer(data)
            with _RAW_LOCK:
                while len(_RAW_BYTES) >= _RAW_BYTES_LIMIT:
                    del _RAW_BYTES[next(iter(_RAW_BYTES))]
                _RAW_BYTES[digest] = found
        _RAW.put(path, version, taken, found)
    return found


def raw_check(tokenizer: Any, texts: Iterable[str], *, sample: int = RAW_SAMPLE) -> RawCheck:
    """Encode the first `sample` of `texts` (and `PROBE_TEXT`) with `tokenizer` and with `tokenizers` on its folder's
    `tokenizer.json` (no special tokens added by either: a rendering holds its own); say the first that differs.

    The line names both classes, where (text k, token j) and the differing token of each side as the vocabulary
    spells it: `LlamaTokenizer 'hi' (2918) vs tokenizers.Tokenizer '▁hi' (7251)`.
    """
    folder = _folder(tokenizer)
    if folder is None or not (folder / "tokenizer.json").is_file():
        return RawCheck(0, skipped="the tokenizer has no folder with a tokenizer.json to compare with")
    file = folder / "tokenizer.json"
    raw = _raw_tokenizer(str(file), stat_of(file))
    loaded = type(tokenizer).__name__
    template = getattr(tokenizer, "chat_template", None)
    chat = _probe_render(tokenizer, template) if isinstance(template, str) else None
    probes = [PROBE_TEXT, *([chat] if chat is not None else [])]
    chosen = [*probes, *(t for _, t in zip(range(sample), texts))]
    differ, line = 0, None
    ours = tokenizer(chosen, add_special_tokens=False)["input_ids"]  # one batch each side: two calls, not 2 x 34
    raws = raw.encode_batch(chosen, add_special_tokens=False)
    for n, (mine, encoding) in enumerate(zip(ours, raws)):
        theirs = encoding.ids
        k = first_difference(mine, theirs)
        if k is None:
            continue
        differ += 1
        if line is None:
            where = "a probe text" if n < len(probes) else f"text {n - len(probes)} of the build's sample"
            mine_token, theirs_token = _both(tokenizer, mine, theirs, k, raw)
            line = (
                f"the tokenizer ftdata loaded ({loaded}) encodes {where} otherwise than {folder}/tokenizer.json "
                f"through tokenizers.Tokenizer: token {k}: {loaded} {mine_token} vs "
                f"tokenizers.Tokenizer {theirs_token}; a server that loads the folder another way feeds other ids "
                "(give the folder the model's config.json, or set tokenizer_class in tokenizer_config.json)"
            )
    return RawCheck(len(chosen), differ, line)


# Conversations whose renderings the template check compares (a template that raises on one is compared on the rest).
_PROBE_RENDERS: tuple[tuple[tuple[dict[str, Any], ...], bool], ...] = (
    (PROBE_CHAT, False),
    (({"role": "system", "content": "Be brief."}, *PROBE_CHAT, {"role": "user", "content": "and?"}), True),
    (
        (
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"type": "function", "function": {"name": "get", "arguments": {"city": "Oslo"}}}],
            },
            {"role": "tool", "content": "12C"},
            {"role": "assistant", "content": "12C.", "reasoning_content": "It said 12C."},
        ),
        False,
    ),
)


def _rendered_ids(tokenizer: Any, template: str | None) -> list[list[int] | None]:
    out: list[list[int] | None] = []
    for messages, generation in _PROBE_RENDERS:
        try:
            text = tokenizer.apply_chat_template(
                list(messages), chat_template=template, tokenize=False, add_generation_prompt=generation
            )
            out.append(_ids(tokenizer, str(text)))
        except Exception:  # noqa: BLE001  # a template may raise on any probe (roles, tools): that probe is not compared
            out.append(None)
    return out


def template_mismatch(built: TokenizerPrint, tokenizer: Any, *, what: str) -> str | None:
    """One line when `tokenizer`'s chat template is not the one `built` records (another revision under the same
    name, a byte edited), naming both digests and the first rendered token where they part (the probe conversations
    rendered by each, tokenized by `tokenizer`); None when the digests agree or the build recorded no template.
    `what`: what holds the other template ("the run's tokenizer", "the saved model")."""
    now = getattr(tokenizer, "chat_template", None)
    now = now if isinstance(now, str) else None
    if built.template_sha256 is None or (now is not None and _sha(now) == built.template_sha256):
        return None
    digest = _sha(now)[:16] if now is not None else "none"
    head = f"{what} has chat template {digest}, the data was built with {built.template_digest}"
    if now is None or built.chat_template is None:
        return f"{head}; render with the template that built the data (build.json serving.tokenizer.chat_template)"
    for old, new in zip(_rendered_ids(tokenizer, built.chat_template), _rendered_ids(tokenizer, now)):
        if old is None or new is None or (k := first_difference(old, new)) is None:
            continue
        return f"{head}: first differing rendered token {k}: {_pair(tokenizer, old, new, k)}"
    k = first_difference([ord(c) for c in built.chat_template], [ord(c) for c in now])
    at = k if k is not None else 0
    return (
        f"{head}: the probe conversations render the same, the template texts first differ at character {at}: "
        f"built {built.chat_template[at : at + 20]!r} vs now {now[at : at + 20]!r}"
    )


def tokenizer_mismatch(built: TokenizerPrint, tokenizer: Any, *, what: str) -> str | None:
    """One line when `tokenizer` encodes the probes otherwise than the one `built` records (another class over the
    same files, other files), naming both digests and the first differing probe token; None when the ids agree
    (other files or another class that encode alike are the same tokenizer to a model)."""
    now = print_of(tokenizer)
    head = (
        f"{what} encodes as tokenizer {now.digest} ({now.tokenizer_class}), "
        f"the data was built with {built.digest} ({built.tokenizer_class})"
    )
    for old, new in ((built.probe_ids, now.probe_ids), (built.chat_ids, now.chat_ids)):
        if (k := first_difference(old, new)) is not None:
            return f"{head}: first differing probe token {k}: {_pair(tokenizer, old, new, k)}"
    return None
