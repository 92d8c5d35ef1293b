"""A build is a function of the bytes it read (docs/design.md, "Outputs"): every kind of input a build
reads, edited one byte at a time (in place with its mtime restored, or replaced by a rename), gives a
cached re-run equal to a `--no-cache` build, and a new fingerprint whenever the rows change; a re-run
of what did not change is a cache hit.

The oracle is the `--no-cache` build: it reads every input again, so the cache must agree with it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ROOT, TOKENIZERS, tokenizer
from typer.testing import CliRunner

from ftdata.cli.app import app

EXAMPLES = ROOT / "examples"
QWEN = TOKENIZERS / "qwen2.5-instruct"
RECORDS = [
    {"instruction": "Name a colour.", "output": "Blue"},
    {"instruction": "Greet me.", "output": "Hello there friend"},
    {"instruction": "Say nothing.", "output": ""},  # rejected: a fixed input must change the rejects too
    {"instruction": "Count to three in words please, slowly and with care.", "output": "One two three"},
]
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if loop.first %}<|im_start|>system\nBe brief.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LETTERS = "abcdefghijklmnopqrstuvwxyzBQ"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@dataclass(frozen=True)
class Kind:
    """One kind of input: the build that reads it, the file edited, the bytes an edit may replace and with what."""

    args: Callable[[Path], list[str]]  # the build's arguments, given the workspace (-o and the cache added later)
    target: str
    editable: Callable[[bytes], list[int]]  # byte offsets whose replacement keeps the file valid
    alphabet: bytes
    vision: bool = False


def _inside(*needles: str, digits: bool = False) -> Callable[[bytes], list[int]]:
    """The offsets of the letters (`digits`: the digits) of `needles` in the file (each needle found once)."""

    def find(data: bytes) -> list[int]:
        out = []
        for needle in needles:
            at = data.index(needle.encode())
            out += [at + i for i, ch in enumerate(needle) if (ch.isdigit() if digits else ch.isalpha())]
        return out

    return find


def _pixels(data: bytes) -> list[int]:
    """Offsets inside the PNG's image data (a changed byte fails its CRC: the record is rejected)."""
    start = data.index(b"IDAT") + 4
    return list(range(start + 8, min(start + 64, len(data) - 16)))


TEXT = ["--template", "alpaca", "--max-length", "64"]
KINDS: dict[str, Kind] = {
    "data file": Kind(lambda w: [str(w / "d.jsonl"), *TEXT], "d.jsonl", _inside("Blue", "Hello there friend"), LETTERS.encode()),
    "folder member": Kind(lambda w: [str(w / "folder"), *TEXT], "folder/b.jsonl", _inside("One two three"), LETTERS.encode()),
    "prompt template": Kind(lambda w: [str(w / "d.jsonl"), "--template", str(w / "t.jinja")], "t.jinja", _inside("### Q:", "### A:"), LETTERS.encode()),
    "tokenizer folder file": Kind(
        lambda w: [str(w / "d.jsonl"), "-t", str(w / "tok")], "tok/chat_template.jinja", _inside("helpful AI assistant"), LETTERS.encode()
    ),
    "generation config": Kind(
        lambda w: [str(w / "d.jsonl"), "-t", str(w / "tok")], "tok/generation_config.json", lambda d: [d.index(b'": 2') + 3], b"0123"
    ),
    "chat-template file": Kind(lambda w: [str(w / "d.jsonl"), "--chat-template", str(w / "c.jinja")], "c.jinja", _inside("Be brief."), LETTERS.encode()),
    "config file": Kind(lambda w: ["--config", str(w / "c.yaml")], "c.yaml", _inside("max_length: 32", digits=True), b"3456789"),
    "recipe source": Kind(lambda w: [str(w / "r.yaml")], "s2.jsonl", _inside("Hello there friend"), LETTERS.encode()),
    "eval set": Kind(lambda w: [str(w / "r.yaml")], "eval.jsonl", _inside("name a colour"), LETTERS.encode()),
    "recipe file": Kind(lambda w: [str(w / "r.yaml")], "r.yaml", _inside("max_length: 48", digits=True), b"3456789"),
    "processor config": Kind(
        lambda w: [str(w / "vision/chat.jsonl"), "--processor", str(w / "vision/qwen2-vl")], "vision/qwen2-vl/preprocessor_config.json",
        _inside('"max_pixels": 50176', digits=True), b"123456789", vision=True,
    ),
    "image pixels": Kind(
        lambda w: [str(w / "vision/chat.jsonl"), "--processor", str(w / "vision/qwen2-vl")], "vision/chart.png", _pixels,
        bytes(range(256)), vision=True,
    ),
}  # fmt: skip


def _workspace(root: Path, *, vision: bool) -> Path:
    """Every input of every kind, written fresh under `root`."""
    _jsonl(root / "d.jsonl", RECORDS)
    _jsonl(root / "folder" / "a.jsonl", RECORDS[:2])
    _jsonl(root / "folder" / "b.jsonl", RECORDS[2:])
    (root / "t.jinja").write_text("### Q: {{ instruction }}\n### A: ")
    (root / "c.jinja").write_text(CHAT_TEMPLATE)
    shutil.copytree(Path(tokenizer(None).name_or_path), root / "tok")
    (root / "tok" / "generation_config.json").write_text('{"eos_token_id": 2}\n')
    (root / "c.yaml").write_text(f"data: {root / 'd.jsonl'}\ntemplate: alpaca\nmax_length: 32\n")
    _jsonl(root / "s1.jsonl", RECORDS[:1] + RECORDS[3:])
    _jsonl(root / "s2.jsonl", RECORDS[1:3])
    _jsonl(root / "eval.jsonl", [{"question": "Please name a colour", "answer": "x"}])
    (root / "r.yaml").write_text(
        "template: alpaca\nmax_length: 48\nngram: 3\ndecontaminate: [eval.jsonl]\n"
        "sources:\n  - data: s1.jsonl\n    weight: 1\n  - data: s2.jsonl\n    weight: 1\n"
    )
    if vision:
        shutil.copytree(EXAMPLES / "media", root / "vision", ignore=shutil.ignore_patterns(".gitignore"))
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(QWEN / name, root / "vision" / "qwen2-vl" / name)
        pre = root / "vision" / "qwen2-vl" / "preprocessor_config.json"
        pre.write_text(pre.read_text().replace('"max_pixels": 12845056', '"max_pixels": 50176'))  # chart.png is resized
    return root


@dataclass(frozen=True)
class Built:
    fingerprint: str
    cached: bool
    rows: str  # train.jsonl: token ids, labels and their text
    rejects: str


def _build(args: list[str], out: Path, cache: Path | None) -> Built:
    flags = ["--cache-dir", str(cache)] if cache else ["--no-cache"]
    result = CliRunner().invoke(app, ["build", *args, "-o", str(out), "--output-format", "jsonl", *flags])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "build.json").read_text())
    rows = "".join((out / f).read_text() for f in record["output"]["files"])
    return Built(record["fingerprint"], result.stdout.startswith("cached:"), rows, (out / "rejects.jsonl").read_text())


def _edit(path: Path, offset: int, value: int, how: str) -> None:
    """Replace the byte at `offset`: in place, or by writing a copy and renaming it over `path`; the mtime restored."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] = value
    if how == "in place":
        with path.open("r+b") as fh:
            fh.seek(offset)
            fh.write(bytes([value]))
    else:
        tmp = path.with_name(path.name + ".new")
        tmp.write_bytes(bytes(data))
        os.replace(tmp, path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns


@contextmanager
def _fresh(vision: bool) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield _workspace(Path(tmp), vision=vision)


def _check_edit(kind: Kind, pick: int, value_pick: int, how: str) -> None:
    with _fresh(kind.vision) as root:
        cache, target = root / "cache", root / kind.target
        args = kind.args(root)
        first = _build(args, root / "out1", cache)
        offsets = kind.editable(target.read_bytes())
        offset = offsets[pick % len(offsets)]
        choices = [b for b in kind.alphabet if b != target.read_bytes()[offset]]
        _edit(target, offset, choices[value_pick % len(choices)], how)
        cached = _build(args, root / "out2", cache)
        fresh = _build(args, root / "out3", None)
        assert (cached.rows, cached.rejects) == (fresh.rows, fresh.rejects)
        assert cached.fingerprint == fresh.fingerprint
        if (fresh.rows, fresh.rejects) != (first.rows, first.rejects):
            assert fresh.fingerprint != first.fingerprint and not cached.cached
        again = _build(args, root / "out4", cache)
        assert again.cached and (again.rows, again.rejects, again.fingerprint) == (fresh.rows, fresh.rejects, fresh.fingerprint)


EDITS = st.sampled_from(["in place", "rename"])
TEXT_KINDS = sorted(k for k, v in KINDS.items() if not v.vision)
VISION_KINDS = sorted(k for k, v in KINDS.items() if v.vision)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(TEXT_KINDS), pick=st.integers(0, 1000), value=st.integers(0, 1000), how=EDITS)
def test_a_one_byte_edit_of_any_text_input_is_seen_by_the_cache(kind: str, pick: int, value: int, how: str) -> None:
    _check_edit(KINDS[kind], pick, value, how)


@pytest.mark.parametrize("kind", TEXT_KINDS)
def test_every_text_input_kind_changes_the_rows_when_edited(kind: str) -> None:
    """The property is not vacuous: an edit of each kind changes the rows (or the rejects) of a fresh build."""
    spec = KINDS[kind]
    with _fresh(False) as root:
        args, target = spec.args(root), root / spec.target
        before = _build(args, root / "out1", None)
        offset = spec.editable(target.read_bytes())[0]
        _edit(target, offset, next(b for b in spec.alphabet if b != target.read_bytes()[offset]), "in place")
        after = _build(args, root / "out2", None)
        assert (after.rows, after.rejects) != (before.rows, before.rejects) or kind == "generation config"
        assert after.fingerprint != before.fingerprint


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(VISION_KINDS), pick=st.integers(0, 1000), value=st.integers(0, 1000), how=EDITS)
def test_a_one_byte_edit_of_a_processor_file_or_an_image_is_seen_by_the_cache(kind: str, pick: int, value: int, how: str) -> None:
    _check_edit(KINDS[kind], pick, value, how)


@pytest.mark.parametrize("how", ["in place", "rename"])
def test_an_image_resized_in_place_is_seen_by_the_cache(how: str) -> None:
    """The issue's case: chart.png enlarged 3x in place (and by a rename), its mtime restored."""
    from PIL import Image

    spec = KINDS["image pixels"]
    with _fresh(True) as root:
        args, chart = spec.args(root), root / "vision" / "chart.png"
        first = _build(args, root / "out1", root / "cache")
        before = chart.stat()
        with Image.open(chart) as im:
            bigger = im.resize((im.width * 3, im.height * 3))
        written = chart if how == "in place" else chart.with_name("new.png")
        bigger.save(written, format="PNG")
        if how == "rename":
            os.replace(written, chart)
        os.utime(chart, ns=(before.st_atime_ns, before.st_mtime_ns))
        cached = _build(args, root / "out2", root / "cache")
        fresh = _build(args, root / "out3", None)
        assert not cached.cached and (cached.rows, cached.rejects) == (fresh.rows, fresh.rejects) != (first.rows, first.rejects)
        assert _build(args, root / "out4", root / "cache").cached


def test_a_missing_image_that_appears_is_seen_by_the_cache() -> None:
    """A record rejected for a missing image is kept once the file is there: the manifest holds absent files too."""
    spec = KINDS["image pixels"]
    with _fresh(True) as root:
        args = spec.args(root)
        first = _build(args, root / "out1", root / "cache")
        assert "photos/missing.jpg" in first.rejects
        (root / "vision" / "photos").mkdir()
        shutil.copyfile(ROOT / "examples" / "media" / "logo.png", root / "vision" / "photos" / "missing.jpg")
        cached = _build(args, root / "out2", root / "cache")
        assert not cached.cached and "photos/missing.jpg" not in cached.rejects
        assert (cached.rows, cached.rejects) == (lambda b: (b.rows, b.rejects))(_build(args, root / "out3", None))


def test_a_worker_that_reads_an_edited_template_stops_the_build(tmp_path: Path) -> None:
    """engine=processes: each worker compiles the stage again; a template edited meanwhile is not silently mixed in."""
    import pickle

    from ftdata.errors import FtdataError
    from ftdata.options import DataOptions
    from ftdata.run.stage import Stage
    from ftdata.run.sft import sft_part
    from ftdata.run.loop import StageSpec

    template = tmp_path / "t.jinja"
    template.write_text("### Q: {{ instruction }}\n### A: ")
    spec = StageSpec.create(Stage(tokenizer(None), DataOptions(template=str(template))), sft_part)
    assert pickle.loads(pickle.dumps(spec)).compiled().templates == spec.templates
    template.write_text("### Question: {{ instruction }}\n### A: ")
    with pytest.raises(FtdataError, match=rf"^{template} changed while the build ran \(a worker read other bytes\); build again$"):
        pickle.loads(pickle.dumps(spec)).compiled()
