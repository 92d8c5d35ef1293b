"""Stop tokens: what ends generation after a trained assistant turn.

Inference stops on the template's end-of-turn markers, on the closer only tool calls get
(gpt-oss `<|call|>`, Apertus `<|tools_suffix|>`), and on the model's own set
(`generation_config.json`'s `eos_token_id`, the build's `stop_tokens` option). A template that
writes no end-of-turn marker (GLM) is stopped by the next turn's first header token, and
after the last turn by an EOS that ftdata appends:

    <|user|>q<|assistant|>\\na1<|user|>q2<|assistant|>\\na2
                          ~~~~~~~~~~~~                ~~~~ + EOS      trained
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def model_stop_tokens(tokenizer: Any) -> tuple[str, ...]:
    """The tokens `generation_config.json` in the tokenizer's folder stops on (its `eos_token_id`,
    an id or a list: Llama 3 `<|eot_id|>`, `<|end_of_text|>`, `<|eom_id|>`); () without one.

    Only a local folder is read: nothing is looked up on the model hub.
    """
    path = Path(str(getattr(tokenizer, "name_or_path", "") or "")) / "generation_config.json"
    try:
        ids = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id") if path.is_file() else None
    except (OSError, ValueError, AttributeError, RecursionError):
        return ()  # unreadable, nested too deep or not an object: the template's own closers still apply
    ids = [ids] if isinstance(ids, int) else ids if isinstance(ids, list) else []
    size = len(tokenizer)
    return tuple(tokenizer.convert_ids_to_tokens(i) for i in ids if isinstance(i, int) and 0 <= i < size)


_ADDED: dict[int, tuple[Any, int, frozenset[int]]] = {}  # id(backend) -> (backend, vocab size, added ids)


def added_ids(tokenizer: Any) -> frozenset[int]:
    """The ids of the tokenizer's added tokens that are not whitespace, cached per tokenizer.

    Reading them is slow where there are thousands (Gemma 3: 6415, 34 ms), and markers compare
    text in units many times. The cache holds the backend itself, so its id is never reused while
    cached; a token added since (a new vocabulary size) reads them again.
    """
    backend = tokenizer.backend_tokenizer
    size = backend.get_vocab_size(with_added_tokens=True)
    hit = _ADDED.get(id(backend))
    if hit is None or hit[0] is not backend or hit[1] != size:
        if len(_ADDED) >= 16:
            _ADDED.pop(next(iter(_ADDED)))
        added = backend.get_added_tokens_decoder().items()
        hit = _ADDED[id(backend)] = (backend, size, frozenset(i for i, a in added if a.content.strip()))
    return hit[2]


# The shape of a markup tag written as text: <|im_end|>, <end_of_turn>, <｜User｜>, [INST], [/INST].
_TAG = re.compile(r"<[^<>\s]{1,40}>|\[[A-Za-z_/]{2,20}\]")


def units(text: str, tokenizer: Any) -> list[tuple[int, int]]:
    """The markup units of `text`: [start, end) spans that a comparison of template markup may not cut.

    An added token is one unit. Plain text is cut where the tokenizer cuts it and where it turns
    from whitespace to non-whitespace, and runs of the same kind are joined, less tag-shaped pieces
    (`_TAG`), each a unit of its own: a marker the tokenizer reads as plain text (`<|im_end|>` on
    Llama 3: `<|`, `im`, `_end`, `|>\n`) is one unit, `<|im_end|>`, and the newline a byte-level
    merge glued to it is another. On a tokenizer that has its template's markers as tokens, units
    are its tokens (less whitespace merges).
    """
    if not text:
        return []
    enc = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
    added = added_ids(tokenizer)
    out: list[tuple[int, int, int]] = []  # (start, end, kind): 0 added token, 1 plain whitespace, 2 plain text
    for token_id, (a, b) in zip(enc.ids, enc.offsets):
        done = out[-1][1] if out else 0  # byte-level pieces of one character share its offsets (an emoji)
        if token_id in added:
            out.append((a, b, 0))
            continue
        for j in range(max(a, done), b):
            kind = 1 if text[j].isspace() else 2
            if out and out[-1][1] == j and out[-1][2] == kind:
                out[-1] = (out[-1][0], j + 1, kind)
            else:
                out.append((j, j + 1, kind))
    spans: list[tuple[int, int]] = []
    for a, b, kind in out:
        at = a
        # Markers glued together as plain text (Llama 3's template on Gemma's tokenizer writes
        # `<|eot_id|><|start_header_id|>user`): each tag-shaped piece is a unit of its own.
        for tag in _TAG.finditer(text, a, b) if kind == 2 else ():
            spans += [(at, tag.start())] * (tag.start() > at) + [tag.span()]
            at = tag.end()
        spans += [(at, b)] * (b > at)
    return spans


def common_token_prefix(a: str, b: str, tokenizer: Any) -> int:
    """Length in chars of the longest common prefix of `a` and `b` made of whole units (`units`).

    A plain character prefix can end inside a special token (`<|end|>` vs `<|endoftext|>`
    share `<|end`), or inside a marker that is plain text to the tokenizer; comparing units cannot.
    """
    end = 0
    for ua, ub in zip(units(a, tokenizer), units(b, tokenizer)):
        if ua != ub or a[ua[0] : ua[1]] != b[ub[0] : ub[1]]:
            break
        end = ua[1]
    return end


def one_token(text: str, tokenizer: Any) -> bool:
    """Whether `text` is exactly one token of `tokenizer` (an added token, or one vocabulary entry)."""
    enc = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False) if text else None
    return enc is not None and len(enc.ids) == 1 and enc.offsets[0] == (0, len(text))


def spelled_as_text(text: str, tokenizer: Any) -> bool:
    """Whether some non-whitespace of `text` is plain text to `tokenizer`, not added tokens (`<|im_end|>`
    on Llama 3: five plain tokens; Cohere's `<|END_RESPONSE|><|END_OF_TURN_TOKEN|>`: two added ones)."""
    enc = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
    added = added_ids(tokenizer)
    return any(i not in added and text[a:b].strip() for i, (a, b) in zip(enc.ids, enc.offsets))


def first_token(text: str, tokenizer: Any) -> str:
    """The text of the first unit of `text` (`units`: a token, or a marker that is plain text); '' for empty text."""
    spans = units(text, tokenizer)
    return text[: spans[0][1]] if spans else ""


def turn_stops(
    tokenizer: Any,
    *,
    eot: str,
    final_eot: str,
    user_header: str,
    call_closer: str,
    tool_header: str,
    stop_tokens: Sequence[str] = (),
) -> tuple[tuple[str, ...], str]:
    """(what ends a trained turn, the EOS appended after the last turn or '').

    `eot`/`final_eot` close middle and last turns; `call_closer` is the last token a call turn
    ends on and `tool_header` what opens the tool result after it (both from probe renders);
    `stop_tokens` are the model's. A stop is always one token id, never plain text.
    """
    added = {a.content for a in tokenizer.backend_tokenizer.get_added_tokens_decoder().values()}
    model_stops = {t for t in stop_tokens if one_token(t, tokenizer)}
    # The token a call turn ends on, where it is not the end-of-turn marker (gpt-oss `<|call|>`,
    # Apertus `<|tools_suffix|>`, Gemma 4 `<|tool_response>`): generation stops there for the call.
    # Plain text only where the end-of-turn marker is plain text too (a base tokenizer: the template's stops are all
    # text there, `text_stops`), so a call turn never runs on past its closer into the tool result.
    text_regime = bool(eot) and eot not in added and _TAG.fullmatch(call_closer.strip()) is not None
    tool_stop = call_closer if (call_closer in added or text_regime) and call_closer not in (eot, final_eot) else ""
    if eot:
        # Longest first, ties by text: a set's order changes from process to process. A template that
        # closes a turn only when another message follows (Apriel 1.6) writes no `final_eot`: EOS is
        # appended after the last turn, as for a template without any end-of-turn marker.
        stops = tuple(sorted({eot, final_eot, tool_stop, *model_stops} - {""}, key=lambda t: (-len(t), t)))
        return stops, "" if final_eot else tokenizer.eos_token or ""
    # No end-of-turn marker (GLM-4-MoE, Apertus' last turn): the next turn's header is what stops generation.
    # A tool result opened by a header (GLM `<|observation|>`) stops a call turn there; one written
    # inline without a header (Apertus `]<|tools_suffix|>[result]`) leaves the call's own closer.
    # On a base tokenizer the headers are markup written as plain text (`text_stops`): they are the stops there all
    # the same. Words (`user:`) are no stop: a middle turn of such a template cannot be stopped.
    user_head, tool_head = first_token(user_header, tokenizer), first_token(tool_header, tokenizer)
    plain = user_head not in added and _TAG.fullmatch(user_head.strip()) is not None
    call_stop = tool_head if tool_head in added or (plain and _TAG.fullmatch(tool_head.strip())) else tool_stop
    stops = tuple(
        dict.fromkeys(
            h
            for h in (user_head, call_stop, *sorted(model_stops))
            if h in added or (plain and _TAG.fullmatch(h.strip()))
        )
    )
    return stops, tokenizer.eos_token or ""


@dataclass(frozen=True, slots=True)
class Stop:
    """A stop token that ends a turn: [start, end) in A; `appended`: the text A lacks up to `end`, trained
    with the turn (a final call turn's hand-over to the tool; `eos`: the EOS appended after the last turn)."""

    start: int
    end: int
    appended: str = ""
    eos: bool = False


def first_stop(text: str, start: int, stops: Sequence[str], openers: Sequence[str]) -> Stop | None:
    """The first stop token in `text` at or after `start` (the longest where several start there), or
    None; also None when text that opens another turn (`openers`: the user and system headers) comes
    first, for then the stop found belongs to a later turn."""
    best = (-1, -1)
    for stop in stops:
        at = text.find(stop, start)
        if at >= 0 and (best[0] < 0 or at < best[0] or (at == best[0] and at + len(stop) > best[1])):
            best = (at, at + len(stop))
    if best[0] < 0 or any(opener in text[start : best[0]] for opener in openers):
        return None
    return Stop(*best)
