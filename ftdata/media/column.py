"""The rows' `media` column: one list per row of `{kind, ref, start, tokens, width, height, seconds}`.

Per item, in order of appearance: its `kind` ("image", ...), `ref` (the file's absolute path, or
`sha256:<hex>` for inline bytes), `start` (the index in `input_ids` of its first placeholder token),
`tokens` (the placeholder tokens its features fill, not the begin/end markers around them), and its
size: `width`, `height` for an image (as the processor sees it), `seconds` for audio (null where it
does not apply). Never pixels, samples or features.

Packing lays sequences end to end exactly as for text (`rows.write_packed`: best-fit decreasing
on the exact lengths, positions restarting, the first label of each sequence -100); the only
extra work is here: the items of a packed row are its sequences' items in pack order, each
`start` moved by the offset of its sequence in the row::

    A = a0 [img 3 pads] a4      media [{start: 1, tokens: 3}]
    B = b0 b1 [img 2 pads] b4   media [{start: 2, tokens: 2}]

    packed  a0 I I I a4 b0 b1 I I b4
    media   [{start: 1, tokens: 3}, {start: 7, tokens: 2}]     (7 = 5 + 2)
    position_ids 0 1 2 3 4 0 1 2 3 4   seq_lengths [5, 5]

The stored `position_ids` are the text positions (one row). Qwen-VL models also need three
mRoPE rows (temporal, height, width) that depend on each image's patch grid, which exists only
once the image processor has run: the training collator (`ftdata.train.media_collator`) builds them
per sequence with the model's own `get_rope_index` and stacks the text row on top (the
`(4, batch, length)` layout that transformers reads as a packed batch). Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ftdata.errors import ConfigError, RecordError

__all__ = ["MEDIA_FIELD", "MEDIA_TYPE", "checked_media", "media_column", "pack_media", "shift_media"]

MEDIA_FIELD = "media"
ITEM_TYPE = pa.struct(
    [
        ("kind", pa.string()),
        ("ref", pa.string()),
        ("start", pa.int32()),
        ("tokens", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("seconds", pa.float64()),
    ]
)
MEDIA_TYPE = pa.list_(ITEM_TYPE)


def pack_media(media: pa.ListArray, members: np.ndarray, seq_len: np.ndarray, starts: np.ndarray) -> pa.ListArray:
    """The `media` column of a batch of packed rows, columnar (no loop per item).

    Args:
        media: one list of items per source row (`MEDIA_TYPE`).
        members: the source rows laid out, bin after bin (what `write_packed` gathers).
        seq_len: each member's length in its row (after any `pad_to_multiple_of` padding).
        starts: bin `j` is `members[starts[j]:starts[j + 1]]`, with `starts[0] == 0`.

    Returns one list per bin: its members' items in order, `start` moved to the packed row.
    """
    chosen = media.take(pa.array(members, type=pa.int64()))
    offsets = chosen.offsets.to_numpy()
    counts = np.diff(offsets)
    flat = chosen.flatten()  # the structs of the chosen rows only, in order
    ends = np.cumsum(seq_len)
    row_start = np.concatenate([[0], ends])[starts[:-1]]
    bin_of = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    shift = (ends - seq_len) - row_start[bin_of]  # where each member begins in its row
    bin_offsets = np.concatenate([[0], np.cumsum(counts)])[starts]
    return _moved(flat, np.repeat(shift, counts), bin_offsets)


def shift_media(media: pa.ListArray, shift: np.ndarray) -> pa.ListArray:
    """`media` (one list per row) with every `start` moved by its row's `shift` (padding on the left)."""
    counts = np.diff(media.offsets.to_numpy())
    return _moved(media.flatten(), np.repeat(shift, counts), np.concatenate([[0], np.cumsum(counts)]))


def _moved(flat: pa.StructArray, by: np.ndarray, offsets: np.ndarray) -> pa.ListArray:
    """Lists of the items `flat` (cut at `offsets`), each `start` moved by `by`."""
    moved = pc.add(flat.field("start").cast(pa.int64()), pa.array(by, type=pa.int64())).cast(pa.int32())
    names = [f.name for f in flat.type]
    fields = [moved if name == "start" else flat.field(name) for name in names]
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.StructArray.from_arrays(fields, names=names))


def checked_media(media: pa.Array | pa.ChunkedArray, lengths: np.ndarray) -> pa.ListArray:
    """The `media` column as one `MEDIA_TYPE` array, once every item's span is checked to lie
    inside its row (`lengths`), in order and without overlap.

    A span that does not is a bug upstream (a row edited after it was built), never something
    to pack: the model would take text for an item's features.

    Raises:
        ConfigError: the column is not a list of `{kind, ref, start, tokens, width, height, seconds}`,
            or has not one list per row.
        RecordError: naming the row, the item and its span.
    """
    if isinstance(media, pa.ChunkedArray):
        media = media.combine_chunks()
    try:
        media = media.cast(MEDIA_TYPE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise ConfigError(
            f"the media column must be a list of {{kind, ref, start, tokens, width, height, seconds}} per row, got "
            f"{media.type} ({exc})"
        ) from None
    if len(media) != len(lengths):
        raise ConfigError(
            f"the media column has {len(media)} rows for {len(lengths)} token rows; pass one list per row"
        )
    counts = np.diff(media.offsets.to_numpy())
    flat = media.flatten()
    start = flat.field("start").to_numpy(zero_copy_only=False).astype(np.int64)
    tokens = flat.field("tokens").to_numpy(zero_copy_only=False).astype(np.int64)
    row = np.repeat(np.arange(len(counts)), counts)
    end = start + tokens
    # the previous item's end within the same row (0 for a row's first item)
    first = np.concatenate([[True], row[1:] != row[:-1]]) if len(row) else np.zeros(0, dtype=bool)
    previous_end = np.where(first, 0, np.concatenate([[0], end[:-1]]))
    bad = (tokens <= 0) | (start < previous_end) | (end > lengths[row])
    if bad.any():
        i = int(np.argmax(bad))
        k = i - int(media.offsets.to_numpy()[row[i]])
        raise RecordError(
            f"{flat.field('kind')[i].as_py()} {k} ({flat.field('ref')[i].as_py()}) spans tokens "
            f"{start[i]}..{end[i]} of a "
            f"{lengths[row[i]]}-token row: out of the row or overlapping the item before it; build the rows again",
            field=f"row {row[i]}: media",
        )
    return media


def media_column(path: Path) -> pa.ListArray | None:
    """The `media` column of a rows file (an Arrow IPC stream, `rows.ArrowRows`), or None when the
    build has no media: what `write_packed(..., media=...)` takes. Only that column is kept in
    memory (a reference and a few numbers an item), never the tokens.
    """
    chunks = []
    with pa.OSFile(str(path)) as fh, pa.ipc.open_stream(fh) as reader:
        if MEDIA_FIELD not in reader.schema.names:
            return None
        for batch in reader:
            chunks.append(batch.column(MEDIA_FIELD))
    if not chunks:
        return pa.array([], type=MEDIA_TYPE)
    return pa.chunked_array(chunks).combine_chunks()
