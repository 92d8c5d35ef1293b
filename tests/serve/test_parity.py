"""`ftdata check-serving` against recorded answers of a real vLLM render server (fixtures/, made by record.py),
served again by a loopback HTTP server: the same turns identical and the same differences, and the one-line
failures (a template edited after the build, a server that is down or slow)."""

from __future__ import annotations

import datetime
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support import TOKENIZERS, fresh_cache, set_day

import ftdata
from ftdata.errors import ConfigError
from ftdata.serve.client import RENDER_PATH, ServerError, wire
from ftdata.serve.parity import check_serving

HERE = Path(__file__).resolve().parent
RECORDS = HERE / "records.jsonl"
FIXTURES = sorted((HERE / "fixtures").glob("*.json"))


def _key(body: Any) -> str:
    return json.dumps(body, sort_keys=True, ensure_ascii=False)


@contextmanager
def serving(answer: Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]) -> Iterator[str]:
    """A loopback HTTP server answering POST RENDER_PATH with `answer(body)`; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802  (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, data = answer(body) if self.path == RENDER_PATH else (404, {"error": {"message": self.path}})
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that gave up (the timeout tests) is no error of the server's; silent, not on stderr

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def replay(fixture: dict[str, Any]) -> Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]:
    recorded = {_key(e["request"]): (e["status"], e["response"]) for e in fixture["exchanges"]}

    def answer(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return recorded.get(_key(body), (404, {"error": {"message": f"not recorded: {_key(body)[:200]}"}}))

    return answer


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Answers are kept there, by request; the bundled tokenizer stays the machine's (not made again from its GGUF).
    monkeypatch.setenv("FTDATA_CACHE", str(fresh_cache(tmp_path / "cache")))


def _build(out: Path, name: str, folder: Path | None = None) -> Path:
    from stack import source_folder

    given = folder or source_folder(name, out.parent / "sources")
    tokenizer = str(given) if given else None
    ftdata.build(str(RECORDS), out, tokenizer=tokenizer, cache=False)
    return out


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_the_recorded_server_gives_the_recorded_result(
    tmp_path: Path, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixture = json.loads(path.read_text(encoding="utf-8"))
    # Templates that read the clock (Llama 3.2's "Today Date") render the day the server answered: ftdata's renders
    # see that day too, or the fixture would pass on that day only.
    set_day(monkeypatch, datetime.date.fromisoformat(fixture["recorded_on"]))
    out = _build(tmp_path / "out", fixture["tokenizer"])
    with serving(replay(fixture)) as url:
        parity = check_serving(out, url)
    assert parity.summary.replace(url, "URL") == fixture["summary"]
    assert [d.line().replace(str(RECORDS), "RECORDS") for d in parity.differences] == fixture["differences"]
    written = json.loads((out / "build.json").read_text(encoding="utf-8"))["serving"]["parity"]
    assert (written["turns"], written["identical"]) == (parity.turns, parity.identical)
    assert ftdata.load(out).dataset.num_rows >= 2  # build.json rewritten: the folder still loads as a build


def test_qwen_turns_plain_multi_turn_and_tools_are_identical(tmp_path: Path) -> None:
    fixture = json.loads((HERE / "fixtures" / "qwen2.5-instruct.json").read_text(encoding="utf-8"))
    out = _build(tmp_path / "out", "qwen2.5-instruct")
    with serving(replay(fixture)) as url:
        parity = check_serving(out, url)
    assert (parity.turns, parity.identical, parity.differences) == (5, 5, [])
    assert parity.summary == f"5 of 5 turns identical to what {url} renders"


def test_a_server_answer_that_differs_names_the_turn_and_both_tokens(tmp_path: Path) -> None:
    fixture = json.loads((HERE / "fixtures" / "qwen2.5-instruct.json").read_text(encoding="utf-8"))
    answer = replay(fixture)

    def shifted(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        status, data = answer(body)
        if body["messages"][-1]["content"] == "Count to three.":  # a server that writes one token otherwise
            data = {**data, "token_ids": [*data["token_ids"][:-1], 715]}
        return status, data

    out = _build(tmp_path / "out", "qwen2.5-instruct")
    with serving(shifted) as url:
        parity = check_serving(out, url)
    assert parity.identical == 4
    (difference,) = parity.differences
    assert difference.line() == (f"{RECORDS}:2#0/4: prompt token 33: ftdata '\\n' (198) vs server ' \\n' (715)")


def test_a_reply_whose_render_drops_the_system_text_is_compared_by_its_own_tokens(tmp_path: Path) -> None:
    """Mistral-Nemo writes the system text in the last user turn only: the render through a reply drops it, so the
    reply is held against that render's end (its own tokens and what follows a last turn), and a server that
    writes one of them otherwise is named there."""
    fixture = json.loads((HERE / "fixtures" / "mistral-nemo-instruct-2407.json").read_text(encoding="utf-8"))
    answer = replay(fixture)

    def shifted(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        status, data = answer(body)
        last = body["messages"][-1]
        if last["role"] == "assistant" and last["content"] == "Hello.":  # the reply's stop token written otherwise
            data = {**data, "token_ids": [*data["token_ids"][:-1], 1]}
        return status, data

    out = _build(tmp_path / "out", "mistral-nemo-instruct-2407")
    with serving(shifted) as url:
        parity = check_serving(out, url)
    assert (parity.turns, parity.identical) == (3, 2)
    (difference,) = parity.differences
    assert difference.side == "target" and difference.key == f"{RECORDS}:2#1/2"
    assert difference.ftdata == "'</s>' (2)" and difference.server == "'<s>' (1)"


def test_a_template_edited_by_one_byte_after_the_build_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "qwen"
    shutil.copytree(TOKENIZERS / "qwen2.5-instruct", folder)
    out = _build(tmp_path / "out", "qwen2.5-instruct", folder)
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["chat_template"] = config["chat_template"].replace("<|im_start|>assistant\\n", "<|im_start|>assistant \\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        check_serving(out, "http://127.0.0.1:9")
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith(f"the tokenizer {folder} now has chat template ")
    assert line.endswith("first differing rendered token 29: built '\\n' (198) vs now ' \\n' (715)")


def test_a_server_that_is_down_is_one_line(tmp_path: Path) -> None:
    out = _build(tmp_path / "out", "qwen2.5-instruct")
    started = time.monotonic()
    with pytest.raises(ServerError, match=r"^cannot reach render server http://127\.0\.0\.1:9: .*refused"):
        check_serving(out, "http://127.0.0.1:9", timeout=2)
    assert time.monotonic() - started < 10


def test_a_slow_server_is_one_line_within_the_timeout(tmp_path: Path) -> None:
    out = _build(tmp_path / "out", "qwen2.5-instruct")

    def slow(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        time.sleep(3)
        return 200, {"token_ids": [1]}

    with serving(slow) as url:
        started = time.monotonic()
        with pytest.raises(ServerError, match=r"did not answer within 0\.5 s \(--timeout\)$"):
            check_serving(out, url, timeout=0.5, concurrency=2)
        assert time.monotonic() - started < 8


def test_requests_are_bounded_and_a_check_that_stopped_resumes(tmp_path: Path) -> None:
    fixture = json.loads((HERE / "fixtures" / "qwen2.5-instruct.json").read_text(encoding="utf-8"))
    answer = replay(fixture)
    seen: list[int] = []
    flight = [0, 0]  # in flight now, most at once
    dying = [True]  # the server fails after 3 answers, until it is "restarted"
    lock = threading.Lock()

    def counted(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with lock:
            if dying[0] and len(seen) >= 3:
                return 500, {"error": {"message": "engine died"}}
            flight[0] += 1
            flight[1] = max(flight[1], flight[0])
        time.sleep(0.05)
        with lock:
            flight[0] -= 1
            seen.append(1)
        return answer(body)

    out = _build(tmp_path / "out", "qwen2.5-instruct")
    kept = tmp_path / "cache" / "serving"
    with serving(counted) as url:
        with pytest.raises(ServerError, match=r"^render server .* failed \(500\): engine died$"):
            check_serving(out, url, concurrency=1)
        assert len(seen) == 3 and len(list(kept.iterdir())) == 1  # their answers kept
        dying[0] = False
        resumed = check_serving(out, url, concurrency=2)
        assert len(seen) == 10  # 5 turns, a prompt and a prompt + target each: the 7 not answered yet
        assert flight[1] == 2
        assert not list(kept.iterdir())  # complete: nothing kept, a later check asks again
        again = check_serving(out, url, concurrency=2)
        assert len(seen) == 20
    assert resumed.summary == again.summary == f"5 of 5 turns identical to what {url} renders"


def test_messages_go_as_an_openai_client_sends_them() -> None:
    sent = wire(
        [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}],
                "reasoning_content": "r",
                "thinking": "r",
            },
            {"role": "tool", "content": [{"type": "text", "text": "1"}, {"type": "text", "text": "2"}]},
        ]
    )
    assert sent == [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}],
            "reasoning_content": "r",
        },
        {"role": "tool", "content": "1\n2", "tool_call_id": "call_0"},
    ]


def test_the_documented_example_is_real(tmp_path: Path) -> None:
    """docs/cli.md's check-serving example: the recorded Phi-3 answers, replayed (URL, OUT and paths normalized)."""
    from typer.testing import CliRunner

    from ftdata.cli.app import app

    doc = (HERE.parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    shown = doc.split("<!-- example serve -->\n```console\n", 1)[1].split("```", 1)[0]
    fixture = json.loads((HERE / "fixtures" / "phi-3-mini-4k-instruct.json").read_text(encoding="utf-8"))
    out = _build(tmp_path / "out", "phi-3-mini-4k-instruct")
    with serving(replay(fixture)) as url:
        result = CliRunner().invoke(app, ["check-serving", str(out), "--url", url], env={"COLUMNS": "80"})
    assert result.exit_code == 1
    got = result.output.replace(url, "http://127.0.0.1:8000").replace(str(RECORDS), "tests/serve/records.jsonl")
    assert f"$ ftdata check-serving OUT --url http://127.0.0.1:8000\n{got}" == shown


def test_phi3_built_from_the_model_folder_is_what_vllm_serves(tmp_path: Path) -> None:
    """The same Phi-3 files beside the model's config.json load as the class vLLM loads: every turn identical."""
    folder = tmp_path / "phi3"
    shutil.copytree(TOKENIZERS / "phi-3-mini-4k-instruct", folder)
    (folder / "config.json").write_text(json.dumps({"architectures": ["Phi3ForCausalLM"], "model_type": "phi3"}))
    fixture = json.loads((HERE / "fixtures" / "phi-3-mini-4k-instruct.json").read_text(encoding="utf-8"))
    out = _build(tmp_path / "out", "phi-3-mini-4k-instruct", folder)
    with serving(replay(fixture)) as url:
        parity = check_serving(out, url)
    assert (parity.turns, parity.identical) == (3, 3)
    assert json.loads((out / "build.json").read_text(encoding="utf-8"))["serving"]["raw_check"]["differ"] == 0


def test_serve_needs_a_model_folder_with_config_json_and_a_vllm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ftdata.serve.launch import render_server

    with pytest.raises(ConfigError, match=r"qwen2\.5-instruct has no config\.json: vllm launch render reads the model"):
        with render_server(TOKENIZERS / "qwen2.5-instruct"):
            pass
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}')
    monkeypatch.setenv("FTDATA_VLLM", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"^no vllm to start: run scripts/stacks/vllm\.sh"):
        with render_server(folder):
            pass
    fake = tmp_path / "vllm"
    fake.write_text("#!/bin/sh\necho 'ValueError: No supported config format found'\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("FTDATA_VLLM", str(fake))
    with pytest.raises(ServerError, match=r"model exited: ValueError: No supported config format found \(log: "):
        with render_server(folder, log=tmp_path / "log"):
            pass


@pytest.mark.parametrize(
    ("full", "after", "expected"),
    [
        ([1, 2, 3, 4, 5, 6], [6], None),  # the render starts with the prompt: compared through the turn
        ([1, 2, 3, 4, 7], [6], ("target", 4)),  # ... and differs in the turn
        ([1, 9, 4, 5, 6], [6], None),  # the context written otherwise: the turn and its trailer at the end
        ([1, 9, 4, 5], [], None),  # a record that ends after the turn's conversation: no trailer to compare
        ([1, 9, 4, 8, 6], [6], ("target", 4)),  # the turn's second token otherwise: named where the row has it
        ([1, 9, 4, 5, 7], [6], ("target", 5)),  # the trailer otherwise
    ],
)
def test_a_turn_is_compared_with_the_render_through_it(full: list[int], after: list[int], expected: Any) -> None:
    from ftdata.serve.client import Answer
    from ftdata.serve.parity import compare
    from ftdata.serve.turns import ServedTurn

    from support import make_char_tokenizer

    turn = ServedTurn("d.jsonl:1", 0, 1, [], None, {}, context=[1, 2, 3], trained=[4, 5], after=after)
    found = compare(turn, Answer([1, 2, 3]), Answer(full), make_char_tokenizer())
    assert (found.side, found.at) == expected if expected else found is None
