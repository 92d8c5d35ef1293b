"""Audio clips: their length from the header without decoding, and the one decode the collator uses.

    read_header("a.flac")              -> AudioHeader(ref, format=FLAC, channels=2, sample_rate=44100, frames=132300)
    load_audio("a.flac", rate=16000)   -> float32 mono samples at 16 kHz; len == resampled_length(132300, 44100, 16000)

A source is a path (a relative one starts at `base`, the data file's folder) or the file's bytes. An http(s)
URL is refused (`media_url`): ftdata never fetches.

How `frames` is known, per format, and how the data is checked against it (a cut file is `media_unreadable`):
  WAV   libsndfile reads the header, but it quietly shortens a cut data chunk to the bytes present, so the
        RIFF chunks are walked here: a data chunk declared longer than the file is cut.
  FLAC  STREAMINFO's total. A cut file still declares the full length, so its last sample is decoded
        (a seek to it: one FLAC block, whatever the clip's length).
  OGG   libsndfile takes the length from the last page's granule position, so a cut file reads as a shorter
        clip: the file must end exactly with a complete page flagged end-of-stream.
  MP3   no header holds an exact length. PyAV demuxes every packet (nothing decoded) and sums their
        durations, less the encoder delay and padding that FFmpeg trims (the LAME tag, which FFmpeg hands
        over as skip-samples side data). The last frame must be whole, and a LAME-tagged file must hold
        the length its tag declares.
`frames` equals what `decode_mono` returns, sample for sample (tests/media checks it for every format).

Resampling is soxr's (HQ). Its output length is libsoxr's flush rule (cr.c `rate_flush`):
`(uint64_t)((double)n / factor + .5)` with `factor = in_rate / out_rate` in double precision.
`resampled_length` is that expression, so it equals `len(soxr.resample(...))` for every length and pair of
rates, also at the exact halves where a rational round-half-up is one too many (240 samples from 48 kHz to
44.1 kHz is 220.5 exactly; soxr gives 220).
"""

from __future__ import annotations

import importlib
import io
import os
import stat
import struct
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

import numpy as np

from ftdata.errors import ConfigError, UnusableRecord
from ftdata.outcomes import RejectCode

AudioSource = str | os.PathLike[str] | bytes


class AudioFormat(StrEnum):
    """The clip formats read (by their first bytes, not their suffix)."""

    WAV = "wav"
    FLAC = "flac"
    OGG = "ogg"
    MP3 = "mp3"


# libsndfile's major format names for the formats it reads here (WAVEX: WAVE_FORMAT_EXTENSIBLE; RF64: > 4 GiB WAV).
_SNDFILE_FORMATS = {
    "WAV": AudioFormat.WAV,
    "WAVEX": AudioFormat.WAV,
    "RF64": AudioFormat.WAV,
    "FLAC": AudioFormat.FLAC,
    "OGG": AudioFormat.OGG,
}
_OGG_PAGE_MAX = 27 + 255 + 255 * 255  # header, segment table, 255 segments of 255 bytes
_MAX_CHUNKS = 64  # RIFF chunks walked before the data chunk (fmt, fact, LIST, JUNK, ... are a handful)
# MPEG audio Layer III bitrates (kbit/s) by bitrate index: MPEG-1, and MPEG-2 / 2.5; sample rates by version bits.
_MP3_KBPS = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


@dataclass(frozen=True, slots=True)
class AudioHeader:
    """One clip as its header (checked against its data) says: `frames` samples per channel at `sample_rate`."""

    ref: str  # the resolved path, or "inline audio (N bytes)"
    format: AudioFormat
    channels: int
    sample_rate: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


@dataclass(frozen=True, slots=True, eq=False)
class Waveform:
    """Decoded samples: float32, mono (channels averaged), at `sample_rate`."""

    samples: np.ndarray
    sample_rate: int


@dataclass(frozen=True, slots=True)
class _Clip:
    """Where a clip's bytes are (a file or memory) and the name its errors use."""

    ref: str
    path: Path | None
    data: bytes | None
    size: int
    field: str | None

    def open(self) -> BinaryIO:
        return self.path.open("rb") if self.path is not None else io.BytesIO(self.data or b"")

    def source(self) -> str | BinaryIO:
        """What soundfile and PyAV open: the path (their own I/O, faster) or a memory file."""
        return str(self.path) if self.path is not None else io.BytesIO(self.data or b"")

    def reject(self, reason: str, code: RejectCode = RejectCode.MEDIA_UNREADABLE) -> UnusableRecord:
        return UnusableRecord(reason, field=self.field, code=code)

    def cut(self, what: str) -> UnusableRecord:
        return self.reject(f"audio file {self.ref!r} is cut: {what}; re-export or re-download it")


def read_header(source: AudioSource, *, base: Path | None = None, field: str | None = None) -> AudioHeader:
    """Format, channels, sample rate and exact frame count of a clip, without decoding its samples (MP3: demuxed).

    Raises:
        UnusableRecord: a URL (`media_url`); a missing file (`media_missing`); not a WAV, FLAC, OGG or MP3 file,
            unreadable, cut, or holding no samples (`media_unreadable`). The reason names the file.

    Example:
        >>> read_header("mllm_demo_data/2.wav", base=Path("data")).frames
        46421
    """
    clip = _locate(source, base, field)
    try:
        fmt = _sniff(clip)
        header = _mp3_header(clip) if fmt is AudioFormat.MP3 else _sndfile_header(clip, fmt)
    except OSError as exc:
        raise clip.reject(f"audio file {clip.ref!r} cannot be read: {exc.strerror or exc}") from None
    if header.frames <= 0:
        raise clip.reject(f"audio file {clip.ref!r} holds no samples; remove the clip from the record or replace it")
    return header


def decode_mono(source: AudioSource, *, base: Path | None = None, field: str | None = None) -> Waveform:
    """The clip's samples, channels averaged to mono, at the file's own rate: `len == read_header(...).frames`.

    Raises:
        UnusableRecord: as `read_header` does for a source it cannot open or decode.
    """
    clip = _locate(source, base, field)
    fmt = _sniff(clip)
    if fmt is AudioFormat.MP3:
        av = _backend("av")
        try:
            with av.open(clip.source()) as container:
                stream = container.streams.audio[0]
                parts = [_frame_mono(frame) for frame in container.decode(stream)]
                rate = stream.sample_rate
        except (av.FFmpegError, IndexError) as exc:
            raise clip.reject(f"{clip.ref!r} cannot be decoded as MP3 ({exc}); re-export it") from None
        return Waveform(np.concatenate(parts) if parts else np.zeros(0, np.float32), rate)
    sf = _backend("soundfile")
    try:
        data, rate = sf.read(clip.source(), dtype="float32", always_2d=True)
    except sf.SoundFileError as exc:
        raise clip.reject(f"{clip.ref!r} cannot be decoded as {fmt.name} ({exc}); re-export it") from None
    return Waveform(data[:, 0].copy() if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32), rate)


def resampled_length(frames: int, rate_in: int, rate_out: int) -> int:
    """How many samples soxr makes of `frames` samples at `rate_in` when resampling to `rate_out` (libsoxr's rule).

    >>> resampled_length(44100, 44100, 16000), resampled_length(240, 48000, 44100)
    (16000, 220)
    """
    return int(frames / (rate_in / rate_out) + 0.5)


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """`samples` at `rate_out`, by soxr at its default quality (HQ); the length is `resampled_length`."""
    if rate_in == rate_out:
        return samples
    return _backend("soxr").resample(samples, rate_in, rate_out)


def load_audio(source: AudioSource, *, rate: int, base: Path | None = None, field: str | None = None) -> np.ndarray:
    """The clip as the processor reads it: decoded, mono, resampled to `rate` (the feature extractor's), float32.

    Its length is `resampled_length(header.frames, header.sample_rate, rate)` for the clip's `read_header`.
    """
    wave = decode_mono(source, base=base, field=field)
    return resample(wave.samples, wave.sample_rate, rate)


def _backend(name: str) -> ModuleType:
    """soundfile, av or soxr: the `audio` extra."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(f"reading audio needs the {name!r} package: pip install 'ftdata[audio]'") from None


def _locate(source: Any, base: Path | None, field: str | None) -> _Clip:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return _Clip(f"inline audio ({len(data)} bytes)", None, data, len(data), field)
    if not isinstance(source, (str, os.PathLike)):
        raise UnusableRecord(
            f"an audio clip must be a path or bytes, got {type(source).__name__}",
            field=field,
            code=RejectCode.MEDIA_UNREADABLE,
        )
    text = os.fspath(source).strip()
    if text[:8].lower().startswith(("http://", "https://")):
        raise UnusableRecord(
            f"{text[:80]!r} is a URL; ftdata never fetches (offline): download the clip and give its path",
            field=field,
            code=RejectCode.MEDIA_URL,
        )
    path = Path(text.removeprefix("file://")).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    missing = f"audio file {str(path)!r} does not exist; fix the path (relative paths start at the data file)"
    try:
        st = path.stat()
    except OSError:
        raise UnusableRecord(missing, field=field, code=RejectCode.MEDIA_MISSING) from None
    if not stat.S_ISREG(st.st_mode):
        raise UnusableRecord(f"audio {str(path)!r} is not a file", field=field, code=RejectCode.MEDIA_MISSING)
    return _Clip(str(path), path, None, st.st_size, field)


def _sniff(clip: _Clip) -> AudioFormat:
    """The format, from the first bytes (a suffix can lie)."""
    if clip.size == 0:
        raise clip.reject(f"audio file {clip.ref!r} is empty (0 bytes); remove the clip from the record or replace it")
    with clip.open() as fh:
        head = fh.read(12)
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return AudioFormat.WAV
    if head[:4] == b"fLaC":
        return AudioFormat.FLAC
    if head[:4] == b"OggS":
        return AudioFormat.OGG
    # An ID3v2 tag, or an MPEG audio frame sync with a layer (AAC's ADTS sync has layer bits 00).
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06):
        return AudioFormat.MP3
    raise clip.reject(f"{clip.ref!r} is not a WAV, FLAC, OGG or MP3 file (it starts with {head[:4]!r}); convert it")


def _sndfile_header(clip: _Clip, fmt: AudioFormat) -> AudioHeader:
    sf = _backend("soundfile")
    try:
        with sf.SoundFile(clip.source()) as f:
            frames, rate, channels, kind = f.frames, f.samplerate, f.channels, f.format
            if fmt is AudioFormat.FLAC and frames > 0 and not _last_sample_decodes(f, sf):
                raise clip.cut(f"its header declares {frames} frames but the last one does not decode")
    except sf.SoundFileError as exc:
        raise clip.reject(f"{clip.ref!r} is not a readable {fmt.name} file ({exc}); re-export it") from None
    if _SNDFILE_FORMATS.get(kind) is not fmt:
        raise clip.reject(f"{clip.ref!r} starts like {fmt.name} but libsndfile reads it as {kind}; re-export it")
    if fmt is AudioFormat.WAV:
        with clip.open() as fh:
            data = _wav_data(fh)
        if data is not None and data[0] + data[1] > clip.size:
            raise clip.cut(f"its data chunk declares {data[1]} bytes but {clip.size - data[0]} follow its header")
    elif fmt is AudioFormat.OGG:
        with clip.open() as fh:
            fh.seek(max(0, clip.size - _OGG_PAGE_MAX))
            tail = fh.read()
        if not _ends_with_last_page(tail):
            raise clip.cut("it does not end with a complete Ogg page flagged end-of-stream")
    return AudioHeader(clip.ref, fmt, channels, rate, frames)


def _last_sample_decodes(f: Any, sf: ModuleType) -> bool:
    try:
        f.seek(f.frames - 1)
        return len(f.read(1, dtype="float32")) == 1
    except sf.SoundFileError:
        return False


def _wav_data(fh: BinaryIO) -> tuple[int, int] | None:
    """(offset, declared size) of a WAV's data chunk; None when it declares no length (a WAV written as a stream)."""
    order = ">" if fh.read(12)[:4] == b"RIFX" else "<"
    pos, ds64 = 12, None
    for _ in range(_MAX_CHUNKS):
        fh.seek(pos)
        chunk = fh.read(8)
        if len(chunk) < 8:
            return None
        kind, size = chunk[:4], struct.unpack(order + "I", chunk[4:])[0]
        if kind == b"ds64":  # RF64: the 64-bit RIFF and data sizes
            ds64 = struct.unpack("<QQ", fh.read(16))[1]
        elif kind == b"data":
            if size == 0xFFFFFFFF and ds64 is not None:
                size = ds64
            return None if size in (0, 0xFFFFFFFF) else (pos + 8, size)
        pos += 8 + size + (size & 1)  # chunks are padded to an even length
    return None


def _ends_with_last_page(tail: bytes) -> bool:
    """Whether `tail` (an Ogg file's last bytes) ends exactly where a page flagged end-of-stream ends."""
    at = tail.rfind(b"OggS")
    while at >= 0:
        count = tail[at + 26] if at + 27 <= len(tail) else -1
        table = tail[at + 27 : at + 27 + count] if count >= 0 else b""
        if count >= 0 and len(table) == count and at + 27 + count + sum(table) == len(tail):
            return bool(tail[at + 5] & 0x04)
        at = tail.rfind(b"OggS", 0, at)
    return False


def _mp3_header(clip: _Clip) -> AudioHeader:
    av = _backend("av")
    try:
        with av.open(clip.source()) as container:
            if not container.streams.audio:
                raise clip.reject(f"{clip.ref!r} holds no audio stream; re-export it")
            stream = container.streams.audio[0]
            if stream.codec_context.name not in ("mp3", "mp3float"):
                raise clip.reject(f"{clip.ref!r} holds {stream.codec_context.name} audio, not MP3; convert it")
            ticks, trimmed, tagged, last = 0, 0, False, None
            for packet in container.demux(stream):
                if not packet.size:  # the empty packet that ends demuxing
                    continue
                ticks += packet.duration or 0
                if packet.has_sidedata("skip_samples"):  # the LAME tag's encoder delay (first) and padding (last)
                    start, end = struct.unpack("<II", bytes(packet.get_sidedata("skip_samples"))[:8])
                    trimmed, tagged = trimmed + start + end, True
                last = packet
            rate, channels, declared = stream.sample_rate, stream.layout.nb_channels, stream.duration
            samples = Fraction(ticks) * stream.time_base * rate
            cut = _mp3_cut(bytes(last)) if last is not None else None
    except av.FFmpegError as exc:
        raise clip.reject(f"{clip.ref!r} is not a readable MP3 file ({exc}); re-export it") from None
    if samples.denominator != 1:
        raise clip.reject(f"{clip.ref!r}: MP3 packet durations are not whole samples ({samples}); re-export it")
    frames = int(samples) - trimmed
    if cut is not None:
        raise clip.cut(cut)
    if tagged and declared and frames > 0:
        expected = Fraction(declared) * stream.time_base * rate
        if expected != frames:
            raise clip.cut(f"its LAME tag declares {expected} samples but its frames hold {frames}")
    return AudioHeader(clip.ref, AudioFormat.MP3, channels, rate, frames)


def _mp3_cut(data: bytes) -> str | None:
    """Why `data`, an MP3's last packet, is not a whole frame; None when it is (or is free format, or not Layer III)."""
    if len(data) < 4 or data[0] != 0xFF or data[1] & 0xE0 != 0xE0:
        return f"its last MP3 packet ({len(data)} bytes) does not start with a frame header"
    version, layer = (data[1] >> 3) & 3, (data[1] >> 1) & 3
    bitrate_index, rate_index, padding = data[2] >> 4, (data[2] >> 2) & 3, (data[2] >> 1) & 1
    if layer != 1 or version == 1 or rate_index == 3 or bitrate_index in (0, 15):
        return None
    kbps = _MP3_KBPS[1 if version == 3 else 2][bitrate_index]
    size = (144_000 if version == 3 else 72_000) * kbps // _MP3_RATES[version][rate_index] + padding
    return f"its last MP3 frame holds {len(data)} of its {size} bytes" if len(data) < size else None


def _frame_mono(frame: Any) -> np.ndarray:
    """One decoded PyAV frame as float32 mono samples."""
    data = frame.to_ndarray()
    if not frame.format.is_planar:  # interleaved: (1, samples * channels)
        data = data.reshape(-1, frame.layout.nb_channels).T
    if data.dtype.kind == "i":
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    return data.mean(axis=0, dtype=np.float32) if data.shape[0] > 1 else data[0].astype(np.float32)


__all__ = [
    "AudioFormat",
    "AudioHeader",
    "AudioSource",
    "Waveform",
    "decode_mono",
    "load_audio",
    "read_header",
    "resample",
    "resampled_length",
]
