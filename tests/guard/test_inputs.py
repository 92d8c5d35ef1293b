"""`ftdata.guard.inputs`: files by content, remembered by (path, size, mtime, ctime, inode), and the media
manifest a cache hit checks. Literal inputs; sha256 from hashlib as the oracle."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from ftdata.guard import inputs
from ftdata.errors import FtdataError
from ftdata.guard.inputs import Digests, Input, InputKind, Manifest, add_read, data_input, describe, folder_input, stat_of


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file hashed (the digests remembered in this process forgotten first), and no file racy:
    the files of a test are seconds old at most."""
    hashed: list[str] = []
    real = inputs._sha256

    def sha256(path: str | Path) -> str:
        hashed.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(inputs, "_sha256", sha256)
    monkeypatch.setattr(inputs, "RACY_NS", 0)
    monkeypatch.setattr(inputs, "_MEMO", inputs.StatMemo(1 << 20))
    return hashed


def _restored(path: Path, data: bytes, *, rename: bool = False) -> None:
    """`path` holds `data`, written in place or by a rename, with its earlier atime and mtime."""
    before = path.stat()
    time.sleep(0.01)  # past one tick of the file system's clock: the ctime moves
    if rename:
        path.with_name("new").write_bytes(data)
        os.replace(path.with_name("new"), path)
    else:
        with path.open("r+b") as fh:
            fh.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_file_is_hashed_once_across_runs_and_again_after_an_edit_that_restores_its_mtime(tmp_path: Path, counted: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "d.jsonl"
    data.write_bytes(b'{"output": "b"}\n')
    index = tmp_path / "index.sqlite"
    with Digests(index) as files:
        assert files.file(data) == _sha(b'{"output": "b"}\n')
    monkeypatch.setattr(inputs, "_MEMO", inputs.StatMemo(1 << 20))  # a new process: only the index remembers
    with Digests(index) as files:
        assert files.file(data) == _sha(b'{"output": "b"}\n')
    assert counted == ["d.jsonl"]
    _restored(data, b'{"output": "c"}\n')
    with Digests(index) as files:
        assert files.file(data) == _sha(b'{"output": "c"}\n')
    assert counted == ["d.jsonl", "d.jsonl"]


def test_a_file_replaced_by_a_rename_is_hashed_again(tmp_path: Path, counted: list[str]) -> None:
    data = tmp_path / "t.jinja"
    data.write_bytes(b"### Q:")
    with Digests(tmp_path / "index.sqlite") as files:
        files.file(data)
        _restored(data, b"### A:", rename=True)
        assert files.file(data) == _sha(b"### A:")
    assert counted == ["t.jinja", "t.jinja"]


def test_a_file_changed_moments_ago_is_never_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Racily clean (git's word): another change within the same clock tick would keep its stat."""
    monkeypatch.setattr(inputs, "_MEMO", inputs.StatMemo(1 << 20))
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"x\n")
    with Digests(tmp_path / "index.sqlite") as files:
        files.file(data)
    assert inputs._MEMO.get(str(data), stat_of(data)) is None
    import sqlite3

    assert sqlite3.connect(tmp_path / "index.sqlite").execute("SELECT COUNT(*) FROM digests").fetchone() == (0,)


def test_a_file_written_while_it_is_hashed_never_vouches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"x\n")
    real = inputs._sha256

    def sha256_then_append(path: str | Path) -> str:
        digest = real(path)
        with open(path, "ab") as fh:
            fh.write(b"y\n")
        return digest

    monkeypatch.setattr(inputs, "_sha256", sha256_then_append)
    files = Digests()
    assert files.file(data).startswith("changing ")
    assert files.file(data, version=stat_of(data)) == ""


def test_an_unwritable_index_hashes_as_if_there_were_none(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"x\n")
    with Digests(blocker / "index.sqlite") as files:
        assert files.file(data) == _sha(b"x\n")


def test_data_and_folders_are_declared_by_content_with_their_names(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_bytes(b"a\n")
    (tmp_path / "data" / "sub").mkdir()
    (tmp_path / "data" / "sub" / "b.jsonl").write_bytes(b"b\n")
    (tmp_path / "tok").mkdir()
    for name, data in (("tokenizer.json", b"{}"), ("chat_template.jinja", b"x"), ("model.safetensors", b"w" * 10)):
        (tmp_path / "tok" / name).write_bytes(data)
    files = Digests()
    folder = data_input(str(tmp_path / "data"), files)
    expected = _sha(f"a.jsonl\0{_sha(b'a' + bytes([10]))}\nsub/b.jsonl\0{_sha(b'b' + bytes([10]))}\n".encode())
    assert (folder.kind, folder.name, folder.digest, folder.files) == (InputKind.DATA, str(tmp_path / "data"), expected, 2)
    tok = folder_input(InputKind.TOKENIZER, tmp_path / "tok", files)  # the weights are never read
    assert tok.digest == _sha(f"chat_template.jinja\0{_sha(b'x')}\ntokenizer.json\0{_sha(b'{}')}\n".encode()) and tok.files == 2
    assert data_input([{"a": 1}], files).digest == data_input([{"a": 1}], files).digest != data_input([{"a": 2}], files).digest
    assert data_input("org/name", files) == data_input("org/name", files)  # a hub id: by its name
    assert data_input("/dev/stdin", files).digest != data_input("/dev/stdin", files).digest  # a stream: never a hit


def test_the_unchanged_message_names_every_input() -> None:
    items = [
        Input(InputKind.DATA, "d.jsonl", "0"), Input(InputKind.TEMPLATE, "prompts/t.jinja", "1"),
        Input(InputKind.TOKENIZER, "tok", "2", files=7), Input(InputKind.MEDIA, "3 files", "3", files=3),
    ]  # fmt: skip
    assert describe(items) == "12 inputs unchanged: data, template t.jinja, tokenizer (7 files), 3 media files"
    assert describe([Input(InputKind.DATA, "list", "0", files=0)]) == "1 input unchanged: data"


def _manifest(files: Digests, *paths: Path) -> Manifest:
    return Manifest.of({str(p): stat_of(p) for p in paths}, files, taken_ns=time.time_ns())


def test_the_manifest_sees_an_image_edited_in_place_with_its_mtime_restored(tmp_path: Path, counted: list[str]) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"\x89PNG one")
    b.write_bytes(b"\x89PNG two")
    files = Digests()
    manifest = Manifest.from_json(_manifest(files, a, b).to_json())
    counted.clear()
    assert manifest.changed(files) == [] and counted == []  # stat only
    _restored(a, b"\x89PNG ONE")
    assert manifest.changed(files) == [str(a)] and counted == ["a.png"]


def test_the_manifest_trusts_a_file_touched_or_replaced_by_the_same_bytes(tmp_path: Path, counted: list[str]) -> None:
    a = tmp_path / "a.png"
    a.write_bytes(b"\x89PNG one")
    files = Digests()
    manifest = _manifest(files, a)
    _restored(a, b"\x89PNG one", rename=True)  # another inode, the same bytes
    os.utime(a)  # and a new mtime
    assert manifest.changed(files) == []


def test_the_manifest_sees_a_missing_file_appear_and_a_file_vanish(tmp_path: Path) -> None:
    a, gone = tmp_path / "a.png", tmp_path / "missing.jpg"
    a.write_bytes(b"\x89PNG one")
    files = Digests()
    manifest = Manifest.of({str(a): stat_of(a), str(gone): None}, files, taken_ns=time.time_ns())
    assert manifest.changed(files) == []
    gone.write_bytes(b"now here")
    assert manifest.changed(files) == [str(gone)]
    a.unlink()
    assert manifest.changed(files, first=False) == [str(a), str(gone)]


def test_a_recent_entry_is_hashed_on_every_check(tmp_path: Path) -> None:
    """An image changed within RACY_NS of the build may change again with the same stat: re-hashed, not trusted."""
    a = tmp_path / "a.png"
    a.write_bytes(b"\x89PNG one")
    files = Digests()
    manifest = _manifest(files, a)
    version = stat_of(a)
    with a.open("r+b") as fh:  # at once: possibly the same clock tick, the same stat
        fh.write(b"\x89PNG ONE")
    os.utime(a, ns=(version[1], version[1]))  # type: ignore[index]
    assert manifest.changed(files) == [str(a)]


def test_a_file_changed_between_its_read_and_the_manifest_is_never_trusted(tmp_path: Path) -> None:
    a = tmp_path / "a.png"
    a.write_bytes(b"\x89PNG one")
    read = {str(a): stat_of(a)}
    time.sleep(0.01)
    a.write_bytes(b"\x89PNG two!")
    manifest = Manifest.of(read, Digests(), taken_ns=time.time_ns())
    assert manifest.entries[str(a)][1] == "" and manifest.changed(Digests()) == [str(a)]


def test_a_file_read_in_two_versions_by_one_build_stops_it() -> None:
    read: dict = {}
    add_read(read, {"/a.png": (10, 1, 1, 7), "/gone.jpg": None})
    add_read(read, {"/a.png": (10, 1, 1, 7), "/gone.jpg": None, "/b.png": (3, 2, 2, 8)})
    assert read == {"/a.png": (10, 1, 1, 7), "/gone.jpg": None, "/b.png": (3, 2, 2, 8)}
    with pytest.raises(FtdataError, match=r"^/a\.png changed while the build read it \(its records saw two versions\); build again$"):
        add_read(read, {"/a.png": (10, 1, 5, 7)})


def test_a_stat_memo_keeps_only_what_was_read_after_the_file_settled():
    from ftdata.guard.inputs import RACY_NS, StatMemo

    memo: StatMemo[str] = StatMemo(limit=2)
    changed = 10 * RACY_NS  # the file's modification and change times, in ns
    version = (5, changed, changed, 1)
    memo.put("a", version, changed + RACY_NS // 2, "racy")  # read half a window after its change: not kept
    assert memo.get("a", version) is None
    memo.put("a", version, changed + RACY_NS + 1, "settled")
    assert memo.get("a", version) == "settled"
    assert memo.get("a", (5, changed, changed + 1, 1)) is None  # any other stat: another file
    memo.put("b", None, changed + RACY_NS + 1, "no file")
    assert memo.get("b", None) is None
    memo.put("c", version, changed + RACY_NS + 1, "c")
    memo.put("d", version, changed + RACY_NS + 1, "d")  # a third entry empties a memo of two
    assert (memo.get("a", version), memo.get("c", version), memo.get("d", version)) == (None, None, "d")


def test_the_files_read_are_noted_from_every_thread_and_taken_once(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from ftdata.guard.inputs import ReadFiles, version_of

    files = [tmp_path / f"{i}.png" for i in range(200)]
    for i, path in enumerate(files):
        path.write_bytes(b"x" * i)
    (tmp_path / "folder.png").mkdir()
    seen = ReadFiles()
    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(lambda p: seen.saw(p, p.stat()), files))
    assert versions == [version_of(p.stat()) for p in files] and versions[3][0] == 3
    assert seen.saw(tmp_path / "folder.png", (tmp_path / "folder.png").stat()) is None  # not a regular file
    assert seen.saw(tmp_path / "gone.png", None) is None
    read = seen.drain()
    assert read == {**{str(p): version_of(p.stat()) for p in files}, str(tmp_path / "folder.png"): None,
                    str(tmp_path / "gone.png"): None}  # fmt: skip
    assert seen.drain() == {}  # taken once
