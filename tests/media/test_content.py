"""Records with images read into messages (no processor needed), and image headers read without pixels."""

from __future__ import annotations

import base64

import pytest

from ftdata.records.formats import to_examples
from ftdata.errors import Location, RecordError, UnusableRecord
from ftdata.outcomes import RejectCode
from ftdata.tokens.shorten import cut_text
from ftdata.types import PromptCut
from ftdata.records.media import MEDIA, MediaKind, Ref, attach_columns
from ftdata.media.images import Headers

HERE = Location("data.jsonl", 1)


def one(row):
    """The row as a build with a processor reads it: formatted, then given its media columns."""
    (example,) = attach_columns(to_examples(row, HERE), row, HERE)
    return example


def test_openai_parts_become_placeholders_in_order():
    ex = one({"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Compare "}, {"type": "image", "image": "a.png"},
                                     {"type": "text", "text": " and "}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": "Same."}]})  # fmt: skip
    user = ex.messages[0]
    assert user.content == f"Compare {MEDIA} and {MEDIA}"
    assert user.media == (Ref(MediaKind.IMAGE, "a.png"), Ref(MediaKind.IMAGE, "data:image/png;base64,AAAA"))


def test_trl_placeholders_take_the_images_column():
    ex = one({"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},
                           {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}], "images": ["cat.jpg"]})  # fmt: skip
    assert ex.messages[0].content == f"{MEDIA}What?" and ex.messages[0].media == (Ref(MediaKind.IMAGE, "cat.jpg"),)
    assert ex.messages[1].content == "A cat."


def test_sharegpt_image_tags_with_an_images_column():
    ex = one({"conversations": [{"from": "human", "value": "<image>\nWhat is in <image>?"}, {"from": "gpt", "value": "Two dogs."}],
              "images": ["1.png", "2.png"]})  # fmt: skip
    assert ex.messages[0].content == f"{MEDIA}\nWhat is in {MEDIA}?" and ex.messages[0].media == (Ref(MediaKind.IMAGE, "1.png"), Ref(MediaKind.IMAGE, "2.png"))


def test_image_tags_without_an_images_column_stay_text():
    ex = one({"messages": [{"role": "user", "content": "Write <image> in HTML"}, {"role": "assistant", "content": "<img>"}]})
    assert ex.messages[0].content == "Write <image> in HTML" and ex.messages[0].media == ()


def test_placeholder_count_mismatch_is_a_typed_reject():
    with pytest.raises(UnusableRecord) as err:
        one({"messages": [{"role": "user", "content": "<image>"}, {"role": "assistant", "content": "x"}], "images": ["a", "b"]})
    assert err.value.code is RejectCode.MEDIA_MISMATCH and "1 image placeholder(s)" in err.value.reason


def test_unknown_part_is_malformed():
    with pytest.raises(RecordError, match="neither text nor media"):
        one({"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "document", "url": "a.pdf"}]},
                          {"role": "assistant", "content": "x"}]})  # fmt: skip
    with pytest.raises(RecordError, match=r"field 'messages\[0\]\.content\[1\]': is a video part"):
        one({"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "video", "video": "a.mp4"}]},
                          {"role": "assistant", "content": "x"}]})  # fmt: skip


@pytest.mark.parametrize("side", list(PromptCut))
def test_a_prompt_cut_keeps_every_placeholder(side):
    text = f"{MEDIA}one two three four five six{MEDIA} seven"
    offsets, at = [], 0
    for word in text.split(" "):
        offsets.append((at, at + len(word)))
        at += len(word) + 1
    cut = cut_text(text, offsets, drop=4, side=side)
    assert cut.count(MEDIA) == 2 and len(cut) < len(text)


def test_headers_give_size_and_reject_with_codes(images, tmp_path):
    headers = Headers(store=tmp_path / "store", max_pixels=100_000)
    assert headers.info("logo2.png", base=images, field="f").width == 542
    inline = "data:image/png;base64," + base64.b64encode((images / "chart.png").read_bytes()).decode()
    info = headers.info(inline, base=None, field="f")
    assert (info.width, info.height) == (320, 240) and info.ref.startswith("sha256:")
    assert len(list((tmp_path / "store").glob("*.png"))) == 1
    assert headers.info({"bytes": (images / "chart.png").read_bytes(), "path": None}, base=None, field="f").ref == info.ref
    cases = {
        "missing.png": RejectCode.MEDIA_MISSING, "http://x/y.png": RejectCode.MEDIA_URL, "not_an_image.png": RejectCode.MEDIA_UNREADABLE,
        "corrupt.png": RejectCode.MEDIA_UNREADABLE, "grace_hopper.jpg": RejectCode.MEDIA_TOO_LARGE, "data:image/png,xyz": RejectCode.MEDIA_UNREADABLE,
    }  # fmt: skip
    for ref, code in cases.items():
        with pytest.raises(UnusableRecord) as err:
            headers.info(ref, base=images, field="f")
        assert err.value.code is code, ref


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(words=st.lists(st.sampled_from(["a", "bb", MEDIA, "ccc"]), min_size=1, max_size=30), drop=st.integers(0, 40),
       side=st.sampled_from(list(PromptCut)))  # fmt: skip
def test_cuts_never_lose_an_image(words, drop, side):
    """Whatever a prompt cut takes, every image placeholder stays, and the text only gets shorter (bar the marker)."""
    text = " ".join(words)
    offsets, at = [], 0
    for word in words:
        offsets.append((at, at + len(word)))
        at += len(word) + 1
    cut = cut_text(text, offsets, drop=drop, side=side)
    assert cut.count(MEDIA) == text.count(MEDIA)
    if side is not PromptCut.MIDDLE:
        assert len(cut.replace(MEDIA, "")) <= len(text.replace(MEDIA, ""))


def test_open_image_finds_paths_and_inline_images(images, tmp_path):
    from ftdata.media.images import open_image

    headers = Headers(store=tmp_path, max_pixels=None)
    inline = headers.info((images / "chart.png").read_bytes(), base=None, field="f")
    assert open_image(inline.ref, store=tmp_path).size == (320, 240)
    assert open_image(str(images / "logo2.png")).size == (542, 130)
    with pytest.raises(FileNotFoundError):
        open_image("sha256:" + "0" * 64, store=tmp_path)


@settings(deadline=None)  # the first call imports trl
@given(system=st.booleans(), roles=st.lists(st.sampled_from(["user", "assistant"]), min_size=1, max_size=5),
       texts=st.lists(st.text(alphabet=" ab\n", max_size=4), min_size=6, max_size=6), n=st.integers(1, 3))  # fmt: skip
def test_rows_without_placeholders_place_images_where_trl_does(system, roles, texts, n):
    """Whatever the conversation, the column's images land where TRL's own prepare_multimodal_messages puts them
    (before the first user text), or the record is rejected where TRL raises (no user turn to take them)."""
    from trl.data_utils import prepare_multimodal_messages

    from ftdata.chat.contents import to_parts
    from ftdata.types import Example, Message

    messages = [{"role": "system", "content": texts[-1]}] * system + [{"role": r, "content": t} for r, t in zip(roles, texts)]
    images = [f"image{k}.png" for k in range(n)]
    example = Example(tuple(Message(m["role"], m["content"]) for m in messages), source=HERE)
    try:
        expected = prepare_multimodal_messages(messages, images=images)
    except ValueError:
        with pytest.raises(UnusableRecord):
            attach_columns((example,), {"messages": messages, "images": images}, HERE)
        return
    (placed,) = attach_columns((example,), {"messages": messages, "images": images}, HERE)
    ours = []
    for m in placed.messages:
        refs = iter(m.media)
        parts = [{**p, "image": next(refs).value} if p["type"] == "image" else p for p in to_parts(m.content)]
        ours.append({"role": m.role, "content": parts})
    # TRL writes an empty text part for an empty content, after its images; ftdata's parts leave it out beside an image
    assert ours == [{**m, "content": [p for p in m["content"] if p != {"type": "text", "text": ""} or len(m["content"]) == 1]}
                    for m in expected]  # fmt: skip
