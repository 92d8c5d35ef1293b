"""What a new user's command line does: help, usage errors, pipes, encodings, colour, spelling,
and the checks a pipeline relies on (exit codes, --json, --max-reject-ratio)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support import DATASETS, ROOT, TOKENIZERS
from ftdata.cli.app import app

ALPACA20 = ROOT / "examples" / "data" / "alpaca_en_demo_20.json"
GLAIVE = DATASETS / "sharegpt" / "llamafactory_glaive_toolcall_en_demo.json"
ROWS = [{"instruction": f"Say {w}.", "output": f"{w.title()}!"} for w in ("hi", "bye", "yes", "no")]


def run(*args: object, env: dict[str, str] | None = None) -> object:
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def script(*args: object, env: dict[str, str] | None = None, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    """The real `ftdata` script in a subprocess (pipes, encodings and exit codes as a shell sees them)."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "ftdata.cli.app", *map(str, args)], env=environ, capture_output=True, **kwargs)  # type: ignore[call-overload]


# --- usage errors and help ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["preview", "--bogus"], "error: No such option: --bogus"),
        (["preview", "-n", "0", "x.json"], "error: Invalid value for '-n' / '--num'"),
        (["nope"], "error: No such command 'nope'"),
    ],
)
def test_usage_errors_are_one_error_line_with_exit_2(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert "╭" not in result.stderr and "Usage:" not in result.stderr


def test_help_off_a_terminal_is_plain_with_defaults_and_choices() -> None:
    result = run("build", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())  # the help is wrapped at the terminal width
    assert "╭" not in text and "│" not in text
    assert "--mask [all_assistant|last_assistant|train_on_prompt]" in text
    assert "--truncation [keep_response|keep_start|keep_end|split|drop|error]" in text
    assert "[default: 2048]" in text and "[default: keep_response]" in text
    assert "--format [instruction|messages|sharegpt|chat|atif|text|segments|claude_code|codex|pi|nemotron|hermes|openthoughts|glaive|alpaca|openai]" in text


# --- output streams ----------------------------------------------------------------------------


def test_a_closed_pipe_exits_0_quietly() -> None:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "ftdata.cli.app", "preview", str(ALPACA20), "-n", "20", "--tokens"]
    proc = subprocess.Popen(command, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"source")
    proc.stdout.close()  # what `| head -1` does
    errors = proc.stderr.read()
    assert proc.wait() == 0, errors
    assert b"Traceback" not in errors and b"BrokenPipe" not in errors


@pytest.mark.parametrize("command", [["preview", str(ALPACA20), "-n", "2", "--tokens"], ["stats", str(ALPACA20)], ["templates"], ["markers"]])
def test_cp1252_output_falls_back_to_ascii_markers(command: list[str]) -> None:
    result = script(*command, env={"PYTHONIOENCODING": "cp1252"})
    assert result.returncode == 0, result.stderr.decode("cp1252", "replace")
    assert b"Traceback" not in result.stderr
    text = result.stdout.decode("cp1252")
    assert "⟦" not in text
    if command[0] in ("preview", "templates"):
        assert "[[" in text and "]]" in text


def test_cp1252_preview_of_tool_records_and_json_is_ascii() -> None:
    result = script("preview", GLAIVE, "-n", "1", "-t", TOKENIZERS / "qwen2.5-instruct", env={"PYTHONIOENCODING": "cp1252"})
    assert result.returncode == 0, result.stderr
    assert b"{{" in result.stdout and b"((" in result.stdout  # tool schema and tool call markers
    result = script("preview", DATASETS / "chinese" / "llamafactory_alpaca_zh_demo.json", "-n", "1", "--json", env={"PYTHONIOENCODING": "cp1252"})
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.decode("ascii").splitlines()[1])
    assert any("\u4e00" <= c <= "\u9fff" for c in record["text"])  # escaped, not lost


def test_no_color_env_emits_no_ansi_at_all() -> None:
    """On a (pseudo-)terminal, where colour and bold are otherwise on, NO_COLOR turns every code off."""
    import pty

    code = (
        "import os, sys; os.environ['NO_COLOR']='1'; sys.argv=['ftdata','preview',sys.argv[1],'-n','1'];"
        "from ftdata.cli.app import main; main()"
    )
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TERM": "xterm-256color"}
    out = bytearray()
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execve(sys.executable, [sys.executable, "-c", code, str(ALPACA20)], environ)
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, bytes(out)
    assert b"record 1" in out and b"\x1b[" not in out


def test_piped_tables_carry_no_trailing_spaces(tmp_path: Path) -> None:
    for args in (["stats", ALPACA20], ["markers"], ["preview", ALPACA20, "-n", "1", "--tokens"], ["build", ALPACA20, "-o", tmp_path / "b", "--no-cache"]):
        result = run(*args)
        assert result.exit_code == 0, result.output
        trailing = [line for line in result.stdout.splitlines() if line != line.rstrip(" ")]
        assert trailing == [], (args, trailing[:3])


# --- messages in command-line spelling ---------------------------------------------------------


def test_messages_use_flag_spelling_on_the_cli(tmp_path: Path) -> None:
    result = run("preview", jsonl(tmp_path / "d.jsonl", ROWS), "--system-mode", "fold!")
    assert result.exit_code == 2
    assert result.stderr == "error: --system-mode must be one of add, override, fold; got --system-mode 'fold!'\n"
    result = run("preview", ALPACA20, "-n", "1", "-t", TOKENIZERS / "mistral-nemo-instruct-2407", "--system-prompt", "Be brief.", "--history", "one_row")
    assert result.exit_code == 0, result.output
    assert "use --system-mode fold to keep it" in result.stdout and "system_mode=" not in result.stdout


def test_cli_spelling_translates_only_option_values() -> None:
    from ftdata.cli.options import cli_spelling

    assert cli_spelling("use system_mode='fold' to keep it") == "use --system-mode fold to keep it"
    assert cli_spelling("got max_length=-3") == "got --max-length -3"
    assert cli_spelling("use the chat template (template=None)") == "use the chat template (no --template)"
    assert cli_spelling("padding=4 rows to pad") == "padding=4 rows to pad"  # prose, not a value
    assert cli_spelling("output=answer and mask_reasoning=True") == "output=answer and --mask-reasoning"
    assert cli_spelling("write Arrow (output_format='arrow')") == "write Arrow (--output-format arrow)"
    assert cli_spelling("output_format='xml' is none") == "output_format='xml' is none"  # not a format it writes
    assert cli_spelling("(reward_columns={'info': 'skip'})") == "(--reward-columns info=skip)"
    assert cli_spelling("columns={'q': 'question', 'a': 'answer'}") == "--columns q=question --columns a=answer"
    assert cli_spelling("max_length={'a': 1} and reward_columns={}") == "max_length={'a': 1} and reward_columns={}"


# --- builds a pipeline can check ---------------------------------------------------------------


def _mixed(tmp_path: Path) -> Path:
    return jsonl(tmp_path / "d.jsonl", [*ROWS, {"instruction": "x", "output": ""}, {"instruction": "y", "output": " "}])


def test_max_reject_ratio_fails_the_build_after_writing_it(tmp_path: Path) -> None:
    data = _mixed(tmp_path)
    result = run("build", data, "-o", tmp_path / "a", "--no-cache", "--max-reject-ratio", "0.5")
    assert result.exit_code == 0, result.output
    assert "reject ratio    33.3%" in result.stdout
    result = run("build", data, "-o", tmp_path / "b", "--no-cache", "--max-reject-ratio", "0.2")
    assert result.exit_code == 4
    assert result.stderr == (
        "error: 33.3% of the records were rejected (2 of 6), more than --max-reject-ratio 0.2; "
        f"see {tmp_path}/b/rejects.jsonl\n"
    )
    assert (tmp_path / "b" / "rejects.jsonl").read_text().count("\n") == 2  # written, to look at
    assert run("build", data, "-o", tmp_path / "c", "--max-reject-ratio", "2").exit_code == 2


def test_max_reject_ratio_in_the_python_api(tmp_path: Path) -> None:
    from ftdata import build_sft_dataset
    from ftdata.errors import TooManyRejects

    with pytest.warns(UserWarning), pytest.raises(TooManyRejects, match=r"more than max_reject_ratio=0\.1$"):
        build_sft_dataset(_mixed(tmp_path), max_reject_ratio=0.1)


def test_build_json_is_the_build_record(tmp_path: Path) -> None:
    result = run("build", _mixed(tmp_path), "-o", tmp_path / "out", "--no-cache", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["counts"]["records"] == 6 and record["counts"]["rejected"] == {"empty_response": 2}
    assert record["written"][-1] == f"{tmp_path}/out/build.json"
    assert record["fingerprint"] == json.loads((tmp_path / "out" / "build.json").read_text())["fingerprint"]


def test_the_summary_says_a_dropped_system_prompt_once(tmp_path: Path) -> None:
    result = run("build", ALPACA20, "-o", tmp_path / "o", "--no-cache", "-t", TOKENIZERS / "mistral-nemo-instruct-2407", "--system-prompt", "Be brief.", "--history", "one_row")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stdout.splitlines() if line.startswith("note")]
    assert len(notes) == 1 and notes[0].startswith("note            the chat template dropped the system message")


# --- config files and tokenizers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml", "message"),
    [("template: alpaca\nmax_length: 512\n  packing: true\n", ":3:10: invalid YAML: mapping values are not allowed here"),
     ("max_lenght: 512\n", ": unknown key 'max_lenght' (did you mean max_length?)")],
)  # fmt: skip
def test_config_errors_name_the_line_or_the_closest_key(tmp_path: Path, yaml: str, message: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml, encoding="utf-8")
    result = run("preview", ALPACA20, "--config", config)
    assert result.exit_code == 2
    assert result.stderr == f"error: {config}{message}\n"


def test_tokenizer_paths_say_what_is_missing_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def no_hub(*args: object, **kwargs: object) -> object:
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    missing = tmp_path / "nope"
    result = run("markers", "-t", missing)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: tokenizer '{missing}': no such folder; give a folder with tokenizer.json")
    result = run("markers", "-t", "someorg/some-model")
    assert result.exit_code == 2
    assert "no such folder and not a hub id in the local Hugging Face cache (ftdata never downloads)" in result.stderr
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text("{}")
    result = run("markers", "-t", folder)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: tokenizer folder '{folder}' has no tokenizer.json (it holds tokenizer_config.json)")


@pytest.mark.parametrize("name", ["qwen2.5-instruct", "llama-3.2-instruct", "mistral-nemo-instruct-2407"])
def test_tokenizers_loaded_directly_equal_autotokenizers(name: str) -> None:
    from transformers import AutoTokenizer

    from ftdata.io.resources import _tokenizer_class, load_tokenizer

    path = TOKENIZERS / name
    assert _tokenizer_class(path).__name__ != "AutoTokenizer"  # the fast path is taken
    ours, auto = load_tokenizer(path), AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    assert type(ours) is type(auto)
    assert ours.backend_tokenizer.to_str() == auto.backend_tokenizer.to_str()
    for attr in ("bos_token", "eos_token", "pad_token", "chat_template", "all_special_tokens", "model_max_length"):
        assert getattr(ours, attr) == getattr(auto, attr), attr


def test_preview_with_a_real_tokenizer_imports_no_torch() -> None:
    code = (
        "import sys; sys.argv=['ftdata','preview',sys.argv[1],'-n','1','-t',sys.argv[2]];"
        "from ftdata.cli.app import app\ntry: app(prog_name='ftdata')\nexcept SystemExit: pass\n"
        "print('torch' in sys.modules)"
    )
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code, str(ALPACA20), str(TOKENIZERS / "qwen2.5-instruct")], env=environ, capture_output=True, text=True)
    assert result.stdout.splitlines()[-1] == "False", result.stderr


# --- load() ------------------------------------------------------------------------------------


def test_load_prints_no_progress_bars(tmp_path: Path) -> None:
    assert run("build", ALPACA20, "-o", tmp_path / "o", "--no-cache", "--output-format", "jsonl").exit_code == 0
    code = "import sys, ftdata; ftdata.load(sys.argv[1])"
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "o")], env=environ, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""


# --- preview shows what is trained -------------------------------------------------------------


def _segments(args: list[object]) -> list[dict]:
    result = run("preview", *args, "--json")
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in result.stdout.splitlines() if '"type": "record"' in line]
    return record


def test_qwen_tool_schema_span_starts_after_the_system_prompt() -> None:
    record = _segments([GLAIVE, "-n", "1", "-t", TOKENIZERS / "qwen2.5-instruct"])
    (schema,) = [s["text"] for s in record["segments"] if s["kind"] == "tools"]
    assert schema.startswith("\n\n# Tools\n\nYou may call one or more functions")
    assert schema.endswith("</tool_call>")
    before = record["text"][: record["text"].index(schema)]
    assert before.endswith("You are a helpful assistant.")


def test_llama_tool_results_are_marked_and_their_encoding_said_once() -> None:
    from ftdata.cli.preview import RESULTS_ENCODED

    record = _segments([GLAIVE, "-n", "1", "-t", TOKENIZERS / "llama-3.2-instruct"])
    results = [s["text"] for s in record["segments"] if s["kind"] == "result"]
    assert results and results[0].startswith('"{\\"recipes\\": [{\\"name\\"')
    assert RESULTS_ENCODED.to_dict() in record["notes"]
    result = run("preview", GLAIVE, "-n", "3", "-t", TOKENIZERS / "llama-3.2-instruct")
    assert result.exit_code == 0, result.output
    assert result.stdout.count(RESULTS_ENCODED.text) == 1
    assert "⟨\"{\\\"recipes\\\"" in result.stdout


def test_date_warning_goes_when_date_string_pins_it() -> None:
    llama = TOKENIZERS / "llama-3.2-instruct"
    result = run("preview", ALPACA20, "-n", "1", "-t", llama)
    assert "renders change from day to day" in result.stdout
    result = run("preview", ALPACA20, "-n", "1", "-t", llama, "--chat-template-kwargs", '{"date_string": "26 Jul 2024"}')
    assert result.exit_code == 0, result.output
    assert "Today Date: 26 Jul 2024" in result.stdout and "day to day" not in result.stdout


def test_crlf_in_a_csv_field_is_previewed_as_trained(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_bytes(b'instruction,output\r\n"Two lines","first\r\nsecond"\r\n')
    result = run("preview", data, "--template", "alpaca")
    assert result.exit_code == 0, result.output
    assert "⟦first\\r\nsecond<|im_end|>⟧" in result.stdout
    record = _segments([data, "--template", "alpaca"])
    assert "first\r\nsecond" in record["text"]


def test_preformatted_prompts_get_a_note(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "d.jsonl", [{"question": "### Question:\nWhat is 2+2?\n\n### Answer:", "answer": "4"}])
    result = run("preview", data)
    assert result.exit_code == 0, result.output
    assert "note: the prompt already holds a prompt template's '### Question:' header and the template wraps it again" in result.stdout


def test_template_chatml_is_the_tokenizers_own_when_chatml() -> None:
    result = run("preview", ALPACA20, "-n", "1", "--template", "chatml")
    assert result.exit_code == 0, result.output
    assert "template   chat template  (mask=all_assistant" in result.stdout
    result = run("preview", ALPACA20, "-n", "1", "--template", "chatml", "-t", TOKENIZERS / "llama-3.2-instruct")
    assert result.exit_code == 5
    assert "error: --template chatml means the tokenizer's own ChatML chat template, but" in result.stderr
    assert "has a chat template that is not ChatML (no <|im_start|>); ftdata never swaps" in result.stderr


# --- inputs people have, through the CLI -------------------------------------------------------


def test_semicolon_csv_tsv_and_wrapped_json_through_the_cli(tmp_path: Path) -> None:
    semi = tmp_path / "d.csv"
    semi.write_text("instruction;output\nSay hi.;Hi!\n", encoding="utf-8")
    tsv = tmp_path / "d.tsv"
    tsv.write_text("instruction\toutput\nSay hi.\tHi!\n", encoding="utf-8")
    for path in (semi, tsv):
        result = run("preview", path, "--template", "alpaca")
        assert result.exit_code == 0, result.output
        assert "⟦Hi!<|im_end|>⟧" in result.stdout
    wrapped = tmp_path / "w.json"
    wrapped.write_text(json.dumps({"data": ROWS}), encoding="utf-8")
    result = run("preview", wrapped)
    assert result.exit_code == 3
    assert result.stderr == (
        f"error: {wrapped}: the records are wrapped in an object under 'data' ({{'data': [...]}}); read them with --field data\n"
    )
    assert run("preview", wrapped, "--field", "data").exit_code == 0
    assert run("preview", ALPACA20, "--format", "alpaca", "-n", "1").exit_code == 0


def test_zipped_and_text_only_inputs_say_what_to_do(tmp_path: Path) -> None:
    import zipfile

    packed = tmp_path / "d.zip"
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("d.jsonl", '{"instruction": "a", "output": "b"}\n')
    result = run("preview", packed, "--reader", "jsonl")
    assert result.exit_code == 3
    assert result.stderr == (
        f"error: {packed}: a zip archive holds files, not one stream of records; unzip it (`unzip d.zip`) "
        "and pass the file or the folder it holds\n"
    )
    text = jsonl(tmp_path / "t.jsonl", [{"body": "Once upon a time."}])
    result = run("preview", text)
    assert result.exit_code == 4
    assert f"error: {text}:1: field 'instruction': no instruction field" in result.stderr
