"""The image medium: where an image is, its size from the file header, the budgets, its count. No pixels.

    "cat.png"                     a path, relative to the data file  -> ref = its absolute path
    "/data/cat.png", file://...   an absolute path                   -> ref = the path
    "data:image/png;base64,..."   inline bytes                       -> ref = "sha256:<hex>"
    {"bytes": b"...", "path": p}  a Hugging Face `Image` feature     -> bytes: "sha256:<hex>"; else the path
    PIL.Image.Image               a decoded image (datasets decode)  -> its file when it has one, else PNG bytes
    "http://...", "https://..."   refused (`media_url`): ftdata never fetches

The size comes from the header (`PIL.Image.open` is lazy: it parses the header and stops), so
an image costs no pixel memory. It is the size the processor sees: a photo whose EXIF orientation
turns it a quarter (5-8) has width and height swapped, as `transformers.image_utils.load_image` and
datasets' `Image` feature turn it (`exif_transpose`), and as the collator loads it (`load_image`).
A file that is not an image, or whose header is corrupt, is rejected (`media_unreadable`); so is
one whose pixel data is cut after a sound header, which would otherwise fail where pixels are made
(the training collator). That check reads the file
without decoding it: a JPEG must end with its end-of-image marker, a PNG's chunks must pass their
CRCs through IEND (`Image.verify`); a JPEG without the marker (some carry bytes after it) is
decoded at 1/8 scale (`draft`), and other formats are decoded. About 0.05 ms an image, where a
decode costs 5-200 ms a photo; and a decode would add little: libjpeg conceals damage inside a
JPEG's scan data (it decodes to grey blocks, raising nothing), so only a cut file is caught
either way. Each file is checked once per process (cached by path, size and mtime).

`ImageMedium` is the image implementation of `ftdata.media.medium.Medium`: the header's facts,
then the family's count and the processor's expansion (`_get_num_multimodal_tokens`, and
`replace_image_token` fed what its image processor reports for that size), cached per size; an
image the processor refuses (Qwen2-VL: an aspect ratio over 200) is a `media_refused` reject with
the processor's reason.

Inline images are written once, content-addressed, to `store/<hex>.<ext>` (the `image_dir`
option, else ~/.cache/ftdata/images), so rows hold only the reference and `open_image` finds
the bytes again; a build to OUT publishes the ones its rows name in OUT/images
(`ftdata.build.publish`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError, UnusableRecord
from ftdata.guard.bounds import MAX_HEADER_BYTES, BoundedHead, HeaderTooLong
from ftdata.guard.inputs import ReadFiles, Stat, StatMemo
from ftdata.media.families import Counts, family
from ftdata.media.medium import Expansion, Item
from ftdata.outcomes import RejectCode
from ftdata.records.media import MediaKind

DIGEST = "sha256:"
_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif"}


def default_store() -> Path:
    """Where an in-memory build writes inline images when `image_dir` is not given."""
    return Path(os.environ.get("FTDATA_IMAGE_DIR") or Path.home() / ".cache" / "ftdata" / "images")


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """One image as a row stores it: its reference and its original size (from the header)."""

    ref: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


class Headers:
    """Reads image headers, with a per-process cache keyed by path and the file's `Stat` (truncation re-renders)."""

    def __init__(self, *, store: Path | None, max_pixels: int | None, limit: int = 65536):
        self.store = store
        self.max_pixels = max_pixels
        self._cache: StatMemo[tuple[str, tuple[int, int]]] = StatMemo(limit)  # -> (resolved path, size)
        self.files_read = ReadFiles()  # every image file named, as stat'ed when read

    def info(self, raw: Any, *, base: Path | None, field: str) -> ImageInfo:
        """The reference and size of one image value from a record.

        Raises:
            UnusableRecord: missing file (`media_missing`), URL (`media_url`), not an image or a bad
                value (`media_unreadable`), over `max_pixels` (`media_too_large`).
        """
        value = _unwrap(raw)
        if isinstance(value, bytes):
            return self._inline(value, field=field)
        if isinstance(value, str):
            text = value.strip()
            lower = text[:8].lower()
            if lower.startswith(("http://", "https://")):
                raise _reject(
                    f"{text[:80]!r} is a URL; ftdata never fetches (offline): download the image and give its path",
                    field,
                    RejectCode.MEDIA_URL,
                )
            if lower.startswith("data:"):
                return self._inline(_data_uri(text, field), field=field)
            if text.startswith(DIGEST) and self.store is not None:
                found = stored(text, self.store)
                if found is None:
                    raise _reject(f"{text!r} is not in the image store {self.store}", field, RejectCode.MEDIA_MISSING)
                return self._file(found, ref=text, field=field)
            path = Path(text.removeprefix("file://")).expanduser()
            if not path.is_absolute():
                path = (base or Path.cwd()) / path
            return self._file(path, ref=None, field=field)
        raise _reject(
            f"an image must be a path, a data: URI, bytes or a datasets Image value, got {type(value).__name__}",
            field,
            RejectCode.MEDIA_UNREADABLE,
        )

    def _file(self, path: Path, *, ref: str | None, field: str) -> ImageInfo:
        """The image file `path`; `ref`: its reference, None for its
        resolved path (resolved once: a few syscalls a part)."""
        try:
            st = path.stat()
        except OSError:
            self.files_read.saw(path, None)
            raise _reject(
                f"image file {str(path)!r} does not exist; fix the path (relative paths start at the data file)",
                field,
                RejectCode.MEDIA_MISSING,
            ) from None
        version = self.files_read.saw(path, st)
        if version is None:  # not a regular file
            raise _reject(f"image {str(path)!r} is not a file", field, RejectCode.MEDIA_MISSING)
        found = self._cache.get(str(path), version)
        if found is None:
            taken = time.time_ns()
            try:
                with path.open("rb") as fh:
                    size = _header(fh, what=str(path))[0]
            except OSError as exc:
                raise _reject(
                    f"image file {str(path)!r} cannot be read: {exc.strerror or exc}",
                    field,
                    RejectCode.MEDIA_UNREADABLE,
                ) from None
            except ValueError as exc:
                raise _reject(str(exc), field, RejectCode.MEDIA_UNREADABLE) from None
            found = (str(path.resolve()), size)
            self._cache.put(str(path), version, taken, found)
        return self._checked(ImageInfo(ref or found[0], *found[1]), field)

    def _inline(self, data: bytes, *, field: str) -> ImageInfo:
        try:
            size, fmt = _header(io.BytesIO(data), what="inline image")
        except ValueError as exc:
            raise _reject(str(exc), field, RejectCode.MEDIA_UNREADABLE) from None
        digest = hashlib.sha256(data).hexdigest()
        info = self._checked(ImageInfo(DIGEST + digest, *size), field)
        if self.store is not None:
            write_once(self.store / f"{digest}.{_EXTENSIONS.get(fmt, 'img')}", data)
        return info

    def _checked(self, info: ImageInfo, field: str) -> ImageInfo:
        if self.max_pixels is not None and info.pixels > self.max_pixels:
            raise _reject(
                f"image {info.ref[:80]!r} is {info.width}x{info.height} = {info.pixels} pixels > max_image_pixels "
                f"{self.max_pixels}; downscale it or raise max_image_pixels",
                field,
                RejectCode.MEDIA_TOO_LARGE,
            )
        return info


def _unwrap(value: Any) -> Any:
    """A datasets `Image` value ({"bytes", "path"}) or a PIL image as bytes or a path."""
    if isinstance(value, Mapping):
        if value.get("bytes"):
            return bytes(value["bytes"])
        return value.get("path") if value.get("path") is not None else value.get("url", value)
    if type(value).__module__.startswith("PIL."):
        filename = getattr(value, "filename", "")
        if filename:
            return str(filename)
        out = io.BytesIO()
        value.save(out, format="PNG")  # a decoded image with no file: its bytes, once
        return out.getvalue()
    if isinstance(value, Path):
        return str(value)
    return value


def _data_uri(text: str, field: str) -> bytes:
    head, sep, body = text.partition(",")
    if not sep or not head.lower().endswith(";base64"):
        raise _reject(
            f"data: URI {text[:40]!r}... is not base64 (data:image/png;base64,...)", field, RejectCode.MEDIA_UNREADABLE
        )
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise _reject(f"data: URI {text[:40]!r}... holds invalid base64", field, RejectCode.MEDIA_UNREADABLE) from None


def _header(fh: Any, *, what: str) -> tuple[tuple[int, int], str]:
    """((width, height), format) from an image header, after checking that its pixel data is whole.

    Raises:
        ValueError: not an image, a header PIL cannot parse, or pixel data that is cut or corrupt
            (the message says which).
    """
    from PIL import Image, UnidentifiedImageError

    head = BoundedHead(fh, MAX_HEADER_BYTES)  # a PNG may hold gigabytes of chunks before its pixels
    try:
        with Image.open(head) as im:  # type: ignore[arg-type]  # a bounded file: PIL reads, seeks and tells it as one
            head.lift()  # the header is read: the pixel check reads on
            width, height = im.size
            fmt = im.format or ""
            if width > 0 and height > 0:
                _check_pixels(im, fh, fmt)
                if _orientation(im) in _QUARTER_TURNS:  # the processor sees the photo turned: its sides swap
                    width, height = height, width
    except UnidentifiedImageError:
        raise ValueError(f"{what} is not an image PIL can read (corrupt or unknown format)") from None
    except HeaderTooLong:
        raise ValueError(
            f"{what} has more than {MAX_HEADER_BYTES:,} bytes of header before its pixels; strip its metadata or "
            "re-save it"
        ) from None
    except _Cut as exc:
        raise ValueError(f"{what} has a sound header but {exc}: the file is cut or corrupt; replace it") from None
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:  # a corrupt header raises these
        raise ValueError(f"{what} has a corrupt header: {exc}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"{what} has size {width}x{height}")
    return (width, height), fmt


_QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations that transpose or turn the image by 90 degrees


def _orientation(im: Any) -> int:
    """The EXIF orientation tag of an opened image (1 when it has none), read without decoding.

    A PNG's eXIf chunk is in `info` once read (a PNG's getexif would decode the pixels to look
    further); a JPEG's, WebP's and TIFF's come with the header."""
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block: PIL's exif_transpose ignores it too
        return 1


class _Cut(Exception):
    """Pixel data that does not decode (the header was sound)."""


_JPEG_END = b"\xff\xd9"


def _check_pixels(im: Any, fh: Any, fmt: str) -> None:
    """Raise `_Cut` when the pixel data of the opened image `im` (read from `fh`) is cut or corrupt.

    A JPEG that ends with its end-of-image marker and a PNG whose chunks pass their CRCs through
    IEND pass without decoding (a file cut short fails both; a broken IDAT fails its CRC); anything
    else is decoded, a JPEG at 1/8 scale (its DCT scaling: the scan data is read whole, a fraction
    of the pixels made).
    """
    try:
        if fmt == "PNG":
            im.verify()  # every chunk's CRC, through IEND; no decompression
            return
        if fmt == "JPEG":
            at = fh.tell()
            fh.seek(-len(_JPEG_END), os.SEEK_END)
            if fh.read(len(_JPEG_END)) == _JPEG_END:
                return
            fh.seek(at)
            im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
        im.load()
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
    ) as exc:  # PIL's words for data that ends early or does not decode
        raise _Cut(f"its pixel data does not decode ({exc})") from None


def write_once(path: Path, data: bytes) -> None:
    """Write `data` to `path` unless it is there (content-addressed: same name, same bytes), atomically."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def stored(ref: str, store: Path) -> Path | None:
    """The file of an inline image `sha256:<hex>` in `store`, or None."""
    digest = ref.removeprefix(DIGEST)
    return next(iter(sorted(store.glob(f"{digest}.*"))), None) if store.is_dir() else None


def open_image(ref: str, *, store: str | Path | None = None) -> Any:
    """The image a row's `ref` names, as a lazy PIL image.

    Raises:
        FileNotFoundError: the file, or the inline image in `store`, is not there.
    """
    from PIL import Image

    path = stored(ref, Path(store) if store else default_store()) if ref.startswith(DIGEST) else Path(ref)
    if path is None:
        raise FileNotFoundError(f"{ref}: not in the image store {store or default_store()}")
    return Image.open(path)


def load_image(ref: str, *, store: str | Path | None = None) -> Any:
    """The pixels of a row's image as the processor sees them: RGB, its EXIF orientation applied (as
    `transformers.image_utils.load_image` does). The places pixels are made: the training collator, and the
    inspection page's thumbnails.

    Raises:
        FileNotFoundError: the file, or the inline image in `store`, is not there.
        OSError: the file cannot be decoded.
    """
    from PIL import ImageOps

    with open_image(ref, store=store) as img:
        return ImageOps.exif_transpose(img).convert("RGB")


class ImageMedium:
    """Images with one processor: each one's size from its header, its count and expansion by the family's rule."""

    kind = MediaKind.IMAGE
    replacements = "images_replacements"

    def __init__(self, processor: Any, *, store: Path | None, max_pixels: int | None):
        self.processor = processor
        self.rule = family(processor).image
        if self.rule is None:
            raise ConfigError(f"processor {type(processor).__name__} reads no images")
        self.spans = self.rule.counts is Counts.SPAN
        self.headers = Headers(store=store, max_pixels=max_pixels)
        tok = processor.tokenizer
        self.placeholder: str = processor.image_token  # what the processor replaces in the text
        candidates = [t for t in (getattr(tok, "image_token", None), processor.image_token) if isinstance(t, str)]
        probe = self._replacement(224, 224)
        self.pad: str = max(candidates, key=probe.count)  # the token repeated per image feature
        self.pad_id: int = tok.convert_tokens_to_ids(self.pad)
        self.text = self.rule.text or self.placeholder
        self._sizes: dict[tuple[int, int], Expansion] = {}

    def drain(self) -> dict[str, Stat | None]:
        return self.headers.files_read.drain()

    def sample(self) -> Expansion:
        return self.expansion(224, 224)

    def _replacement(self, height: int, width: int) -> str:
        return str(self.processor.replace_image_token(self.rule.inputs(self.processor, height, width), 0))  # type: ignore[union-attr]  # an image family's rule: counting it is what this medium does

    def expansion(self, width: int, height: int) -> Expansion:
        """The processor's expansion of an image of `width` x `height` (cached per size).

        Raises:
            ValueError (or whatever the processor raises): the processor refuses an image of that size.
        """
        key = (width, height)
        found = self._sizes.get(key)
        if found is None:
            text = self._replacement(height, width)
            pads = text.count(self.pad)
            if self.rule.counts is Counts.EXPANSION:  # type: ignore[union-attr]  # as above
                tokens = pads
            else:
                tokens = int(
                    self.processor._get_num_multimodal_tokens(image_sizes=[[height, width]]).num_image_tokens[0]
                )
            found = Expansion(text, tokens, pads)
            if len(self._sizes) < 65536:
                self._sizes[key] = found
        return found

    def item(self, value: Any, *, base: Path | None, field: str) -> Item:
        """One image: its reference and size from the header, counted and expanded.

        Raises:
            UnusableRecord: see `Headers.info`; the processor refuses it (`media_refused`, its reason).
        """
        info = self.headers.info(value, base=base, field=field)
        try:
            expansion = self.expansion(info.width, info.height)
        except Exception as exc:  # noqa: BLE001 - the processor's own refusal (ValueError from smart_resize, ...)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise _reject(
                f"the processor refuses image {info.ref[:80]!r} ({info.width}x{info.height}): {reason}",
                field,
                RejectCode.MEDIA_REFUSED,
            ) from None
        return Item(MediaKind.IMAGE, info.ref, expansion, width=info.width, height=info.height)


def _reject(reason: str, field: str, code: RejectCode) -> UnusableRecord:
    return UnusableRecord(reason, field=field, code=code)


__all__ = [
    "DIGEST",
    "Headers",
    "ImageInfo",
    "ImageMedium",
    "default_store",
    "load_image",
    "open_image",
    "stored",
    "write_once",
]
