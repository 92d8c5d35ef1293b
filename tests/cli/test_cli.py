"""The `ftdata` CLI, through Typer's runner (exact exit codes) and, for the script itself, a subprocess."""

from __future__ import annotations

import hashlib
import re
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support import DATASETS, TOKENIZERS, tokenizer
from ftdata.io import resources
from ftdata.cli.app import app

ALPACA = DATASETS / "alpaca" / "llamafactory_alpaca_en_demo.json"
SHAREGPT = DATASETS / "sharegpt" / "fastchat_dummy_conversation.json"
MESSAGES = DATASETS / "messages" / "llamafactory_v1_sft_demo.jsonl"
TOY_CHAT = DATASETS / "messages" / "openai_cookbook_toy_chat_fine_tuning.jsonl"
LAMINI_NESTED = DATASETS / "lamini" / "lamini_docs_nested.jsonl"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

_LOADED: dict[str, object] = {}


@pytest.fixture(autouse=True)
def cached_tokenizers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Load each tokenizer once per session (the CLI calls `resources.load_tokenizer` per command)."""
    real = resources.load_tokenizer

    def load(spec=None, **kwargs):
        if spec is not None and not isinstance(spec, str) or kwargs.get("trust_remote_code"):
            return real(spec, **kwargs)
        key = "smollm2" if resources.is_bundled(spec) else str(spec)
        if key not in _LOADED:
            _LOADED[key] = real(spec, **kwargs)
        return _LOADED[key]

    monkeypatch.setattr(resources, "load_tokenizer", load)


def run(*args: str | Path) -> object:
    """Invoke the CLI; stdout and stderr are kept apart."""
    return CliRunner().invoke(app, [str(a) for a in args])


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, rows: list[dict]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


# --- preview -----------------------------------------------------------------------------------


def test_preview_alpaca_shows_records_with_trained_text_marked() -> None:
    result = run("preview", ALPACA, "-n", "2")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "template   chat template  (mask=all_assistant, max_length=2048)" in out
    markers = "markers    user '<|im_start|>user\\n'  assistant '<|im_start|>assistant\\n'  end-of-turn '<|im_end|>'"
    assert markers in out
    assert "warning    template injects a default system prompt when none is given" in out
    assert f"── record 1 · {ALPACA}[0] · instruction · " in out
    assert f"── record 2 · {ALPACA}[1] · instruction · 51 tokens = 45 prompt + 6 response; 6 trained" in out
    assert "⟦The car accelerated rapidly.<|im_end|>⟧" in out
    assert "record 3" not in out


def test_preview_sharegpt_trains_every_assistant_turn() -> None:
    result = run("preview", SHAREGPT, "-n", "1", "--tokenizer", TOKENIZERS / "llama-3-8b-instruct")
    assert result.exit_code == 0, result.output
    assert f"── record 1 · {SHAREGPT}[0] · sharegpt · " in result.stdout
    assert "⟦You too!<|eot_id|>⟧" in result.stdout
    record = result.stdout.split("── record 1")[1]
    assert record.count("⟦") == 2  # two assistant turns, each with its end-of-turn marker
    assert "note: role 'gpt' mapped to 'assistant'" in result.stdout


def test_preview_lamini_nested_with_prompt_template() -> None:
    result = run("preview", LAMINI_NESTED, "-n", "2", "--template", "question-answer")
    assert result.exit_code == 0, result.output
    assert "template   question-answer" in result.stdout
    assert f"── record 2 · {LAMINI_NESTED}:2 · instruction · " in result.stdout
    assert "### Question:\nWhat is the recommended way to set up and configure the code repository?" in result.stdout


def test_preview_json_is_one_object_per_line_and_consistent() -> None:
    result = run("preview", MESSAGES, "-n", "2", "--offset", "5", "--json", "--tokens")
    assert result.exit_code == 0, result.output
    header, *records = [json.loads(line) for line in result.stdout.splitlines()]
    assert header["type"] == "header" and header["template"] == "chat template"
    assert header["markers"]["eot"] == "<|im_end|>"
    assert [r["location"] for r in records] == [f"{MESSAGES}:6", f"{MESSAGES}:7"]
    first = records[0]
    assert first["format"] == "messages"
    assert first["text"] == "".join(s["text"] for s in first["segments"])
    trained_text = "".join(s["text"] for s in first["segments"] if s["trained"])
    assert trained_text == "I am {{name}}, an AI assistant trained by {{author}}.<|im_end|>"
    assert first["counts"]["tokens"] == len(first["tokens"])
    assert first["counts"]["trained"] == sum(t["label"] != -100 for t in first["tokens"])
    assert "".join(t["text"] for t in first["tokens"] if t["label"] != -100) == trained_text
    # the default system prompt and the headers come from the template, not from the record
    template_text = "".join(s["text"] for s in first["segments"] if s["template"])
    assert "You are a helpful AI assistant named SmolLM" in template_text
    assert "Can you introduce yourself?" not in template_text


def test_preview_tokens_table() -> None:
    result = run("preview", ALPACA, "-n", "1", "--offset", "1", "--tokens", "--template", "alpaca")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.split() == ["#", "id", "token", "label"]) :]
    assert table[1].split() == ["0", "19798", "Below", "-100"]
    last = table[-1].split()
    assert last[2] == "<|im_end|>" and last[3] == last[1]  # EOS is trained: label == id


def test_preview_shows_problems_and_truncation_per_record() -> None:
    result = run("preview", TOY_CHAT, "-n", "5", "--max-length", "512")
    assert result.exit_code == 0, result.output
    problem = "PROBLEM (format): assistant turn before any user turn; add the user message"
    assert f"── record 4 · {TOY_CHAT}:4 · {problem}" in result.stdout
    too_long = "response too long: the response alone is 8001 tokens > max_length 512 (record dropped)"
    assert f"note: --truncation keep_response: {too_long}" in result.stdout


def test_preview_reads_only_the_records_it_shows(tmp_path: Path) -> None:
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(3)]
    data = write(tmp_path / "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    assert run("preview", data, "-n", "3").exit_code == 0
    result = run("preview", data, "-n", "4")
    assert result.exit_code == 3
    reason = "invalid JSON: Expecting property name enclosed in double quotes; each line must be one JSON object"
    assert result.stderr == f"error: {data}:4:2: {reason}\n"


def test_preview_mask_and_system_prompt_flags(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "chat.jsonl", [{"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "again"}, {"role": "assistant", "content": "sure"},
    ]}])  # fmt: skip
    result = run("preview", data, "--mask", "last_assistant", "--system-prompt", "Be brief.", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.splitlines()[1])
    assert "".join(s["text"] for s in record["segments"] if s["trained"]) == "sure<|im_end|>"
    assert "<|im_start|>system\nBe brief.<|im_end|>" in record["text"]
    assert record["counts"]["response"] > record["counts"]["trained"]  # "yo" is a response, but not trained


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "code", "message"),
    [
        ("bad.json", '[{"instruction": "a", "output": "b"},\n {"instruction": "c" "output": "d"}]', 3,
         "bad.json:2:22: invalid JSON: Expecting ',' delimiter"),
        ("mid.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "c", output: "d"}\n', 3,
         "mid.jsonl:2:22: invalid JSON"),
        ("missing.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n', 4,
         "missing.jsonl:2: field 'output': no response field"),
        ("data.xml", "<a>hello</a>\n", 3, "data.xml: unknown file type '.xml'"),
        ("blank.txt", "\n\n", 3, "blank.txt: file is empty; expected one document per line"),
        ("empty.jsonl", "", 3, "empty.jsonl: file is empty"),
    ],
)  # fmt: skip
def test_input_errors_are_one_line_with_the_error_exit_code(
    tmp_path: Path, name: str, content: str, code: int, message: str
) -> None:
    data = write(tmp_path / name, content)
    for command in (["preview", data, "-n", "5"], ["build", data, "-o", tmp_path / "out", "--no-cache"]):
        result = run(*command)
        assert result.exit_code == code, result.output
        assert result.stderr.startswith(f"error: {tmp_path}/{message}")
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_unknown_template_and_missing_file(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "b"}])
    result = run("preview", data, "--template", "nope")
    assert result.exit_code == 5
    builtins = "alpaca, instruction-response, question-answer"
    assert result.stderr.startswith(f"error: unknown template 'nope'; built-ins are {builtins}")
    result = run("stats", tmp_path / "nope.json")
    assert (result.exit_code, result.stderr) == (3, f"error: {tmp_path}/nope.json: no such file or folder\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--packing", "--padding", "max_length"], "packing and --padding max_length conflict"),
        (["--no-cache", "--cache-dir", "x"], "--no-cache and --cache-dir x conflict: drop one"),
        (["--mask", "bogus"], "--mask must be one of all_assistant, last_assistant, train_on_prompt; got --mask bogus"),
        (["--test-size", "lots"], "--test-size takes a count (200) or a fraction (0.1); got 'lots'"),
        (["--columns", "output"], "--columns takes KEY=VALUE pairs"),
        (["--output-format", "csv"], "output_format must be one of arrow, parquet, jsonl, got output_format='csv'"),
    ],
)
def test_conflicting_or_bad_options_exit_2_before_any_work(tmp_path: Path, args: list[str], message: str) -> None:
    data = jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "b"}])
    result = run("build", data, "-o", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {message}")
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    from ftdata.errors import ReaderError

    result = run("--debug", "preview", tmp_path / "nope.json")
    assert result.exit_code == 1
    assert isinstance(result.exception, ReaderError)


def test_script_prints_one_line_and_exits_with_the_code(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("ftdata")
    proc = subprocess.run([script, "preview", tmp_path / "nope.json"], capture_output=True, text=True, timeout=300)
    expected = (3, "", f"error: {tmp_path}/nope.json: no such file or folder\n")
    assert (proc.returncode, proc.stdout, proc.stderr) == expected


def test_preview_startup_imports_no_torch() -> None:
    """`ftdata preview` with the bundled tokenizer must not pay for importing torch (~2 s)."""
    code = (
        "import sys, ftdata.cli.app; from ftdata.io.resources import load_tokenizer; from ftdata.run.stage import Stage; "
        "from ftdata.options import DataOptions; Stage(load_tokenizer(None), DataOptions()); "
        "print(sorted(m for m in ('torch', 'datasets', 'matplotlib') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert proc.stdout.strip() == "[]"


# --- stats -------------------------------------------------------------------------------------


def test_stats_numbers_on_a_small_file(tmp_path: Path, smol) -> None:
    from ftdata.chat.prompt_templates import load_prompt_template

    rows = [
        {"instruction": "Say hi.", "output": "Hi!"},
        {"instruction": "Count to five.", "output": "One, two, three, four, five."},
        {"instruction": "Name a colour.", "input": "Pick a warm one.", "output": "Red."},
        {"instruction": "Summarize: " + "the cat sat on the mat. " * 12, "output": "A cat sat."},
    ]
    data = jsonl(tmp_path / "d.jsonl", rows)
    template = load_prompt_template("alpaca")
    rendered = [template.render(instruction=r["instruction"], input=r.get("input", "")) for r in rows]
    prompts = [len(smol(text)["input_ids"]) for text in rendered]
    totals = [len(smol(text + r["output"] + smol.eos_token)["input_ids"]) for text, r in zip(rendered, rows)]
    max_length = sorted(totals)[-2]  # only the longest record does not fit

    result = run("stats", data, "--template", "alpaca", "--max-length", max_length, "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert (stats["records"], stats["examples"], stats["tokens"]) == (4, 4, sum(totals))
    assert stats["lengths"]["prompt"]["max"] == max(prompts)
    longest = max(totals)
    mean = round(sum(totals) / 4, 1)
    expected_total = {"p50": sorted(totals)[1], "p90": longest, "p99": longest, "max": longest, "mean": mean}
    assert stats["lengths"]["total"] == expected_total
    assert stats["trained_tokens"] == sum(t - p for t, p in zip(totals, prompts))
    policies = {p["policy"]: p for p in stats["truncation_policies"]}
    assert policies["drop"] == {"policy": "drop", "fit": 3, "cut": 0, "dropped": 1, "lost": totals[3] - prompts[3]}
    # the long record has a long prompt and a short response
    response = totals[3] - prompts[3]
    assert policies["keep_response"] == {"policy": "keep_response", "fit": 3, "cut": 1, "dropped": 0, "lost": 0}
    assert policies["keep_end"] == {"policy": "keep_end", "fit": 3, "cut": 1, "dropped": 0, "lost": 0}
    cut_off = totals[3] - max_length  # keep_start cuts the end, where the response is
    assert policies["keep_start"]["lost"] == min(response, cut_off)
    assert policies["keep_start"]["dropped"] == (cut_off >= response)
    epoch = stats["epoch"]
    assert epoch["sequences"] == 4 and epoch["tokens"] == sum(totals[:3]) + max_length
    assert epoch["packing"]["slots"] == epoch["packing"]["rows"] * max_length


def test_stats_terminal_plot_and_html(tmp_path: Path) -> None:
    data = EXAMPLES / "data" / "alpaca_en_demo_20.json"
    result = run("stats", data, "--max-length", "256", "--plot", tmp_path / "p.png", "--html", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "records       20 read, 20 examples measured (instruction 20)" in out
    assert "tokens per example  p50" in out and "truncation at 256" in out and "keep_response (configured)" in out
    assert "packing       fill " in out
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and "src='http" not in html and "<h2>Truncation</h2>" in html


def test_stats_limit_and_problems(tmp_path: Path) -> None:
    result = run("stats", TOY_CHAT, "--limit", "4", "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert (stats["records"], stats["examples"]) == (4, 3)
    assert stats["problems"] == {"assistant_first": 1}


# --- build -------------------------------------------------------------------------------------


def test_build_writes_outputs_and_reuses_the_cache(tmp_path: Path) -> None:
    data = EXAMPLES / "data" / "alpaca_en_demo_20.json"
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ("build", data, "-o", out, "--cache-dir", cache, "--template", "alpaca", "--max-length", "256")
    args = (*args, "--packing", "--test-size", "4")
    first = run(*args)
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("built ")
    assert sorted(p.name for p in out.iterdir()) == [".ftdata-output.json", ".ftdata.lock", "build.json", "dataset", "rejects.jsonl"]
    assert json.loads((out / ".ftdata-output.json").read_text())["files"] == ["build.json", "dataset", "rejects.jsonl"]
    manifest = json.loads((out / "build.json").read_text())
    assert manifest["counts"]["records"] == 20 and manifest["counts"]["cached"] is False
    assert manifest["options"]["max_length"] == 256 and manifest["options"]["packing"] is True
    assert [(i["kind"], i["name"]) for i in manifest["inputs"]] == [("data", str(data)), ("template", "alpaca"), ("tokenizer", str(tokenizer(None).name_or_path))]
    assert manifest["inputs"][0]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert set(manifest["versions"]) == {"ftdata", "transformers", "tokenizers", "datasets"}
    rejects = (out / "rejects.jsonl").read_text()
    counts = manifest["counts"]
    assert len(rejects.splitlines()) == sum(counts["rejected"].values()) + sum(counts["cut"].values()) > 0

    second = run(*args)
    assert second.exit_code == 0, second.output
    fingerprint = manifest["fingerprint"]
    assert second.stdout.startswith(
        f"cached: reused build {fingerprint} (5 inputs unchanged: data, template alpaca, tokenizer (3 files)) from {cache / fingerprint} ("
    )
    assert (out / "rejects.jsonl").read_text() == rejects
    assert json.loads((out / "build.json").read_text())["cached"] is True

    import datasets

    ds = datasets.load_from_disk(str(out / "dataset"))
    assert set(ds) == {"train", "test"} and "position_ids" in ds["train"].column_names


def test_build_jsonl_token_view(tmp_path: Path, smol) -> None:
    rows = [{"instruction": "Say hi.", "output": "Hi there!"}, {"instruction": "Say bye.", "output": "Bye!"}]
    data = jsonl(tmp_path / "d.jsonl", rows)
    result = run("build", data, "-o", tmp_path / "out", "--output-format", "jsonl", "--no-cache")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert [r["trained"] for r in rows] == [["Hi there!<|im_end|>"], ["Bye!<|im_end|>"]]
    assert rows[0]["text"] == smol.decode(rows[0]["input_ids"])
    assert json.loads((tmp_path / "out" / "build.json").read_text())["fingerprint"]


def test_build_parquet_from_config_with_flag_override(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("build", "--config", EXAMPLES / "build.yaml", "-o", out, "--no-cache", "--max-length", "1024")
    assert result.exit_code == 0, result.output
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert visible == ["build.json", "rejects.jsonl", "test.parquet", "train.parquet"]
    manifest = json.loads((tmp_path / "out" / "build.json").read_text())
    assert manifest["options"]["max_length"] == 1024  # the flag wins over the YAML's 512
    assert manifest["options"]["template"] == "alpaca" and manifest["output"]["format"] == "parquet"
    data = next(i for i in manifest["inputs"] if i["kind"] == "data")
    assert data["path"] == str((EXAMPLES / "data" / "alpaca_en_demo_20.json").absolute())
    config = next(i for i in manifest["inputs"] if i["kind"] == "config")
    assert config["sha256"] == hashlib.sha256((EXAMPLES / "build.yaml").read_bytes()).hexdigest()


def test_build_refuses_a_folder_with_other_files(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    write(tmp_path / "out" / "notes.txt", "mine")
    result = run("build", EXAMPLES / "data" / "alpaca_en_demo_20.json", "-o", tmp_path / "out", "--no-cache")
    assert result.exit_code == 2
    assert "holds files that ftdata did not write (notes.txt)" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["notes.txt"]  # nothing added either


@pytest.mark.parametrize("command", ["stats", "preview", "build"])
def test_a_build_output_given_as_data_is_named_as_one(tmp_path: Path, command: str) -> None:
    out = tmp_path / "out"
    assert run("build", EXAMPLES / "data" / "alpaca_en_demo_20.json", "-o", out, "--no-cache", "--output-format", "jsonl").exit_code == 0
    args = ("-o", tmp_path / "again", "--no-cache") if command == "build" else ()
    result = run(command, out, *args)
    assert result.exit_code == 3
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {out}: is the output of ftdata build (build.json, rejects.jsonl), not data to read; train on it with "
        f"`ftdata train {out}`, load it with ftdata.load({str(out)!r}), or give the data it was built from"
    )


def test_prepare_reports_progress_per_chunk() -> None:
    from ftdata import prepare

    calls: list[int] = []
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(7)]
    prepare(rows, tokenizer=tokenizer(None), batch_size=3, filter="instruction != 'q6'", progress=calls.append)
    assert calls == [3, 3, 1]  # two chunks of 3, then the record the filter dropped


# --- config ------------------------------------------------------------------------------------


def test_config_values_flags_and_unknown_keys(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "d.jsonl", [{"question": "q?", "answer": "a."}])
    write(tmp_path / "c.yaml", "data: d.jsonl\ntemplate: question-answer\nmax_length: 300\n")
    result = run("preview", "--config", tmp_path / "c.yaml", "--max-length", "200")
    assert result.exit_code == 0, result.output
    assert f"source     {data}" in result.stdout
    assert "template   question-answer  (mask=all_assistant, max_length=200)" in result.stdout
    write(tmp_path / "bad.yaml", "max_lenght: 3\n")
    result = run("stats", data, "--config", tmp_path / "bad.yaml")
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path}/bad.yaml: unknown key 'max_lenght' (did you mean max_length?)\n"


# --- markers, templates, version ---------------------------------------------------------------


def test_markers_of_a_shared_tokenizer() -> None:
    result = run("markers", "--tokenizer", TOKENIZERS / "qwen2.5-instruct", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    markers = (found["user_header"], found["assistant_header"], found["eot"])
    assert markers == ("<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>")
    assert found["default_system"].startswith("<|im_start|>system\nYou are Qwen")
    table = run("markers", "--tokenizer", TOKENIZERS / "gemma-3-it")
    assert table.exit_code == 0
    assert "'<start_of_turn>model\\n'" in table.stdout and re.search(r"│ system_support +│ 'folded'", table.stdout)
    assert "warning: template has no system role: a system message is folded into the first user turn" in table.stdout


def test_templates_lists_builtins_with_examples() -> None:
    result = run("templates")
    assert result.exit_code == 0
    for name in ("alpaca", "instruction-response", "question-answer"):
        assert f"{name} ─" in result.stdout
    example_input = "ftdata turns instruction files into masked token datasets."
    assert f"### Input:\n{example_input}\n\n### Response:\n⟦<response><eos>⟧" in result.stdout


def test_version() -> None:
    from ftdata import __version__

    result = run("--version")
    assert (result.exit_code, result.stdout) == (0, f"ftdata {__version__}\n")


def test_colour_output_marks_trained_masked_and_template_text() -> None:
    import io

    from rich.console import Console

    from ftdata.cli import preview
    from ftdata.options import DataOptions
    from ftdata.run.stage import Stage

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="standard")
    printer = preview.Printer(console, as_json=False, show_tokens=False)
    stage = Stage(tokenizer(None), DataOptions())
    records = [{"instruction": "Name a colour.", "output": "Red."}]
    assert preview.show_window(preview.SFT_WINDOW, records, stage, offset=0, n=3, printer=printer, tokenizer="smol") == 1
    text = out.getvalue()
    assert "\x1b[30;42mRed.\x1b[0m\x1b[3;30;42m<|im_end|>\x1b[0m" in text  # trained: green; the EOT is template text
    assert "\x1b[2mName a colour.\x1b[0m" in text  # masked record text: dim
    assert "\x1b[3;36m<|im_start|>assistant\x1b[0m\n" in text  # template text: cyan italic
    assert "template   chat template  (mask=all_assistant, max_length=2048)" in text  # no highlighting
    assert "⟦" not in text


def test_bundled_tokenizer_fast_path_equals_auto_tokenizer() -> None:
    """`load_tokenizer` skips AutoTokenizer (and torch) for a plain TokenizersBackend folder: same tokenizer."""
    from transformers import AutoTokenizer

    fast = tokenizer(None)
    auto = AutoTokenizer.from_pretrained(fast.name_or_path, local_files_only=True)
    assert type(auto) is type(fast)
    text = "Hello  world!\n\nA test. 你好 <|im_start|>  ok<|im_end|>"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    for tok in (fast, auto):
        assert tok(text)["input_ids"] == fast(text)["input_ids"]
        assert tok.apply_chat_template(messages, tokenize=False) == fast.apply_chat_template(messages, tokenize=False)
        assert (tok.bos_token, tok.eos_token, tok.pad_token) == (fast.bos_token, fast.eos_token, fast.pad_token)
