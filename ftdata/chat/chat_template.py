"""`chat_template`: a chat template other than the tokenizer's, without editing the tokenizer folder.

    chat_template="my_template.jinja"   a Jinja file
    chat_template="qwen3"               a template TRL ships (trl/chat_templates/qwen3.jinja; TRL's
                                        `*_training` variants carry `{% generation %}` tags)

TRL calls it `chat_template_path`, Axolotl `chat_template_jinja`. The build renders with a copy of
the tokenizer holding this template (`applied`); the tokenizer passed in is not changed. The
template's bytes are declared (`ChatTemplate.input`): they are part of the build's key, and
`ftdata train` saves the template with the tokenizer, so inference renders what training saw.
"""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError
from ftdata.guard.inputs import Input, InputKind, text_input
from ftdata.guard.limits import env_name, limits

SUFFIXES = (".jinja", ".j2")


@dataclass(frozen=True, slots=True)
class ChatTemplate:
    """A chat template read from a file or from TRL by name: its text, and the bytes declared."""

    name: str
    text: str
    input: Input

    def applied(self, tokenizer: Any) -> Any:
        """`tokenizer` rendering with this template (`with_template`)."""
        return with_template(tokenizer, self.text)


def with_template(tokenizer: Any, text: str) -> Any:
    """A shallow copy of `tokenizer` that renders with the chat template `text` (`tokenizer` itself when it already
    does). It shares the vocabulary and rules, so it costs no parse (a deep copy of Qwen2.5's takes 0.7 s); a caller
    that changes them copies it first (`chat_tokens.copy_tokenizer`)."""
    if getattr(tokenizer, "chat_template", None) == text:
        return tokenizer
    out = copy.copy(tokenizer)
    out.chat_template = text
    return out


def trl_folder() -> Path | None:
    """The `chat_templates` folder of the installed TRL (found without importing TRL), or None."""
    spec = importlib.util.find_spec("trl")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "chat_templates"
    return folder if folder.is_dir() else None


def trl_names() -> tuple[str, ...]:
    """The names of the templates TRL ships (its `chat_templates/*.jinja`); () without TRL."""
    folder = trl_folder()
    return tuple(sorted(p.stem for p in folder.glob("*.jinja"))) if folder else ()


def _is_path(spec: str) -> bool:
    return spec.endswith(SUFFIXES) or "/" in spec or "\\" in spec or Path(spec).expanduser().is_file()


def load_chat_template(spec: str) -> ChatTemplate:
    """The chat template `spec` names: a Jinja file, or a template TRL ships by name (read on every call).

    Raises:
        ConfigError: no such file, a file that is not UTF-8 or is larger than any template, an
            unknown name (the message lists TRL's), or a name without TRL installed.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(
            f"chat_template must be a .jinja file or a TRL template name like 'qwen3', got chat_template={spec!r}"
        )
    if _is_path(spec):
        path, name = Path(spec).expanduser(), spec
        if not path.is_file():
            raise ConfigError(
                f"chat template file {spec!r} does not exist; give a .jinja file or a TRL template name like 'qwen3'"
            )
    else:
        folder = trl_folder()
        if folder is None:
            raise ConfigError(
                f"chat_template={spec!r} names a template TRL ships, and TRL is not installed; give a .jinja file"
            )
        path, name = folder / f"{spec}.jinja", spec
        if not path.is_file():
            raise ConfigError(
                f"unknown chat template {spec!r}: give a .jinja file or one TRL ships: {', '.join(trl_names())}"
            )
    cap = limits().tokenizer_bytes
    if (size := path.stat().st_size) > cap:
        raise ConfigError(
            f"chat template file {str(path)!r} is {size:,} bytes, more than {cap:,} "
            f"({env_name('tokenizer_bytes')}); check the file"
        )
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"chat template file {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    if not text.strip():
        raise ConfigError(f"chat template file {str(path)!r} is empty")
    # Declared by its text (a byte-order mark is no part of it): what a saved tokenizer holds compares to it.
    return ChatTemplate(name, text, text_input(InputKind.CHAT_TEMPLATE, name, text, path=path.absolute()))


__all__ = ["ChatTemplate", "load_chat_template", "trl_names"]
