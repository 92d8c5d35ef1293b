"""Where an assistant turn begins when the training sequence does not start with its prompt.

When A (the whole record rendered) does not start with P_i (turn i's inference prompt), the
template rewrites history or its generation prompt writes what history turns lack (a think
block opened or closed). The turn is then trained as it appears in A, from where the model
starts writing: where P_i and A part, when that lies within the turn, moved past what the
prompt already holds; else after the turn's role header, or at its data.

    P_i = ...<|im_start|>assistant\n<think>\n
    A   = ...<|im_start|>assistant\n<think></think>answer<|im_end|>
                                           ^ parted: the model writes `</think>answer<|im_end|>`
"""

from __future__ import annotations

import os
import re
from typing import Any

from ftdata.chat.markers import RoleMarkers
from ftdata.chat.sentinels import LazySpans, Render, common_prefix, content_span, first_named, no_spans, written_span

# A tag written as text, in a tokenizer that lacks it as a token (`</think>` on a base tokenizer).
_TAG = re.compile(r"<[^<>\s]{1,40}>")
_TAGS = re.compile(r"(?:\s*<[^<>\s]{1,40}>)+")
_CLOSER = re.compile(r"(</[^<>\s]{1,40}>)\s*\Z")  # a closing tag that ends a prompt's tail (`</think>`)
_R1 = re.compile(r"\s*<think>.*?</think>", re.DOTALL)


def _r1_block(msg: dict[str, Any]) -> re.Match[str] | None:
    """The leading think block of an assistant content whose reasoning is in no field (R1-style), else None."""
    if msg.get("role") != "assistant" or msg.get("reasoning_content") or msg.get("thinking"):
        return None
    return _R1.match(msg.get("content") or "")


def _aligned(text: str, prompt: str, end_a: int, end_p: int | None) -> str:
    """P_i as A writes the conversation up to the message before turn i (`end_a`, `end_p`: where
    that message's content ends in A and in P_i; None: not located there).

    A template may render an earlier turn differently once a later user message follows it
    (DeepSeek-V3.2 writes `<think>` into the last exchange and `</think>` into history), so P_i
    and A part before turn i's own exchange; what P_i writes after that message is what counts.
    """
    if end_p is None or common_prefix(prompt, text) >= end_a:
        return prompt
    return text[:end_a] + prompt[end_p:]


class FallbackStart:
    """Where a fallback turn begins in A, for one tokenizer and template."""

    def __init__(self, tokenizer: Any, markers: RoleMarkers):
        self.tokenizer = tokenizer
        self.markers = markers
        header = markers.assistant_header
        decoder = tokenizer.backend_tokenizer.get_added_tokens_decoder()
        self.added = frozenset(decoder)  # ids of added tokens: markup
        added = {a.content for a in decoder.values()}
        enc = tokenizer.backend_tokenizer.encode(header, add_special_tokens=False) if header else None
        ends = [b for a, b in enc.offsets if header[a:b] in added or header[b - 1].isspace()] if enc else []
        # The role header, whole and cut after markup tokens or line ends, longest first: where a
        # fallback turn's think block begins when the template re-renders its reasoning.
        self.headers = tuple(dict.fromkeys(header[:b] for b in (len(header), *reversed(ends)) if header[:b].strip()))

    def __call__(
        self,
        text: str,
        msgs: list[dict[str, Any]],
        i: int,
        prompt: str | None,
        *,
        done: int,
        data: tuple[int, int],
        block: bool,
        render: Render,
        contents: LazySpans = no_spans,
        answer: tuple[int, int] | None = None,
    ) -> tuple[int, bool]:
        """(where turn i begins in A, whether A writes again the prompt's close of a think block).

        `prompt` is P_i (None when it does not render), `done` the end of the previous trained
        turn, `data` where the template writes the turn's data, `block`: the model writes markup
        before its data (a think block, call markup). `render(messages, generation=...)` renders
        with the record's tools and kwargs: the message before turn i is located by rendering it
        once more with its content replaced (`ftdata.chat.sentinels`), never by searching its text;
        `contents()` gives every content's span from one render, where the template allows;
        `answer`: where the turn's answer is written (`sentinels.Found.answer`), else located here.
        """
        data_start = data[0]
        before = self._before(
            text, msgs, i, render, contents, done, data_start
        )  # where message i-1's content ends in A
        previous = self._after_previous(text, msgs[i - 1]["role"], before, data_start) if before is not None else None
        if prompt is not None and before is not None and common_prefix(prompt, text) < before:
            in_prompt = content_span(prompt, render, msgs[:i], i - 1, generation=True)
            prompt = _aligned(text, prompt, before, in_prompt[1] if in_prompt else None)
        fork, tail = self._fork_tail(text, prompt, done if previous is None else max(previous, done))
        unheaded = self._unheaded(text, msgs, i, fork=fork, tail=tail, data_start=data_start)
        start = self._markup_start(text, fork, previous, done, data, block, unheaded)
        if prompt is None:
            return start, False
        if tail.strip():
            begins = self._answer_start(text, render, msgs, i, data, start, answer)
            start, moved = self._after_prompt_tail(text, tail, start, begins, r1=_r1_block(msgs[i]) is not None)
            if not moved:
                start = self._past_prompt_end(text, prompt, start)
            return start, moved
        return start, False

    def _fork_tail(self, text: str, prompt: str | None, floor: int) -> tuple[int | None, str]:
        """Where P_i leaves A at or after `floor` (None: nowhere, or no P_i), and what P_i writes from there."""
        if prompt is None:
            return None, ""
        shared = common_prefix(prompt, text)  # in characters
        fork = self._fork(text, prompt, floor, shared)
        return fork, prompt[fork if fork is not None else shared :]

    def _unheaded(
        self, text: str, msgs: list[dict[str, Any]], i: int, *, fork: int | None, tail: str, data_start: int
    ) -> bool:
        """Whether turn i follows a tool result and P_i's tail writes no role header A writes too.

        Such a generation prompt continues the model's turn (DeepSeek-V3.2: `<think>`, then A's `</think>`;
        diffusion_gemma: `<|channel>thought\n`, then A's `<|turn>model\n`): what A writes from there is the model's.
        """
        if not (i > 0 and msgs[i - 1]["role"] == "tool"):
            return False
        lead = text[fork:data_start] if fork is not None and fork <= data_start else ""
        return not any(h.strip() in tail and h.strip() in lead for h in self.headers)

    @staticmethod
    def _before(
        text: str, msgs: list[dict[str, Any]], i: int, render: Render, contents: LazySpans, done: int, data_start: int
    ) -> int | None:
        """Where the content of the message before turn i ends in A, when it lies between the
        previous trained turn and turn i's data; else None."""
        if i == 0:
            return None
        spans = contents()
        span = spans[i - 1] if spans is not None else content_span(text, render, msgs, i - 1)
        return span[1] if span and done <= span[0] and span[1] <= data_start else None

    @staticmethod
    def _answer_start(
        text: str,
        render: Render,
        msgs: list[dict[str, Any]],
        i: int,
        data: tuple[int, int],
        lo: int,
        located: tuple[int, int] | None,
    ) -> int:
        """Where turn i's answer (its content, else its first call's name) begins in text[lo:data end].

        A plain turn's data is its content; otherwise the content (or the name) is where the
        long-record skeletons `located` it, else located by a render with only it replaced.
        """
        msg, (data_start, hi) = msgs[i], data
        if not msg.get("tool_calls") and msg.get("reasoning_content") is None:
            span: tuple[int, int] | None = (data_start, hi)
        elif located is not None:
            span = located
        elif (msg.get("content") or "").strip():
            span = content_span(text, render, msgs, i)
        else:
            span = written_span(text, render, msgs, i, first_named)
        # An R1-style content (`<think>…</think>answer`, written as given): its answer follows its block.
        if span and (block := _r1_block(msg)) and text.startswith(block[0].lstrip(), span[0]):
            span = (span[0] + len(block[0].lstrip()), span[1])
        return span[0] if span and lo <= span[0] <= hi else hi

    @staticmethod
    def _after_prompt_tail(text: str, tail: str, start: int, answer: int, *, r1: bool = False) -> tuple[int, bool]:
        """Move `start` past what the generation prompt already holds of this turn, if A writes it.

        When P_i is not a prefix of A, the prompt's own `tail` (what it writes after the point where
        it and A part) is context the model is given. If A writes that tail again inside the turn,
        before the answer (`enable_thinking=false`: P_i ends in `<think>\n\n</think>\n\n`, A's
        turn holds `<think>\nreasoning\n</think>\n\n`), the model starts writing after it there.
        Returns (start, moved). Only the stretch between the role header and the answer is
        searched (markup and reasoning), and a whitespace-only tail is never matched.

        `r1`: the turn's content is R1-style (`<think>…</think>answer`, its reasoning in no field). Where the prompt's
        tail ends by closing the block (DeepSeek-V3.2 with thinking off: `<think></think>`) and A writes the content's
        own block instead, the model starts after the last such closer before the answer.
        """
        core = tail.strip()
        if not core:
            return start, False
        at = text.find(tail, start, answer)
        if at >= 0:
            return at + len(tail), True
        at = text.find(core, start, answer)
        closer = _CLOSER.search(core)
        if at < 0 and r1 and closer and (last := text.rfind(closer[1], start, answer)) >= 0:
            return last + len(closer[1]), True
        if at < 0:
            return start, False
        # The whitespace the prompt writes after its tail is the prompt's too, where A writes it.
        end, after = at + len(core), tail[tail.index(core) + len(core) :]
        while after and not text.startswith(after, end):
            after = after[:-1]
        return end + len(after), True

    def _past_prompt_end(self, text: str, prompt: str, start: int) -> int:
        """`start` moved past markup the generation prompt already ends with, where A's turn opens with it.

        DeepSeek-V3.2 with thinking off prompts with `<｜Assistant｜><think></think>` and writes history
        turns as `<｜Assistant｜></think>answer`: the two part after the header, and the `</think>` that
        opens A's turn is the one the prompt ends with, so the model never writes it. The markup
        (added tokens, or tags as text) must end the prompt, and A must write it across `start`,
        where the two part; the whitespace the prompt writes after it goes with it. Where the prompt
        opens the block (`<think>\n`: Nemotron 3, GLM-4.7) A's `</think>` is the model's.
        """
        base = max(len(prompt) - 64, 0)  # a markup token is short
        enc = self.tokenizer.backend_tokenizer.encode(prompt[base:], add_special_tokens=False)
        cuts = sorted({base + a for a, _ in enc.offsets} | {m.start() for m in _TAG.finditer(prompt, base)})
        for cut in cuts:  # longest first
            end = prompt[cut:]
            core = end.rstrip()
            if not core.strip() or not (_TAGS.fullmatch(core) or self._markup_only(core)):
                continue
            at = next((at for at in range(max(start - len(core) + 1, 0), start + 1) if text.startswith(core, at)), None)
            if at is not None:
                after = at + len(core)
                return after + len(os.path.commonprefix([end[len(core) :], text[after : after + 64]]))
        return start

    def _fork(self, text: str, prompt: str, lo: int, fork: int) -> int | None:
        """Where P_i and A part (`fork`, in characters), when that is at or after `lo` (the end of
        the message before turn i), else None; moved back to the start of a markup token (or a tag
        written as text) it falls inside, on either side: GLM-4.7 prompts with `<think>` and writes
        `</think>`, QwQ prompts with `<think>` and writes `<tool_call>`, and the two share their
        first characters."""
        if fork < lo:
            return None
        for side in (prompt, text):  # a window around the parting point: a markup token is short
            window = side[lo : fork + 64]
            enc = self.tokenizer.backend_tokenizer.encode(window, add_special_tokens=False)
            for token, (a, b) in zip(enc.ids, enc.offsets):
                if lo + a < fork < lo + b and token in self.added:
                    fork = lo + a
                    break
            tag = next(
                (m for m in _TAG.finditer(side, max(fork - 40, lo), fork + 40) if m.start() < fork < m.end()), None
            )
            fork = tag.start() if tag else fork
        return fork

    def _markup_start(
        self,
        text: str,
        fork: int | None,
        previous: int | None,
        done: int,
        data: tuple[int, int],
        block: bool,
        unheaded: bool = False,
    ) -> int:
        """Where a fallback turn begins, after the message before it (`previous`: where it ends in A,
        None when not found; never before `done`, the previous turn's end): where its inference prompt
        and A part (`fork`, None when not within the turn), when that lies within the turn; else after
        its role header (`block`: the model writes markup before its data) or at its data.

        Before plain content the parting point is taken when it lies after the turn's own role
        header, or anywhere when the prompt continues the model's turn with no header (`unheaded`):
        what A writes from there to the content is what the model writes after its prompt. GLM-4.7
        and Nemotron 3 prompt with `<think>` and write `</think>` at the start of history turns (one
        token or, in a tokenizer without it, plain text: the model writes it either way).

        The parting point inside the data, past markup the content opens with: QwQ prompts with `<think>\n` (and
        `</think>` with thinking off) and writes an R1-style content `<think>\nreasoning…` as given; the prompt
        holds the content's opening tag, so the model writes from where the two part.
        """
        data_start, data_end = data
        if fork is not None and data_start < fork <= data_end and self._opening(text[data_start:fork]):
            return fork
        lo = done if previous is None else max(previous, done)
        if (
            fork is not None
            and fork <= data_start
            and (block or unheaded or self._after_header(text, lo, fork, data_start))
        ):
            return fork
        if fork is not None and lo <= fork < data_start and not text[fork:data_start].strip():
            # Only whitespace between where the prompt ends and the content (vLLM's DeepSeek-V3 template:
            # `<｜Assistant｜>` + twelve spaces; vLLM's Mistral: `[/INST] Blue`): the prompt does not hold
            # it, so the model writes it, in its first token (` Blue`), never after a lone ` ` token.
            return fork
        header_end = self._header_end(text, lo, data_start)
        if not block:
            # What the template writes after its role header is the model's when it is what every
            # turn opens with (gpt-oss `<|channel|>final<|message|>` after a call turn rewrote history).
            lead = text[header_end:data_start]
            opens = lead.strip() and (lead == self.markers.after_prompt or self._markup_only(lead))
            return header_end if header_end < data_start and opens else data_start
        # No role header before the calls (vLLM's Mistral template: `[/INST][TOOL_CALLS] [...]`): the
        # turn begins where the message before it ends, when that message was found in A.
        return previous if header_end == data_start and previous is not None else header_end

    def _after_previous(self, text: str, role: str, end: int, data_start: int) -> int:
        """Where the message before turn i ends in A: its content (ending at `end`) and, for a user
        message, the footer the template closes it with.

        A fallback turn never starts inside another message: a template that rewrote an earlier
        message (vLLM's Mistral template) parts from the inference prompt inside it.
        """
        footer = self.markers.user_footer.strip() if role == "user" else ""
        gap = text[end:data_start]
        if footer and gap.lstrip().startswith(footer):
            end += len(gap) - len(gap.lstrip()) + len(footer)
        return end

    def _after_header(self, text: str, lo: int, fork: int, data_start: int) -> bool:
        """Whether `fork` lies at or after the turn's own role header (its last one before the data)."""
        ends = [at + len(h) for h in self.headers if (at := text.rfind(h, lo, data_start)) >= 0]
        return bool(ends) and fork >= min(ends)

    def _opening(self, text: str) -> bool:
        """Whether `text` is markup (tags, as tokens or as text) and whitespace, with some markup."""
        return bool(text.strip()) and (bool(_TAGS.fullmatch(text.rstrip())) or self._markup_only(text))

    def _markup_only(self, text: str) -> bool:
        """Whether `text` is only added tokens (markup) and whitespace."""
        enc = self.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
        return all(i in self.added or not text[a:b].strip() for i, (a, b) in zip(enc.ids, enc.offsets))

    def _header_end(self, text: str, lo: int, data_start: int) -> int:
        """Fallback start: just after the turn's role header (the longest part of it that A writes)."""
        for header in self.headers:
            at = text.rfind(header, lo, data_start)
            if at >= 0:
                return at + len(header)
        return data_start
