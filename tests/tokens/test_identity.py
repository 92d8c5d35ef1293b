"""The template and tokenizer print of a build (build.json's `serving`), the raw tokenizer check, and the one-line
mismatches `ftdata train`, `check-serving` and a saved model report (`ftdata.tokens.identity`)."""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from pathlib import Path

import pytest
from support import TOKENIZERS, same_tick, settled, tokenizer

import ftdata
from ftdata.chat.chat_tokens import copy_tokenizer
from ftdata.errors import ConfigError
from ftdata.tokens.identity import print_of, raw_check, template_mismatch, tokenizer_mismatch
from ftdata.train.carried import carry_template, saved_template

PHI3 = TOKENIZERS / "phi-3-mini-4k-instruct"
QWEN = TOKENIZERS / "qwen2.5-instruct"
RECORDS = [
    {"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "Hello! How can I help?"}]},
    {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
]


def _build(out: Path, tok: object) -> dict:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ftdata.build(RECORDS, out, tokenizer=tok, cache=False)
    record = json.loads((out / "build.json").read_text(encoding="utf-8"))
    record["_warnings"] = [str(w.message) for w in caught]
    return record


def test_phi3_loads_as_a_class_that_encodes_otherwise_than_its_tokenizer_json() -> None:
    """The Phi-3 folder has no config.json: transformers loads LlamaTokenizer, which drops the space the Metaspace
    pre-tokenizer of tokenizer.json writes before a word after a special token."""
    check = raw_check(tokenizer("phi-3-mini-4k-instruct"), ["<|user|>\nhi<|end|>\n<|assistant|>\nyo<|end|>\n"])
    assert check.differ == 2  # the probe chat and the text given; the plain probe text agrees
    assert check.line is not None
    assert "(LlamaTokenizer) encodes a probe text otherwise than" in check.line
    assert "token 1: LlamaTokenizer 'hi' (2918) vs tokenizers.Tokenizer '▁hi' (7251)" in check.line


@pytest.mark.parametrize("name", ["qwen2.5-instruct", "llama-3.2-instruct", "gemma-3-it", "mistral-nemo-instruct-2407"])
def test_the_other_shared_folders_encode_like_their_tokenizer_json(name: str) -> None:
    check = raw_check(tokenizer(name), ["<|im_start|>user\nhi  there\n\n 漢字<|im_end|>", "[INST]hi[/INST]yo</s>"])
    assert (check.texts, check.differ, check.line) == (4, 0, None)


def test_a_class_that_normalizes_otherwise_is_caught_in_one_line() -> None:
    from tokenizers import normalizers

    tok = copy_tokenizer(tokenizer("qwen2.5-instruct"))
    tok.backend_tokenizer.normalizer = normalizers.Lowercase()  # what a class that rebuilds the pipeline may do
    check = raw_check(tok, ["Hello"])
    assert check.line is not None and "\n" not in check.line
    assert "token 17: Qwen2Tokenizer ' ü' (10489) vs tokenizers.Tokenizer ' Ü' (30512)" in check.line
    assert check.differ == 3  # the probe text, the probe chat ("You are Qwen"), "Hello"


def test_build_json_records_the_template_the_tokenizer_and_the_raw_check(tmp_path: Path) -> None:
    tok = tokenizer("qwen2.5-instruct")
    record = _build(tmp_path / "out", tok)
    printed = record["serving"]["tokenizer"]
    assert printed["tokenizer_class"] == "Qwen2Tokenizer"
    assert printed["chat_template"] == tok.chat_template
    assert set(printed["files"]) == {"tokenizer.json", "tokenizer_config.json"}
    assert printed["digest"] == print_of(tok).digest
    assert record["serving"]["raw_check"] == {
        "texts": 4,
        "differ": 0,
        "sample": "the first 2 rows decoded",
    }
    assert not [w for w in record["_warnings"] if "tokenizers.Tokenizer" in w]


def test_a_phi3_build_says_which_tokenizer_differs(tmp_path: Path) -> None:
    record = _build(tmp_path / "out", tokenizer("phi-3-mini-4k-instruct"))
    check = record["serving"]["raw_check"]
    assert check["differ"] == 3  # the probe chat and both records' renderings
    assert "LlamaTokenizer 'hi' (2918) vs tokenizers.Tokenizer '▁hi' (7251)" in check["line"]
    assert [w for w in record["_warnings"] if w == f"ftdata: {check['line']}"]


def test_the_bundled_tokenizer_is_checked_against_its_materialised_tokenizer_json(tmp_path: Path) -> None:
    """The GGUF holds no tokenizer.json: ftdata writes one (transformers' conversion) and loads that folder."""
    record = _build(tmp_path / "out", tokenizer(None))
    assert record["serving"]["raw_check"]["differ"] == 0
    assert record["serving"]["tokenizer"]["files"].keys() >= {"tokenizer.json", "tokenizer_config.json"}


def _swapped_tokenizer(tmp_path: Path) -> tuple[Path, str, str]:
    """A copy of the bundled tokenizer folder, the text of its tokenizer.json, and that text with the ids of " and"
    and " the" swapped (the same length)."""
    from ftdata.io.resources import bundled_tokenizer_dir

    folder = shutil.copytree(bundled_tokenizer_dir(), tmp_path / "tok")
    before = (folder / "tokenizer.json").read_text(encoding="utf-8")
    after = before.replace('"Ġthe": 260', '"Ġthe": 284').replace('"Ġand": 284', '"Ġand": 260')
    assert after != before and len(after) == len(before)
    return folder, before, after


def test_a_tokenizer_json_edited_under_its_old_time_and_size_is_read_again(tmp_path: Path, monkeypatch) -> None:
    """The raw tokenizer is kept per file while the file is as it was: an edit that swaps two ids (the size unchanged)
    and puts the modification time back is read again, so the folder's own class and tokenizers agree on it."""
    import os

    import ftdata.tokens.identity as identity
    from ftdata.io.resources import load_tokenizer

    settled(monkeypatch, identity)  # the parse is kept: the change time is what tells the edit
    folder, before, after = _swapped_tokenizer(tmp_path)
    text = "a cat and the dog"
    original = load_tokenizer(folder)
    assert original(text, add_special_tokens=False)["input_ids"][2:4] == [284, 260]  # " and", " the"
    assert raw_check(original, [text]).differ == 0
    file = folder / "tokenizer.json"
    assert identity._RAW.get(str(file), identity.stat_of(file)) is not None
    stat = file.stat()
    file.write_text(after, encoding="utf-8")
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # `touch -r`: the old modification time
    assert file.stat().st_size == stat.st_size and file.stat().st_mtime_ns == stat.st_mtime_ns
    edited = load_tokenizer(folder)
    assert edited(text, add_special_tokens=False)["input_ids"][2:4] == [260, 284]  # the edit took
    assert raw_check(edited, [text]).differ == 0  # read again: a kept parse of the old file says the text differs


def test_a_tokenizer_json_edited_within_one_clock_tick_is_read_again(tmp_path: Path, monkeypatch) -> None:
    """A parse of a tokenizer.json changed within `RACY_NS` is not kept: the same edit in the same tick of the file
    system's clock, its whole stat unchanged, is read again."""
    import ftdata.tokens.identity as identity
    from ftdata.io.resources import load_tokenizer

    folder, _, after = _swapped_tokenizer(tmp_path)
    file = folder / "tokenizer.json"
    same_tick(monkeypatch, identity, file)
    text = "a cat and the dog"
    assert raw_check(load_tokenizer(folder), [text]).differ == 0
    file.write_text(after, encoding="utf-8")
    edited = load_tokenizer(folder)
    assert edited(text, add_special_tokens=False)["input_ids"][2:4] == [260, 284]
    assert raw_check(edited, [text]).differ == 0


def test_copies_of_a_tokenizer_json_are_parsed_once_and_a_copy_edited_by_one_byte_again(tmp_path: Path, monkeypatch) -> None:
    """The raw tokenizer is kept per content too: fresh copies of one folder (stats too recent to trust) share one
    parse; a copy whose tokenizer.json differs by one byte (two ids swapped) gets its own, and the check says so."""
    import tokenizers

    import ftdata.tokens.identity as identity
    from ftdata.io.resources import load_tokenizer

    monkeypatch.setattr(identity, "_RAW_BYTES", {})
    parsed: list[int] = []
    parse = tokenizers.Tokenizer.from_buffer
    monkeypatch.setattr(tokenizers.Tokenizer, "from_buffer", lambda data: parsed.append(len(data)) or parse(data))
    folder, _, after = _swapped_tokenizer(tmp_path)
    text = "a cat and the dog"
    tok = load_tokenizer(folder)
    for k in range(3):
        copy_k = shutil.copytree(folder, tmp_path / f"copy{k}")
        assert raw_check(tok, [text]).differ == 0 and raw_check(load_tokenizer(copy_k), [text]).differ == 0
    assert len(parsed) == 1
    (tmp_path / "copy0" / "tokenizer.json").write_text(after, encoding="utf-8")
    edited = load_tokenizer(tmp_path / "copy0")
    assert edited(text, add_special_tokens=False)["input_ids"][2:4] == [260, 284]
    assert raw_check(edited, [text]).differ == 0 and len(parsed) == 2  # its own parse: the kept one would differ
    edited.name_or_path = str(folder)  # the edited class against the first folder's parse: they differ, and it says
    assert raw_check(edited, [text]).differ == 1 and len(parsed) == 2


def _edited(tok: object, old: str, new: str) -> object:
    out = copy.copy(tok)
    out.chat_template = tok.chat_template.replace(old, new, 1)  # type: ignore[attr-defined]
    assert out.chat_template != tok.chat_template  # type: ignore[attr-defined]
    return out


def test_a_template_edited_by_one_byte_is_one_line_naming_both_digests_and_the_token() -> None:
    tok = tokenizer("qwen2.5-instruct")
    built = print_of(tok)
    edited = _edited(tok, "<|im_start|>assistant\\n", "<|im_start|>assistant \\n")
    line = template_mismatch(built, edited, what="the run's tokenizer")
    now = print_of(edited).template_digest
    assert line == (
        f"the run's tokenizer has chat template {now}, the data was built with {built.template_digest}: "
        "first differing rendered token 29: built '\\n' (198) vs now ' \\n' (715)"
    )
    assert template_mismatch(built, tok, what="x") is None


def test_an_edit_the_probes_do_not_reach_names_the_first_differing_character() -> None:
    tok = tokenizer("qwen2.5-instruct")
    edited = _edited(tok, "Alibaba", "Alibabb")  # first in the branch for tools, which no probe renders
    line = template_mismatch(print_of(tok), edited, what="t")
    assert line is not None and "the probe conversations render the same, the template texts first differ" in line


def test_another_class_over_the_same_files_is_one_line() -> None:
    from transformers import PreTrainedTokenizerFast

    built = print_of(tokenizer("phi-3-mini-4k-instruct"))
    raw = PreTrainedTokenizerFast.from_pretrained(str(PHI3))  # the class a served model folder may load
    line = tokenizer_mismatch(built, raw, what="the server's tokenizer")
    assert line is not None
    assert f"the data was built with {built.digest} (LlamaTokenizer)" in line
    assert "first differing probe token" in line or "probe token 1" in line
    assert tokenizer_mismatch(built, tokenizer("phi-3-mini-4k-instruct"), what="x") is None


def test_train_refuses_a_build_whose_template_changed_in_one_line(tmp_path: Path) -> None:
    from ftdata.train.data import _check_chat_template

    tok = tokenizer("qwen2.5-instruct")
    _build(tmp_path / "out", tok)
    _check_chat_template(tmp_path / "out", tok, given=None)
    edited = _edited(tok, "<|im_start|>assistant\\n", "<|im_start|>assistant \\n")
    with pytest.raises(ConfigError, match=r"out: the run's tokenizer has chat template \w+, the data was built with "):
        _check_chat_template(tmp_path / "out", edited, given=None)


def test_a_saved_model_carries_the_template_that_built_the_data(tmp_path: Path) -> None:
    tok = tokenizer("qwen2.5-instruct")
    _build(tmp_path / "out", tok)
    saved = tmp_path / "adapter"
    saved.mkdir()
    carry_template(saved, tmp_path / "out", tok)
    assert saved_template(saved) == tok.chat_template
    edited = _edited(tok, "assistant\\n' }}\n{%- endif %}\n", "assistant' }}\n{%- endif %}\n")  # its generation prompt
    (saved / "chat_template.jinja").write_text(edited.chat_template)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"the saved .*adapter has chat template .* first differing rendered token"):
        carry_template(saved, tmp_path / "out", tok)
    shutil.rmtree(saved)


def test_a_build_kept_in_memory_warns_in_one_line_too() -> None:
    """No build.json to hold it: `ftdata.build` without OUT (and `prepare`, `build_sft_dataset`) warns on the first
    rows decoded, once, and says nothing where the class encodes like its tokenizer.json."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ftdata.build(RECORDS, tokenizer=tokenizer("phi-3-mini-4k-instruct"))
    lines = [str(w.message) for w in seen if "tokenizers.Tokenizer" in str(w.message)]
    assert len(lines) == 1 and "LlamaTokenizer 'hi' (2918) vs tokenizers.Tokenizer '▁hi' (7251)" in lines[0]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ftdata.prepare(RECORDS, tokenizer=tokenizer("qwen2.5-instruct"))
    assert not [w for w in seen if "tokenizers.Tokenizer" in str(w.message)]


def test_the_raw_check_reads_the_first_rows_up_to_a_token_budget() -> None:
    """32 agent trajectories of 25,000 tokens would cost more to encode twice than to build: the rows are read up to
    `RAW_TOKENS` in all, the row that reaches it cut there (and build.json says so)."""
    from datasets import Dataset

    from ftdata.build.serving import _decoded

    tok = tokenizer("qwen2.5-instruct")
    hi, yo = tok.encode("hi", add_special_tokens=False), tok.encode(" yo", add_special_tokens=False)
    rows = Dataset.from_dict({"input_ids": [hi + yo * 4, yo * 5, hi * 5]})
    assert _decoded(tok, rows, 32, budget=7) == (["hi yo yo yo yo", " yo yo"], True)
    assert _decoded(tok, rows, 32, budget=10) == (["hi yo yo yo yo", " yo yo yo yo yo"], False)
    assert _decoded(tok, rows, 2, budget=100) == (["hi yo yo yo yo", " yo yo yo yo yo"], False)
    assert _decoded(tok, rows, 32, budget=100)[0][2] == "hihihihihi"
