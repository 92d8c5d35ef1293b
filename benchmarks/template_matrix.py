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

tests/test_chat_masking.py imports this module and checks every verified record against an
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
from dataclasses import dataclass, field
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
    from ftdata.resources import load_tokenizer

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


def cases(load: Callable[[str], Any] = _load) -> list[Case]:
    """Every original TRL template, with the tokenizer it is checked on.

    `load(folder_name)` returns a (possibly cached) real tokenizer; it is only read here.
    """
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
    from ftdata.options import BuildOptions
    from ftdata.pipeline import Stage

    outcome = Outcome(case)
    if case.skip:
        return outcome
    try:
        stage = Stage(tokenizer, BuildOptions())
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


def run_chat(case: Case, tokenizer: Any, kwargs: dict[str, Any]) -> ChatOutcome:
    """Render, mask and check every probe (plain and CHAT_PROBES) with these kwargs."""
    from ftdata.errors import FtdataError, Location, UnusableRecord
    from ftdata.options import BuildOptions
    from ftdata.pipeline import Stage

    oracle = _oracle()
    out = ChatOutcome(case, kwargs)
    try:
        stage = Stage(tokenizer, BuildOptions(max_length=100_000, chat_template_kwargs=kwargs or None))
    except FtdataError as exc:
        out.error = str(exc)
        return out
    out.markers = stage.renderer.markers
    stops = oracle.stop_tokens(tokenizer, kwargs)
    records = {name: {"messages": msgs} for name, msgs in PROBES.items()} | CHAT_PROBES
    for name, record in records.items():
        try:
            (example,) = stage.examples(Location(name), record)
            result = stage.masker([rendered := stage.renderer(example)])[0]
            reason = result.reason if isinstance(result, UnusableRecord) else ""
        except FtdataError as exc:
            reason = getattr(exc, "reason", "") or str(exc)
        out.status[name] = "rejected" if reason else rendered.method
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
    from ftdata.options import BuildOptions
    from ftdata.pipeline import Stage
    blocks = []
    for title, name, template, options, record in PREVIEWS:
        tok = load(name)
        old = tok.chat_template
        if template:
            tok.chat_template = (template_dir() / f"{template}.jinja").read_text(encoding="utf-8")
        try:
            stage = Stage(tok, BuildOptions(**options))
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
