"""Prompt templates: Jinja files that render the prompt of an instruction exchange.

The built-ins live in `ftdata/templates/` as package data (see its README). A template
renders the prompt; the response and EOS follow it and are the only trained text:

    text  = [ prompt (template) ][ response ][EOS]
    spans =                      ^^^^^^^^^^^^^^^^^ trained
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ftdata.chat import sandbox
from ftdata.guard import limits
from ftdata.guard.inputs import Input, InputKind, text_input
from ftdata.errors import Location, RecordError, TemplateError
from ftdata.outcomes import Note, NoteCode
from ftdata.types import Example, Rendered

VARIABLES = ("instruction", "input", "system")


def builtin_names() -> tuple[str, ...]:
    """Names of the built-in prompt templates."""
    folder = resources.files("ftdata") / "templates"
    return tuple(sorted(p.name.removesuffix(".jinja") for p in folder.iterdir() if p.name.endswith(".jinja")))


@functools.cache
def _environment() -> Any:
    from jinja2 import StrictUndefined

    return sandbox.sandbox(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)


def _check_self_contained(ast: Any, name: str) -> None:
    """A template must not pull in other files: `include`, `import` and `extends` are refused."""
    from jinja2 import nodes

    for node in ast.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
        keyword = {nodes.FromImport: "import"}.get(type(node), type(node).__name__.lower())
        raise TemplateError(
            f"template {name!r} line {node.lineno}: '{keyword}' is not allowed (a template cannot read other "
            "files); put everything in one template"
        )


class _Described:
    """`template 'alpaca' on record data.jsonl:3`, written out only when a limit's message needs it."""

    __slots__ = ("location", "name")

    def __init__(self, name: str, location: Location | None):
        self.name, self.location = name, location

    def __str__(self) -> str:
        return f"template {self.name!r}" + (f" on record {self.location}" if self.location is not None else "")


@dataclass(frozen=True)
class PromptTemplate:
    """A compiled prompt template. Build one with `load_prompt_template`; `input`: the bytes it was compiled from."""

    name: str
    source: str
    uses_system: bool
    _compiled: Any
    input: Input

    def render(self, *, instruction: str, input: str = "", system: str = "", location: Location | None = None) -> str:
        """Render the prompt within the time and size limits (`ftdata.guard.limits`).

        Raises:
            RecordError: the template fails on this record (division by zero, an index past
                the end of a string, a sandbox violation); names the template and `location`.
                A TemplateError instead when no location is given.
            LimitExceeded: the render took too long or grew too large.
        """
        from jinja2 import TemplateError as JinjaError

        what = _Described(self.name, location)
        try:
            return sandbox.render(
                self._compiled, {"instruction": instruction, "input": input, "system": system}, what=what
            )
        except limits.LimitExceeded as exc:  # a size check inside the render names the operation, not the record
            raise exc if str(exc).startswith(str(what)) else limits.LimitExceeded(f"{what}: {exc}") from None
        except (JinjaError, ArithmeticError, LookupError, TypeError, ValueError, RecursionError) as exc:
            detail = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            if isinstance(exc, RecursionError):
                detail = "recursion too deep (a macro that calls itself without end?)"
            message = f"template {self.name!r} failed to render: {type(exc).__name__}: {detail}"
            if location is None:
                raise TemplateError(message) from None
            raise RecordError(message, location=location, field="template") from None


CHAT_TEMPLATE_NAMES = ("chatml",)  # what other tools call a chat format; see `chat_template_alias`


def chat_template_alias(template: str | None, tokenizer: Any) -> str | None:
    """`template`, with `"chatml"` (axolotl's and LLaMA-Factory's name) read as "the tokenizer's
    own chat template", which must then be ChatML (`<|im_start|>role ... <|im_end|>`).

    ftdata never swaps a model's chat template for another (the model was trained on its own),
    so there is no built-in ChatML template to fall back on.

    Raises:
        TemplateError: `"chatml"` for a tokenizer whose chat template is missing or not ChatML.
    """
    if template not in CHAT_TEMPLATE_NAMES:
        return template
    chat = getattr(tokenizer, "chat_template", None)
    if not isinstance(chat, str) or "<|im_start|>" not in chat:
        what = "has no chat template" if not chat else "has a chat template that is not ChatML (no <|im_start|>)"
        raise TemplateError(
            f"template={template!r} means the tokenizer's own ChatML chat template, but "
            f"{getattr(tokenizer, 'name_or_path', 'this tokenizer')!r} {what}; ftdata never swaps a model's chat "
            "template: leave template unset to use the tokenizer's own, or pick a prompt template "
            f"({', '.join(builtin_names())})"
        )
    return None


def load_prompt_template(spec: str) -> PromptTemplate:
    """Load a built-in template by name, or a user `.jinja` file by path (read on every call: an
    edited file is the edited template; compiling is cached by content).

    Raises:
        TemplateError: unknown name, unreadable file, or a Jinja syntax error (with its line).
    """
    path = Path(spec).expanduser()
    if path.suffix == ".jinja" or path.is_file():
        if not path.is_file():
            raise TemplateError(f"template file {str(path)!r} does not exist")
        try:
            data = path.read_bytes()
            source, name, where = data.decode("utf-8-sig"), str(path), str(path.absolute())
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(f"template file {str(path)!r} cannot be read as UTF-8: {exc}") from None
    elif spec in builtin_names():
        data = (resources.files("ftdata") / "templates" / f"{spec}.jinja").read_bytes()
        source, name, where = data.decode("utf-8"), spec, ""  # package data: the version covers it, the digest too
    else:
        raise TemplateError(
            f"unknown template {spec!r}; built-ins are {', '.join(builtin_names())}, or give a path to a .jinja file"
        )
    compiled, uses_system = _compile(name, source)
    return PromptTemplate(name, source, uses_system, compiled, text_input(InputKind.TEMPLATE, name, data, path=where))


@functools.lru_cache(maxsize=32)
def _compile(name: str, source: str) -> tuple[Any, bool]:
    """(the compiled template, whether it uses `system`).

    Raises:
        TemplateError: a syntax error, an include/import/extends, or an unknown variable.
    """
    from jinja2 import TemplateSyntaxError, meta

    env = _environment()
    try:
        ast = env.parse(source)
        compiled = env.from_string(source)
        # A plain dict of the globals instead of Jinja's ChainMap over the environment's: every
        # render copies them into its context, and copying a ChainMap cost 10 µs a render.
        compiled.globals = dict(compiled.globals)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template {name!r} line {exc.lineno}: syntax error: {exc.message}") from None
    _check_self_contained(ast, name)
    unknown = meta.find_undeclared_variables(ast) - set(VARIABLES)
    if unknown:
        raise TemplateError(
            f"template {name!r} uses unknown variable(s) {', '.join(sorted(unknown))}; "
            f"available variables: {', '.join(VARIABLES)}"
        )
    return compiled, "system" in meta.find_undeclared_variables(ast)


def render_prompt_template(example: Example, template: PromptTemplate, *, eos: str, trained: list[bool]) -> Rendered:
    """Render an example as prompt/response exchanges.

    Each user turn renders through the template (the record's `input` goes with the first);
    each assistant turn follows as `response + eos`. `trained[i]` says whether message i
    carries loss. Multi-turn records repeat the template per exchange.

    Raises:
        RecordError: a tool turn (prompt templates have no place for one).
    """
    msgs = example.messages
    system = msgs[0].content if msgs and msgs[0].role == "system" else ""
    notes: list[Note] = []
    if system and not template.uses_system:
        notes.append(
            Note(NoteCode.SYSTEM_IGNORED, f"system message ignored: template {template.name!r} has no {{{{ system }}}}")
        )
    text: list[str] = []
    length = 0
    spans: list[tuple[int, int]] = []
    boundaries: list[int] = []
    context = example.context
    for i, msg in enumerate(msgs):
        if msg.role == "system":
            continue
        if msg.role == "user":
            piece = template.render(instruction=msg.content, input=context, system=system, location=example.source)
            context = ""
        elif msg.role == "assistant":
            piece = msg.content + eos
        else:
            raise RecordError(
                f"{msg.role} turns cannot be rendered by prompt template {template.name!r}; use the model's "
                "chat template (template=None) for tool conversations",
                location=example.source,
                field=f"messages[{i}]",
            )
        start, length = length, length + len(piece)
        text.append(piece)
        if msg.role == "assistant":
            if trained[i]:
                spans.append((start, length))
            boundaries.append(length)
    return Rendered("".join(text), tuple(spans), "prompt-template", tuple(boundaries[:-1]), tuple(notes))
