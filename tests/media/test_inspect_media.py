"""The inspection page of media builds: each image as a thumbnail and each clip with a player, embedded in the
page (data: URIs, nothing loaded from elsewhere), with the tokens it takes; pixels are read only for the page."""

from __future__ import annotations

import base64
import io
import json
import shutil

from audio_support import CLIPS, qwen2_audio  # noqa: F401  - the session fixture, used by name
from PIL import Image

from ftdata.build.api import build
from ftdata.inspect import collect, inspect


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def ask(part, question="What is that?", answer="A chart."):
    return {"messages": [{"role": "user", "content": [part, {"type": "text", "text": question}]}, {"role": "assistant", "content": answer}]}


def test_an_image_row_shows_its_thumbnail_and_token_count(tmp_path, qwen_dir, images):
    data = _jsonl(tmp_path / "chat.jsonl", [ask({"type": "image", "image": str(images / "chart.png")})])
    out = tmp_path / "out"
    build(str(data), out, processor=str(qwen_dir), max_length=4096)
    (row,) = collect(out).rows
    (item,) = row.media
    assert item.kind == "image" and item.tokens > 0 and item.detail == "320x240 px"
    assert item.data_uri.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(item.data_uri.split(",", 1)[1]))) as thumb:
        assert max(thumb.size) == 160 and thumb.size == (160, 120)
    (marker,) = [t for t in row.sections[0].tokens if t.text.startswith("⟨image")]  # the placeholders as one marker
    assert marker.text == f"⟨image: {item.tokens} tokens⟩" and marker.label == -100 and marker.special
    assert not any("image_pad" in t.text for t in row.sections[0].tokens)
    assert len(row.sections[0].tokens) == row.total - item.tokens + 1
    html = inspect(out).read_text(encoding="utf-8")
    assert f'<img src="{item.data_uri}"' in html and f"{item.tokens} tokens" in html


def test_an_inline_image_is_shown_from_the_builds_own_store(tmp_path, qwen_dir, images, monkeypatch):
    """A `data:` image is stored by content (`sha256:` ref) and published in OUT/images: the page reads it there."""
    monkeypatch.setenv("FTDATA_IMAGE_DIR", str(tmp_path / "store"))
    inline = "data:image/png;base64," + base64.b64encode((images / "chart.png").read_bytes()).decode()
    data = _jsonl(tmp_path / "chat.jsonl", [ask({"type": "image_url", "image_url": {"url": inline}})])
    out = tmp_path / "out"
    build(str(data), out, processor=str(qwen_dir), max_length=4096)
    shutil.rmtree(tmp_path / "store")  # only OUT's copy is left
    (row,) = collect(out).rows
    (item,) = row.media
    assert item.ref.startswith("sha256:") and item.data_uri.startswith("data:image/png;base64,")


def test_an_audio_row_embeds_its_clip_with_a_player(tmp_path, qwen2_audio):  # noqa: F811
    shutil.copyfile(CLIPS / "2.wav", tmp_path / "2.wav")
    data = _jsonl(tmp_path / "audio.jsonl", [ask({"type": "audio", "audio": "2.wav"}, "What is that sound?", "A cough.")])
    out = tmp_path / "out"
    build(str(data), out, processor=qwen2_audio, max_length=4096)
    (row,) = collect(out).rows
    (item,) = row.media
    assert item.kind == "audio" and item.tokens > 0
    assert [t.text for t in row.sections[0].tokens].count(f"⟨audio: {item.tokens} tokens⟩") == 1
    assert base64.b64decode(item.data_uri.removeprefix("data:audio/wav;base64,")) == (CLIPS / "2.wav").read_bytes()
    assert f'<audio controls src="{item.data_uri}">' in inspect(out).read_text(encoding="utf-8")
