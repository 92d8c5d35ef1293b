"""Hostile inputs and faults (issue 10): no data loss, no foreign code, no network, no hang,
no traceback, nothing lost silently. Each test reproduces one finding; `test_hostile_corpus`
feeds a set of hostile files through `ftdata build` and checks the promises all at once.

Concurrency and signal tests run the CLI in subprocesses (tests/guard/test_hostile_procs.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftdata.cli.app import app
from ftdata.io.resources import bundled_tokenizer_dir

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ALPACA20 = EXAMPLES / "data" / "alpaca_en_demo_20.json"
ROWS = [{"instruction": f"Say {w}.", "output": f"{w.title()}!"} for w in ("hi", "bye", "yes", "no")]


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test (ftdata must never reach the network)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r:.80}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(autouse=True)
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTDATA_RENDER_TIMEOUT", "0.5")
    monkeypatch.setenv("FTDATA_FILTER_TIMEOUT", "0.5")
    monkeypatch.setenv("FTDATA_RENDER_MAX_CHARS", "1000000")
    monkeypatch.setenv("FTDATA_PAD_MAX_BYTES", "100000000")


def run(*args: object, input: str | None = None) -> object:
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def digest(path: Path) -> str:
    if path.is_dir():
        return hashlib.sha256(b"".join(digest(p).encode() for p in sorted(path.rglob("*")) if p.is_file())).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line_error(result: object, code: int, match: str) -> str:
    """The run failed with exit `code` and exactly one `error:` line containing `match`; no traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)  # type: ignore[attr-defined]
    assert result.exit_code == code, (result.exit_code, result.output)  # type: ignore[attr-defined]
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]
    assert match in lines[0], lines[0]
    return lines[0]


# --- data loss ---------------------------------------------------------------------------------


def test_out_containing_the_input_is_refused_and_the_input_kept(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    data = jsonl(folder / "train.jsonl", ROWS)
    before = digest(data)
    one_line_error(run("build", data, "-o", folder, "--no-cache"), 2, "contains the input")
    assert digest(data) == before and sorted(p.name for p in folder.iterdir()) == ["train.jsonl"]


def test_out_with_a_foreign_dataset_folder_is_not_replaced(tmp_path: Path) -> None:
    mine = tmp_path / "d" / "dataset"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my own work")
    one_line_error(run("build", ALPACA20, "-o", tmp_path / "d", "--no-cache"), 2, "ftdata did not write (dataset)")
    assert (mine / "notes.txt").read_text() == "my own work"


def test_rejects_path_equal_to_the_input_is_refused(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "k.jsonl", ROWS)
    before = digest(data)
    one_line_error(run("build", data, "-o", tmp_path / "out", "--rejects-path", data, "--no-cache"), 2, "is the input")
    assert digest(data) == before


def test_rejects_path_never_replaces_a_file_ftdata_did_not_write(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "k.jsonl", ROWS)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a rejects file\n")
    one_line_error(run("build", data, "-o", tmp_path / "out", "--rejects-path", notes, "--no-cache"), 2, "not an ftdata rejects file")
    assert notes.read_text() == "not a rejects file\n"


def test_a_failed_build_keeps_the_previous_outputs(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "d.jsonl", ROWS)
    out = tmp_path / "out"
    assert run("build", data, "-o", out, "--no-cache", "--template", "alpaca").exit_code == 0
    before = digest(out / "dataset")
    jsonl(tmp_path / "bad.jsonl", [{"instruction": "x"}])
    assert run("build", tmp_path / "bad.jsonl", "-o", out, "--no-cache").exit_code == 4
    assert digest(out / "dataset") == before
    assert not [p for p in out.iterdir() if p.name.startswith(".ftdata-tmp-")]


# --- code execution ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["preview", "stats", "build"])
def test_a_yaml_reader_cannot_run_code(tmp_path: Path, command: str) -> None:
    marker = tmp_path / "ran"
    config = tmp_path / "evil.yaml"
    config.write_text(f'reader: os:system\ndata: "touch {marker}; echo a.jsonl"\noutput: {tmp_path / "out"}\n')
    one_line_error(run(command, "--config", config), 2, "--allow-code")
    assert not marker.exists()


def test_a_code_reader_runs_only_with_allow_code_and_fails_in_one_line(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "a.jsonl", ROWS)
    one_line_error(run("preview", data, "--reader", "json:loads"), 2, "--allow-code")
    one_line_error(run("preview", data, "--reader", "json:loads", "--allow-code"), 3, "reader 'json:loads' failed: TypeError")


def _evil_tokenizer(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "evil"
    shutil.copytree(bundled_tokenizer_dir(), folder)
    marker = tmp_path / "pwned"
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="EvilTokenizer", auto_map={"AutoTokenizer": [None, "evil_tok.EvilTokenizer"]})
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "evil_tok.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PreTrainedTokenizerFast\nclass EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )
    return folder, marker


def test_tokenizer_code_is_never_run_without_trust_remote_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, marker = _evil_tokenizer(tmp_path)
    monkeypatch.setattr("builtins.input", lambda *a: "y")  # a user who answers transformers' prompt with y
    one_line_error(run("markers", "--tokenizer", folder), 2, "--trust-remote-code")
    one_line_error(run("preview", ALPACA20, "--tokenizer", folder), 2, "ships its own Python code")
    assert not marker.exists()


# --- network -------------------------------------------------------------------------------------


def test_a_mistyped_file_path_is_not_a_hub_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    started = time.monotonic()
    one_line_error(run("preview", "sub/file.jsonl"), 3, "sub/file.jsonl: no such file or folder")
    assert time.monotonic() - started < 60  # a guard against a hang, with slack for a loaded machine
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"


def test_a_hub_id_not_in_the_cache_says_ftdata_never_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    one_line_error(run("preview", "nobody/nothing"), 3, "nobody/nothing")


# --- bookkeeping under faults ---------------------------------------------------------------------


def _many_rejects(tmp_path: Path, n: int = 30) -> Path:
    rows = [{"instruction": f"q{i}", "output": ""} for i in range(n)] + ROWS
    return jsonl(tmp_path / "many.jsonl", rows)


def test_prepare_with_cache_dir_keeps_every_reject(tmp_path: Path) -> None:
    from ftdata import prepare

    data, cache = _many_rejects(tmp_path), tmp_path / "cache"
    first = prepare(str(data), template="alpaca", cache_dir=str(cache))  # no rejects_path
    assert first.report.n_rejected == 30 and not first.report.cached
    again = prepare(str(data), template="alpaca", cache_dir=str(cache), rejects_path=str(tmp_path / "r.jsonl"))
    assert again.report.cached
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 30  # not the 20 samples


def test_a_cache_entry_with_a_cut_rejects_file_is_rebuilt(tmp_path: Path) -> None:
    from ftdata import prepare

    data, cache = _many_rejects(tmp_path), tmp_path / "cache"
    first = prepare(str(data), template="alpaca", cache_dir=str(cache))
    entry = cache / first.report.fingerprint
    lines = (entry / "rejects.jsonl").read_text().splitlines()
    (entry / "rejects.jsonl").write_text("\n".join(lines[:5]) + "\n")  # a kill mid-copy
    again = prepare(str(data), template="alpaca", cache_dir=str(cache), rejects_path=str(tmp_path / "r.jsonl"))
    assert not again.report.cached
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 30
    assert len((entry / "rejects.jsonl").read_text().splitlines()) == 30


def test_an_entry_from_before_completeness_markers_is_ignored(tmp_path: Path) -> None:
    from ftdata import prepare

    data, cache = _many_rejects(tmp_path), tmp_path / "cache"
    first = prepare(str(data), template="alpaca", cache_dir=str(cache))
    (cache / first.report.fingerprint / "complete.json").unlink()
    assert not prepare(str(data), template="alpaca", cache_dir=str(cache)).report.cached


def test_the_cache_key_follows_the_content_not_size_and_mtime(tmp_path: Path) -> None:
    from ftdata.guard.inputs import Digests, data_input

    data = jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "b"}])
    st = data.stat()
    files = Digests(tmp_path / "index.sqlite")
    before = data_input(str(data), files)
    data.write_text(data.read_text().replace('"b"', '"c"'))  # same size
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
    assert data.stat().st_size == st.st_size
    assert data_input(str(data), files).digest != before.digest


def test_stale_scratch_of_a_dead_run_is_removed(tmp_path: Path) -> None:
    import fcntl

    from ftdata.guard import safeio

    stale, live = tmp_path / "ftdata-1-dead0000", tmp_path / "ftdata-2-live0000"  # named and marked as ftdata makes them
    for folder in (stale, live):
        folder.mkdir()
        (folder / "rows.arrow").write_bytes(b"x" * 100)
        (folder / safeio.SCRATCH_MARK).write_bytes(safeio.SCRATCH_TEXT)
    with open(live / safeio.SCRATCH_MARK) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert safeio.clean_stale_scratch(tmp_path) == 1
    assert not stale.exists() and live.exists()


# --- silent loss -----------------------------------------------------------------------------------


def test_a_csv_row_with_extra_fields_is_rejected_not_cut(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("instruction,output\nq,a, b\nq2,a2\n")
    one_line_error(run("build", data, "-o", tmp_path / "out", "--no-cache", "--template", "alpaca"), 4, f"{data}:2")
    result = run("build", data, "-o", tmp_path / "out", "--no-cache", "--template", "alpaca", "--on-error", "skip")
    assert result.exit_code == 0, result.output
    reject = json.loads((tmp_path / "out" / "rejects.jsonl").read_text())
    assert reject["location"] == f"{data}:2" and "has 3 fields but the header has 2" in reject["reason"]


def test_a_folder_of_mixed_files_reads_every_file_with_file_line_locations(tmp_path: Path) -> None:
    from ftdata.io.readers import read_records

    folder = tmp_path / "mixed"
    folder.mkdir()
    jsonl(folder / "a.jsonl", ROWS[:2])
    (folder / "c.csv").write_text("instruction,output\nq,a\n")
    rows = list(read_records(str(folder)))
    assert [str(loc) for loc, _ in rows] == [f"{folder}/a.jsonl:1", f"{folder}/a.jsonl:2", f"{folder}/c.csv:2"]


def test_a_folder_with_a_file_ftdata_cannot_read_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    jsonl(folder / "a.jsonl", ROWS)
    (folder / "b.xlsx").write_text("q\ta\n")
    one_line_error(run("preview", folder), 3, "cannot read (b.xlsx)")


def test_an_error_in_a_folder_names_the_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    jsonl(folder / "train.jsonl", [*ROWS, {"instruction": "x"}])
    one_line_error(run("build", folder, "-o", tmp_path / "out", "--no-cache"), 4, f"{folder}/train.jsonl:5")


def test_duplicate_json_keys_with_different_values_are_a_located_error(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "q", "output": "first", "output": "second"}\n')
    one_line_error(run("preview", data), 4, f"{data}:1: field 'output': key 'output' appears twice")


# --- tracebacks become one line ------------------------------------------------------------------------


def test_json_nested_100k_deep_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "deep.jsonl"
    data.write_text('{"instruction": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    one_line_error(run("preview", data), 4, f"{data}:1: is nested too deeply")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    one_line_error(run("preview", deep), 3, f"{deep}")
    # build counts records for its progress bar before reading: that count must not raise either
    one_line_error(run("build", deep, "-o", tmp_path / "out"), 3, f"{deep}: is nested too deeply")


def test_a_lone_surrogate_is_rejected_and_skippable(tmp_path: Path) -> None:
    data = tmp_path / "s.jsonl"
    data.write_text('{"instruction": "bad \\ud800 here", "output": "x"}\n' + json.dumps(ROWS[0]) + "\n")
    one_line_error(run("build", data, "-o", tmp_path / "out", "--no-cache"), 4, f"{data}:1: field 'instruction': holds a lone UTF-16 surrogate")
    result = run("build", data, "-o", tmp_path / "out", "--no-cache", "--on-error", "skip")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "rejects.jsonl").read_text())["location"] == f"{data}:1"


def test_corrupt_parquet_is_one_line(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "d.parquet"
    pq.write_table(pa.table({"instruction": ["q" * 50] * 500, "output": ["a" * 50] * 500}), data, compression="none")
    raw = bytearray(data.read_bytes())
    raw[200:4000] = b"\xff" * 3800  # the column pages, not the footer
    data.write_bytes(bytes(raw))
    one_line_error(run("preview", data), 3, str(data))


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (("--max-length", "100000000", "--padding", "max_length"), "padding=4 rows to --max-length 100000000 needs 3.4 GiB"),
        (("--test-size", "0.99"), "--test-size 0.99 of 4 records leaves 0 for training"),
        (("--seed", "-1", "--shuffle"), "--seed must be an integer in [0, 2**32), got --seed -1"),
    ],
)
def test_option_values_that_crashed_are_one_line(tmp_path: Path, flags: tuple[str, ...], match: str) -> None:
    data = jsonl(tmp_path / "d.jsonl", ROWS)
    one_line_error(run("build", data, "-o", tmp_path / "out", "--no-cache", "--template", "alpaca", *flags), 2, match)


@pytest.mark.parametrize(
    ("yaml", "match"),
    [
        ("template: 123\n", "template must be a string, got int 123"),
        ("seed: abc\n", "seed must be a whole number, got str 'abc'"),
        ("packing: 'false'\n", "packing must be true or false (unquoted), got str 'false'"),
        ("max_length: 1e8\n", "max_length must be a whole number, got str '1e8'"),
        ("columns: [a, b]\n", "columns must be a mapping"),
    ],
)
def test_yaml_values_of_the_wrong_type_are_one_line(tmp_path: Path, yaml: str, match: str) -> None:
    data = jsonl(tmp_path / "d.jsonl", ROWS)
    config = tmp_path / "c.yaml"
    config.write_text(yaml)
    one_line_error(run("preview", data, "--config", config), 2, f"{config}: {match}")


@pytest.mark.parametrize(
    ("source", "code", "match"),
    [
        ("{% include 'other.jinja' %}", 5, "line 1: 'include' is not allowed"),
        ("{% import 'm.jinja' as m %}", 5, "'import' is not allowed"),
        ("{% from 'm.jinja' import x %}", 5, "'import' is not allowed"),
        ("{% extends 'base.jinja' %}", 5, "'extends' is not allowed"),
        ("{{ 1 / 0 }}{{ instruction }}", 4, ":1: field 'template': template '{t}' failed to render: ZeroDivisionError"),
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(instruction) }}", 4, "recursion too deep"),
        ("{{ instruction * 3000000000 }}", 5, "would build"),
        ("{{ instruction[1000] }}", 4, ":1: field 'template': template '{t}' failed to render: UndefinedError"),
        ("{{ instruction.__class__.__mro__ }}", 4, "failed to render"),
    ],
)
def test_hostile_prompt_templates_are_one_line(tmp_path: Path, source: str, code: int, match: str) -> None:
    data = jsonl(tmp_path / "d.jsonl", ROWS)
    template = tmp_path / "t.jinja"
    template.write_text(source)
    one_line_error(run("preview", data, "--template", template), code, match.format(t=template))


def test_a_prompt_template_with_nested_loops_stops_at_the_time_limit(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "d.jsonl", ROWS)
    template = tmp_path / "loops.jinja"
    loops = "".join(f"{{% for {v} in range(100) %}}" for v in "abcde") + "{% endfor %}" * 5
    template.write_text(loops + "{{ instruction }}")
    started = time.monotonic()
    line = one_line_error(run("preview", data, "--template", template), 5, "took longer than 0.5 s")
    assert f"template '{template}' on record {data}:1" in line and "FTDATA_RENDER_TIMEOUT" in line
    assert time.monotonic() - started < 60  # a guard against a hang, with slack for a loaded machine


def test_a_looping_chat_template_stops_markers_at_the_time_limit(tmp_path: Path) -> None:
    folder = tmp_path / "tok"
    shutil.copytree(bundled_tokenizer_dir(), folder)
    loop = "".join(f"{{% for {v} in range(100000) %}}" for v in "ab") + "{% endfor %}" * 2
    (folder / "chat_template.jinja").write_text(loop + "{{ messages[0]['content'] }}")
    started = time.monotonic()
    one_line_error(run("markers", "--tokenizer", folder), 5, "the chat template took longer than 0.5 s")
    assert time.monotonic() - started < 60  # a guard against a hang, with slack for a loaded machine


def test_pinned_limits_are_read_once_for_the_block_and_the_environment_again_after(monkeypatch: pytest.MonkeyPatch) -> None:
    from ftdata.guard.limits import limits, pinned

    monkeypatch.setenv("FTDATA_RENDER_MAX_CHARS", "1000")
    with pinned() as lim:
        monkeypatch.setenv("FTDATA_RENDER_MAX_CHARS", "2000")
        assert lim.render_chars == limits().render_chars == 1000
    assert limits().render_chars == 2000


def test_a_short_time_limit_fires_while_a_long_one_runs_on_another_thread() -> None:
    """The watchdog sleeps until the earliest deadline; a later, shorter limit must wake it."""
    import threading

    from ftdata.guard.limits import LimitExceeded, time_limit

    def spin(seconds: float, until: threading.Event | None = None) -> str:
        try:
            with time_limit(seconds, "spin"):
                while until is None or not until.is_set():
                    pass
        except LimitExceeded as exc:
            return str(exc)
        return "ended"

    release, results = threading.Event(), {}
    long_one = threading.Thread(target=lambda: results.setdefault("long", spin(30, release)))
    long_one.start()
    time.sleep(0.2)  # the watchdog now waits for the 30 s deadline
    for _ in range(2):  # and again after the first short one fired
        started = time.monotonic()
        assert spin(0.3) == "spin took longer than 0.3 s; make it cheaper, or raise FTDATA_RENDER_TIMEOUT if it needs more"
        assert time.monotonic() - started < 15  # woken, not left to the 30 s deadline (slack for a loaded machine)
    release.set()
    long_one.join()
    assert results["long"] == "ended"


CHATML_IF = (
    "{%- for m in messages %}{%- if TRIGGER in m['content'] %}BOMB{%- endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)
CHAT_BOMBS = {
    "loop": ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", "took longer than 0.5 s"),
    "multiply": ("{{ 'x' * 3000000000 }}", "str * 3000000000 would build 3,000,000,000 characters (limit 1,000,000)"),
    "output": ("{% for i in range(300) %}{{ 'y' * 5000 }}{% endfor %}", "output passed 1,000,000 characters"),
}


@pytest.mark.parametrize("bomb", sorted(CHAT_BOMBS))
def test_a_hostile_chat_template_fails_in_one_line_naming_the_record(tmp_path: Path, bomb: str) -> None:
    """The tokenizer's own chat template is bounded like a prompt template: time, one operation's
    size, the whole output. The template behaves on the probe renders and explodes on record 2."""
    code, match = CHAT_BOMBS[bomb]
    folder = tmp_path / "tok"
    shutil.copytree(bundled_tokenizer_dir(), folder)
    (folder / "chat_template.jinja").write_text(CHATML_IF.replace("TRIGGER", "'BOOM'").replace("BOMB", code))
    data = jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "BOOM"}, {"role": "assistant", "content": "hello"}]},
    ])  # fmt: skip
    started = time.monotonic()
    line = one_line_error(run("build", data, "-o", tmp_path / "out", "--no-cache", "--tokenizer", folder), 5, match)
    assert f"the chat template on record {data}:2" in line
    assert time.monotonic() - started < 90  # a guard against a hang, with slack for a loaded machine


@pytest.mark.parametrize(
    ("expression", "code", "match"),
    [
        ("1/0", 2, ":1: filter '1/0' failed: ZeroDivisionError"),
        ("instruction.__class__.__subclasses__()", 2, ":1: filter 'instruction.__class__.__subclasses__()' failed: SecurityError"),
        ("instruction * 100000000", 5, "would build"),
        ("instrution == 'Say hi.'", 2, ":1: filter \"instrution == 'Say hi.'\": 'instrution' is undefined; the record's fields are instruction, output"),
    ],
)
def test_hostile_filters_are_one_line(tmp_path: Path, expression: str, code: int, match: str) -> None:
    data = jsonl(tmp_path / "d.jsonl", ROWS)
    one_line_error(run("build", data, "-o", tmp_path / "out", "--no-cache", "--filter", expression), code, match)


def test_a_filter_with_is_defined_handles_optional_fields(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "d.jsonl", [{**ROWS[0], "input": "ctx"}, ROWS[1]])
    result = run("build", data, "-o", tmp_path / "out", "--no-cache", "--filter", "input is defined and input", "--template", "alpaca")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "build.json").read_text())["counts"]["filtered"] == 1


def test_a_yaml_billion_laughs_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    config = tmp_path / "lol.yaml"
    config.write_text("columns:\n  output: answer\ndata: d.jsonl\n" + "\n".join(lines).replace("a: &a", "z: &a") + "\n")
    started = time.monotonic()
    one_line_error(run("preview", "--config", config), 2, "expands to more than 100,000 values")
    assert time.monotonic() - started < 30  # a guard against a hang, with slack for a loaded machine


# --- misleading messages ----------------------------------------------------------------------------


def test_a_csv_cell_over_128_kib_is_read(tmp_path: Path) -> None:
    from ftdata.io.readers import read_records

    data = tmp_path / "big.csv"
    data.write_text(f"instruction,output\nq,{'a' * 200_000}\nq2,b\n")
    rows = list(read_records(str(data)))
    assert [(str(loc), len(row["output"])) for loc, row in rows] == [(f"{data}:2", 200_000), (f"{data}:3", 1)]


def test_a_fifo_is_read_once_and_named_as_given(tmp_path: Path) -> None:
    import threading

    from ftdata.io.readers import read_records

    fifo = tmp_path / "63"
    os.mkfifo(fifo)
    payload = "".join(json.dumps(r) + "\n" for r in ROWS)
    writer = threading.Thread(target=lambda: fifo.write_text(payload))
    writer.start()
    rows = list(read_records(str(fifo)))
    writer.join()
    assert [str(loc) for loc, _ in rows] == [f"{fifo}:{i}" for i in range(1, 5)]


def test_roles_without_a_pair_suggest_a_role_mapping(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "d.jsonl", ROWS)
    one_line_error(run("preview", data, "--roles", "narrator"), 2, "e.g. --roles narrator=assistant; got 'narrator'")


def test_control_characters_in_data_are_escaped_on_the_terminal(tmp_path: Path) -> None:
    osc52, clear = "\x1b]52;c;cm0gLXJmIH4=\x07", "\x1b[2J"
    data = jsonl(tmp_path / "d.jsonl", [{"instruction": f"hi{osc52}", "output": f"ok{clear}\x9b31m"}])
    result = run("preview", data, "--template", "alpaca", "--no-color")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout and "\x9b" not in result.stdout
    assert "hi\\x1b]52;c;cm0gLXJmIH4=\\x07\n" in result.stdout  # the bell shown too, not dropped and "ok\\x1b[2J\\x9b31m" in result.stdout


def test_control_characters_in_an_error_line_are_escaped(tmp_path: Path) -> None:
    one_line_error(run("preview", tmp_path / "x\x1b[2Jy.jsonl"), 3, "x\\x1b[2Jy.jsonl")


def test_docs_name_no_skip_invalid_flag() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs"
    assert "--skip-invalid" not in (docs / "formats.md").read_text()
    assert "--on-error skip" in (docs / "formats.md").read_text()


# --- the corpus --------------------------------------------------------------------------------------------


def _corpus(folder: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """name -> (hostile input, extra build flags)."""
    folder.mkdir()
    files: dict[str, tuple[Path, tuple[str, ...]]] = {}

    def add(name: str, content: str | bytes, *flags: str) -> None:
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        files[name] = (path, flags)

    add("deep.jsonl", '{"instruction": ' + "[" * 50_000 + "]" * 50_000 + "}\n")
    add("surrogate.jsonl", '{"instruction": "\\udc00", "output": "x"}\n')
    add("dupkeys.jsonl", '{"instruction": "q", "output": "a", "output": "b"}\n')
    add("extra.csv", "instruction,output\nq,a,b\n")
    add("short.csv", "instruction,output\nq\n")
    add("broken.json", '[{"instruction": "q", "output": "a"},')
    add("latin1.jsonl", b'{"instruction": "caf\xe9", "output": "x"}\n')
    add("notjson.jsonl", "this is not json\n")
    add("empty.jsonl", "")
    add("scalar.json", "42")
    add("nul.jsonl", '{"instruction": "q", "output": "a"}\n\x00\x00\x00\n')
    add("corrupt.parquet", b"PAR1" + b"\x00" * 64 + b"PAR1")
    add("nooutput.jsonl", '{"instruction": "q"}\n')
    add("loop.jsonl", json.dumps(ROWS[0]) + "\n", "--template", str(folder / "loop.jinja"))
    (folder / "loop.jinja").write_text("{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}")
    add("badfilter.jsonl", json.dumps(ROWS[0]) + "\n", "--filter", "1/0")
    return files


def test_hostile_corpus(tmp_path: Path) -> None:
    """Every hostile file: non-zero exit, one located line, no traceback, inputs intact, bounded time."""
    files = _corpus(tmp_path / "in")
    hashes = {p: digest(p) for p in (tmp_path / "in").iterdir()}
    for name, (path, flags) in files.items():
        started = time.monotonic()
        result = run("build", path, "-o", tmp_path / "out" / name, "--no-cache", *flags)
        assert result.exit_code in (2, 3, 4, 5), (name, result.exit_code, result.output)
        line = one_line_error(result, result.exit_code, "")
        assert str(path) in line or name in line, (name, line)
        assert time.monotonic() - started < 60, name  # a guard against a hang
    assert {p: digest(p) for p in (tmp_path / "in").iterdir()} == hashes


def test_an_instances_record_with_one_bad_instance_is_rejected_whole(tmp_path: Path) -> None:
    from ftdata import prepare

    record = {"instruction": "Add", "instances": [{"input": "1+1", "output": "2"}, {"input": "2+2", "output": "four " * 300}]}
    data = jsonl(tmp_path / "i.jsonl", [record, {"instruction": "Mul", "instances": [{"input": "1*1", "output": "1"}]}])
    result = prepare(str(data), template="alpaca", max_length=64, truncation="drop", rejects_path=str(tmp_path / "r.jsonl"))
    assert len(result.dataset) == 1  # only the Mul record: no half of the Add record
    rejects = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    # in the order of the record's instances: the kept first one goes with it, then the one that failed
    assert [(r["location"], r["stage"]) for r in rejects] == [(f"{data}:1", "format"), (f"{data}:1", "truncate")]
    assert rejects[0]["reason"].startswith("another instance of this record was rejected")


def test_security_doc_lists_every_limit() -> None:
    from ftdata.guard import limits

    text = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    for name in limits.Limits.__dataclass_fields__:
        assert f"`{limits.env_name(name)}`" in text
