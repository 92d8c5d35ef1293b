"""Packing rows that carry images: the `images` column follows its sequences into the packed row.

A row with images holds the expanded text (each image already replaced by the processor's
own run of image-pad tokens) and, per image in order, `{ref, width, height, tokens, start}`:
`start` is the index in `input_ids` of the image's first pad token. Packing lays sequences end
to end exactly as for text (`output.write_packed`: best-fit decreasing on the exact lengths,
positions restarting, the first label of each sequence -100); the only extra work is here:
the images of a packed row are its sequences' images in pack order, each `start` moved by
the offset of its sequence in the row::

    A = a0 [img 3 pads] a4      images [{start: 1, tokens: 3}]
    B = b0 b1 [img 2 pads] b4   images [{start: 2, tokens: 2}]

    packed  a0 I I I a4 b0 b1 I I b4
    images  [{start: 1, tokens: 3}, {start: 7, tokens: 2}]     (7 = 5 + 2)
    position_ids 0 1 2 3 4 0 1 2 3 4   seq_lengths [5, 5]

The stored `position_ids` are the text positions (one row). Qwen-VL models also need three
mRoPE rows (temporal, height, width) that depend on each image's patch grid, which exists only
once the image processor has run: the training collator (`ftdata.train.vision`) builds them per
sequence with the model's own `get_rope_index` and stacks the text row on top (the
`(4, batch, length)` layout that transformers reads as a packed batch).

No pixels anywhere: an image is a reference, its size and its token span. Nothing here
imports torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ftdata.errors import ConfigError, RecordError

__all__ = ["IMAGE_TYPE", "IMAGES_FIELD", "checked_images", "image_column", "pack_images"]

IMAGES_FIELD = "images"
IMAGE_TYPE = pa.struct(
    [("ref", pa.string()), ("width", pa.int32()), ("height", pa.int32()), ("tokens", pa.int32()), ("start", pa.int32())]
)


def pack_images(images: pa.ListArray, members: np.ndarray, seq_len: np.ndarray, starts: np.ndarray) -> pa.ListArray:
    """The `images` column of a batch of packed rows, columnar (no loop per image).

    Args:
        images: one list of image structs per source row (`IMAGE_TYPE` fields at least).
        members: the source rows laid out, bin after bin (what `write_packed` gathers).
        seq_len: each member's length in its row (after any `pad_to_multiple_of` padding).
        starts: bin `j` is `members[starts[j]:starts[j + 1]]`, with `starts[0] == 0`.

    Returns one list per bin: its members' images in order, `start` moved to the packed row.
    """
    chosen = images.take(pa.array(members, type=pa.int64()))
    offsets = chosen.offsets.to_numpy()
    counts = np.diff(offsets)
    flat = chosen.flatten()  # the structs of the chosen rows only, in order
    ends = np.cumsum(seq_len)
    row_start = np.concatenate([[0], ends])[starts[:-1]]
    bin_of = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    shift = (ends - seq_len) - row_start[bin_of]  # where each member begins in its row
    moved = pc.add(flat.field("start").cast(pa.int64()), pa.array(np.repeat(shift, counts))).cast(pa.int32())
    names = [f.name for f in flat.type]
    fields = [moved if name == "start" else flat.field(name) for name in names]
    packed = pa.StructArray.from_arrays(fields, names=names)
    bin_offsets = np.concatenate([[0], np.cumsum(counts)])[starts]
    return pa.ListArray.from_arrays(pa.array(bin_offsets.astype(np.int32)), packed)


def checked_images(images: pa.Array | pa.ChunkedArray, lengths: np.ndarray) -> pa.ListArray:
    """The `images` column as one `list<IMAGE_TYPE>` array, once every image span is checked to
    lie inside its row (`lengths`), in order and without overlap.

    A span that does not is a bug upstream (a row edited after it was built), never something
    to pack: the model would take text for image features.

    Raises:
        ConfigError: the column is not a list of `{ref, width, height, tokens, start}`, or has
            not one list per row.
        RecordError: naming the row, the image and its span.
    """
    if isinstance(images, pa.ChunkedArray):
        images = images.combine_chunks()
    try:
        images = images.cast(pa.list_(IMAGE_TYPE))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise ConfigError(
            f"the images column must be a list of {{ref, width, height, tokens, start}} per row, got {images.type} "
            f"({exc})"
        ) from None
    if len(images) != len(lengths):
        raise ConfigError(f"the images column has {len(images)} rows for {len(lengths)} token rows; pass one list per row")
    counts = np.diff(images.offsets.to_numpy())
    flat = images.flatten()
    start = flat.field("start").to_numpy(zero_copy_only=False).astype(np.int64)
    tokens = flat.field("tokens").to_numpy(zero_copy_only=False).astype(np.int64)
    row = np.repeat(np.arange(len(counts)), counts)
    end = start + tokens
    # the previous image's end within the same row (0 for a row's first image)
    first = np.concatenate([[True], row[1:] != row[:-1]]) if len(row) else np.zeros(0, dtype=bool)
    previous_end = np.where(first, 0, np.concatenate([[0], end[:-1]]))
    bad = (tokens <= 0) | (start < previous_end) | (end > lengths[row])
    if bad.any():
        i = int(np.argmax(bad))
        k = i - int(images.offsets.to_numpy()[row[i]])
        raise RecordError(
            f"image {k} ({flat.field('ref')[i].as_py()}) spans tokens {start[i]}..{end[i]} of a {lengths[row[i]]}-token "
            "row: out of the row or overlapping the image before it; build the rows again",
            field=f"row {row[i]}: images",
        )
    return images


def image_column(path: Path) -> pa.ListArray | None:
    """The `images` column of a rows file (an Arrow IPC stream, `output.ArrowRows`), or None when
    the build has no images: what `write_packed(..., media=...)` takes. Only that column is
    kept in memory (references and four integers an image), never the tokens.
    """
    chunks = []
    with pa.OSFile(str(path)) as fh, pa.ipc.open_stream(fh) as reader:
        if IMAGES_FIELD not in reader.schema.names:
            return None
        for batch in reader:
            chunks.append(batch.column(IMAGES_FIELD))
    if not chunks:
        return pa.array([], type=pa.list_(IMAGE_TYPE))
    return pa.chunked_array(chunks).combine_chunks()
