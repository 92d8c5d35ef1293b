"""A build's tokenizer folder is parsed once per process and served again only while every byte of its files and
the loaded state are what they were (`ftdata.io.resources.load_tokenizer(..., shared=True)`): a second build
skips the parse, and an edited file or a changed tokenizer is never served stale. A plain `load_tokenizer` call
gets a tokenizer of its own, to change as it likes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import datasets
import pytest
from support import TOKENIZERS
from typer.testing import CliRunner

from ftdata.cli.app import app
from ftdata.errors import ConfigError
from ftdata.guard.inputs import Digests
from ftdata.io import resources
from ftdata.io.resources import load_tokenizer, tokenizer_input


def _built(tokenizer):
    """A shared tokenizer as a build leaves it: fingerprinted (`tokenizer_input`, which every build takes)."""
    tokenizer_input(tokenizer, Digests())
    return tokenizer


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    out = tmp_path / "phi-3"
    shutil.copytree(TOKENIZERS / "phi-3-mini-4k-instruct", out)
    for file in out.iterdir():
        file.chmod(0o644)
    return out


def test_an_unchanged_folder_is_served_the_tokenizer_already_loaded(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _built(load_tokenizer(str(folder), shared=True))
    assert load_tokenizer(str(folder), shared=True) is first
    assert load_tokenizer(folder, shared=True) is first  # a Path names the same folder
    monkeypatch.chdir(folder.parent)
    other = _built(load_tokenizer(folder.name, shared=True))  # named otherwise: its own, whose name output shows
    assert other is not first and other.name_or_path == folder.name and load_tokenizer(folder.name, shared=True) is other
    assert load_tokenizer(str(folder), trust_remote_code=True, shared=True) is not first  # loaded under other terms


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["edited", "edited, mtime restored"])
def test_a_one_byte_edit_of_the_chat_template_loads_the_folder_again(folder: Path, keep_mtime: bool) -> None:
    first = _built(load_tokenizer(str(folder), shared=True))
    config = folder / "tokenizer_config.json"
    before = config.stat()
    text = config.read_text(encoding="utf-8")
    template = json.loads(text)["chat_template"]
    user, edited = "message['role'] == 'user'", "message['role'] == 'usEr'"
    assert text.count(user) == 1
    config.write_text(text.replace(user, edited), encoding="utf-8")  # one byte, same size
    if keep_mtime:
        os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = _built(load_tokenizer(str(folder), shared=True))
    assert again is not first and again.chat_template == template.replace(user, edited)
    assert first.chat_template == template  # the earlier one is left as it was
    assert load_tokenizer(str(folder), shared=True) is again


def test_a_tokenizer_its_caller_changed_is_not_served_again(folder: Path) -> None:
    first = _built(load_tokenizer(str(folder), shared=True))
    words = len(first)
    first.add_tokens(["<made-by-the-caller>"])
    second = _built(load_tokenizer(str(folder), shared=True))
    assert second is not first and len(second) == words and "<made-by-the-caller>" not in second.get_vocab()
    second.chat_template = "{{ messages[0]['content'] }}"
    third = load_tokenizer(str(folder), shared=True)
    assert third is not second and third.chat_template == json.loads(
        (folder / "tokenizer_config.json").read_text(encoding="utf-8")
    )["chat_template"]


def test_a_plain_load_is_the_callers_own(folder: Path) -> None:
    held = _built(load_tokenizer(str(folder), shared=True))
    own = load_tokenizer(str(folder))
    assert own is not held and load_tokenizer(str(folder)) is not own
    own.add_tokens(["<made-by-the-caller>"])
    assert "<made-by-the-caller>" not in held.get_vocab() and load_tokenizer(str(folder), shared=True) is held


def test_a_full_memo_lets_the_least_recently_used_go(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two held at most here: building from a, b, a, c keeps a (used last but one) and lets b go."""
    monkeypatch.setattr(resources, "_LOADED", {})
    monkeypatch.setattr(resources, "_LOADED_LIMIT", 2)
    shutil.copytree(folder, tmp_path / "b")
    shutil.copytree(folder, tmp_path / "c")
    a, b = (_built(load_tokenizer(str(f), shared=True)) for f in (folder, tmp_path / "b"))
    assert load_tokenizer(str(folder), shared=True) is a  # a used again: b is now the least recently used
    c = _built(load_tokenizer(str(tmp_path / "c"), shared=True))
    assert len(resources._LOADED) == 2
    assert load_tokenizer(str(folder), shared=True) is a and load_tokenizer(str(tmp_path / "c"), shared=True) is c
    assert load_tokenizer(str(tmp_path / "b"), shared=True) is not b


def _serialisations(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The tokenizers whose state is serialised (`_state_digest`) from now on, in order."""
    calls: list[object] = []
    real = resources._state_digest
    monkeypatch.setattr(resources, "_state_digest", lambda tok: calls.append(tok) or real(tok))
    return calls


def _chat_file(tmp_path: Path) -> Path:
    data = tmp_path / "d.jsonl"
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    data.write_text(json.dumps({"messages": chat}) + "\n", encoding="utf-8")
    return data


def test_a_shared_tokenizer_no_build_fingerprinted_is_loaded_again_once(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its state is recorded when a build fingerprints it (no second serialisation for a process that builds once):
    before that there is nothing to hold it to. A preview, or a build without a cache key, takes no fingerprint: the
    second load reads the state as it loads, and is served from then on while it stays so."""
    calls = _serialisations(monkeypatch)
    first = load_tokenizer(str(folder), shared=True)
    assert calls == []  # a process that loads the folder once serialises nothing
    second = load_tokenizer(str(folder), shared=True)
    assert second is not first and calls == [second]
    assert load_tokenizer(str(folder), shared=True) is second  # the check: its state as read when it loaded
    second.add_tokens(["<made-by-the-caller>"])
    third = load_tokenizer(str(folder), shared=True)
    assert third is not second and "<made-by-the-caller>" not in third.get_vocab()


def test_a_build_after_a_second_load_takes_the_state_read_as_it_loaded(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page or a preview loaded the folder first; the build that loads it again serialises it once (its fingerprint
    takes the digest the load read), and its key is a fresh load's."""
    import ftdata

    data = _chat_file(tmp_path)
    load_tokenizer(str(folder), shared=True)
    calls = _serialisations(monkeypatch)
    ftdata.build(str(data), tmp_path / "one", tokenizer=str(folder), cache=False)
    assert len(calls) == 1
    monkeypatch.setattr(resources, "_LOADED", {})  # nothing held: a fresh load, fingerprinted by its build
    ftdata.build(str(data), tmp_path / "two", tokenizer=str(folder), cache=False)
    key = [json.loads((tmp_path / out / "build.json").read_text())["fingerprint"] for out in ("one", "two")]
    assert key[0] == key[1]


def test_a_second_build_serialises_its_shared_tokenizer_once(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A memo hit reads the tokenizer's state to check it; the build's fingerprint takes that digest (one
    serialisation, not two), and the build's key is the one a fresh load gives."""
    import ftdata

    data = _chat_file(tmp_path)
    calls = _serialisations(monkeypatch)
    first = ftdata.build(str(data), tmp_path / "one", tokenizer=str(folder), cache=False)
    assert len(calls) == 1  # loaded: the fingerprint's serialisation only
    calls.clear()
    second = ftdata.build(str(data), tmp_path / "two", tokenizer=str(folder), cache=False)
    assert len(calls) == 1  # served again: the hit's check, whose digest the fingerprint takes
    key = [json.loads((tmp_path / out / "build.json").read_text())["fingerprint"] for out in ("one", "two")]
    assert key[0] == key[1] and first.report.tokens == second.report.tokens


def test_a_checked_state_is_never_taken_after_its_build(folder: Path) -> None:
    from ftdata.io.resources import shared_tokenizer

    held = _built(load_tokenizer(str(folder), shared=True))
    before = tokenizer_input(held, Digests()).digest
    with shared_tokenizer(str(folder)) as tok:  # a hit whose build stops before its fingerprint
        assert tok is held
    tok.chat_template = "{{ messages[0]['content'] }}"  # then changed: its fingerprint is the new state's
    assert tokenizer_input(tok, Digests()).digest != before


def test_builds_in_one_process_parse_the_tokenizer_once_until_a_byte_of_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ftdata build` only reads its tokenizer, so a process that builds again from the same folder (a notebook, a
    script over CliRunner) is served the one it parsed, while every byte of the folder is the same."""
    folder = tmp_path / "qwen"
    shutil.copytree(TOKENIZERS / "qwen2.5-instruct", folder)
    for file in folder.iterdir():
        file.chmod(0o644)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}))
    parsed = []
    real = resources._tokenizer_class
    monkeypatch.setattr(resources, "_tokenizer_class", lambda path: parsed.append(path) or real(path))
    for out in ("a", "b"):
        assert CliRunner().invoke(app, ["build", str(data), "-o", str(tmp_path / out), "--tokenizer", str(folder)]).exit_code == 0
    assert len(parsed) == 1
    config = folder / "tokenizer_config.json"
    config.write_text(config.read_text(encoding="utf-8").replace("You are Qwen", "You are Qwem"), encoding="utf-8")
    assert CliRunner().invoke(app, ["build", str(data), "-o", str(tmp_path / "c"), "--tokenizer", str(folder)]).exit_code == 0
    assert len(parsed) == 2
    tok = resources.load_tokenizer(str(folder))
    texts = {out: tok.decode(datasets.load_from_disk(str(tmp_path / out / "dataset"))[0]["input_ids"]) for out in "abc"}
    assert "You are Qwen," in texts["a"] and texts["a"] == texts["b"] and "You are Qwem," in texts["c"]


def test_a_page_of_a_build_reads_the_tokenizer_the_build_parsed(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ftdata inspect OUT` only reads the tokenizer build.json names: after a build from that folder in the same
    process it is served the one the build parsed, and parsed again once a byte of the folder changes."""
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}))
    parsed = []
    real = resources._tokenizer_class
    monkeypatch.setattr(resources, "_tokenizer_class", lambda path: parsed.append(path) or real(path))
    out = tmp_path / "out"
    assert CliRunner().invoke(app, ["build", str(data), "-o", str(out), "--tokenizer", str(folder)]).exit_code == 0
    assert CliRunner().invoke(app, ["inspect", str(out)]).exit_code == 0
    assert len(parsed) == 1 and (out / "inspect.html").is_file()
    config = folder / "tokenizer_config.json"
    config.write_text(config.read_text(encoding="utf-8").replace('"model_max_length": 4096', '"model_max_length": 4097'))
    assert CliRunner().invoke(app, ["inspect", str(out)]).exit_code == 0
    assert len(parsed) == 2


@pytest.mark.parametrize("name", ["tokenizer_config.json", "tokenizer.json"])
def test_a_broken_json_file_of_the_folder_is_named_with_its_line_and_column(folder: Path, name: str) -> None:
    file = folder / name
    text = file.read_text(encoding="utf-8")
    file.write_text(text[: len(text) // 2], encoding="utf-8")  # cut mid-file, as an interrupted copy leaves it
    with pytest.raises(ConfigError, match=rf"cannot load tokenizer '.*phi-3': {name}:\d+:\d+: invalid JSON: .*; fix that file$"):
        load_tokenizer(str(folder), shared=True)
    result = CliRunner().invoke(app, ["markers", "--tokenizer", str(folder)])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and f"{name}:" in result.output


# Two processes that need the bundled model at once (two ranks, two builds on a fresh machine): each makes the
# folder only if it is not there, holding the lock beside it.
MAKER = """
import sys, time
from pathlib import Path
from ftdata.io.resources import materialised
log = Path(sys.argv[2])
def make(folder):
    with log.open("a") as fh:
        fh.write("made\\n")
    time.sleep(1.0)  # the GGUF's seconds: the other process starts meanwhile
    (folder / "done").write_text("yes")
print(materialised(Path(sys.argv[1]), "done", make))
"""


def test_processes_starting_together_make_a_bundled_folder_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    target, log = tmp_path / "cache" / "model", tmp_path / "made.log"
    procs = [subprocess.Popen([sys.executable, "-c", MAKER, str(target), str(log)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == [str(target)] * 2
    assert log.read_text() == "made\n"  # one made it, the other waited and found it done
    assert (target / "done").read_text() == "yes"
    assert sorted(p.name for p in target.parent.iterdir()) == [".model.lock", "model"]  # no half-made folder left


def test_a_make_that_fails_leaves_nothing_and_the_next_call_makes_it(tmp_path: Path) -> None:
    target = tmp_path / "tokenizer"

    def broken(folder: Path) -> None:
        (folder / "half").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        resources.materialised(target, "tokenizer.json", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tokenizer.lock"]
    made = resources.materialised(target, "tokenizer.json", lambda folder: (folder / "tokenizer.json").write_text("{}"))
    assert made == target and (target / "tokenizer.json").read_text() == "{}"


def test_a_folder_ftdata_did_not_finish_is_named_and_left_as_it_is(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "mine.txt").write_text("keep")
    with pytest.raises(ConfigError, match=r"model exists but has no config.json: ftdata did not finish it; remove"):
        resources.materialised(target, "config.json", lambda folder: (folder / "config.json").write_text("{}"))
    assert [p.name for p in target.iterdir()] == ["mine.txt"]


def test_a_process_that_holds_the_lock_too_long_is_one_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftdata.guard.atomic import file_lock

    monkeypatch.setattr(resources, "MAKE_WAIT", 0.3)
    made = []
    with file_lock(tmp_path / ".model.lock"):  # another process making it, stuck (flock: another descriptor waits)
        with pytest.raises(ConfigError, match=r"another process has been making .*model for over 0 s \(it holds .*\.model\.lock\); wait for it or stop it"):
            resources.materialised(tmp_path / "model", "config.json", made.append)
    assert made == [] and not (tmp_path / "model").exists()
