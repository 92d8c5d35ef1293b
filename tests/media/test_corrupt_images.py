"""Images whose header is sound but whose pixel data is cut or corrupt are rejected at build time
(`media_unreadable`), not in the training collator; sound files, with bytes after the JPEG end
marker too, pass. Files made from matplotlib's sample photos."""

from __future__ import annotations

import base64
import json
import shutil

import pytest
from PIL import Image
from support import same_tick, settled

from ftdata.errors import UnusableRecord
from ftdata.outcomes import RejectCode
from ftdata.build.api import build
from ftdata.media.images import Headers


@pytest.fixture(scope="module")
def damaged(images, tmp_path_factory):
    """Sound files and damaged copies: each damaged one still opens (its header is whole) but cannot be decoded."""
    folder = tmp_path_factory.mktemp("damaged")
    jpeg, png = (images / "grace_hopper.jpg").read_bytes(), (images / "logo2.png").read_bytes()
    idat = png.index(b"IDAT")
    broken = bytearray(png)
    broken[idat + 100] ^= 0xFF  # one byte of the compressed pixels flipped: the chunk's CRC no longer matches
    files = {
        "cut.jpg": jpeg[: len(jpeg) // 2],  # a download that stopped half way
        "cut.png": png[: len(png) // 2],
        "broken_idat.png": bytes(broken),
        "trailer.jpg": jpeg + b"\x00" * 64,  # sound, with bytes after the end marker (some cameras write them)
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    for name in ("grace_hopper.jpg", "logo2.png"):
        shutil.copyfile(images / name, folder / name)
    return folder


@pytest.mark.parametrize("name", ["cut.jpg", "cut.png", "broken_idat.png"])
def test_sound_header_damaged_pixels_are_unreadable(damaged, name):
    with Image.open(damaged / name) as im:  # the header alone reads fine: what the build read before
        assert im.size == {"jpg": (512, 600), "png": (542, 130)}[name[-3:]]
    with pytest.raises(UnusableRecord, match=rf"{name} has a sound header but its pixel data does not decode .*: the file is cut or corrupt; replace it") as err:  # fmt: skip
        Headers(store=None, max_pixels=None).info(name, base=damaged, field="messages[0].content")
    assert err.value.code is RejectCode.MEDIA_UNREADABLE


def test_sound_files_pass_with_their_size(damaged):
    headers = Headers(store=None, max_pixels=None)
    sizes = {name: headers.info(name, base=damaged, field="f") for name in ("grace_hopper.jpg", "logo2.png", "trailer.jpg")}
    assert {name: (i.width, i.height) for name, i in sizes.items()} == {
        "grace_hopper.jpg": (512, 600), "logo2.png": (542, 130), "trailer.jpg": (512, 600),
    }  # fmt: skip


def test_an_inline_cut_image_is_unreadable(damaged, tmp_path):
    uri = "data:image/jpeg;base64," + base64.b64encode((damaged / "cut.jpg").read_bytes()).decode()
    with pytest.raises(UnusableRecord, match="inline image has a sound header but its pixel data does not decode") as err:
        Headers(store=tmp_path, max_pixels=None).info(uri, base=None, field="f")
    assert err.value.code is RejectCode.MEDIA_UNREADABLE
    assert not list(tmp_path.iterdir())  # never written to the image store


def test_build_rejects_them_and_keeps_the_rest(qwen_dir, damaged):
    def ask(image):
        return {"messages": [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What?"}]},
                             {"role": "assistant", "content": "A picture."}]}  # fmt: skip

    names = ["grace_hopper.jpg", "cut.jpg", "cut.png", "broken_idat.png", "trailer.jpg"]
    data = damaged / "chat.jsonl"
    data.write_text("".join(json.dumps(ask(n)) + "\n" for n in names), encoding="utf-8")
    result = build(data, processor=str(qwen_dir))
    assert [row["media"][0]["ref"].rsplit("/", 1)[1] for row in result.dataset] == ["grace_hopper.jpg", "trailer.jpg"]
    assert result.report.rejected == {"media_unreadable": 3}


def test_an_image_rewritten_under_its_old_time_and_size_is_read_again(tmp_path, monkeypatch):
    """A kept header is the file's while its size, modification and change times and inode are: an 8x2 BMP rewritten
    as a 4x4 one (the same 102 bytes) with its old modification time put back is read again, not sized 8x2."""
    import os

    import ftdata.media.images as images
    from ftdata.guard import inputs

    settled(monkeypatch, images)  # the header read is kept: the change time is what tells the rewrite
    path = tmp_path / "a.bmp"
    Image.new("RGB", (8, 2), "red").save(path)
    headers = Headers(store=None, max_pixels=None)
    first = headers.info(path.name, base=tmp_path, field="f")
    assert (first.width, first.height) == (8, 2)
    assert headers._cache.get(str(path), inputs.version_of(path.stat())) is not None
    stat = path.stat()
    Image.new("RGB", (4, 4), "blue").save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # `touch -r`: the old modification time
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns) == (102, stat.st_mtime_ns)
    again = headers.info(path.name, base=tmp_path, field="f")
    assert (again.width, again.height) == (4, 4)


def test_an_image_rewritten_within_one_clock_tick_is_read_again(tmp_path, monkeypatch):
    """A header read from a file changed within `RACY_NS` is not kept: a rewrite in the same tick of the file
    system's clock, its whole stat unchanged (8x2 BMP -> 4x4, the same 102 bytes), is read again."""
    from ftdata.guard import inputs

    path = tmp_path / "a.bmp"
    Image.new("RGB", (8, 2), "red").save(path)
    same_tick(monkeypatch, inputs, path)  # the stat a build notes (`ReadFiles`)
    headers = Headers(store=None, max_pixels=None)
    assert (headers.info(path.name, base=tmp_path, field="f").width, path.stat().st_size) == (8, 102)
    Image.new("RGB", (4, 4), "blue").save(path)
    assert path.stat().st_size == 102
    again = headers.info(path.name, base=tmp_path, field="f")
    assert (again.width, again.height) == (4, 4)
