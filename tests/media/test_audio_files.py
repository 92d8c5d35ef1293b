"""Audio header facts: the exact frame count without decoding, equal to what the decode returns; cut, empty,
missing, foreign and remote clips refused with their reject code and the file named."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio_support import CLIPS, FORMATS, RATES, SHARED_AUDIO, tone, write_clip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftdata.errors import UnusableRecord
from ftdata.media.audio_files import AudioFormat, AudioHeader, decode_mono, load_audio, read_header, resampled_length
from ftdata.outcomes import RejectCode


def test_the_shared_clips_header_facts():
    """LLaMA-Factory's demo clips: literal facts, and each decodes to exactly its frame count."""
    expected = {
        "1.mp3": (AudioFormat.MP3, 2, 48000, 193536),  # no LAME tag: 168 frames of 1152
        "2.wav": (AudioFormat.WAV, 1, 16000, 46421),
        "3.flac": (AudioFormat.FLAC, 1, 16000, 93680),
        "4.mp3": (AudioFormat.MP3, 2, 44100, 220500),  # 193 frames of 1152 less the LAME delay 1105 and padding 731
    }
    for name, (fmt, channels, rate, frames) in expected.items():
        header = read_header(name, base=CLIPS)
        assert header == AudioHeader(str(CLIPS / name), fmt, channels, rate, frames)
        assert len(decode_mono(CLIPS / name).samples) == frames
        assert len(load_audio(CLIPS / name, rate=16000)) == resampled_length(frames, rate, 16000)


def test_the_demo_files_relative_paths_resolve_at_the_data_file():
    import json

    rows = json.loads((SHARED_AUDIO / "llamafactory_mllm_audio_demo.json").read_text())
    seconds = [round(read_header(row["audios"][0], base=SHARED_AUDIO).seconds, 3) for row in rows]
    assert seconds == [4.032, 2.901, 5.855]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(FORMATS), rate=st.sampled_from(RATES), channels=st.sampled_from([1, 2]),
       frames=st.integers(1, 4 * 48000), inline=st.booleans())  # fmt: skip
def test_header_frames_equal_the_decoded_samples(fmt, rate, channels, frames, inline):
    with tempfile.TemporaryDirectory() as tmp:
        path = write_clip(Path(tmp) / f"clip.{fmt}", tone(frames, rate, channels), rate)
        source = path.read_bytes() if inline else path
        header = read_header(source)
        assert (header.format, header.channels, header.sample_rate) == (AudioFormat(fmt), channels, rate)
        if fmt != "mp3":  # an MP3 encoder's delay and padding are not always trimmed back to the input length
            assert header.frames == frames
        wave = decode_mono(source)
        assert (len(wave.samples), wave.sample_rate, wave.samples.dtype) == (header.frames, rate, np.float32)


def test_wav_and_flac_headers_decode_nothing(tmp_path, monkeypatch):
    """The header path reads no WAV sample and one FLAC sample (the last, to prove the file is whole)."""
    wanted = []
    real = sf.SoundFile.read
    monkeypatch.setattr(sf.SoundFile, "read", lambda self, frames=-1, *a, **k: wanted.append(frames) or real(self, frames, *a, **k))
    for fmt, expected in (("wav", []), ("flac", [1])):
        wanted.clear()
        path = write_clip(tmp_path / f"long.{fmt}", tone(10 * 44100, 44100, 2), 44100)
        assert read_header(path).frames == 10 * 44100
        assert wanted == expected


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_a_cut_clip_is_refused_naming_the_file(tmp_path, fmt, keep):
    whole = write_clip(tmp_path / f"whole.{fmt}", tone(3 * 22050 + 17, 22050, 2), 22050).read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(whole[: int(len(whole) * keep)])
    with pytest.raises(UnusableRecord, match=rf"audio file '{cut}' is cut: .*; re-export or re-download it") as err:
        read_header(cut)
    assert err.value.code is RejectCode.MEDIA_UNREADABLE


@settings(max_examples=25, deadline=None)
@given(fmt=st.sampled_from(FORMATS), lost=st.integers(1, 3000))
def test_any_cut_is_refused_or_decodes_to_its_count(fmt, lost):
    """Whatever the bytes lost at the end, a clip is refused, or its header count is what it decodes to."""
    data = _whole(fmt)
    try:
        header = read_header(data[:-lost])
    except UnusableRecord as err:
        assert err.code is RejectCode.MEDIA_UNREADABLE
        return
    assert fmt == "mp3" and len(decode_mono(data[:-lost]).samples) == header.frames  # only an MP3 cut between frames


_WHOLE: dict[str, bytes] = {}


def _whole(fmt: str) -> bytes:
    if fmt not in _WHOLE:
        with tempfile.TemporaryDirectory() as tmp:
            _WHOLE[fmt] = write_clip(Path(tmp) / f"w.{fmt}", tone(2 * 16000 + 5, 16000, 1), 16000).read_bytes()
    return _WHOLE[fmt]


def test_a_clip_with_no_samples_is_refused(tmp_path):
    empty = tmp_path / "silence.wav"
    sf.write(str(empty), np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(UnusableRecord, match=r"audio file '.*silence.wav' holds no samples") as err:
        read_header(empty)
    assert err.value.code is RejectCode.MEDIA_UNREADABLE
    (tmp_path / "zero.flac").write_bytes(b"")
    with pytest.raises(UnusableRecord, match=r"'.*zero.flac' is empty \(0 bytes\)"):
        read_header(tmp_path / "zero.flac")


def test_missing_remote_and_foreign_sources(tmp_path):
    with pytest.raises(UnusableRecord, match=r"audio file '.*nope.wav' does not exist; fix the path") as err:
        read_header("nope.wav", base=tmp_path, field="audios")
    assert err.value.code is RejectCode.MEDIA_MISSING and err.value.field == "audios"
    with pytest.raises(UnusableRecord, match=r"is a URL; ftdata never fetches") as err:
        read_header("https://example.com/a.wav")
    assert err.value.code is RejectCode.MEDIA_URL
    (tmp_path / "notes.wav").write_text("these are words, not sound\n")
    with pytest.raises(UnusableRecord, match=r"'.*notes.wav' is not a WAV, FLAC, OGG or MP3 file \(it starts with b'thes'\)"):
        read_header(tmp_path / "notes.wav")
    with pytest.raises(UnusableRecord, match=r"audio '.*' is not a file"):
        read_header(tmp_path)
    bad = bytearray((CLIPS / "2.wav").read_bytes()[:44])
    bad[20:22] = b"\x99\x99"  # an unknown WAVE format tag
    with pytest.raises(UnusableRecord, match=r"'inline audio \(44 bytes\)' is not a readable WAV file") as err:
        read_header(bytes(bad))
    assert err.value.code is RejectCode.MEDIA_UNREADABLE


def test_cuts_on_a_page_or_frame_boundary_are_refused(tmp_path):
    """A cut between Ogg pages leaves no end-of-stream page; a LAME-tagged MP3 cut between frames holds fewer
    samples than its tag declares. Both decode without an error, so only the header check can tell."""
    import av

    ogg = write_clip(tmp_path / "a.ogg", tone(3 * 16000, 16000, 1), 16000).read_bytes()
    with pytest.raises(UnusableRecord, match=r"is cut: it does not end with a complete Ogg page flagged end-of-stream"):
        read_header(ogg[: ogg.rfind(b"OggS")])
    mp3 = (CLIPS / "4.mp3").read_bytes()
    with av.open(str(CLIPS / "4.mp3")) as container:
        last = [p.pos for p in container.demux(container.streams.audio[0]) if p.size][-1]
    with pytest.raises(UnusableRecord, match=r"is cut: its LAME tag declares 220500 samples but its frames hold 220079"):
        read_header(mp3[:last])
