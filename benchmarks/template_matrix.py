"""Which chat templates ftdata masks exactly: every original template shipped with TRL.

For each `trl/chat_templates/*.jinja` (originals only: `*_training.jinja` are TRL's own
patched copies; vision templates are skipped), the template is set on a tokenizer that has
its markup tokens, a few probe conversations are rendered and masked, and each record ends
up verified through the prefix path, verified through the fallback path, or rejected with a
reason. The tokenizer is the first real one under ../shared/tokenizers whose added tokens
include every markup tag the template writes (`<|im_start|>`, `<start_of_turn>`, ...);
when none has them all, a Qwen2.5 copy with the tags added as special tokens (tags from
tool-call and reasoning renders too, where they look like control tokens: `<|call|>`).

A second table covers tool calls (arguments as a dict and as a JSON string, parallel calls,
tool results) and reasoning, with `enable_thinking` on and off where the template reads it:
per probe, ftdata's verdict, and whether tests/oracle.py (the inference-consistency rule
computed from `apply_chat_template` alone) agrees with the labels.

    .venv/bin/python benchmarks/template_matrix.py              # prints both markdown tables
    .venv/bin/python benchmarks/template_matrix.py --previews   # before/after previews for docs/masking.md
    .venv/bin/python benchmarks/template_matrix.py --served     # the served-template corpus + summary
    .venv/bin/python benchmarks/template_matrix.py --base       # TRL templates on base tokenizers
    .venv/bin/python benchmarks/template_matrix.py --history    # rows per record under history=inference

`--served` runs the corpus of real served templates under tests/templates/served/ (where each
came from, its special tokens, bos/eos and generation_config stop set: sources.json there)
with SERVED_PROBES, thinking on and off where the template reads a thinking kwarg: per
template x probe, ftdata's verdict, the oracle's (with its served edge cases), the kind of
disagreement (false reject, mis-trained, true reject) and the classes of issue 21 it falls in.

`--base` sets every TRL template on every shared tokenizer where some of its markers are plain
text (not added tokens: a ChatML template on Llama 3, `<think>` anywhere), thinking on and off,
and runs every probe through ftdata and the oracle, whose check includes the tokens at each
prompt/response border (`oracle.border_problems`): the prompt tokenized alone, the reply from a
fresh token. `border` marks a record right in characters and wrong in tokens.

`--history` builds multi-turn records (HISTORY_PROBES: a plain chat, reasoning in every turn, agent
loops over one and two user queries, think-in-content) with history=inference on every TRL and
served template, thinking on and off, and holds each record's rows to `oracle.trajectory`: every
turn trained once, on what the template writes for it as the last turn, after that render's
context; the row count against an exhaustive search for the fewest.

tests/chat/test_chat_masking.py imports this module and checks every verified record against an
independent oracle.
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FTDATA_SHARED", ROOT.parent / "shared"))
TOKENIZERS = SHARED / "tokenizers"
VISION = re.compile(r"_vl(_|$)|llava|idefics|smolvlm")
# A markup tag: <|im_start|>, <start_of_turn>, <|turn>, <turn|>, <｜User｜>, [INST], [gMASK].
TAG = re.compile(r"<[^<>\s]{1,40}>|\[[A-Za-z_/]{2,20}\]")
THINK_TAGS = ("<think>", "</think>")
DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2} [A-Z][a-z]{2} \d{4}\b")
FALLBACK_BASE = "qwen2.5-instruct"

PROBES: dict[str, list[dict[str, str]]] = {
    "single": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."}],
    "multi": [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "Why did the chicken cross the road?"},
    ],
    "system": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a color."},
        {"role": "assistant", "content": "Blue."},
    ],
    "unicode": [
        {"role": "user", "content": " 你好，世界 \n"},
        {"role": "assistant", "content": " 😀 ok, ça va \n"},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "x"},
    ],
}
_PROBE_TEXT = [{"role": "user", "content": "USERPROBE"}, {"role": "assistant", "content": "ASSTPROBE"}]
_WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}  # fmt: skip


def _call(k: int, city: str, *, string: bool) -> dict[str, Any]:
    args = {"city": city}
    return {"id": f"call_{k}", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps(args) if string else args}}  # fmt: skip


def _tool_record(*, string: bool) -> dict[str, Any]:
    """Two parallel calls (content null), their results, an answer, then a plain exchange."""
    return {"tools": [_WEATHER], "messages": [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [_call(0, "Paris", string=string), _call(1, "Oslo", string=string)]},
        {"role": "tool", "tool_call_id": "call_0", "name": "get_weather", "content": "Paris 18C"},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "Oslo 9C"},
        {"role": "assistant", "content": "Paris is warmer."},
        {"role": "user", "content": "Thanks!"},
        {"role": "assistant", "content": "You are welcome."},
    ]}  # fmt: skip


# Records in OpenAI format, each checked with thinking on and off where the template reads it.
CHAT_PROBES: dict[str, dict[str, Any]] = {
    "tools-dict": _tool_record(string=False),
    "tools-str": _tool_record(string=True),
    "call+text": {"tools": [_WEATHER], "messages": [
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [_call(0, "Rome", string=False)]},
        {"role": "tool", "tool_call_id": "call_0", "name": "get_weather", "content": "Rome 25C"},
        {"role": "assistant", "content": "It is 25C in Rome."}]},
    "reasoning": {"messages": [
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": "5.", "reasoning_content": "Two plus three is five."},
        {"role": "user", "content": "And 4+4?"},
        {"role": "assistant", "content": "8.", "reasoning_content": "Four plus four is eight."}]},
}  # fmt: skip


@dataclass
class Case:
    """One TRL template and the tokenizer it is checked on: `base` plus `extra` special tokens."""

    name: str
    source: str
    base: str = ""
    extra: tuple[str, ...] = ()
    skip: str = ""

    @property
    def tokenizer_desc(self) -> str:
        return f"{self.base} + {' '.join(self.extra)}" if self.extra else self.base


@dataclass
class Record:
    name: str
    messages: list[dict[str, str]]
    rendered: Any = None  # Rendered | None
    result: Any = None  # Tokenized | UnusableRecord | None
    reason: str = ""  # rejection reason ("" when verified)

    @property
    def status(self) -> str:
        return "rejected" if self.reason else self.rendered.method


@dataclass
class Outcome:
    case: Case
    markers: Any = None
    error: str = ""
    records: list[Record] = field(default_factory=list)


def template_dir() -> Path:
    import trl

    return Path(trl.__file__).parent / "chat_templates"


def _load(name: str | None) -> Any:
    """A real tokenizer by folder name under ../shared/tokenizers (None: the bundled SmolLM2)."""
    from ftdata.io.resources import load_tokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_tokenizer(None if name is None else TOKENIZERS / name)


_PRIVATE: dict[str, Any] = {}


def markup_tags(source: str, base: Any) -> list[str]:
    """Tags the template itself writes (not its variables' values): all of those around a plain
    conversation, and those around tool calls and reasoning that look like control tokens."""
    text = base.apply_chat_template(_PROBE_TEXT, tokenize=False, chat_template=source)
    tags = set(TAG.findall(text))
    for record in CHAT_PROBES.values():
        try:
            extra = base.apply_chat_template(record["messages"], tools=record.get("tools"), tokenize=False, chat_template=source)
        except Exception:  # noqa: BLE001 - a template that cannot write tools or reasoning
            continue
        tags |= {t for t in TAG.findall(extra) if "|" in t or "\uff5c" in t}
    return sorted(t for t in tags - set(THINK_TAGS) if t in source)


_CASES: list[Case] = []  # cases() with the default loader, found once per process (15 s of tokenizer loads)


def cases(load: Callable[[str], Any] = _load) -> list[Case]:
    """Every original TRL template, with the tokenizer it is checked on.

    `load(folder_name)` returns a (possibly cached) real tokenizer; it is only read here. With the default
    loader the list is found once per process (a caller must not change its cases).
    """
    if load is _load:
        if not _CASES:
            _CASES.extend(_cases(load))
        return list(_CASES)
    return _cases(load)


def _cases(load: Callable[[str], Any]) -> list[Case]:
    names = sorted(p.name for p in TOKENIZERS.iterdir() if (p / "tokenizer.json").is_file())
    bases = [FALLBACK_BASE, *(n for n in names if n != FALLBACK_BASE)]
    added = {n: {a.content for a in load(n).backend_tokenizer.get_added_tokens_decoder().values()} for n in names}
    out = []
    for path in sorted(template_dir().glob("*.jinja")):
        if path.stem.endswith("_training"):
            continue
        case = Case(path.stem, path.read_text(encoding="utf-8"))
        out.append(case)
        if VISION.search(path.stem):
            case.skip = "vision template"
            continue
        tags, errors = None, []
        for name in bases:  # some templates need the real bos_token to render at all
            try:
                tags = markup_tags(case.source, load(name))
                break
            except Exception as exc:  # noqa: BLE001 - templates raise anything
                errors.append(f"{type(exc).__name__}: {exc}")
        if tags is None:
            case.skip = f"does not render plain text: {errors[0][:80]}"
            continue
        for name in names:
            if tags and all(t in added[name] for t in tags):
                case.base = name
                break
        else:
            case.base, case.extra = FALLBACK_BASE, tuple(tags)
    return out


@contextmanager
def template_on(case: Case, load: Callable[[str], Any] = _load) -> Iterator[Any]:
    """The case's tokenizer with its template set; the tokenizer's own template comes back after.

    Extra tags go to a private copy of the base (loaded once), never to a shared tokenizer.
    """
    if case.extra:
        if case.base not in _PRIVATE:
            _PRIVATE[case.base] = _load(case.base)
        tok = _PRIVATE[case.base]
        tok.add_tokens([t for t in case.extra if tok.backend_tokenizer.token_to_id(t) is None], special_tokens=True)
        tok.add_tokens([t for t in THINK_TAGS if tok.backend_tokenizer.token_to_id(t) is None])
    else:
        tok = load(case.base)
    old = tok.chat_template
    tok.chat_template = case.source
    try:
        yield tok
    finally:
        tok.chat_template = old


def run(case: Case, tokenizer: Any) -> Outcome:
    """Render and mask every probe conversation with this template (set on `tokenizer`)."""
    from ftdata.errors import FtdataError, Location, UnusableRecord
    from ftdata.options import DataOptions
    from ftdata.run.stage import Stage

    outcome = Outcome(case)
    if case.skip:
        return outcome
    try:
        stage = Stage(tokenizer, DataOptions())
    except FtdataError as exc:
        outcome.error = str(exc)
        return outcome
    outcome.markers = stage.renderer.markers
    for name, messages in PROBES.items():
        record = Record(name, messages)
        try:
            (example,) = stage.examples(Location(name), {"messages": messages})
            record.rendered = stage.renderer(example)
        except UnusableRecord as exc:
            record.reason = exc.reason
        except FtdataError as exc:
            record.reason = str(exc)
        if record.rendered is not None:
            record.result = stage.masker([record.rendered])[0]
            if isinstance(record.result, UnusableRecord):
                record.reason = record.result.reason
        outcome.records.append(record)
    return outcome


def row(outcome: Outcome) -> dict[str, str]:
    """One table row: the template's verdict and why."""
    case = outcome.case
    if case.skip:
        return {"template": case.name, "tokenizer": "-", "result": f"skipped: {case.skip}", "eot": "", "notes": ""}
    if outcome.error:
        return {"template": case.name, "tokenizer": case.tokenizer_desc, "result": "rejected (template)",
                "eot": "", "notes": outcome.error[:120]}  # fmt: skip
    counts: dict[str, list[str]] = {}
    for r in outcome.records:
        counts.setdefault(r.status, []).append(r.name)
    if set(counts) == {"prefix"}:
        result = "verified-prefix"
    elif "rejected" not in counts:
        result = "verified-fallback (" + ", ".join(counts.get("fallback", [])) + ")"
    elif len(counts) == 1:
        result = "rejected"
    else:
        result = "verified except " + ", ".join(counts["rejected"])
    reasons = [f"{r.name}: {r.reason}" for r in outcome.records if r.reason]
    m = outcome.markers
    eot = repr(m.eot) if m.final_eot == m.eot else f"{m.eot!r} / last {m.final_eot!r}"
    quiet = ("default system", "its own BOS")  # common and harmless: left out of the table
    notes = "; ".join(reasons) or "; ".join(w for w in m.warnings if not any(q in w for q in quiet))
    notes = DATE.sub("<date>", notes)  # today's date must not change the table
    return {"template": case.name, "tokenizer": case.tokenizer_desc, "result": result, "eot": eot, "notes": notes}


def thinking_variants(case: Case) -> list[dict[str, Any]]:
    """The chat_template_kwargs a template is checked with: thinking on and off where it reads it."""
    if "enable_thinking" in case.source:
        return [{"enable_thinking": True}, {"enable_thinking": False}]
    return [{}]


@dataclass
class ChatOutcome:
    """One template with one set of kwargs: ftdata's verdict per probe and the oracle's view."""

    case: Case
    kwargs: dict[str, Any]
    markers: Any = None
    error: str = ""
    plain: str = ""  # the verdict over PROBES, as `row` words it
    status: dict[str, str] = field(default_factory=dict)  # probe -> prefix | fallback | rejected
    reasons: dict[str, str] = field(default_factory=dict)  # probe -> ftdata's rejection reason
    oracle: dict[str, str] = field(default_factory=dict)  # probe -> "" (agrees) or the disagreement


def _oracle() -> Any:
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import oracle

    return oracle


def ftdata_verdict(stage: Any, name: str, record: dict[str, Any]) -> tuple[str, str, Any]:
    """(prefix | fallback | rejected, ftdata's reason or "", the Tokenized row or None) for one record."""
    from ftdata.errors import FtdataError, Location, UnusableRecord

    try:
        (example,) = stage.examples(Location(name), record)
        result = stage.masker([rendered := stage.renderer(example)])[0]
    except FtdataError as exc:
        return "rejected", getattr(exc, "reason", "") or str(exc), None
    if isinstance(result, UnusableRecord):
        return "rejected", result.reason, None
    return rendered.method, "", result


def run_chat(case: Case, tokenizer: Any, kwargs: dict[str, Any]) -> ChatOutcome:
    """Render, mask and check every probe (plain and CHAT_PROBES) with these kwargs."""
    from ftdata.errors import FtdataError
    from ftdata.options import DataOptions
    from ftdata.run.stage import Stage

    oracle = _oracle()
    out = ChatOutcome(case, kwargs)
    try:
        stage = Stage(tokenizer, DataOptions(max_length=100_000, chat_template_kwargs=kwargs or None))
    except FtdataError as exc:
        out.error = str(exc)
        return out
    out.markers = stage.renderer.markers
    stops = oracle.stop_tokens(tokenizer, kwargs)
    records = {name: {"messages": msgs} for name, msgs in PROBES.items()} | CHAT_PROBES
    for name, record in records.items():
        out.status[name], reason, result = ftdata_verdict(stage, name, record)
        exp = oracle.expect(tokenizer, record["messages"], tools=record.get("tools"), kwargs=kwargs, stops=stops)
        if reason:
            out.reasons[name] = reason
            out.oracle[name] = "rejected a record the rule masks" if exp.decidable else ""
        elif exp.must_reject:
            out.oracle[name] = f"trained a record it must reject: {exp.must_reject}"
        else:
            out.oracle[name] = "; ".join(oracle.compare(exp, tokenizer, result.input_ids, result.labels))
    plain = [Record(n, m, reason=out.reasons.get(n, "")) for n, m in PROBES.items()]
    counts: dict[str, list[str]] = {}
    for r in plain:
        counts.setdefault(out.status[r.name], []).append(r.name)
    if set(counts) == {"rejected"}:
        out.plain = "rejected"
    elif "rejected" in counts:
        out.plain = "except " + ", ".join(counts["rejected"])
    else:
        out.plain = "prefix" if set(counts) == {"prefix"} else "fallback (" + ", ".join(counts.get("fallback", [])) + ")"
    return out


def chat_row(outcome: ChatOutcome) -> dict[str, str]:
    """One row of the tools / reasoning table."""
    case, m = outcome.case, outcome.markers
    thinking = {True: "on", False: "off"}.get(outcome.kwargs.get("enable_thinking"), "-")
    if case.skip:
        return {"template": case.name, "thinking": "-", "plain": f"skipped: {case.skip}"}
    if outcome.error:
        return {"template": case.name, "thinking": thinking, "plain": "rejected (template)", "why": outcome.error[:120]}
    cells = {"template": case.name, "thinking": thinking, "plain": outcome.plain}
    cells |= {name: outcome.status[name] for name in CHAT_PROBES}
    cells["writes"] = f"{'tools' if m.renders_tools else '-'} / {'reasoning' if m.renders_reasoning else '-'}"
    cells["arguments"] = m.tool_arguments or "-"
    cells["stop"] = " ".join(m.stops) + (f" (+{m.eos_appended} last)" if m.eos_appended else "")
    wrong = [n for n, v in outcome.oracle.items() if v]
    cells["oracle"] = "agrees" if not wrong else "DISAGREES: " + ", ".join(wrong)
    reasons = {}
    for name, reason in outcome.reasons.items():
        reasons.setdefault(DATE.sub("<date>", reason)[:90], []).append(name)
    cells["why"] = "; ".join(f"{', '.join(names)}: {r}" for r, names in reasons.items())
    return cells


CHAT_COLUMNS = ["template", "thinking", "plain", *CHAT_PROBES, "writes", "arguments", "stop", "oracle", "why"]


def chat_table(rows: list[dict[str, str]]) -> str:
    """Markdown: per template and thinking setting, ftdata's verdict per probe and the oracle's."""
    heads = {"writes": "writes tools / reasoning", "arguments": "arguments form", "stop": "stop token(s)",
             "oracle": "oracle (rule)", "why": "why rejected"}  # fmt: skip
    lines = ["| " + " | ".join(heads.get(c, c) for c in CHAT_COLUMNS) + " |", "|" + "---|" * len(CHAT_COLUMNS)]
    for r in rows:
        cells = [_cell(r.get(c, "")) for c in CHAT_COLUMNS]
        cells[0] = f"`{cells[0]}`"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "\\n")


def table(rows: list[dict[str, str]]) -> str:
    cell = _cell
    lines = ["| template | tokenizer | result | end of turn | why / notes |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['template']}` | {cell(r['tokenizer'])} | {r['result']} | {cell(r['eot'])} | {cell(r['notes'])} |")
    return "\n".join(lines)


def mark_trained(text: str, offsets: list[tuple[int, int]], labels: list[int]) -> str:
    """The rendered text with every run of trained tokens wrapped in ⟦ ⟧."""
    runs: list[list[int]] = []
    previous = False
    for (a, b), label in zip(offsets, labels):
        trained = label != -100
        if trained and previous:
            runs[-1][1] = max(runs[-1][1], b)
        elif trained:
            runs.append([a, b])
        previous = trained
    out, at = [], 0
    for a, b in runs:
        out += [text[at:a], "⟦", text[a:b], "⟧"]
        at = b
    return "".join([*out, text[at:]])


# (title, tokenizer folder or None, TRL template or None, options, record)
PREVIEWS = [
    ("ChatML (bundled SmolLM2), all assistant turns", None, None, {},
     {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                   {"role": "assistant", "content": "yo"}, {"role": "user", "content": "2+2?"},
                   {"role": "assistant", "content": "4"}]}),
    ("Llama-3 (llama-3-8b-instruct), mask=last_assistant", "llama-3-8b-instruct", None, {"mask": "last_assistant"},
     {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"},
                        {"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]}),
    ("Phi-3: `<|assistant|>` swallows the leading spaces, `<|end|>` the newline; the template closes with EOS",
     "phi-3-mini-4k-instruct", None, {}, {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  yo"}]}),
    ("Mistral-Nemo, system_mode=fold (unfolded, its template drops the system prompt of a training record)",
     "mistral-nemo-instruct-2407", None, {"system_mode": "fold"},
     {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                   {"role": "assistant", "content": "yo"}, {"role": "user", "content": "2+2?"},
                   {"role": "assistant", "content": "4"}]}),
    ("TRL's qwen3 template on Qwen2.5: empty think block not trained; reasoning dropped from turn 1, "
     "re-rendered for the last turn", "qwen2.5-instruct", "qwen3", {},
     {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<think>greet</think>yo"},
                   {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>add</think>4"}]}),
]  # fmt: skip


def previews(load: Callable[[str | None], Any] = _load) -> str:
    """Markdown: for each preview, the rendered text with trained spans in ⟦ ⟧, method and notes."""
    from ftdata.errors import Location, UnusableRecord
    from ftdata.options import DataOptions
    from ftdata.run.stage import Stage
    blocks = []
    for title, name, template, options, record in PREVIEWS:
        tok = load(name)
        old = tok.chat_template
        if template:
            tok.chat_template = (template_dir() / f"{template}.jinja").read_text(encoding="utf-8")
        try:
            stage = Stage(tok, DataOptions(**options))
            (example,) = stage.examples(Location("preview"), record)
            rendered = stage.renderer(example)
            result = stage.masker([rendered])[0]
        finally:
            tok.chat_template = old
        assert not isinstance(result, UnusableRecord), result
        offsets = [(0, 0)] * result.prefix + list(tok.backend_tokenizer.encode(rendered.text, add_special_tokens=False).offsets)
        shown = mark_trained(rendered.text, offsets, result.labels)
        notes = "".join(f"\n- note: {n}" for n in result.notes)
        blocks.append(f"**{title}** (path: `{rendered.method}`)\n\n```text\n{shown}\n```\n{notes}")
    return "\n".join(blocks)


# ---------------------------------------------------------------- the served-template corpus

SERVED = ROOT / "tests" / "templates" / "served"
PINNED = {"date_string": "26 Jul 2024"}  # Llama 3.x print a date: two renders of one record must agree
_CITY = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                   "required": ["city"]}}}  # fmt: skip


def _served_call(k: int, city: str, *, string: bool) -> dict[str, Any]:
    """A call with a 9-character alphanumeric id (Mistral's templates raise on other ids)."""
    args = {"city": city, "unit": "celsius"}
    return {"id": f"call{k}abcd", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps(args) if string else args}}  # fmt: skip


def _call_turns(calls: list[dict[str, Any]], content: str | None, answer: str, **extra: Any) -> list[dict[str, Any]]:
    results = [{"role": "tool", "tool_call_id": c["id"], "name": "get_weather",
                "content": f"{c['id'][4]}: {18 + int(c['id'][4])} degrees"} for c in calls]  # fmt: skip
    return [{"role": "assistant", "content": content, "tool_calls": calls, **extra}, *results,
            {"role": "assistant", "content": answer}]  # fmt: skip


# The probe conversations of issue 21 (OpenAI format); "special-text" gets the case's own tag.
SERVED_PROBES: dict[str, dict[str, Any]] = {
    "plain": {"messages": [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue is one."},
        {"role": "user", "content": "Another one?"}, {"role": "assistant", "content": "Green works too."}]},
    "call-dict": {"tools": [_CITY], "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        *_call_turns([_served_call(0, "Paris", string=False)], None, "It is mild in Paris.")]},
    "call-str": {"tools": [_CITY], "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        *_call_turns([_served_call(0, "Paris", string=True)], None, "It is mild in Paris.")]},
    "parallel": {"tools": [_CITY], "messages": [
        {"role": "user", "content": "Weather in Rome and Oslo?"},
        *_call_turns([_served_call(1, "Rome", string=False), _served_call(2, "Oslo", string=False)], None,
                     "Rome is warmer than Oslo.")]},
    "call+text": {"tools": [_CITY], "messages": [
        {"role": "user", "content": "Weather in Lima?"},
        *_call_turns([_served_call(3, "Lima", string=False)], "Let me look that up.", "Lima is cloudy."),
        {"role": "user", "content": "Thanks a lot."}, {"role": "assistant", "content": "Glad to help."}]},
    "reasoning": {"messages": [
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": "It is 5.", "reasoning_content": "Two plus three makes five."},
        {"role": "user", "content": "And 4+4?"},
        {"role": "assistant", "content": "It is 8.", "reasoning_content": "Four plus four makes eight."}]},
    "reasoning+call": {"tools": [_CITY], "messages": [
        {"role": "user", "content": "Weather in Kyiv?"},
        *_call_turns([_served_call(4, "Kyiv", string=False)], None, "Kyiv is cool today.",
                     reasoning_content="The user wants Kyiv weather, so I call the tool.")]},
    "special-text": {"messages": [
        {"role": "user", "content": "What does {tag} mean in a prompt?"},
        {"role": "assistant", "content": "It is a markup token."}]},
}  # fmt: skip
TOOL_PROBES = frozenset(n for n, r in SERVED_PROBES.items() if any(m.get("tool_calls") for m in r["messages"]))
ISSUE_CLASSES = {
    1: "generation prompt opens a think block / call turn rejected with a false reason",
    2: "template needs tools to render",
    3: "generation prompt adds nothing",
    4: "generation prompt closes the think block",
    5: "stop tokens (generation_config)",
    6: "special tokens in data",
}


@dataclass(frozen=True)
class ServedCase:
    """One served template as tests/templates/served/sources.json describes it."""

    name: str
    source: str
    special_tokens: tuple[str, ...]
    bos: str | None
    eos: str
    stop_tokens: tuple[str, ...]  # generation_config.json's eos_token_id set
    kwargs: tuple[dict[str, Any], ...]  # chat_template_kwargs variants (thinking on / off)


def served_cases() -> list[ServedCase]:
    """Every template of the corpus, in sources.json's order."""
    entries = json.loads((SERVED / "sources.json").read_text(encoding="utf-8"))["templates"]
    return [
        ServedCase(e["name"], (SERVED / e["file"]).read_text(encoding="utf-8"), tuple(e["special_tokens"]), e["bos"],
                   e["eos"], tuple(e["stop_tokens"]), tuple(e["kwargs"]))
        for e in entries
    ]  # fmt: skip


@contextmanager
def served_on(case: ServedCase) -> Iterator[Any]:
    """A private Qwen2.5 copy with the case's special tokens, bos/eos and template set.

    The copy is loaded once; tokens added for earlier cases stay (none of them is in a probe's
    text), bos/eos and the template come back after."""
    if "served" not in _PRIVATE:
        _PRIVATE["served"] = _load(FALLBACK_BASE)
    tok = _PRIVATE["served"]
    wanted = [*case.special_tokens, *case.stop_tokens, *(t for t in (case.bos, case.eos) if t)]
    # A string that is a vocabulary entry can still be split by the pre-tokenizer (Qwen2.5 has `</s>`
    # in its vocabulary and encodes it as three tokens): add what does not encode as one token.
    tok.add_tokens([t for t in dict.fromkeys(wanted) if len(tok.backend_tokenizer.encode(t, add_special_tokens=False).ids) != 1],
                   special_tokens=True)  # fmt: skip
    tok.add_tokens([t for t in THINK_TAGS if tok.backend_tokenizer.token_to_id(t) is None])
    old = tok.chat_template, tok.bos_token, tok.eos_token
    tok.chat_template, tok.bos_token, tok.eos_token = case.source, case.bos, case.eos
    try:
        yield tok
    finally:
        tok.chat_template, tok.bos_token, tok.eos_token = old


def served_records(case: ServedCase) -> dict[str, dict[str, Any]]:
    """SERVED_PROBES with the case's EOS quoted in "special-text"."""
    tag = case.eos
    out = json.loads(json.dumps(SERVED_PROBES))
    out["special-text"]["messages"][0]["content"] = out["special-text"]["messages"][0]["content"].format(tag=tag)
    return out


@dataclass
class Verdict:
    """ftdata's and the oracle's word on one record, and what their disagreement is."""

    probe: str
    status: str  # prefix | fallback | rejected
    reason: str  # ftdata's reason for rejecting
    oracle: str  # the oracle's must-reject reason, or its problems with ftdata's labels ("" = agrees)
    kind: str  # agrees | true reject | false reject | mis-trained | undecided reject | border (base tokenizers)
    classes: tuple[int, ...]  # issue 21 classes the record falls in (empty when ftdata follows the rule)
    cases: tuple[str, ...]  # the oracle's edge cases on this record
    split: bool = False  # ftdata re-tokenized the record split at its span edges (note `repaired`)


def _classes(kind: str, probe: str, exp: Any) -> tuple[int, ...]:
    """Issue 21's class of a record ftdata got wrong (or, class 6, rejected as it must), from the
    oracle's view: the first that applies of needs-tools (2), think-closed (4), header (3),
    think-opened or a tool-call record (1), a call or model stop (5)."""
    if kind == "true reject" and "special token" in exp.must_reject:
        return (6,)
    if kind not in ("false reject", "mis-trained"):
        return ()
    cases = {c for t in exp.turns for c in t.case}
    if exp.stops.needs_tools:
        return (2,)
    for n, case in ((4, "think-closed"), (3, "header"), (1, "think-opened")):
        if case in cases:
            return (n,)
    if cases & {"call-stop", "model-stop"}:
        return (5,)
    return (1,) if probe in TOOL_PROBES else ()


def classify(probe: str, status: str, reason: str, exp: Any, problems: list[str]) -> Verdict:
    """Compare ftdata's verdict on a record with the oracle's expectation."""
    cases = tuple(dict.fromkeys(c for t in exp.turns for c in t.case))
    if status == "rejected":
        kind = "true reject" if exp.must_reject else "false reject" if exp.decidable else "undecided reject"
        oracle = exp.must_reject or ("" if exp.decidable else "; ".join(t.why for t in exp.turns if t.why))
    elif exp.must_reject:
        kind, oracle = "mis-trained", f"trained a record it must reject: {exp.must_reject}"
    else:
        kind, oracle = ("mis-trained" if problems else "agrees"), "; ".join(problems)
    return Verdict(probe, status, reason, oracle, kind, _classes(kind, probe, exp), cases)


def build_options(kwargs: dict[str, Any], stop_tokens: tuple[str, ...]) -> Any:
    """BuildOptions for a matrix run: no length limit, the kwargs, the model's stop set once
    ftdata takes one (`stop_tokens`)."""
    from dataclasses import fields

    from ftdata.options import DataOptions

    extra = {"stop_tokens": list(stop_tokens)} if "stop_tokens" in {f.name for f in fields(DataOptions)} else {}
    return DataOptions(max_length=100_000, chat_template_kwargs=kwargs or None, **extra)


def run_served(case: ServedCase, tokenizer: Any, kwargs: dict[str, Any]) -> dict[str, Verdict]:
    """Every served probe through ftdata and the oracle, with these kwargs."""
    from ftdata.errors import FtdataError
    from ftdata.run.stage import Stage

    oracle = _oracle()
    records = served_records(case)
    stops = oracle.stop_tokens(tokenizer, kwargs, case.stop_tokens)
    try:
        stage = Stage(tokenizer, build_options(kwargs, case.stop_tokens))
    except FtdataError as exc:
        stage, refused = None, str(exc)
    out = {}
    for name, record in records.items():
        status, reason, result = ftdata_verdict(stage, name, record) if stage else ("rejected", refused, None)
        exp = oracle.expect(tokenizer, record["messages"], tools=record.get("tools"), kwargs=kwargs, stops=stops,
                            edge_cases=True)  # fmt: skip
        problems = [] if result is None or exp.must_reject else oracle.compare(exp, tokenizer, result.input_ids, result.labels)
        out[name] = classify(name, status, reason, exp, problems)
    return out


def variant_id(case: ServedCase, kwargs: dict[str, Any]) -> str:
    """`qwen3`, `qwen3-think`, `qwen3-nothink`: the case and its thinking setting."""
    flag = kwargs.get("enable_thinking", kwargs.get("thinking"))
    return case.name + {True: "-think", False: "-nothink"}.get(flag, "")


def served_matrix() -> dict[str, dict[str, Verdict]]:
    """variant id -> probe -> Verdict, over the whole corpus."""
    out = {}
    for case in served_cases():
        with served_on(case) as tok:
            for kwargs in case.kwargs:
                out[variant_id(case, kwargs)] = run_served(case, tok, {**PINNED, **kwargs} if "date_string" in case.source else kwargs)
    return out


SHORT = {"prefix": "prefix", "fallback": "fallback", "rejected": "REJ"}


def served_table(matrix: dict[str, dict[str, Verdict]]) -> str:
    """Markdown: per template variant and probe, ftdata's verdict and the disagreement kind."""
    probes = list(SERVED_PROBES)
    lines = ["| template | " + " | ".join(probes) + " |", "|---|" + "---|" * len(probes)]
    for variant, verdicts in matrix.items():
        cells = []
        for p in probes:
            v = verdicts[p]
            mark = "" if v.kind in ("agrees", "true reject") else f" **{v.kind}**" + (f" (class {','.join(map(str, v.classes))})" if v.classes else "")
            cells.append(SHORT[v.status] + mark)
        lines.append(f"| `{variant}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def served_summary(matrix: dict[str, dict[str, Verdict]]) -> str:
    """Per issue class: templates and records hit; the share of tool-call records trained."""
    lines = ["| class | what | templates | records |", "|---|---|---|---|"]
    for n, what in ISSUE_CLASSES.items():
        hit = [(variant, p) for variant, vs in matrix.items() for p, v in vs.items() if n in v.classes]
        templates = {variant.removesuffix("-think").removesuffix("-nothink") for variant, _ in hit}
        lines.append(f"| {n} | {what} | {len(templates)} | {len(hit)} |")
    kinds: dict[str, int] = {}
    for vs in matrix.values():
        for v in vs.values():
            kinds[v.kind] = kinds.get(v.kind, 0) + 1
    writable = [v for vs in matrix.values() for p, v in vs.items() if p in TOOL_PROBES and v.kind not in ("true reject",)]
    trained = [v for v in writable if v.status != "rejected"]
    right = [v for v in trained if v.kind == "agrees"]
    lines += ["", "records by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())),
              f"tool-call records the template can write: {len(writable)}; trained {len(trained)} "
              f"({len(trained) / max(len(writable), 1):.0%}), trained as the oracle says {len(right)} "
              f"({len(right) / max(len(writable), 1):.0%})"]  # fmt: skip
    return "\n".join(lines)


def served_disagreements(matrix: dict[str, dict[str, Verdict]]) -> str:
    """One line per record where ftdata and the oracle disagree."""
    return "\n".join(
        f"- `{variant}` {p}: {v.kind} (class {','.join(map(str, v.classes)) or '-'}): "
        + DATE.sub("<date>", v.reason or v.oracle)[:300]
        for variant, vs in matrix.items() for p, v in vs.items() if v.kind not in ("agrees", "true reject")
    )  # fmt: skip


# ---------------------------------------------------------------- TRL templates on base tokenizers


def text_markers(source: str, tokenizer: Any) -> tuple[str, ...] | None:
    """The template's markup tags (`<think>` and `</think>` included) that are plain text to
    `tokenizer` (no added token of it), or None where the template does not render there (Llama 3's
    templates need their own bos_token)."""
    try:
        tags = [*markup_tags(source, tokenizer), *(t for t in THINK_TAGS if t in source)]
    except Exception:  # noqa: BLE001 - templates raise anything
        return None
    added = {a.content for a in tokenizer.backend_tokenizer.get_added_tokens_decoder().values()}
    return tuple(t for t in tags if t not in added)


def base_pairs(load: Callable[[str], Any] = _load) -> list[tuple[Case, str]]:
    """Every original TRL template on every shared tokenizer where some of its markers are plain text."""
    names = sorted(p.name for p in TOKENIZERS.iterdir() if (p / "tokenizer.json").is_file())
    out = []
    for case in cases(load):
        for name in [] if case.skip else names:
            with base_on(case, name, load) as tok:
                if text_markers(case.source, tok):
                    out.append((case, name))
    return out


@contextmanager
def base_on(case: Case, name: str, load: Callable[[str], Any] = _load) -> Iterator[Any]:
    """The shared tokenizer `name` as it is (no token added) with the case's template set."""
    tok = load(name)
    old, tok.chat_template = tok.chat_template, case.source
    try:
        yield tok
    finally:
        tok.chat_template = old


def base_kwargs(case: Case) -> list[dict[str, Any]]:
    """Thinking on and off where the template reads it; the date pinned where it prints one."""
    pinned = PINNED if "date_string" in case.source else {}
    return [{**pinned, **kwargs} for kwargs in thinking_variants(case)]


def run_base(tokenizer: Any, kwargs: dict[str, Any]) -> dict[str, Verdict]:
    """Every probe (plain and CHAT_PROBES) through ftdata and the oracle, edge cases on; a record whose
    characters agree and whose tokens at a prompt/response border do not is `border`."""
    from ftdata.errors import FtdataError
    from ftdata.outcomes import NoteCode, has_note
    from ftdata.run.stage import Stage

    oracle = _oracle()
    stops = oracle.stop_tokens(tokenizer, kwargs)
    try:
        stage = Stage(tokenizer, build_options(kwargs, ()))
    except FtdataError as exc:
        stage, refused = None, str(exc)
    out = {}
    for name, record in ({n: {"messages": m} for n, m in PROBES.items()} | CHAT_PROBES).items():
        status, reason, result = ftdata_verdict(stage, name, record) if stage else ("rejected", refused, None)
        exp = oracle.expect(tokenizer, record["messages"], tools=record.get("tools"), kwargs=kwargs, stops=stops,
                            edge_cases=True)  # fmt: skip
        problems = [] if result is None or exp.must_reject else oracle.compare(exp, tokenizer, result.input_ids, result.labels)
        verdict = classify(name, status, reason, exp, problems)
        if problems and problems == oracle.border_problems(exp, tokenizer, result.input_ids, result.labels):
            verdict = replace(verdict, kind="border")
        out[name] = replace(verdict, split=result is not None and has_note(result.notes, NoteCode.REPAIRED))
    return out


def base_matrix(load: Callable[[str], Any] = _load) -> dict[tuple[str, str], dict[str, Verdict]]:
    """(template variant, tokenizer) -> probe -> Verdict, over every base pair."""
    out = {}
    for case, name in base_pairs(load):
        with base_on(case, name, load) as tok:
            for kwargs in base_kwargs(case):
                flag = {True: "-think", False: "-nothink"}.get(kwargs.get("enable_thinking"), "")
                out[(case.name + flag, name)] = run_base(tok, kwargs)
    return out


BASE_MARKS = {"agrees": "", "true reject": "", "false reject": "false-rej", "undecided reject": "rej?",
              "mis-trained": "**mis-trained**", "border": "**border**"}  # fmt: skip


def base_table(matrix: dict[tuple[str, str], dict[str, Verdict]]) -> str:
    """Markdown: per template variant (rows) and tokenizer (columns), how its probes fared.

    A cell counts the records trained as the oracle says (characters and border tokens), `+n rej`
    the records rejected where the template cannot write them, and names the rest; `-` where every
    marker of the template is a token of that tokenizer (not a base tokenizer for it)."""
    names = sorted({name for _, name in matrix})
    lines = ["| template | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for variant in dict.fromkeys(v for v, _ in matrix):
        cells = []
        for name in names:
            verdicts = matrix.get((variant, name))
            if verdicts is None:
                cells.append("-")
                continue
            kinds = [v.kind for v in verdicts.values()]
            cell = f"{kinds.count('agrees')} ok"
            if n := kinds.count("true reject"):
                cell += f" +{n} rej"
            for kind, mark in BASE_MARKS.items():
                if mark and (n := kinds.count(kind)):
                    cell += f", {n} {mark}"
            cells.append(cell)
        lines.append(f"| `{variant}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def base_summary(matrix: dict[tuple[str, str], dict[str, Verdict]]) -> str:
    """Records by kind, and how many trained records were split at a border."""
    verdicts = [v for vs in matrix.values() for v in vs.values()]
    kinds: dict[str, int] = {}
    for v in verdicts:
        kinds[v.kind] = kinds.get(v.kind, 0) + 1
    trained = [v for v in verdicts if v.status != "rejected"]
    split = sum(v.split for v in trained)
    return (f"{len(matrix)} template variants x base tokenizers, {len(verdicts)} records: "
            + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
            + f"; trained {len(trained)}, of which re-tokenized split at a span edge (note `repaired`) {split}")  # fmt: skip


def base_disagreements(matrix: dict[tuple[str, str], dict[str, Verdict]]) -> str:
    """One line per template variant, probe and kind of disagreement, with the tokenizers it occurs on
    and the first tokenizer's reason, shortened."""
    groups: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
    for (variant, name), verdicts in matrix.items():
        for probe, v in verdicts.items():
            if v.kind not in ("agrees", "true reject"):
                groups.setdefault((variant, probe, v.kind), []).append((name, v.reason or v.oracle))
    lines = []
    for (variant, probe, kind), hits in groups.items():
        bases = sum(v == variant for v, _ in matrix)  # the tokenizers this variant is on
        on = f"all {bases} of its base tokenizers" if len(hits) == bases else ", ".join(n for n, _ in hits)
        lines.append(f"- `{variant}` {probe}: {kind} on {on}: " + _cell(DATE.sub("<date>", hits[0][1])[:150]))
    return "\n".join(lines)


# ---------------------------------------------------------------- rows of a record (history=inference)


def _agent_two_queries() -> dict[str, Any]:
    """An agent loop per user query, reasoning in every assistant turn (the second query's loop is the last)."""
    turns: list[dict[str, Any]] = []
    for k, (city, degrees) in enumerate((("Oslo", 23), ("Rome", 24)), start=5):
        call = _served_call(k, city, string=False)
        turns += [{"role": "user", "content": f"Weather in {city}?"},
                  {"role": "assistant", "content": "", "reasoning_content": f"I look up {city}.", "tool_calls": [call]},
                  {"role": "tool", "tool_call_id": call["id"], "content": f"{k}: {degrees} degrees"},
                  {"role": "assistant", "content": f"{city} is warm.", "reasoning_content": f"The tool says {degrees}."}]  # fmt: skip
    return {"tools": [_CITY], "messages": turns}


def _in_content(record: dict[str, Any]) -> dict[str, Any]:
    """The record with each reasoning written as a leading `<think>…</think>` of its content (R1 distills)."""
    return {**record, "messages": [
        {k: v for k, v in m.items() if k != "reasoning_content"} | {"content": f"<think>\n{m['reasoning_content']}\n</think>\n\n{m['content'] or ''}"}
        if m.get("reasoning_content") else m for m in record["messages"]]}  # fmt: skip


HISTORY_PROBES: dict[str, dict[str, Any]] = {
    "plain": SERVED_PROBES["plain"], "reasoning": SERVED_PROBES["reasoning"], "reasoning+call": SERVED_PROBES["reasoning+call"],
    "call+text": SERVED_PROBES["call+text"], "agent-2q": _agent_two_queries(), "think-in-content": _in_content(SERVED_PROBES["reasoning"]),
    "think+call": _in_content(SERVED_PROBES["reasoning+call"]),
}  # fmt: skip
# (template variant, probe) -> why ftdata's rows break the rule there: the history test marks them xfail (strict).
HISTORY_KNOWN: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class HistoryVerdict:
    """One record's rows under history=inference: how many, the fewest possible, and the oracle's problems."""

    rows: int  # 0: rejected
    fewest: int | None
    problems: tuple[str, ...]
    reason: str = ""  # the reject's code

    @property
    def agrees(self) -> bool:
        return not self.problems and (self.fewest is None or self.rows == self.fewest)

    def cell(self) -> str:
        if not self.rows:
            return f"REJ ({self.reason})" + ("" if self.agrees else " **✗**")
        more = f" of fewest {self.fewest}" if self.fewest is not None and self.fewest != self.rows else ""
        return f"{self.rows}{more}" + ("" if self.agrees else " **✗**")


def run_history(tokenizer: Any, options: Any, kwargs: dict[str, Any], model_stops: tuple[str, ...] = ()) -> dict[str, HistoryVerdict]:
    """Every history probe built with `options` under history=inference and held to `oracle.trajectory`; a record
    is rejected exactly where history=one_row rejects it.

    Raises:
        FtdataError: the template cannot be used at all (the stage refuses it).
    """
    from ftdata.errors import Location
    from ftdata.run.stage import Stage
    from ftdata.run.sft import Measured

    stage, one_row = Stage(tokenizer, replace(options, history="inference")), Stage(tokenizer, replace(options, history="one_row"))

    oracle = _oracle()
    stops = oracle.stop_tokens(tokenizer, kwargs, model_stops)
    out = {}
    for name, record in HISTORY_PROBES.items():
        items = [item for _, item, _ in stage.run([(Location(name, line=1), record)]).outcomes]
        kept = all(isinstance(item, Measured) for _, item, _ in one_row.run([(Location(name, line=1), record)]).outcomes)
        if not all(isinstance(item, Measured) for item in items):
            code = next(i.code.value for i in items if not isinstance(i, Measured))
            # history=inference may reject more than one_row only where the oracle cannot decide a turn's
            # inference target either (a last-turn form no rule locates): one_row trains it as history writes it.
            decided = kept and not oracle.undecided(tokenizer, record["messages"], tools=record.get("tools"), kwargs=kwargs,
                                                    stops=stops, edge_cases=True)  # fmt: skip
            out[name] = HistoryVerdict(0, None, ("kept by history=one_row, and the oracle decides every turn",) if decided else (), code)
            continue
        if not kept:
            out[name] = HistoryVerdict(len(items), None, ("rejected by history=one_row",))
            continue
        rows = [(list(i.tokenized.input_ids), list(i.tokenized.labels)) for i in items]
        problems, fewest = oracle.trajectory(tokenizer, record["messages"], rows, tools=record.get("tools"), kwargs=kwargs,
                                             stops=stops, edge_cases=True)  # fmt: skip
        out[name] = HistoryVerdict(len(rows), fewest, tuple(problems))
    return out


def history_matrix(load: Callable[[str], Any] = _load) -> dict[str, dict[str, HistoryVerdict]]:
    """variant -> probe -> HistoryVerdict, over TRL's templates (`trl:` ids) and the served corpus."""
    from ftdata.errors import FtdataError
    from ftdata.options import DataOptions

    out: dict[str, dict[str, HistoryVerdict]] = {}
    for case in cases(load):
        if case.skip:
            continue
        with template_on(case, load) as tok:
            for kwargs in thinking_variants(case):
                flag = {True: "-think", False: "-nothink"}.get(kwargs.get("enable_thinking"), "")
                try:
                    out[f"trl:{case.name}{flag}"] = run_history(tok, DataOptions(max_length=100_000, chat_template_kwargs=kwargs or None), kwargs)
                except FtdataError:
                    continue
    for served_case in served_cases():
        with served_on(served_case) as tok:
            for kwargs in served_case.kwargs:
                kwargs = {**PINNED, **kwargs} if "date_string" in served_case.source else kwargs
                try:
                    out[variant_id(served_case, kwargs)] = run_history(tok, build_options(kwargs, served_case.stop_tokens), kwargs,
                                                                       served_case.stop_tokens)  # fmt: skip
                except FtdataError:
                    continue
    return out


def history_table(matrix: dict[str, dict[str, HistoryVerdict]]) -> str:
    """Markdown: rows per record for each template and probe (✗: the oracle disagrees or more rows than the fewest)."""
    lines = ["| template | " + " | ".join(HISTORY_PROBES) + " |", "|---|" + "---|" * len(HISTORY_PROBES)]
    for variant, verdicts in matrix.items():
        lines.append(f"| `{variant}` | " + " | ".join(verdicts[p].cell() for p in HISTORY_PROBES) + " |")
    return "\n".join(lines)


def history_summary(matrix: dict[str, dict[str, HistoryVerdict]]) -> str:
    """One line per count: templates, records built, split, agreeing; then each disagreement with its reason."""
    verdicts = [(variant, probe, v) for variant, vs in matrix.items() for probe, v in vs.items()]
    built = [x for x in verdicts if x[2].rows]
    split = [x for x in built if x[2].rows > 1]
    bad = [x for x in verdicts if not x[2].agrees]
    plain_split = sorted(v for v, p, h in split if p == "plain")
    lines = [f"{len(matrix)} template variants, {len(built)} records built ({len(verdicts) - len(built)} rejected, each "
             f"as history=one_row rejects it), {len(split)} split into several rows, {len(built) - sum(x[2].rows > 0 for x in bad)} agree with the oracle.",
             f"Plain chats split on {len(plain_split)}: " + ", ".join(f"`{v}`" for v in plain_split) + "."]  # fmt: skip
    for variant, probe, _ in bad:
        lines.append(f"- `{variant}` {probe}: " + HISTORY_KNOWN.get((variant, probe), "not explained"))
    return "\n".join(lines)


def main() -> int:
    sys.path.insert(0, str(ROOT))
    loaded: dict[str | None, Any] = {}

    def load(name: str | None) -> Any:
        if name not in loaded:
            loaded[name] = _load(name)
        return loaded[name]

    if "--previews" in sys.argv[1:]:
        print(previews(load))
        return 0
    if "--history" in sys.argv[1:]:
        history = history_matrix(load)
        print("### Rows per record under history=inference (✗: the oracle disagrees, or more rows than the fewest)\n")
        print(history_table(history))
        print("\n" + history_summary(history))
        return 0
    if "--base" in sys.argv[1:]:
        base = base_matrix(load)
        print("### TRL templates on base tokenizers (records per template and tokenizer)\n")
        print(base_table(base))
        print("\n" + base_summary(base))
        print("\n### Where ftdata and the oracle disagree\n")
        print(base_disagreements(base))
        return 0
    if "--served" in sys.argv[1:]:
        matrix = served_matrix()
        print("### Served templates (ftdata's verdict per probe; bold: where it breaks the rule)\n")
        print(served_table(matrix))
        print("\n### Summary (issue 21 classes)\n")
        print(served_summary(matrix))
        print("\n### Where ftdata and the oracle disagree\n")
        print(served_disagreements(matrix))
        return 0
    rows, chat_rows, disagreements = [], [], []
    for case in cases(load):
        if case.skip:
            rows.append(row(Outcome(case)))
            chat_rows.append(chat_row(ChatOutcome(case, {})))
            continue
        with template_on(case, load) as tok:
            rows.append(row(run(case, tok)))
            for kwargs in thinking_variants(case):
                outcome = run_chat(case, tok, kwargs)
                chat_rows.append(chat_row(outcome))
                disagreements += [f"- `{case.name}` {kwargs or ''} {name}: {why}" for name, why in outcome.oracle.items() if why]
    print("### Plain conversations\n")
    print(table(rows))
    print("\n### Tool calls and reasoning (ftdata's verdict per probe; the oracle checks the labels)\n")
    print(chat_table(chat_rows))
    if disagreements:
        print("\n### Where the labels break the rule\n")
        print("\n".join(disagreements))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
