"""The audio medium: where a clip is, its length from the header, the family's count. No samples.

    "clip.wav"                             a path, relative to the data file    -> ref = its absolute path
    {"data": BASE64, "format": "wav"}      OpenAI's input_audio                -> ref = "sha256:<hex>"
    "data:audio/wav;base64,..."            inline bytes                        -> ref = "sha256:<hex>"
    {"bytes": b"...", "path": p}           a datasets `Audio` value (undecoded) -> bytes: "sha256:<hex>"; else the path
    "http://...", "https://..."            refused (`media_url`): ftdata never fetches

A clip's length in samples comes from its header, checked against its data (`ftdata.media.audio_files`:
soundfile for WAV/FLAC/OGG, PyAV's demuxer for MP3), is resampled the way the collator resamples (soxr's length
rule, `resampled_length`), and the family's rule (`ftdata.media.audio_families`, chosen by the family table)
makes it a count. A clip past the family's window (Qwen2-Audio's and Gemma 3n's 30 s) is rejected
`media_too_long`, unless `audio_window="cut"` keeps the processor's cut: the row then equals the processor's,
and the record carries an `audio_cut` note with the seconds dropped.

Inline clips are written once, content-addressed, to the store (`image_dir`, the one media store) as
`<hex>.<format>`, like inline images: rows hold only the reference.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError, UnusableRecord
from ftdata.guard.inputs import ReadFiles, Stat, StatMemo
from ftdata.media.audio_families import count_audio, window_exceeded
from ftdata.media.audio_files import AudioHeader, read_header
from ftdata.media.families import audio_rule, family
from ftdata.media.images import DIGEST, stored, write_once
from ftdata.media.medium import Expansion, Item
from ftdata.outcomes import RejectCode
from ftdata.records.media import MediaKind

DECODER = {
    "wav": "soundfile",
    "flac": "soundfile",
    "ogg": "soundfile",
    "mp3": "av",
}  # what reads each format (build.json)
RESAMPLER = "soxr"


@dataclass(frozen=True, slots=True)
class Clip:
    """One clip as a row stores it: its reference, and its header (length, rate, channels, format)."""

    ref: str
    header: AudioHeader


class AudioMedium:
    """Audio clips with one processor: each one's length from its header, its count by the family's rule."""

    kind = MediaKind.AUDIO
    replacements = "audio_replacements"
    spans = False  # the count is the pads the features fill, not the markers around them

    def __init__(self, processor: Any, *, store: Path | None, window: str = "reject"):
        """Raises:
        ConfigError: the processor reads no audio (its family has no audio rule)."""
        counting = family(processor).audio
        if counting is None:
            raise ConfigError(f"processor {type(processor).__name__} reads no audio")
        self.processor = processor
        self.counting = counting
        self.rule = audio_rule(processor)
        self.store = store
        self.cut = window == "cut"
        self.placeholder: str = processor.audio_token
        self.pad: str = self.rule.placeholder
        self.pad_id: int = processor.tokenizer.convert_tokens_to_ids(self.pad)
        self.text = counting.text or self.placeholder
        self.files_read = ReadFiles()  # every clip file named, as stat'ed when read
        self._headers: StatMemo[AudioHeader] = StatMemo(65536)
        self._tokens: dict[int, Expansion] = {}

    def drain(self) -> dict[str, Stat | None]:
        return self.files_read.drain()

    def sample(self) -> Expansion:
        return self.expansion(self.rule.tokens(self.rule.sampling_rate))  # a one-second clip

    def expansion(self, tokens: int) -> Expansion:
        """The processor's expansion of a clip of `tokens` placeholder tokens (`replace_audio_token`)."""
        found = self._tokens.get(tokens)
        if found is None:
            text = str(self.processor.replace_audio_token(self.counting.inputs(tokens), 0))
            found = Expansion(text, tokens, text.count(self.pad))
            if len(self._tokens) < 65536:
                self._tokens[tokens] = found
        return found

    def item(self, value: Any, *, base: Path | None, field: str) -> Item:
        """One clip: its reference and length from the header, counted and expanded.

        Raises:
            UnusableRecord: missing (`media_missing`), URL (`media_url`), unreadable, cut or empty
                (`media_unreadable`), too short for a token (`media_too_short`), past the window (`media_too_long`).
        """
        clip = self.clip(value, base=base, field=field)
        count = count_audio(clip.header, self.rule, field=field)
        if count.over_window and not self.cut:
            raise window_exceeded(clip.header, count, field=field)
        expansion = self.expansion(count.tokens)
        if expansion.pads != count.tokens:
            raise UnusableRecord(
                f"audio {clip.ref[:80]!r}: the processor expands {expansion.pads} placeholder tokens, the rule counts "
                f"{count.tokens}",
                field=field,
                code=RejectCode.MEDIA_UNVERIFIABLE,
            )
        return Item(MediaKind.AUDIO, clip.ref, expansion, seconds=clip.header.seconds, dropped=count.seconds_dropped)

    def clip(self, raw: Any, *, base: Path | None, field: str) -> Clip:
        """The reference and header of one clip value from a record."""
        value = _unwrap(raw, field)
        if isinstance(value, bytes):
            return self._inline(value, field)
        text = value.strip()
        if text[:5].lower() == "data:":
            return self._inline(_data_uri(text, field), field)
        if text.startswith(DIGEST) and self.store is not None:
            found = stored(text, self.store)
            if found is None:
                raise UnusableRecord(
                    f"{text!r} is not in the media store {self.store}", field=field, code=RejectCode.MEDIA_MISSING
                )
            return Clip(text, self._file(found, field))
        if text[:8].lower().startswith(("http://", "https://")):
            return Clip(text, read_header(text, field=field))  # read_header refuses it (media_url)
        path = Path(text.removeprefix("file://")).expanduser()
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        header = self._file(path, field)
        return Clip(header.ref, header)

    def _file(self, path: Path, field: str) -> AudioHeader:
        try:
            st: os.stat_result | None = path.stat()
        except OSError:
            st = None
        version = self.files_read.saw(path, st)
        found = self._headers.get(str(path), version)
        if found is None:
            taken = time.time_ns()
            found = read_header(path, field=field)  # a missing file or a folder: its reject
            found = AudioHeader(
                str(Path(found.ref).resolve()), found.format, found.channels, found.sample_rate, found.frames
            )
            self._headers.put(str(path), version, taken, found)
        return found

    def _inline(self, data: bytes, field: str) -> Clip:
        header = read_header(data, field=field)
        digest = hashlib.sha256(data).hexdigest()
        if self.store is not None:
            write_once(self.store / f"{digest}.{header.format.value}", data)
        return Clip(DIGEST + digest, header)


def _unwrap(value: Any, field: str) -> str | bytes:
    """A record's clip value as a path (or URL, data: URI, digest) or bytes."""
    if isinstance(value, Mapping):
        if "data" in value:  # OpenAI input_audio: {"data": BASE64, "format": "wav" | "mp3"}
            return _base64(value["data"], field, what="input_audio data")
        if value.get("bytes"):
            return bytes(value["bytes"])
        if "array" in value:
            raise UnusableRecord(
                "the audio value holds decoded samples, not a file; read the datasets Audio column with "
                "Audio(decode=False) or give the clip's path",
                field=field,
                code=RejectCode.MEDIA_UNREADABLE,
            )
        inner = value.get("path") if value.get("path") is not None else value.get("url")
        if inner is not None:
            return _unwrap(inner, field)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    raise UnusableRecord(
        f"an audio clip must be a path, a data: URI, base64 input_audio, bytes or a datasets Audio value, got "
        f"{type(value).__name__}",
        field=field,
        code=RejectCode.MEDIA_UNREADABLE,
    )


def _base64(data: Any, field: str, *, what: str) -> bytes:
    if not isinstance(data, str):
        raise UnusableRecord(
            f"{what} must be a base64 string, got {type(data).__name__}", field=field, code=RejectCode.MEDIA_UNREADABLE
        )
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise UnusableRecord(f"{what} holds invalid base64", field=field, code=RejectCode.MEDIA_UNREADABLE) from None


def _data_uri(text: str, field: str) -> bytes:
    head, sep, body = text.partition(",")
    if not sep or not head.lower().endswith(";base64"):
        raise UnusableRecord(
            f"data: URI {text[:40]!r}... is not base64 (data:audio/wav;base64,...)",
            field=field,
            code=RejectCode.MEDIA_UNREADABLE,
        )
    return _base64(body, field, what=f"data: URI {text[:40]!r}...")


__all__ = ["DECODER", "RESAMPLER", "AudioMedium", "Clip"]
