"""Serving parity: each trained turn of a build against what a vLLM render server feeds the model for it.

    build.json ──the template and tokenizer it recorded, checked against the folder's now──▶ one line, or on
    turns (`ftdata.serve.turns`) ──per turn: two requests (`ftdata.serve.client`)──▶ compare token for token:
        prompt   render(messages[:i], add_generation_prompt=True)      vs the row's ids before the turn's run
        target   render(messages[:i+1])[:n]                            vs the row's ids through the run (n tokens);
                 where that render does not start with the prompt (a template that writes the context otherwise
                 when a reply follows: Mistral-Nemo drops the system text from a history), the turn's own tokens
                 at its end, before what the row holds after its last turn, vs the run
    ──▶ "N of M turns identical", per differing turn the first differing token, both sides decoded;
        build.json's serving.parity

A prompt that differs means the model is trained to answer a context the server never builds (another BOS, another
system prompt, tool schemas written otherwise, another tokenization); a target that differs means it is trained
to write tokens the server would not see in its history, or to stop otherwise.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftdata.build.export import MANIFEST
from ftdata.build.serving import SERVING
from ftdata.errors import ConfigError, FtdataError
from ftdata.guard.atomic import atomic_path
from ftdata.guard.inputs import InputKind
from ftdata.io.resources import cache_root, load_tokenizer
from ftdata.options import BuildOptions
from ftdata.serve.client import CONCURRENCY, TIMEOUT, Answer, Answers, digest, render_all, request_body
from ftdata.serve.turns import ServedTurn, collect
from ftdata.tokens.identity import (
    TokenizerPrint,
    first_difference,
    template_mismatch,
    token_pair,
    tokenizer_mismatch,
)

__all__ = ["Difference", "Parity", "check_serving", "built_tokenizer"]

SHOWN = 20  # differing turns listed in build.json and on screen; the counts cover all


@dataclass(frozen=True)
class Difference:
    """One turn that is not what the server renders: which side (`prompt`, `target`, or `refused` with the server's
    error), where it first differs, and that token on each side, decoded."""

    key: str
    side: str
    at: int = 0
    ftdata: str = ""
    server: str = ""
    error: str = ""

    def line(self) -> str:
        if self.side == "refused":
            return f"{self.key}: the server refused the request: {self.error}"
        return f"{self.key}: {self.side} token {self.at}: ftdata {self.ftdata} vs server {self.server}"


@dataclass
class Parity:
    """A build against a server: turns checked and identical, the differences, and the rows not checked (why)."""

    url: str
    turns: int = 0
    identical: int = 0
    differences: list[Difference] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def summary(self) -> str:
        sides = Counter(d.side for d in self.differences)
        why = ", ".join(f"{n} {side}" for side, n in sorted(sides.items()))
        line = f"{self.identical} of {self.turns} turns identical to what {self.url} renders"
        return line + (f" ({why})" if why else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "turns": self.turns,
            "identical": self.identical,
            "summary": self.summary,
            "differences": [d.line() for d in self.differences[:SHOWN]],
            "not_checked": dict(self.skipped),
        }


def compare(turn: ServedTurn, prompt: Answer, full: Answer, tokenizer: Any) -> Difference | None:
    """The first difference of `turn` with the server's renders of its prompt and of prompt + target, or None."""
    for answer in (prompt, full):
        if answer.ids is None:
            return Difference(turn.key, "refused", error=answer.error or "")
    assert prompt.ids is not None and full.ids is not None
    if (k := first_difference(turn.context, prompt.ids)) is not None:
        return Difference(turn.key, "prompt", k, *token_pair(tokenizer, turn.context, prompt.ids, k))
    if full.ids[: len(turn.context)] == turn.context:
        mine, at = turn.context + turn.trained, 0
        theirs = full.ids[: len(mine)]
    else:  # the reply's render writes the context otherwise: the turn and what follows a last turn, at its end
        mine, at = turn.trained + turn.after, len(turn.context)
        theirs = full.ids[max(len(full.ids) - len(mine), 0) :]
    if (k := first_difference(mine, theirs)) is not None:
        return Difference(turn.key, "target", at + k, *token_pair(tokenizer, mine, theirs, k))
    return None


def built_tokenizer(record: dict[str, Any]) -> str | None:
    """The tokenizer folder a build recorded (None: the bundled SmolLM2)."""
    given = next((i for i in record.get("inputs", []) if i.get("kind") == InputKind.TOKENIZER.value), None)
    name = str(record.get("tokenizer", ""))
    if name.endswith("(bundled)"):
        return None
    return str(given.get("path") or given.get("name")) if given else name or None


def check_fingerprint(record: dict[str, Any], tokenizer: Any, *, what: str) -> None:
    """Raise (one line) when `tokenizer` no longer renders or encodes as the build recorded.

    Raises:
        ConfigError: its chat template or its encoding differs from build.json's `serving.tokenizer`.
    """
    saved = (record.get(SERVING) or {}).get("tokenizer")
    if not saved:
        return
    built = TokenizerPrint.from_dict(saved)
    for line in (template_mismatch(built, tokenizer, what=what), tokenizer_mismatch(built, tokenizer, what=what)):
        if line:
            raise ConfigError(line)


def _source(record: dict[str, Any], out: Path) -> str:
    data = [i for i in record.get("inputs", []) if i.get("kind") == InputKind.DATA.value]
    if len(data) != 1:
        raise ConfigError(f"{out}: check-serving reads a build of one data source; this one read {len(data)}")
    return str(data[0].get("path") or data[0]["name"])


def check_serving(
    out: str | Path,
    url: str,
    *,
    limit: int | None = None,
    concurrency: int = CONCURRENCY,
    timeout: float = TIMEOUT,
    progress: Callable[[int], None] | None = None,
    write: bool = True,
) -> Parity:
    """Check build folder `out` against the vLLM render server at `url` (see the module docstring); with `write`,
    the result goes into its build.json (`serving.parity`). Answers are kept in the ftdata cache, by request, until
    the check has them all: a check that stopped (a server down mid-way, Ctrl-C) asks only what it has not.

    Raises:
        ConfigError: `out` is no build folder, or its template/tokenizer changed since it was built (one line).
        ServerError: the server is down or does not answer in time (one line).
    """
    folder = Path(out).expanduser()
    path = folder / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{folder} holds no {MANIFEST}: give a folder `ftdata build` wrote")
    record = json.loads(path.read_text(encoding="utf-8"))
    options = BuildOptions.from_mapping(
        {k: v for k, v in record["options"].items() if k not in ("rejects_path", "cache", "cache_dir")}
    )
    tokenizer = load_tokenizer(built_tokenizer(record), shared=True)  # read only: `applied` copies
    if options.data.chat_template is not None:
        from ftdata.chat.chat_template import load_chat_template

        tokenizer = load_chat_template(options.data.chat_template).applied(tokenizer)
    check_fingerprint(record, tokenizer, what=f"the tokenizer {built_tokenizer(record) or 'bundled'} now")
    turns = collect(_source(record, folder), tokenizer, options, limit=limit)
    bodies: dict[str, dict[str, Any]] = {}
    pairs: list[tuple[ServedTurn, str, str]] = []
    for turn in turns.turns:
        prompt = request_body(turn.messages[:-1], generation=True, tools=turn.tools, kwargs=turn.kwargs)
        full = request_body(turn.messages, generation=False, tools=turn.tools, kwargs=turn.kwargs)
        keys = digest(url, prompt), digest(url, full)
        bodies.update(zip(keys, (prompt, full)))
        pairs.append((turn, *keys))
    answers = Answers(cache_root() / "serving" / f"{record.get('fingerprint', 'build')}.jsonl")
    got = render_all(url, bodies, answers, concurrency=concurrency, timeout=timeout, progress=progress)
    answers.clear()  # complete: a later check asks again (the server, or its template, may have changed since)
    parity = Parity(url, skipped=turns.skipped)
    for turn, p, f in pairs:
        parity.turns += 1
        difference = compare(turn, got[p], got[f], tokenizer)
        if difference is None:
            parity.identical += 1
        else:
            parity.differences.append(difference)
    if write:
        record.setdefault(SERVING, {})["parity"] = parity.to_dict()
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    if not turns.turns and not turns.skipped:
        raise FtdataError(f"{folder}: no trained turn to check")
    return parity
