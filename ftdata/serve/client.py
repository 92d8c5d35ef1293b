"""A client of a vLLM render server: POST `/v1/chat/completions/render` → `token_ids` (vLLM PR #32473; `vllm launch
render DIR` serves it without a GPU or weights).

    request   {"messages": [...], "add_generation_prompt": bool, "continue_final_message": false,
               "tools": [...], "tool_choice": "none", "chat_template_kwargs": {...}}
    response  {"token_ids": [...], ...}  (vLLM's `GenerateRequest`), or {"error": {"message": ...}} with a 4xx

Messages are sent as an OpenAI client sends them (`wire`): tool-call arguments as JSON strings, a turn that only
calls tools with content "". vLLM's OpenAI layer shapes them before its template runs (arguments parsed to objects,
keys in its models' order, a tool schema's missing fields set to null, null content to "", text parts joined):
what the server renders from them is what a deployed model is fed. With tools the request says
`"tool_choice": "none"`: a render server has no tool parser, and "auto" asks for one.

Requests run `concurrency` at a time, each within `timeout` seconds; answers are kept in a JSON-lines file keyed by
the request's digest (`Answers`) until the check has them all, so a check that stops is resumed where it stopped.
A server that is down or does not answer in time stops the check with one line (`ServerError`).
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftdata.errors import FtdataError

__all__ = ["RENDER_PATH", "Answer", "Answers", "ServerError", "render_all", "request_body", "wire"]

RENDER_PATH = "/v1/chat/completions/render"
CONCURRENCY = 4
TIMEOUT = 30.0


class ServerError(FtdataError):
    """The render server is down, refuses the request shape, or does not answer in time (one line)."""


def wire(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`messages` as an OpenAI client sends them: tool-call arguments as JSON strings, content None as ""."""
    out: list[dict[str, Any]] = []
    calls = 0  # OpenAI's schema requires an id on every tool call and a tool_call_id on every tool turn
    for message in messages:
        msg = {
            k: v for k, v in message.items() if k != "thinking"
        }  # ftdata's copy for gpt-oss; reasoning_content stays
        if msg.get("content") is None:
            msg["content"] = ""
        if isinstance(msg.get("content"), list) and all(p.get("type") == "text" for p in msg["content"]):
            msg["content"] = "\n".join(str(p.get("text", "")) for p in msg["content"])
        if msg.get("tool_calls"):
            msg["tool_calls"] = [_wire_call(call, f"call_{calls + k}") for k, call in enumerate(msg["tool_calls"])]
            calls += len(msg["tool_calls"])
        if msg["role"] == "tool" and "tool_call_id" not in msg:
            msg["tool_call_id"] = _answered(out, msg)
        out.append(msg)
    return out


def _wire_call(call: Mapping[str, Any], made: str) -> dict[str, Any]:
    """One tool call on the wire; `made`: its id when the data has none (a template that writes ids writes it)."""
    function = dict(call.get("function") or {})
    args = function.get("arguments")
    if not isinstance(args, str):
        function["arguments"] = json.dumps(args if args is not None else {}, ensure_ascii=False)
    return {"id": call.get("id") or made, "type": call.get("type", "function"), "function": function}


def _answered(before: list[dict[str, Any]], tool: Mapping[str, Any]) -> str:
    """The id of the call a tool turn without `tool_call_id` answers: the calls of the last assistant turn before it,
    in order (the first tool turn after it answers its first call)."""
    for k in range(len(before) - 1, -1, -1):
        if before[k]["role"] == "assistant":
            ids = [c["id"] for c in before[k].get("tool_calls") or ()]
            answered = len(before) - 1 - k
            return ids[answered] if answered < len(ids) else (ids[-1] if ids else "call_0")
    return "call_0"


def request_body(
    messages: list[dict[str, Any]],
    *,
    generation: bool,
    tools: list[dict[str, Any]] | None,
    kwargs: Mapping[str, Any],
) -> dict[str, Any]:
    """The JSON body of one render request."""
    body: dict[str, Any] = {
        "messages": wire(messages),
        "add_generation_prompt": generation,
        "continue_final_message": False,
    }
    if tools:
        body["tools"] = tools
        body["tool_choice"] = "none"
    if kwargs:
        body["chat_template_kwargs"] = dict(kwargs)
    return body


def digest(url: str, body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps([url, body], sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Answer:
    """What the server answered one request: its token ids, or the error it gave (a 4xx: the request is refused)."""

    ids: list[int] | None
    error: str | None = None


def _post(url: str, body: Mapping[str, Any], timeout: float) -> Answer:
    """One request.

    Raises:
        ServerError: the server cannot be reached, fails (5xx) or does not answer within `timeout`.
    """
    request = urllib.request.Request(
        url.rstrip("/") + RENDER_PATH,
        data=json.dumps(body, ensure_ascii=False).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310  # a URL the user gave
            data = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        if exc.code >= 500 and exc.code != 501:
            raise ServerError(f"render server {url} failed ({exc.code}): {_message(text)}") from None
        return Answer(None, f"{exc.code}: {_message(text)}")
    except TimeoutError:
        raise ServerError(f"render server {url} did not answer within {timeout:g} s (--timeout)") from None
    except (urllib.error.URLError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise ServerError(f"render server {url} did not answer within {timeout:g} s (--timeout)") from None
        raise ServerError(
            f"cannot reach render server {url}: {reason}; start one with "
            "`VLLM_TARGET_DEVICE=cpu vllm launch render MODEL_DIR --port PORT` or give its --url"
        ) from None
    ids = data.get("token_ids") if isinstance(data, dict) else None
    if not isinstance(ids, list):
        raise ServerError(f"{url}{RENDER_PATH} answered without token_ids (is it a vLLM render server?)")
    return Answer([int(i) for i in ids])


def _message(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip().splitlines()[0][:300] if text.strip() else "(no body)"
    error = data.get("error", data) if isinstance(data, dict) else data
    message = error.get("message", error) if isinstance(error, dict) else error
    return " ".join(str(message).split())[:300]


class Answers:
    """The answers so far, by request digest, kept in a JSON-lines file (`path`; None: in memory only)."""

    def __init__(self, path: Path | None):
        self.path = path
        self.known: dict[str, Answer] = {}
        if path is not None and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.known[row["key"]] = Answer(row.get("ids"), row.get("error"))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a stop: asked again

    def clear(self) -> None:
        """Forget the answers kept (the check they were for is complete)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def add(self, key: str, answer: Answer) -> None:
        self.known[key] = answer
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"key": key, "ids": answer.ids, "error": answer.error}) + "\n")


def render_all(
    url: str,
    bodies: Mapping[str, dict[str, Any]],
    answers: Answers,
    *,
    concurrency: int = CONCURRENCY,
    timeout: float = TIMEOUT,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Answer]:
    """Every body of `bodies` (by digest) rendered by the server at `url`, those `answers` holds not asked again.

    Raises:
        ServerError: see `_post`; the answers before it are kept in `answers`.
    """
    todo = [key for key in bodies if key not in answers.known]
    if todo:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            futures = {key: pool.submit(_post, url, bodies[key], timeout) for key in todo}
            try:
                for key, future in futures.items():
                    answers.add(key, future.result())
                    if progress is not None:
                        progress(1)
            except BaseException:
                for future in futures.values():
                    future.cancel()
                raise
    return {key: answers.known[key] for key in bodies}
