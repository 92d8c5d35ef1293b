"""Prompt templates: Jinja files that render the prompt of an instruction exchange.

The built-ins live in `ftdata/templates/` as package data (see its README). A template
renders the prompt; the response and EOS follow it and are the only trained text:

    text  = [ prompt (template) ][ response ][EOS]
    spans =                      ^^^^^^^^^^^^^^^^^ trained
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
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
# What stands for each variable in the render that finds a template's constant text (`PromptTemplate.constants`):
# private-use characters, which no template writes.
_PROBES = {name: f"\ue000{i}\ue001" for i, name in enumerate(VARIABLES)}


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
    # The body as data where it only writes text and variables, choosing by which are empty (`_plan`): such a
    # template writes a record without Jinja, its constants known (`render_parts`).
    plan: Plan | None = field(default=None, compare=False, repr=False)
    # Per set of non-empty variables: the constant text around them, found once (`constants`).
    _skeletons: dict[tuple[bool, ...], tuple[tuple[str, ...], tuple[str, ...]] | None] = field(
        default_factory=dict, compare=False, repr=False
    )
    _parts: dict[tuple[bool, ...], list[str | tuple[str]]] = field(default_factory=dict, compare=False, repr=False)

    def render_parts(
        self, *, instruction: str, input: str = "", system: str = "", location: Location | None = None
    ) -> tuple[str, tuple[tuple[int, str], ...]]:
        """The prompt (`render`) and the template's own text in it as (start, text) (`constants`).

        A template whose plan is known is written from it, without Jinja: the same text, as `render`'s limit on
        its size applies (tests/chat/test_prompt_templates.py compares both on generated values).
        """
        values = {"instruction": instruction, "input": input, "system": system}
        if self.plan is None:
            prompt = self.render(instruction=instruction, input=input, system=system, location=location)
            return prompt, self.constants(prompt, values)
        key = tuple(bool(values[name]) for name in VARIABLES)
        parts = self._parts.get(key)
        if parts is None:
            parts = self._parts[key] = _parts(self.plan, dict(zip(VARIABLES, key)))
        # (constant?, text) runs: an empty value leaves the constants around it side by side, one run of constant text
        runs: list[list[Any]] = []
        for part in parts:
            constant = isinstance(part, str)
            written = part if isinstance(part, str) else values[part[0]]
            if not written:
                continue
            if runs and constant and runs[-1][0]:
                runs[-1][1] += written
            else:
                runs.append([constant, written])
        constants: list[tuple[int, str]] = []
        at = 0
        for constant, written in runs:
            if constant:
                constants.append((at, written))
            at += len(written)
        cap = limits.limits().render_chars
        if at > cap:
            raise limits.output_too_long(_Described(self.name, location), cap)
        return "".join(written for _, written in runs), tuple(constants)

    def constants(self, prompt: str, values: dict[str, str]) -> tuple[tuple[int, str], ...]:
        """The template's own text in `prompt` (its render of `values`) as (start, text), or () when `prompt` is
        not that text around the values verbatim (the template transforms or tests a value otherwise).

        Found once per set of non-empty variables, by rendering private-use probes in their place; each render
        is then checked to be exactly the constants joined with its values, so a template that branches on a
        value's content gives () for that record, never wrong constants:

            'Below is ... ### Instruction:\n' + instruction + '\n\n### Response:\n'
            constants: ((0, 'Below is ... ### Instruction:\n'), (118 + len(instruction), '\n\n### Response:\n'))
        """
        key = tuple(bool(values[name]) for name in VARIABLES)
        if key not in self._skeletons:
            self._skeletons[key] = self._skeleton(key)
        skeleton = self._skeletons[key]
        if skeleton is None:
            return ()
        pieces, order = skeleton
        parts = [pieces[0]]
        for name, piece in zip(order, pieces[1:]):
            parts += (values[name], piece)
        if "".join(parts) != prompt:
            return ()
        out, at = [], 0
        for i, part in enumerate(parts):
            if i % 2 == 0 and part:
                out.append((at, part))
            at += len(part)
        return tuple(out)

    def _skeleton(self, key: tuple[bool, ...]) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """(the constant pieces, the variables between them in order) of the render of non-empty variables
        `key`, or None when a probe is not written verbatim exactly once."""
        values = {name: _PROBES[name] if given else "" for name, given in zip(VARIABLES, key)}
        try:
            text = self.render(instruction=values["instruction"], input=values["input"], system=values["system"])
        except TemplateError:
            return None
        found = sorted((text.find(probe), name) for name, probe in _PROBES.items() if probe in text)
        if any(text.count(_PROBES[name]) != 1 or not values[name] for _, name in found):
            return None
        pieces, at = [], 0
        for start, name in found:
            pieces.append(text[at:start])
            at = start + len(_PROBES[name])
        pieces.append(text[at:])
        return tuple(pieces), tuple(name for _, name in found)

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
    compiled, uses_system, plan = _compile(name, source)
    return PromptTemplate(
        name, source, uses_system, compiled, text_input(InputKind.TEMPLATE, name, data, path=where), plan
    )


@functools.lru_cache(maxsize=32)
def _compile(name: str, source: str) -> tuple[Any, bool, Plan | None]:
    """(the compiled template, whether it uses `system`, its plan where it only writes text and variables).

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
    return compiled, "system" in meta.find_undeclared_variables(ast), _plan(ast.body)


# A template's body read as data where it only writes text and variables, choosing by whether a variable is empty:
# a constant, a variable's name, or (variable, the plan if it is not empty, the plan if it is).
Plan = list["str | tuple[str] | tuple[str, Plan, Plan]"]


def _plan(nodes: list[Any]) -> Plan | None:
    """The plan of Jinja AST `nodes`, or None where they do anything else (a filter, a test, a loop, a macro, an
    expression): that template is rendered by Jinja. Whitespace control is already applied to the text nodes."""
    from jinja2 import nodes as jn

    out: Plan = []
    for node in nodes:
        if isinstance(node, jn.Output):
            for child in node.nodes:
                if isinstance(child, jn.TemplateData):
                    out.append(child.data)
                elif isinstance(child, jn.Name) and child.ctx == "load" and child.name in VARIABLES:
                    out.append((child.name,))
                else:
                    return None
        elif isinstance(node, jn.If) and isinstance(node.test, jn.Name) and node.test.name in VARIABLES:
            if node.elif_:
                return None
            then, otherwise = _plan(node.body), _plan(node.else_)
            if then is None or otherwise is None:
                return None
            out.append((node.test.name, then, otherwise))
        else:
            return None
    return out


def _parts(plan: Plan, given: dict[str, bool]) -> list[str | tuple[str]]:
    """The constants and variables a plan writes when the variables that are not empty are `given`."""
    out: list[str | tuple[str]] = []
    for step in plan:
        if isinstance(step, str) or len(step) == 1:
            out.append(step)  # a constant or (variable,)
        else:
            name, then, otherwise = step  # (variable, plan, plan)
            out += _parts(then if given[name] else otherwise, given)
    return out


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
    constants: list[tuple[int, str]] = []
    context = example.context
    for i, msg in enumerate(msgs):
        if msg.role == "system":
            continue
        if msg.role == "user":
            piece, own = template.render_parts(
                instruction=msg.content, input=context, system=system, location=example.source
            )
            constants.extend((length + at, part) for at, part in own)
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
    return Rendered(
        "".join(text), tuple(spans), "prompt-template", tuple(boundaries[:-1]), tuple(notes), constants=tuple(constants)
    )
