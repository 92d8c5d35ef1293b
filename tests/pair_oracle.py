"""An independent oracle for preference rows (test-only): straight from `apply_chat_template`, never from ftdata.

    P  = render(prompt, add_generation_prompt=True)       the inference prompt, tokenized alone
    A  = render(prompt + [reply])                          the reply as the template writes it last
    B  = render(prompt + [reply with content = sentinel])  where the reply's content ends in A
    completion = A[len(P) : the end-of-turn after the content]     when A starts with P, else from where
                                                                   A and B part (a rewritten history)

The end-of-turn is a literal per template (`EOT`); a template that writes none (GLM) gets the
tokenizer's EOS appended after a reply, and after a reply that calls a tool the header the template
writes for the tool's answer (`HANDOVER`, a literal: what the model writes to hand over and stop).
The completion's ids are those of P + completion tokenized whole, after the token that ends at
len(P) (None when a token crosses it: the caller compares text).
"""

from __future__ import annotations

from dataclasses import dataclass
from os.path import commonprefix
from typing import Any

SENTINEL = "\ue000"

# The end-of-turn each template writes after a final assistant turn (Phi-3 closes the conversation with its EOS).
EOT = {
    None: "<|im_end|>", "qwen2.5-instruct": "<|im_end|>", "mistral-nemo-instruct-2407": "</s>",
    "llama-3.2-instruct": "<|eot_id|>", "llama-3-8b-instruct": "<|eot_id|>", "gemma-3-it": "<end_of_turn>",
    "phi-3-mini-4k-instruct": "<|end|>\n<|endoftext|>", "deepseek-v3": "<｜end▁of▁sentence｜>", "trl:qwen3": "<|im_end|>",
    "trl:glm4moe": None,
}  # fmt: skip
# Without an end-of-turn marker: the header of the tool's turn, which ends a turn that calls a tool.
HANDOVER = {"trl:glm4moe": "<|observation|>"}


@dataclass(frozen=True)
class Expected:
    prompt_text: str
    completion_text: str
    prompt_ids: list[int]
    completion_ids: list[int] | None  # None: a token of P + completion crosses the border


def _common_suffix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def expected(tok: Any, eot: str | None, prompt: list[dict[str, Any]], reply: dict[str, Any], *, tools: Any = None,
             kwargs: dict[str, Any] | None = None, handover: str | None = None) -> Expected:  # fmt: skip
    kwargs = kwargs or {}

    def render(messages: list[dict[str, Any]], generation: bool = False) -> str:
        return tok.apply_chat_template(messages, tools=tools, add_generation_prompt=generation, tokenize=False, **kwargs)

    P, A = render(prompt, True), render([*prompt, reply])
    B = render([*prompt, {**reply, "content": SENTINEL}])
    content_end = len(A) - _common_suffix(A, B)
    start = len(P) if A.startswith(P) else len(commonprefix([A, B]))
    if eot is None and handover is not None and reply.get("tool_calls"):  # the call hands over: the tool's header
        T = render([*prompt, reply, {"role": "tool", "content": SENTINEL}])
        completion = T[start : T.index(handover, start) + len(handover)]
    elif eot is None:  # no end-of-turn marker: EOS appended after the last turn
        completion = A[start:].rstrip() + tok.eos_token
    else:
        completion = A[start : A.index(eot, max(start, content_end)) + len(eot)]  # a call-only turn: its content is not written
    adds_bos = tok.bos_token_id is not None and tok("x")["input_ids"][:1] == [tok.bos_token_id]
    bos = [tok.bos_token_id] if adds_bos and not P.startswith(tok.bos_token) else []
    prompt_ids = bos + tok(P, add_special_tokens=False)["input_ids"]
    whole = tok(P + completion, add_special_tokens=False, return_offsets_mapping=True)
    offsets = whole["offset_mapping"]
    k = next(i for i, (a, _) in enumerate(offsets) if a >= len(P))
    clean = k == 0 or offsets[k - 1][1] <= len(P)
    return Expected(P, completion, prompt_ids, whole["input_ids"][k:] if clean else None)


def check_row(tok: Any, exp: Expected, prompt_ids: list[int], completion_ids: list[int]) -> list[str]:
    """What differs between a row's prompt and one completion and the oracle's ([] when nothing)."""
    problems = []
    if prompt_ids != exp.prompt_ids:
        problems.append(f"prompt {tok.decode(prompt_ids)[-60:]!r} != {exp.prompt_text[-60:]!r}")
    if exp.completion_ids is not None and completion_ids != exp.completion_ids:
        problems.append(f"completion {tok.decode(completion_ids)[:60]!r} != {exp.completion_text[:60]!r}")
    if exp.completion_ids is None and tok.decode(completion_ids) != exp.completion_text:
        problems.append(f"completion text {tok.decode(completion_ids)[:60]!r} != {exp.completion_text[:60]!r}")
    return problems
