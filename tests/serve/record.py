"""Record a real vLLM render server's answers for the default tests, and print the parity table (run by hand).

    .venv/bin/python tests/serve/record.py [NAME ...]      (NAME: a folder of ../shared/tokenizers, or smollm2)
    .venv/bin/python tests/serve/record.py --expected      (the expected results again, from the stored answers)

For each tokenizer: builds `records.jsonl` (plain, multi-turn, tools, reasoning) on it, starts `vllm launch render`
on a copy of its folder with a minimal config.json (`stack.py`), runs `check_serving` against it, and writes
`fixtures/NAME.json`: every request the check sent with vLLM's own answer (status and JSON body, verbatim), and how
it was made. `test_parity.py` serves them again from a loopback server. Prints one row per tokenizer: turns
identical / checked, and each differing turn's first differing token.
"""

from __future__ import annotations

import datetime
import json
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from stack import CONFIGS, READY, SERVER_ARGS, VERSION, render_server, served_folder, source_folder  # noqa: E402

import ftdata  # noqa: E402
from ftdata.serve import client  # noqa: E402
from ftdata.serve.parity import check_serving  # noqa: E402

RECORDS = HERE / "records.jsonl"
FIXTURES = HERE / "fixtures"


def _exchange(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url + client.RENDER_PATH, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return {"request": body, "status": response.status, "response": json.loads(response.read())}
    except urllib.error.HTTPError as exc:
        return {"request": body, "status": exc.code, "response": json.loads(exc.read() or b"{}")}


def dump(fixture: dict[str, Any]) -> str:
    """The fixture as JSON, one exchange a line (readable in a diff, a tenth of the size indented)."""
    head = {k: v for k, v in fixture.items() if k != "exchanges"}
    lines = [json.dumps(e, ensure_ascii=False) for e in fixture["exchanges"]]
    text = json.dumps(head, indent=1, ensure_ascii=False)[:-2]
    return text + ',\n "exchanges": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"


def _folder_name(name: str) -> str:
    if name == "deepseek-v3.2-encoder":
        return "../shared/tokenizers/deepseek-v3 (served as V3.2: vLLM's own encoder renders, not the template)"
    if name == "qwen3-template":
        return "../shared/tokenizers/qwen2.5-instruct with TRL's qwen3 chat template in tokenizer_config.json"
    return (
        "the bundled SmolLM2's tokenizer folder (ftdata's cache)"
        if name == "smollm2"
        else f"../shared/tokenizers/{name}"
    )


def expected(parity: Any, url: str) -> dict[str, Any]:
    """What a check gives, without what changes between machines (the URL, where the records file lies)."""
    return {
        "summary": parity.summary.replace(url, "URL"),
        "differences": [d.line().replace(str(RECORDS), "RECORDS") for d in parity.differences],
    }


def refresh() -> None:
    """Each fixture's expected results computed again from its stored answers (after a change in ftdata's output)."""
    from test_parity import replay, serving

    for path in sorted(FIXTURES.glob("*.json")):
        fixture = json.loads(path.read_text(encoding="utf-8"))
        with tempfile.TemporaryDirectory() as tmp:
            name = fixture["tokenizer"]
            out = Path(tmp) / "out"
            given = source_folder(name, Path(tmp))
            ftdata.build(str(RECORDS), out, tokenizer=str(given) if given else None, cache=False)
            with serving(replay(fixture)) as url:
                fixture.update(expected(check_serving(out, url, write=False), url))
        path.write_text(dump(fixture), encoding="utf-8")
        print(f"{name}: {fixture['summary']}")


def record(name: str, root: Path) -> dict[str, Any]:
    from ftdata.io.resources import bundled_tokenizer_dir

    given = source_folder(name, root / "sources")
    source = given or bundled_tokenizer_dir()
    folder = served_folder(source, name, root / name)
    out = root / f"{name}-build"
    # Built on the shared folder itself, as a user builds; served from the copy with a config.json, as a model
    # folder is served: a class that routing picks otherwise there shows as differing turns.
    ftdata.build(str(RECORDS), out, tokenizer=str(given) if given else None, cache=False)
    sent: list[dict[str, Any]] = []
    post = client._post

    def recording(url: str, body: dict[str, Any], timeout: float) -> client.Answer:
        sent.append(body)
        return post(url, body, timeout)

    client._post = recording  # type: ignore[assignment]
    try:
        with render_server(folder, log=root / f"{name}.log", args=tuple(SERVER_ARGS.get(name, ()))) as url:
            parity = check_serving(out, url, write=False)
            exchanges = [_exchange(url, body) for body in sent]
    finally:
        client._post = post  # type: ignore[assignment]
    architecture, model_type = CONFIGS[name]
    flags = "".join(" " + a for a in SERVER_ARGS.get(name, ()))
    fixture = {
        "made_with": (
            f"vllm {VERSION} (pip install vllm=={VERSION}, Python 3.11, CPU): "
            "VLLM_TARGET_DEVICE=cpu vllm launch render "
            f"DIR --host 127.0.0.1 --port P{flags}, DIR a copy of {_folder_name(name)} with config.json "
            f'{{"architectures": ["{architecture}"], "model_type": "{model_type}"}}; requests as ftdata check-serving '
            "sends them for tests/serve/records.jsonl built on that folder (tests/serve/record.py)"
        ),
        "tokenizer": name,
        "recorded_on": datetime.date.today().isoformat(),  # the day a template's strftime_now gave (test_parity)
        "exchanges": exchanges,
    }
    fixture.update(expected(parity, url))
    FIXTURES.mkdir(exist_ok=True)
    (FIXTURES / f"{name}.json").write_text(dump(fixture), encoding="utf-8")
    return fixture


def main(names: list[str]) -> None:
    if not READY.is_file():
        sys.exit("no vLLM venv: run scripts/stacks/vllm.sh")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or sorted(CONFIGS):
            fixture = record(name, Path(tmp))
            print(f"{name}: {fixture['summary']}")
            for line in fixture["differences"]:
                print(f"  {line}")


if __name__ == "__main__":
    refresh() if sys.argv[1:] == ["--expected"] else main(sys.argv[1:])
