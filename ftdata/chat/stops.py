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
from collections.abc import Sequence
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


def common_token_prefix(a: str, b: str, tokenizer: Any) -> int:
    """Length in chars of the longest common prefix of `a` and `b` made of whole tokens.

    A plain character prefix can end inside a special token (`<|end|>` vs `<|endoftext|>`
    share `<|end`); comparing tokens cannot.
    """
    ea = tokenizer.backend_tokenizer.encode(a, add_special_tokens=False)
    eb = tokenizer.backend_tokenizer.encode(b, add_special_tokens=False)
    end = 0
    for ia, ib, oa, ob in zip(ea.ids, eb.ids, ea.offsets, eb.offsets):
        if ia != ib or oa != ob:
            break
        end = oa[1]
    return end


def one_token(text: str, tokenizer: Any) -> bool:
    """Whether `text` is exactly one token of `tokenizer` (an added token, or one vocabulary entry)."""
    enc = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False) if text else None
    return enc is not None and len(enc.ids) == 1 and enc.offsets[0] == (0, len(text))


def first_token(text: str, tokenizer: Any) -> str:
    """The text of the first token of `text` ('' for empty text)."""
    offsets = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).offsets if text else []
    return text[: offsets[0][1]] if offsets else ""


def turn_stops(
    tokenizer: Any, *, eot: str, final_eot: str, user_header: str, call_closer: str, tool_header: str,
    stop_tokens: Sequence[str] = (),
) -> tuple[tuple[str, ...], str]:  # fmt: skip
    """(what ends a trained turn, the EOS appended after the last turn or '').

    `eot`/`final_eot` close middle and last turns; `call_closer` is the last token a call turn
    ends on and `tool_header` what opens the tool result after it (both from probe renders);
    `stop_tokens` are the model's. A stop is always one token id, never plain text.
    """
    added = {a.content for a in tokenizer.backend_tokenizer.get_added_tokens_decoder().values()}
    model_stops = {t for t in stop_tokens if one_token(t, tokenizer)}
    # The token a call turn ends on, where it is not the end-of-turn marker (gpt-oss `<|call|>`,
    # Apertus `<|tools_suffix|>`, Gemma 4 `<|tool_response>`): generation stops there for the call.
    tool_stop = call_closer if call_closer in added and call_closer not in (eot, final_eot) else ""
    if eot:
        # Longest first, ties by text: a set's order changes from process to process.
        return tuple(sorted({eot, final_eot, tool_stop, *model_stops} - {""}, key=lambda t: (-len(t), t))), ""
    # No end-of-turn marker (GLM-4-MoE, Apertus' last turn): the next turn's header is what stops generation.
    # A tool result opened by a header (GLM `<|observation|>`) stops a call turn there; one written
    # inline without a header (Apertus `]<|tools_suffix|>[result]`) leaves the call's own closer.
    user_head, tool_head = first_token(user_header, tokenizer), first_token(tool_header, tokenizer)
    call_stop = tool_head if tool_head in added else tool_stop
    stops = tuple(dict.fromkeys(h for h in (user_head, call_stop, *sorted(model_stops)) if h in added))
    return stops, tokenizer.eos_token or ""


def first_stop(text: str, start: int, stops: Sequence[str], openers: Sequence[str]) -> tuple[int, int]:
    """(start, end) of the first stop token in `text` at or after `start` (the longest where several
    start there), or (-1, -1); also (-1, -1) when text that opens another turn (`openers`: the user
    and system headers) comes first, for then the stop found belongs to a later turn."""
    best = (-1, -1)
    for stop in stops:
        at = text.find(stop, start)
        if at >= 0 and (best[0] < 0 or at < best[0] or (at == best[0] and at + len(stop) > best[1])):
            best = (at, at + len(stop))
    if best[0] >= 0 and any(opener in text[start : best[0]] for opener in openers):
        return -1, -1
    return best
