"""Audio chats through `build`: every input shape, rows equal to the model's own processor, rejects with reasons.

The oracle is the real processor (Qwen2-Audio, Gemma 3n, Phi-4-multimodal, built offline in audio_support.py) run
on the row's text with one placeholder per clip and the clip's samples as the collator makes them (decoded, mono,
soxr-resampled to the feature extractor's rate): its input ids must equal the row's, token for token.
"""

from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from audio_support import CLIPS, SHARED_AUDIO, gemma3n, phi4, qwen2_audio, tone, write_clip
from support import same_tick, settled
from typer.testing import CliRunner

from ftdata.build.api import build
from ftdata.cli.app import app
from ftdata.errors import ConfigError
from ftdata.media.audio_files import load_audio
from ftdata.types import IGNORE_INDEX

__all__ = ["gemma3n", "phi4", "qwen2_audio"]  # session fixtures used by name below
FAMILIES = ["qwen2_audio", "gemma3n", "phi4"]
END_OF_TURN = {"qwen2_audio": "<|im_end|>", "gemma3n": "<end_of_turn>", "phi4": "<|end|><|endoftext|>"}  # Phi-3's template closes the last turn with both
ROW_COLUMNS = {"input_ids", "attention_mask", "labels", "record", "media"}
MEDIA_KEYS = {"kind", "ref", "start", "tokens", "width", "height", "seconds"}


def ask(part, question="What is that sound?", answer="Glass breaking."):
    return {"messages": [{"role": "user", "content": [part, {"type": "text", "text": question}]},
                         {"role": "assistant", "content": answer}]}  # fmt: skip


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A folder with the shared clips (1.mp3, 2.wav, 3.flac, 4.mp3) and LLaMA-Factory's audio demo beside them."""
    root = tmp_path_factory.mktemp("audio-data")
    shutil.copytree(CLIPS, root / "mllm_demo_data")
    shutil.copyfile(SHARED_AUDIO / "llamafactory_mllm_audio_demo.json", root / "demo.json")
    return root


def processor_row(processor, row):
    """The processor's own input ids for the row's text with each clip's expansion as one placeholder (the text the
    chat template writes), and the clips' samples as the collator makes them."""
    tok, token = processor.tokenizer, processor.audio_token
    text = tok.decode(row["input_ids"])
    for item in row["media"]:  # in order: the first expansion left is this item's
        expansion = getattr(processor, "full_audio_sequence", None) or token * item["tokens"]  # Gemma 3n: markers around
        assert expansion in text
        text = text.replace(expansion, token, 1)
    fe = getattr(processor, "feature_extractor", None) or processor.audio_processor
    waves = [load_audio(item["ref"], rate=fe.sampling_rate) for item in row["media"]]
    got = processor(text=[text], audio=waves or None, sampling_rate=fe.sampling_rate, add_special_tokens=False)
    return list(got["input_ids"][0])


def check_row(processor, row, answer, end_of_turn):
    """The row equals the processor's; no audio token trained; the reply and its end-of-turn trained; no samples."""
    assert set(row) == ROW_COLUMNS
    assert row["input_ids"] == processor_row(processor, row)
    tok = processor.tokenizer
    ids, labels = np.array(row["input_ids"]), np.array(row["labels"])
    pad = tok.convert_tokens_to_ids(processor.audio_token)
    for item in row["media"]:
        assert set(item) == MEDIA_KEYS and item["kind"] == "audio" and item["width"] is None and item["height"] is None
        assert (ids[item["start"] : item["start"] + item["tokens"]] == pad).all()
        assert (labels[item["start"] : item["start"] + item["tokens"]] == IGNORE_INDEX).all()
    assert int((ids == pad).sum()) == sum(i["tokens"] for i in row["media"])
    assert not ((ids == pad) & (labels != IGNORE_INDEX)).any()
    assert tok.decode(ids[labels != IGNORE_INDEX]).strip() == answer + end_of_turn


@pytest.mark.parametrize("family", FAMILIES)
def test_the_llamafactory_demo_builds_rows_equal_to_the_processors(family, data, request):
    processor = request.getfixturevalue(family)
    records = json.loads((data / "demo.json").read_text())
    ds = build(data / "demo.json", processor=processor, max_length=4096).dataset
    assert len(ds) == len(records)
    for row, record in zip(ds, records):
        check_row(processor, row, record["messages"][-1]["content"], END_OF_TURN[family])
        assert [i["ref"] for i in row["media"]] == [str((data / a).resolve()) for a in record["audios"]]
    tokens = {"qwen2_audio": [101, 73, 146], "gemma3n": [188, 188, 188], "phi4": [51, 36, 73]}[family]  # 1.mp3, 2.wav, 3.flac
    assert [r["media"][0]["tokens"] for r in ds][:3] == tokens
    assert [round(r["media"][0]["seconds"], 3) for r in ds][:3] == [4.032, 2.901, 5.855]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_folders_processor_holds_the_builds_tokenizer_and_is_autoprocessors(family, request, tmp_path, monkeypatch):
    """A build loads the folder's tokenizer once: the audio processor is AutoProcessor's (class, settings, ids and
    features for a clip) with that tokenizer in it, no tokenizer file parsed again; another folder's is not taken."""
    from transformers import AutoProcessor, PreTrainedTokenizerBase

    from ftdata.io.resources import load_tokenizer
    from ftdata.media.processors import load_processor

    folder = request.getfixturevalue(family).tokenizer.name_or_path
    auto = AutoProcessor.from_pretrained(folder, local_files_only=True)
    tok = load_tokenizer(folder)
    parsed = []
    loader = PreTrainedTokenizerBase.from_pretrained.__func__
    monkeypatch.setattr(PreTrainedTokenizerBase, "from_pretrained", classmethod(lambda c, *a, **k: parsed.append(a) or loader(c, *a, **k)))
    ours = load_processor(folder, tokenizer=tok)
    assert parsed == [] and ours.tokenizer is tok
    assert type(ours) is type(auto) and ours.to_dict() == auto.to_dict() and ours.audio_token_id == auto.audio_token_id
    fe = getattr(auto, "feature_extractor", None) or auto.audio_processor
    wave = load_audio(str(CLIPS / "2.wav"), rate=fe.sampling_rate)
    text = auto.tokenizer.decode(auto.tokenizer("What is that sound?")["input_ids"]) + auto.audio_token
    a, o = (p(text=[text], audio=[wave], sampling_rate=fe.sampling_rate) for p in (auto, ours))
    assert a.keys() == o.keys() and all(np.array_equal(np.asarray(a[k]), np.asarray(o[k])) for k in a)
    other = shutil.copytree(folder, tmp_path / "copy")  # the same files, another folder: its tokenizer is its own
    assert load_processor(str(other), tokenizer=tok).tokenizer is not tok and len(parsed) == 1


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """One clip per rate x channels x format, 0.1 s up to 2.3 s, and a chat record for each."""
    root = tmp_path_factory.mktemp("audio-grid")
    records, k = [], 0
    for rate in (8000, 16000, 22050, 44100, 48000):
        for channels in (1, 2):
            for fmt in ("wav", "flac", "mp3", "ogg"):
                seconds = 0.1 + 0.055 * k
                write_clip(root / f"c{k}.{fmt}", tone(int(seconds * rate), rate, channels, seed=k), rate)
                records.append(ask({"type": "audio", "path": f"c{k}.{fmt}"}, f"Clip {k}?", f"Clip {k} is a tone."))
                k += 1
    return write_jsonl(root / "grid.jsonl", records), records


@pytest.mark.parametrize("family", FAMILIES)
def test_every_rate_channel_layout_and_format_expands_to_the_processors_count(family, grid, request):
    processor = request.getfixturevalue(family)
    path, records = grid
    result = build(path, processor=processor, max_length=4096)
    assert result.report.rejected == {} and len(result.dataset) == len(records) == 40
    for row, record in zip(result.dataset, records):
        check_row(processor, row, record["messages"][-1]["content"], END_OF_TURN[family])


def test_each_input_shape_builds_the_same_row(qwen2_audio, data):
    from datasets import Audio, Dataset

    wav = (data / "mllm_demo_data" / "2.wav").read_bytes()
    b64 = base64.b64encode(wav).decode()
    path = "mllm_demo_data/2.wav"
    shapes = {
        "audio path": ask({"type": "audio", "path": path}),
        "audio value": ask({"type": "audio", "audio": path}),
        "audio url key": ask({"type": "audio", "url": path}),
        "openai input_audio": ask({"type": "input_audio", "input_audio": {"data": b64, "format": "wav"}}),
        "data uri": ask({"type": "audio", "audio": "data:audio/wav;base64," + b64}),
        "llamafactory tag": {"messages": [{"role": "user", "content": "<audio>What is that sound?"},
                                          {"role": "assistant", "content": "Glass breaking."}], "audios": [path]},  # fmt: skip
        "trl column only": {"messages": [{"role": "user", "content": "What is that sound?"},
                                         {"role": "assistant", "content": "Glass breaking."}], "audios": [path]},  # fmt: skip
        "trl bare part": {"messages": [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "What is that sound?"}]},
                                       {"role": "assistant", "content": "Glass breaking."}], "audios": [path]},  # fmt: skip
    }
    rows = {}
    for name, record in shapes.items():
        ds = build(write_jsonl(data / f"{name.replace(' ', '_')}.jsonl", [record]), processor=qwen2_audio,
                   image_dir=str(data / "store")).dataset  # fmt: skip
        assert len(ds) == 1, name
        rows[name] = ds[0]
    # A datasets Audio column, decoding on (as load_dataset gives it): read undecoded, no torchcodec needed.
    hub = Dataset.from_dict({
        "messages": [[{"role": "user", "content": "<audio>What is that sound?"}, {"role": "assistant", "content": "Glass breaking."}]],
        "audios": [[str(data / path)]],
    }).cast_column("audios", __import__("datasets").List(Audio()))  # fmt: skip
    rows["datasets Audio"] = build(hub, processor=qwen2_audio).dataset[0]
    inline = Dataset.from_dict({"messages": hub["messages"], "audio": [{"bytes": wav, "path": None}]}).cast_column("audio", Audio(decode=False))
    rows["datasets Audio bytes"] = build(inline, processor=qwen2_audio, image_dir=str(data / "store")).dataset[0]
    first = rows["audio path"]
    check_row(qwen2_audio, first, "Glass breaking.", "<|im_end|>")
    digest = "sha256:" + __import__("hashlib").sha256(wav).hexdigest()
    for name, row in rows.items():
        assert (row["input_ids"], row["labels"]) == (first["input_ids"], first["labels"]), name
        ref = digest if name in ("openai input_audio", "data uri", "datasets Audio bytes") else str((data / path).resolve())
        assert row["media"] == [{**first["media"][0], "ref": ref}], name
    assert (data / "store" / f"{digest.removeprefix('sha256:')}.wav").read_bytes() == wav  # written once by digest


def test_bad_clips_are_rejected_with_their_reasons(qwen2_audio, data, tmp_path):
    (tmp_path / "notes.wav").write_text("these are not samples")
    (tmp_path / "empty.wav").write_bytes(b"")
    write_clip(tmp_path / "whole.wav", tone(16000, 16000, 1), 16000)
    whole = (tmp_path / "whole.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(whole[: len(whole) // 2])
    write_clip(tmp_path / "long.flac", tone(31 * 16000, 16000, 1), 16000)
    write_clip(tmp_path / "short.wav", tone(200, 16000, 1), 16000)
    good = str(data / "mllm_demo_data" / "2.wav")
    cases = {
        "missing.wav": ("media_missing", "does not exist; fix the path"),
        "https://example.com/a.wav": ("media_url", "is a URL; ftdata never fetches"),
        "notes.wav": ("media_unreadable", "is not a WAV, FLAC, OGG or MP3 file"),
        "empty.wav": ("media_unreadable", "is empty (0 bytes)"),
        "cut.wav": ("media_unreadable", "is cut: its data chunk declares 32000 bytes"),
        "long.flac": ("media_too_long", "is 31.00 s; the processor keeps only the first 30 s"),
        "short.wav": ("media_too_short", "needs at least 321"),
    }
    records = [ask({"type": "audio", "path": name}) for name in cases]
    records.append({"messages": [{"role": "user", "content": "<audio><audio>Two?"}, {"role": "assistant", "content": "One."}], "audios": [good]})
    records.append(ask({"type": "audio", "path": good}))
    result = build(write_jsonl(tmp_path / "bad.jsonl", records), processor=qwen2_audio)
    assert len(result.dataset) == 1
    expected = [code for code, _ in cases.values()] + ["media_mismatch"]
    assert sorted(result.report.rejected.elements()) == sorted(expected)


def test_bad_clip_reasons_name_the_file_and_fix(qwen2_audio, tmp_path):
    (tmp_path / "notes.wav").write_text("these are not samples")
    write_clip(tmp_path / "long.wav", tone(31 * 16000, 16000, 1), 16000)
    out = tmp_path / "out"
    write_clip(tmp_path / "good.wav", tone(16000, 16000, 1), 16000)
    records = [ask({"type": "audio", "path": "notes.wav"}), ask({"type": "audio", "path": "long.wav"}), ask({"type": "audio", "path": "good.wav"}),
               {"messages": [{"role": "user", "content": "<audio><audio>Two?"}, {"role": "assistant", "content": "One."}], "audios": ["long.wav"]}]  # fmt: skip
    folder = tmp_path / "qwen2-audio"
    qwen2_audio.save_pretrained(str(folder))
    data = write_jsonl(tmp_path / "bad.jsonl", records)
    result = CliRunner().invoke(app, ["build", str(data), "--processor", str(folder), "-o", str(out), "--no-cache"])
    assert result.exit_code == 0, result.output
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    reasons = {r["code"]: r["reason"] for r in rejects}
    assert "notes.wav' is not a WAV, FLAC, OGG or MP3 file (it starts with b'thes'); convert it" in reasons["media_unreadable"]
    assert "long.wav' is 31.00 s; the processor keeps only the first 30 s (480000 samples at 16000 Hz): cut the clip or allow cuts" in reasons["media_too_long"]
    assert "1 audio placeholder(s)" in reasons["media_mismatch"] or "2 audio placeholder(s)" in reasons["media_mismatch"]
    record = json.loads((out / "build.json").read_text())
    assert record["audio"]["decoders"] == {"wav": "soundfile", "flac": "soundfile", "ogg": "soundfile", "mp3": "av"}
    assert record["audio"]["resampler"] == "soxr (HQ)" and record["audio"]["versions"]["soxr"]


def test_audio_window_cut_keeps_the_processors_cut_and_notes_the_seconds(qwen2_audio, tmp_path):
    write_clip(tmp_path / "long.flac", tone(int(41.5 * 16000), 16000, 1), 16000)
    write_clip(tmp_path / "good.wav", tone(16000, 16000, 1), 16000)
    data = write_jsonl(tmp_path / "long.jsonl", [ask({"type": "audio", "path": "long.flac"}), ask({"type": "audio", "path": "good.wav"})])
    assert build(data, processor=qwen2_audio).report.rejected == {"media_too_long": 1}
    result = build(data, processor=qwen2_audio, audio_window="cut", max_length=4096)
    assert len(result.dataset) == 2
    row = result.dataset[0]
    assert row["media"][0]["tokens"] == 750 and row["media"][0]["seconds"] == 41.5
    check_row(qwen2_audio, row, "Glass breaking.", "<|im_end|>")  # the processor cuts at 30 s too
    assert result.report.notes["audio_cut"] == 1
    assert "audio 0: 11.50 s past the processor's window dropped (audio_window=cut)" in " ".join(result.report.note_texts.get("audio_cut", []))


@pytest.mark.parametrize("max_length", [60, 90, 140, 200, 400])
def test_a_short_max_length_never_cuts_a_clip(qwen2_audio, data, max_length):
    turns = []
    for k, clip in enumerate(("2.wav", "3.flac", "2.wav")):
        turns += [{"role": "user", "content": [{"type": "audio", "path": f"mllm_demo_data/{clip}"}, {"type": "text", "text": f"Turn {k}: " + "words " * 20}]},
                  {"role": "assistant", "content": f"Reply {k}."}]  # fmt: skip
    fits = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}  # so a build is never empty
    path = write_jsonl(data / f"long_{max_length}.jsonl", [{"messages": turns}, fits])
    for truncation in ("keep_response", "keep_start", "keep_end"):
        result = build(path, processor=qwen2_audio, max_length=max_length, truncation=truncation)
        pad = qwen2_audio.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
        for row in result.dataset.filter(lambda r: len(r["media"]) > 0):
            ids = np.array(row["input_ids"])
            assert len(ids) <= max_length
            assert int((ids == pad).sum()) == sum(i["tokens"] for i in row["media"])  # every clip whole or absent
            for item in row["media"]:
                assert item["tokens"] in (73, 146) and (ids[item["start"] : item["start"] + item["tokens"]] == pad).all()
        if result.report.rejected:
            assert set(result.report.rejected) <= {"media_too_long", "response_too_long", "no_response_left"}, result.report.rejected


def test_packing_is_refused_for_audio_families(qwen2_audio, data):
    with pytest.raises(ConfigError, match=r"packing=True with a qwen2-audio processor: packed rows are proven isolated .* only for"):
        build(data / "demo.json", processor=qwen2_audio, packing=True)


def test_a_build_without_a_processor_rejects_audio_parts(data):
    fits = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    path = write_jsonl(data / "no_processor.jsonl", [ask({"type": "audio", "path": "mllm_demo_data/2.wav"}), fits])
    result = build(path)
    assert result.report.rejected == {"media_no_processor": 1} and len(result.dataset) == 1


def test_an_edited_clip_invalidates_the_cache(qwen2_audio, tmp_path):
    """One byte of the clip's header edited in place, its mtime restored: the cached build is not reused."""
    import os

    folder = tmp_path / "qwen2-audio"
    qwen2_audio.save_pretrained(str(folder))
    write_clip(tmp_path / "a.wav", tone(16000, 16000, 1), 16000)
    data = write_jsonl(tmp_path / "a.jsonl", [ask({"type": "audio", "path": "a.wav"})])

    def run(out):
        args = ["build", str(data), "--processor", str(folder), "-o", str(tmp_path / out), "--cache-dir", str(tmp_path / "cache"),
                "--output-format", "jsonl"]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        return result.stdout.startswith("cached:"), (tmp_path / out / "build.json").read_text()

    assert run("o1")[0] is False and run("o2")[0] is True
    clip = tmp_path / "a.wav"
    before = clip.stat()
    raw = bytearray(clip.read_bytes())
    raw[24:28] = (8000).to_bytes(4, "little")  # the fmt chunk's sample rate: 16 kHz -> 8 kHz, 25 -> 50 tokens
    clip.write_bytes(bytes(raw))
    os.utime(clip, ns=(before.st_atime_ns, before.st_mtime_ns))
    cached, record = run("o3")
    assert cached is False
    assert json.loads(record)["counts"]["examples"] == 1


def _cli(*args):
    result = CliRunner().invoke(app, [*args, "--no-color"])
    assert result.exit_code == 0, result.output
    return result.output


def test_preview_shows_one_marker_per_clip_with_its_seconds_and_tokens(qwen2_audio, data, tmp_path):
    folder = tmp_path / "qwen2-audio"
    qwen2_audio.save_pretrained(str(folder))
    out = _cli("preview", str(data / "demo.json"), "--processor", str(folder), "-n", "2")
    assert "<|im_start|>user\n[audio 4.03 s, 101 tokens: 1.mp3]What's that sound?<|im_end|>" in out
    assert "[audio 2.90 s, 73 tokens: 2.wav]What can you hear?" in out
    assert "<|AUDIO|>" not in out and "<|audio_bos|>" not in out  # the markers around the pads are inside the one marker


def test_stats_reports_audio_seconds_and_tokens_per_record(qwen2_audio, data, tmp_path):
    folder = tmp_path / "qwen2-audio"
    qwen2_audio.save_pretrained(str(folder))
    out = _cli("stats", str(data / "demo.json"), "--processor", str(folder))
    # 1.mp3 4.032 s (101 tokens), 2.wav 2.901 s (73), 3.flac 5.855 s (146)
    assert "audio         12.79 s in 3 examples; seconds per example p50 4.03, max 5.86; audio tokens per example p50 101, max 146, 320 in all" in out


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rate=st.sampled_from([8000, 16000, 22050, 44100, 48000]), channels=st.sampled_from([1, 2]),
       seconds=st.floats(0.1, 35.0), fmt=st.sampled_from(["wav", "flac"]))  # fmt: skip
def test_the_medium_counts_what_the_processor_makes_at_any_rate_and_length(qwen2_audio, tmp_path, rate, channels, seconds, fmt):
    from ftdata.media.audio import AudioMedium

    path = write_clip(tmp_path / f"h.{fmt}", tone(int(seconds * rate), rate, channels), rate)
    medium = AudioMedium(qwen2_audio, store=None, window="cut")
    item = medium.item(str(path), base=None, field="messages[0].content")
    wave = load_audio(path, rate=16000)
    text = f"<|audio_bos|>{qwen2_audio.audio_token}<|audio_eos|>"
    ids = qwen2_audio(text=[text], audio=[wave], sampling_rate=16000)["input_ids"][0]
    assert item.expansion.pads == ids.count(qwen2_audio.audio_token_id)
    assert item.dropped == pytest.approx(max(0.0, len(wave) - 480000) / 16000)


def test_a_clip_rewritten_under_its_old_time_and_size_is_read_again(qwen2_audio, tmp_path, monkeypatch):
    """A kept clip header is the file's while its `Stat` is: a 1 s WAV at 16 kHz rewritten as 2 s at 8 kHz (the same
    bytes' length) with its old modification time put back is read again, not counted as 1 s."""
    import os

    import ftdata.media.audio as audio
    from ftdata.guard import inputs
    from ftdata.media.audio import AudioMedium

    settled(monkeypatch, audio)  # the header read is kept: the change time is what tells the rewrite
    path = write_clip(tmp_path / "a.wav", tone(16000, 16000, 1), 16000)
    medium = AudioMedium(qwen2_audio, store=None, window="cut")
    assert medium.clip(str(path), base=None, field="f").header.seconds == 1.0
    assert medium._headers.get(str(path), inputs.version_of(path.stat())) is not None
    stat = path.stat()
    write_clip(path, tone(16000, 8000, 1), 8000)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # `touch -r`: the old modification time
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert medium.clip(str(path), base=None, field="f").header.seconds == 2.0


def test_a_clip_rewritten_within_one_clock_tick_is_read_again(qwen2_audio, tmp_path, monkeypatch):
    """A header read from a clip changed within `RACY_NS` is not kept: the same rewrite in the same tick of the file
    system's clock, its whole stat unchanged, is read again."""
    from ftdata.guard import inputs
    from ftdata.media.audio import AudioMedium

    path = write_clip(tmp_path / "a.wav", tone(16000, 16000, 1), 16000)
    same_tick(monkeypatch, inputs, path)  # the stat a build notes (`ReadFiles`)
    medium = AudioMedium(qwen2_audio, store=None, window="cut")
    assert medium.clip(str(path), base=None, field="f").header.seconds == 1.0
    size = path.stat().st_size
    write_clip(path, tone(16000, 8000, 1), 8000)
    assert path.stat().st_size == size
    assert medium.clip(str(path), base=None, field="f").header.seconds == 2.0


def _build_edit(root, out, cache=True):
    """`ftdata build` of the clip's chats in `root` into `out`: (was it cached, its rows, its rejects)."""
    flags = ["--cache-dir", str(root / "cache")] if cache else ["--no-cache"]
    args = ["build", str(root / "a.jsonl"), "--processor", str(root / "qwen2-audio"), "-o", str(out), "--output-format", "jsonl"]
    result = CliRunner().invoke(app, [*args, *flags])
    assert result.exit_code == 0, result.output
    rows = "".join(p.read_text() for p in sorted(out.glob("*.jsonl")) if p.name != "rejects.jsonl")
    return result.stdout.startswith("cached:"), rows, (out / "rejects.jsonl").read_text()


@pytest.fixture(scope="module")
def edit_root(qwen2_audio, tmp_path_factory):
    """A clip, its chats, the processor folder, and a cache the unedited clip's build filled (in cache-base: each
    example starts from a copy of it, as if that build had just run)."""
    root = tmp_path_factory.mktemp("edit")
    qwen2_audio.save_pretrained(str(root / "qwen2-audio"))
    write_clip(root / "a.wav", tone(24000, 16000, 1), 16000)
    write_jsonl(root / "a.jsonl", [ask({"type": "audio", "path": "a.wav"}), ask({"type": "text", "text": "x"}, "Hi", "Hello.")])
    _build_edit(root, root / "o1")
    shutil.move(root / "cache", root / "cache-base")
    return root, (root / "a.wav").read_bytes(), (root / "a.wav").stat()


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(pick=st.integers(0, 10**6), value=st.integers(0, 255))
def test_a_one_byte_edit_of_a_clip_is_seen_by_the_cache(edit_root, tmp_path_factory, pick, value):
    """Any byte of a clip edited in place, its size and mtime kept: a build from the cache equals a fresh build."""
    import os

    root, raw, before = edit_root
    clip = root / "a.wav"
    with clip.open("r+b") as fh:  # the clip as the cache saw it (an earlier example edited it), same inode
        fh.write(raw)
    shutil.rmtree(root / "cache", ignore_errors=True)
    shutil.copytree(root / "cache-base", root / "cache")
    offset = pick % len(raw)
    with clip.open("r+b") as fh:
        fh.seek(offset)
        fh.write(bytes([value if value != raw[offset] else (value + 1) % 256]))
    os.utime(clip, ns=(before.st_atime_ns, before.st_mtime_ns))
    outs = tmp_path_factory.mktemp("edit-out")
    cached, fresh = _build_edit(root, outs / "o2"), _build_edit(root, outs / "o3", cache=False)
    assert not cached[0] and cached[1:] == fresh[1:]


def test_qwen2_audio_rows_equal_the_processors_chat_template_and_call(qwen2_audio, data):
    """The inference path itself: Qwen2-Audio's `apply_chat_template` on the parts (it numbers the clips:
    `Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\\n`, across turns), then its `__call__` on the clips."""
    clips = ["mllm_demo_data/2.wav", "mllm_demo_data/3.flac", "mllm_demo_data/1.mp3"]
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Compare "}, {"type": "audio", "path": clips[0]},
                                     {"type": "text", "text": " with "}, {"type": "audio", "path": clips[1]}]},
        {"role": "assistant", "content": "The second is longer."},
        {"role": "user", "content": [{"type": "audio", "path": clips[2]}, {"type": "text", "text": "And this one?"}]},
        {"role": "assistant", "content": "Glass breaking."},
    ]  # fmt: skip
    row = build(write_jsonl(data / "turns.jsonl", [{"messages": messages}]), processor=qwen2_audio, max_length=4096).dataset[0]
    as_served = [{**m, "content": [{**p, "audio_url": p["path"]} if p["type"] == "audio" else p for p in m["content"]]}
                 if isinstance(m["content"], list) else m for m in messages]  # fmt: skip
    text = qwen2_audio.apply_chat_template(as_served)
    assert "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n with Audio 2:" in text and "Audio 3: " in text
    waves = [load_audio(data / c, rate=16000) for c in clips]
    expected = list(qwen2_audio(text=[text], audio=waves, sampling_rate=16000)["input_ids"][0])
    assert row["input_ids"] == expected[: len(row["input_ids"])] and len(expected) - len(row["input_ids"]) <= 1  # the template's last "\n"
    labels, tok = np.array(row["labels"]), qwen2_audio.tokenizer
    assert tok.decode(np.array(row["input_ids"])[labels != IGNORE_INDEX]) == "The second is longer.<|im_end|>Glass breaking.<|im_end|>"
    assert [i["tokens"] for i in row["media"]] == [73, 146, 101]


def test_a_build_to_out_publishes_its_inline_clips(qwen2_audio, data, tmp_path):
    folder = tmp_path / "qwen2-audio"
    qwen2_audio.save_pretrained(str(folder))
    wav = (data / "mllm_demo_data" / "2.wav").read_bytes()
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}}
    records = write_jsonl(tmp_path / "inline.jsonl", [ask(part)])
    out = tmp_path / "out"
    args = ["build", str(records), "--processor", str(folder), "-o", str(out), "--no-cache", "--image-dir", str(tmp_path / "store")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    digest = __import__("hashlib").sha256(wav).hexdigest()
    assert (out / "images" / f"{digest}.wav").read_bytes() == wav
