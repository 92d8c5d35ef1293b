"""`chat_template` (`--chat-template FILE|NAME`): another chat template than the tokenizer's, without editing
its folder. The oracle: a build with the option equals a build with the same template written into the
tokenizer (or processor) folder."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from support import ROOT, TOKENIZERS, tokenizer
from typer.testing import CliRunner

from ftdata import build
from ftdata.chat.chat_template import load_chat_template, trl_folder, trl_names
from ftdata.cli.app import app
from ftdata.errors import ConfigError
from ftdata.options import DataOptions

TERSE = (
    "{% for m in messages %}{% if loop.first %}<|im_start|>system\nBe terse.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ROWS = [{"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]}]


def run(*args: object) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def _rows(result: object) -> list[tuple[list[int], list[int]]]:
    ds = result.dataset  # type: ignore[attr-defined]
    return list(zip(ds["input_ids"], ds["labels"]))


def test_a_template_trl_ships_is_read_by_name() -> None:
    found = load_chat_template("qwen3")
    text = (trl_folder() / "qwen3.jinja").read_text(encoding="utf-8")  # type: ignore[operator]
    assert found.text == text and found.input.digest == hashlib.sha256(text.encode()).hexdigest()
    assert {"qwen3", "qwen3_training", "llama3"} <= set(trl_names())


@pytest.mark.parametrize(
    ("spec", "content", "message"),
    [
        ("qwen9", None, r"^unknown chat template 'qwen9': give a \.jinja file or one TRL ships: cohere, .*\bqwen3\b"),
        ("nope.jinja", None, r"^chat template file 'nope\.jinja' does not exist; give a \.jinja file or a TRL template name like 'qwen3'$"),
        ("empty.jinja", b" \n", r"^chat template file '.*empty\.jinja' is empty$"),
        ("latin1.jinja", b"caf\xe9", r"^chat template file '.*latin1\.jinja' is not UTF-8 text \(unexpected end of data at byte 3\)$"),
    ],
)  # fmt: skip
def test_a_template_that_cannot_be_read_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str, content: bytes | None, message: str) -> None:
    monkeypatch.chdir(tmp_path)
    if content is not None:
        (tmp_path / spec).write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_chat_template(spec)


def test_a_chat_template_beside_a_prompt_template_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^chat_template='t\.jinja' renders with a chat template, template='alpaca' with a prompt template: drop one$"):
        DataOptions(template="alpaca", chat_template="t.jinja")
    assert DataOptions(template="chatml", chat_template="qwen3").chat_template == "qwen3"


def test_the_option_equals_the_template_written_into_the_tokenizer_folder(tmp_path: Path) -> None:
    bundled = tokenizer(None)
    own = bundled.chat_template
    folder = shutil.copytree(Path(bundled.name_or_path), tmp_path / "tok")
    (folder / "chat_template.jinja").write_text(TERSE, encoding="utf-8")
    (tmp_path / "terse.jinja").write_text(TERSE, encoding="utf-8")
    edited = build(ROWS, tokenizer=str(folder))
    swapped = build(ROWS, tokenizer=bundled, chat_template=str(tmp_path / "terse.jinja"))
    assert _rows(swapped) == _rows(edited)
    assert bundled.decode(_rows(swapped)[0][0]).startswith("<|im_start|>system\nBe terse.<|im_end|>")
    assert bundled.chat_template == own  # the tokenizer given was not changed
    assert swapped.report.template == f"chat template {tmp_path / 'terse.jinja'}"


def test_the_option_reaches_a_processor_folder_with_its_own_template(tmp_path: Path) -> None:
    """A model folder's chat_template.jinja gives way to the option, as it does to an edit of that file."""
    source = ROOT / "examples" / "media"
    processor = shutil.copytree(source / "qwen2-vl", tmp_path / "qwen2-vl", ignore=shutil.ignore_patterns(".gitignore"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(TOKENIZERS / "qwen2.5-instruct" / name, processor / name)
    shutil.copyfile(source / "chart.png", tmp_path / "chart.png")
    rows = [{"messages": [{"role": "user", "content": [{"type": "image", "image": str(tmp_path / "chart.png")}, {"type": "text", "text": "What?"}]},
                          {"role": "assistant", "content": "A chart."}]}]  # fmt: skip
    template = (processor / "chat_template.jinja").read_text().replace("You are a helpful assistant.", "Be terse.")
    (tmp_path / "terse.jinja").write_text(template, encoding="utf-8")
    swapped = build(rows, processor=str(processor), chat_template=str(tmp_path / "terse.jinja"))
    (processor / "chat_template.jinja").write_text(template, encoding="utf-8")
    edited = build(rows, processor=str(processor))
    assert _rows(swapped) == _rows(edited) and swapped.dataset["media"] == edited.dataset["media"]
    assert "Be terse." in tokenizer("qwen2.5-instruct").decode(_rows(swapped)[0][0])


def test_build_json_records_the_template_and_a_config_file_names_it_relative_to_itself(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "terse.jinja").write_text(TERSE, encoding="utf-8")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "conf" / "build.yaml").write_text(f"data: {data}\nchat_template: terse.jinja\n")
    result = run("build", "--config", tmp_path / "conf" / "build.yaml", "-o", tmp_path / "out", "--no-cache")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "build.json").read_text())
    declared = [i for i in record["inputs"] if i["kind"] == "chat template"]
    assert declared == [{
        "kind": "chat template", "name": str(tmp_path / "conf" / "terse.jinja"), "sha256": hashlib.sha256(TERSE.encode()).hexdigest(),
        "path": str(tmp_path / "conf" / "terse.jinja"),
    }]  # fmt: skip
    assert record["template"] == f"chat template {tmp_path / 'conf' / 'terse.jinja'}"


def test_preview_and_markers_show_the_template(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "terse.jinja").write_text(TERSE, encoding="utf-8")
    shown = run("preview", data, "--chat-template", tmp_path / "terse.jinja", "--json")
    assert shown.exit_code == 0, shown.output
    header, record = (json.loads(line) for line in shown.stdout.splitlines()[:2])
    assert header["template"] == f"chat template {tmp_path / 'terse.jinja'}"
    assert "Be terse." in json.dumps(record)
    probed = run("markers", "--chat-template", "llama3", "--json")
    assert probed.exit_code == 0, probed.output
    found = json.loads(probed.stdout)
    assert (found["chat_template"], found["assistant_header"], found["eot"]) == (
        "llama3", "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"
    )  # fmt: skip
    unknown = run("markers", "--chat-template", "nope")
    assert unknown.exit_code == 2 and re.match(r"error: unknown chat template 'nope': give a \.jinja file", unknown.stderr)
