"""The media collator: the only place where pixels (or samples) exist.

ftdata's rows hold the expanded text (each item already replaced by the processor's own run
of placeholder tokens) and a `media` column, per item `{kind, ref, start, tokens, width, height,
seconds}`: a reference, never pixels. Per batch, `MediaCollator` loads the items (an absolute
path, or `sha256:<hex>` for an inline item written as `OUT/images/<hex>.<ext>`; images as the
processor sees them: `ftdata.media.images.load_image`, EXIF orientation applied), runs the
processor, and checks each item's features against its token span before the model sees them:
a span that does not hold exactly `tokens` placeholder tokens, or a processor that makes another
number of features, is a typed `FeatureMismatch` naming the row and the item, never the model's
"Image features and image tokens do not match" halfway through a step.

Rows (packed or not) are right-padded to the longest row of the batch; what isolates the
sequences of a packed row is the family table's `Collate` (ftdata/media/families.py;
tests/media_train/test_media_isolation.py proves each with tiny random-weight models: packed
logits == each sequence alone)::

    collate  positions sent                         attention_mask     images attend
    MROPE    (4, B, L): text row restarting per     none               causally (the text row
             sequence + the model's own 3 mRoPE                         tells transformers where
             rows, computed per sequence                                sequences begin)
    BLOCKS   (B, L) restarting per sequence         {full_attention,   bidirectionally inside
             + token_type_ids (image = 1)           sliding_attention} each image, built here
                                                    (B, 1, L, L) each

Why BLOCKS gets explicit masks: Gemma 3 lets an image's tokens see each other both ways. In
transformers 5.23 the full-attention layers apply that overlay after the packed-sequence
remap, but the sliding-window layers apply it before (`create_causal_mask(or_mask_function=
blockwise_overlay(...))` is wrapped by `packed_sequence_compatibility_function`), so it is
indexed by the position inside the sequence instead of the index in the row: a sequence that
is not first gets image attention at the wrong tokens (measured: logits off by ~0.1). A mask
dict passed as `attention_mask` is used as is, so the collator builds both masks itself.

Pads trail the last sequence of a row with continuing positions and label -100; under causal
attention no real token sees them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ftdata.errors import ConfigError, RecordError
from ftdata.media.column import MEDIA_FIELD
from ftdata.media.families import Collate, by_model_type, packable_model_types
from ftdata.media.audio_files import load_audio
from ftdata.media.images import DIGEST, load_image, stored
from ftdata.tokens.layouts import layout_of
from ftdata.types import IGNORE_INDEX


class FeatureMismatch(RecordError):
    """An item's features, its token span and its recorded `tokens` disagree."""


@dataclass(frozen=True)
class ModelFacts:
    """What the collator needs from the model's config (picklable: no model inside)."""

    model_type: str
    image_token_id: int | None
    pad_token_id: int = 0
    merge_size: int = 1  # Qwen: features per image = grid t*h*w / merge_size**2
    tokens_per_image: int | None = None  # Gemma 3: every image makes this many features
    sliding_window: int | None = None
    layer_types: tuple[str, ...] = ()
    audio_token_id: int | None = None

    @classmethod
    def of(cls, config: Any, *, pad_token_id: int = 0) -> ModelFacts:
        """From the config of a model that reads media (Qwen2-VL, Qwen2.5-VL, Gemma 3, Qwen2-Audio, ...)."""
        text = config.get_text_config()
        image_token, audio_token = _token_id(config, "image"), _token_id(config, "audio")
        if image_token is None and audio_token is None:
            raise ConfigError(
                f"model type {config.model_type!r} names no image or audio token (image_token_id, audio_token_id) "
                "in its config"
            )
        vision = getattr(config, "vision_config", None)
        return cls(
            model_type=config.model_type,
            image_token_id=image_token,
            audio_token_id=audio_token,
            pad_token_id=pad_token_id,
            merge_size=int(getattr(vision, "spatial_merge_size", 1) or 1),
            tokens_per_image=getattr(config, "mm_tokens_per_image", None),
            sliding_window=getattr(text, "sliding_window", None),
            layer_types=tuple(getattr(text, "layer_types", None) or ()),
        )

    def placeholder(self, kind: str) -> int:
        """The token id whose run stands for one item of `kind` ("image" or "audio").

        Raises:
            ConfigError: the model reads no items of that kind.
        """
        token = {"image": self.image_token_id, "audio": self.audio_token_id}.get(kind)
        if token is None:
            raise ConfigError(
                f"model type {self.model_type!r} reads no {kind} items (its config names no {kind} token)"
            )
        return token

    @property
    def collate(self) -> Collate:
        """What the collator sends the model: the family table's row for this model type (PLAIN without one)."""
        found = by_model_type(self.model_type)
        return found.collate if found is not None else Collate.PLAIN


def _token_id(config: Any, kind: str) -> int | None:
    """`{kind}_token_id` (or `{kind}_token_index`) of a config, None when it names none."""
    for name in (f"{kind}_token_id", f"{kind}_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    return None


def load_items(kind: str, refs: Sequence[str], store: Path | None, *, rate: int | None = None) -> list[Any]:
    """The items of one kind as the processor reads them, in order: images RGB with their EXIF orientation applied
    (`load_image`), clips decoded, mono and resampled to `rate` with soxr (`load_audio`); a `sha256:` ref is an
    inline item under `store`.

    Raises:
        RecordError: a file is missing (the message says where it was looked for) or cannot be decoded.
    """
    noun = "clip" if kind == "audio" else kind
    out = []
    for ref in refs:
        inline = ref.startswith(DIGEST)
        if inline and store is None:
            raise RecordError(
                f"inline {noun} {ref} not found in no {kind} folder (pass the build's OUT/images)", field=MEDIA_FIELD
            )
        try:
            if kind == "audio":
                source = stored(ref, store) if inline else Path(ref)  # type: ignore[arg-type]  # an inline reference has its store: checked above
                if source is None or not source.is_file():
                    raise FileNotFoundError(ref)
                out.append(load_audio(str(source), rate=int(rate or 0), field=MEDIA_FIELD))
            else:
                out.append(load_image(ref, store=store))
        except FileNotFoundError:
            where = (
                f"inline {noun} {ref} not found in {store}"
                if inline
                else f"{kind} file {ref} is missing (moved since the build?)"
            )
            raise RecordError(where, field=MEDIA_FIELD) from None
        except OSError as exc:
            raise RecordError(f"{kind} {ref} cannot be read: {exc}", field=MEDIA_FIELD) from None
    return out


def sequence_lengths(example: Mapping[str, Any]) -> list[int]:
    """The sequences of a row, as its layout holds them (`Layout.lengths`): a packed row's, else the whole row."""
    return layout_of(example).lengths(example)


@dataclass
class MediaCollator:
    """Batches rows with media for a model that reads them (see the module docstring).

    Args:
        image_processor: the model's image processor (a PIL one works: no torchvision).
        facts: `ModelFacts.of(model.config)`.
        rope_index: for MROPE, the model's own `get_rope_index` (found by `rope_index_of(model)`);
            called per sequence.
        image_dir: where `sha256:` items live (the build's `OUT/images`).
        dtype: dtype of the explicit masks (BLOCKS): the model's compute dtype.
        audio_processor: for audio items, the model's whole processor (Qwen2-Audio's, Gemma 3n's, ...):
            it runs on one audio token per clip, so its own expansion of each clip is the count the
            features imply, and its own outputs are what the model gets (filtered by `audio_inputs`).
        audio_inputs: the names the model's forward takes (`model_inputs(model)`); the audio
            processor's outputs outside them (input_ids, num_audio_tokens, ...) are dropped.
        audio_dir: where `sha256:` clips live (the one media store: the build's `OUT/images`).
    """

    image_processor: Any
    facts: ModelFacts
    rope_index: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None
    image_dir: Path | None = None
    dtype: torch.dtype = torch.float32
    audio_processor: Any = None
    audio_inputs: frozenset[str] = frozenset()
    audio_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.facts.collate is Collate.MROPE and self.rope_index is None:
            raise ConfigError(
                f"{self.facts.model_type}: the collator needs the model's get_rope_index (rope_index_of(model))"
            )
        if self.facts.collate is Collate.BLOCKS and getattr(self.image_processor, "do_pan_and_scan", False):
            raise ConfigError("do_pan_and_scan makes extra crops per image that the rows do not count; switch it off")

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        width = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), width), self.facts.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        positions = torch.zeros((len(examples), width), dtype=torch.long)
        seq_lengths: list[list[int]] = []
        items: list[dict[str, Any]] = []
        item_row: list[int] = []
        collate = self.facts.collate
        for b, example in enumerate(examples):
            n = len(example["input_ids"])
            lengths = sequence_lengths(example)
            if len(lengths) > 1 and collate is Collate.PLAIN:
                raise ConfigError(
                    f"packed rows are not proven isolated for model type {self.facts.model_type!r} (proven: "
                    f"{', '.join(packable_model_types())}): build without --packing"
                )
            # the pads continue the last sequence, so its positions run on through them
            lengths = [*lengths[:-1], lengths[-1] + width - n]
            ids[b, :n] = torch.tensor(example["input_ids"])
            labels[b, :n] = torch.tensor(example["labels"])
            positions[b] = torch.cat([torch.arange(k) for k in lengths])
            labels[b, positions[b] == 0] = IGNORE_INDEX  # no sequence learns from its neighbour
            seq_lengths.append(lengths)
            for item in example.get(MEDIA_FIELD) or ():
                items.append(item)
                item_row.append(b)
        batch: dict[str, Any] = {"input_ids": ids, "labels": labels}
        batch.update(self.features(ids, items, item_row, examples))
        if collate is Collate.MROPE:
            batch["position_ids"] = self._mrope_positions(ids, positions, seq_lengths, batch.get("image_grid_thw"))
        elif collate is Collate.BLOCKS:
            is_image: Any = ids == self.facts.image_token_id  # a bool tensor (torch types == as bool)
            batch["position_ids"] = positions
            batch["token_type_ids"] = is_image.long()
            batch["attention_mask"] = block_masks(
                seq_lengths, is_image, sliding_window=self.facts.sliding_window, dtype=self.dtype
            )
        else:
            batch["attention_mask"] = (
                torch.arange(width)[None] < torch.tensor([[len(e["input_ids"])] for e in examples])
            ).long()
        return batch

    def features(
        self, ids: torch.Tensor, items: list[dict], item_row: list[int], examples: Sequence[Mapping[str, Any]]
    ) -> dict[str, torch.Tensor]:
        """The model's media inputs (images: `pixel_values`, `image_grid_thw`) for the `media` items of the
        rows of `ids` (`item_row[k]`: the row of item k; each `start` indexes that row), after checking
        every span and every item's features. Empty when there are no items.

        Raises:
            FeatureMismatch: a span, its `tokens` and the processor's features disagree.
            RecordError: a file is missing or unreadable.
            ConfigError: an item of a kind this model reads none of.
        """
        unread = sorted({item["kind"] for item in items} - {"image", "audio"})
        if unread:
            raise ConfigError(f"the collator reads image and audio items, not {'/'.join(unread)}")
        self._check_spans(ids, items, item_row, examples)
        out: dict[str, torch.Tensor] = {}
        images = [(item, b) for item, b in zip(items, item_row) if item["kind"] == "image"]
        if images:
            image_items, image_rows = [im for im, _ in images], [b for _, b in images]
            if self.image_processor is None:
                raise ConfigError(f"model type {self.facts.model_type!r} has no image processor for its image items")
            pixels = self.image_processor(
                images=load_items("image", [im["ref"] for im in image_items], self.image_dir), return_tensors="pt"
            )
            self._check_features(pixels, image_items, image_rows, examples)
            out.update({k: v for k, v in pixels.items() if k in ("pixel_values", "image_grid_thw")})
        clips = [(item, b) for item, b in zip(items, item_row) if item["kind"] == "audio"]
        if clips:
            out.update(self.audio_features([c for c, _ in clips], [b for _, b in clips], examples))
        return out

    def audio_features(
        self, items: list[dict], item_row: list[int], examples: Sequence[Mapping[str, Any]]
    ) -> dict[str, torch.Tensor]:
        """The model's audio inputs for the audio `items` (Qwen2-Audio: `input_features`, `feature_attention_mask`):
        each clip decoded and resampled to the feature extractor's rate, then the processor's own call on
        one audio token per clip, whose expansion of each clip must equal the clip's `tokens`.

        Raises:
            FeatureMismatch: a clip's features imply another number of tokens than its span holds.
            RecordError: a file is missing or unreadable.
            ConfigError: no audio processor.
        """
        processor = self.audio_processor
        if processor is None or getattr(processor, "feature_extractor", None) is None:
            raise ConfigError(
                f"model type {self.facts.model_type!r}: the collator has no audio processor for its audio items"
            )
        rate = int(processor.feature_extractor.sampling_rate)
        waves = load_items("audio", [item["ref"] for item in items], self.audio_dir, rate=rate)
        token = self.facts.placeholder("audio")
        out = processor(
            text=[processor.audio_token] * len(waves),
            audio=waves,
            sampling_rate=rate,
            padding=True,
            return_tensors="pt",
        )
        made = (out["input_ids"] == token).sum(-1).tolist()  # the processor's own count, from the features it made
        for k, (item, n, b) in enumerate(zip(items, made, item_row)):
            if n != int(item["tokens"]):
                raise FeatureMismatch(
                    f"audio {_which(k, item_row)} ({item['ref']}, {float(item.get('seconds') or 0):.2f} s) makes {n} "
                    f"features with this processor, but its span holds {item['tokens']} tokens: the data was built "
                    "with another processor or from another file; build again with this one",
                    field=f"{_row_name(examples[b], b)}: {MEDIA_FIELD}",
                )
        skip = {"input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids"}
        return {
            k: v for k, v in out.items() if k not in skip and k in self.audio_inputs and isinstance(v, torch.Tensor)
        }

    def _check_spans(self, ids: torch.Tensor, items: list[dict], item_row: list[int], examples: Sequence) -> None:
        """Each item's span holds exactly `tokens` placeholder tokens
        of its kind, and a row has none outside its spans."""
        covered = torch.zeros_like(ids, dtype=torch.bool)
        for k, (item, b) in enumerate(zip(items, item_row)):
            start, tokens = int(item["start"]), int(item["tokens"])
            is_kind = ids[b] == self.facts.placeholder(item["kind"])
            run = _run_length(is_kind, start)
            if run != tokens or (start > 0 and bool(is_kind[start - 1])):
                raise FeatureMismatch(
                    f"{item['kind']} {_which(k, item_row)} ({item['ref']}) should span {tokens} placeholder tokens "
                    "from "
                    f"token {start}, but the row holds a run of {run} there: the rows and their media disagree; "
                    "build again",
                    field=f"{_row_name(examples[b], b)}: {MEDIA_FIELD}",
                )
            covered[b, start : start + tokens] = True
        for kind, token in (("image", self.facts.image_token_id), ("audio", self.facts.audio_token_id)):
            stray = (ids == token) & ~covered if token is not None else torch.zeros_like(covered)
            if not bool(stray.any()):
                continue
            b = int(stray.any(dim=1).nonzero()[0])
            raise FeatureMismatch(
                f"{int(stray[b].sum())} {kind} tokens lie outside every recorded {kind} span (first at token "
                f"{int(stray[b].nonzero()[0])}): the model would fill them with another {kind}'s features",
                field=f"{_row_name(examples[b], b)}: input_ids",
            )

    def _check_features(
        self, pixels: Mapping[str, Any], items: list[dict], item_row: list[int], examples: Sequence
    ) -> None:
        """The processor made exactly `tokens` features for every item."""
        made = self.features_per_image(pixels, len(items))
        for k, (item, n, b) in enumerate(zip(items, made, item_row)):
            if n != int(item["tokens"]):
                raise FeatureMismatch(
                    f"{item['kind']} {_which(k, item_row)} ({item['ref']}, {item['width']}x{item['height']}) makes {n} "
                    f"features with this processor, but its span holds {item['tokens']} tokens: the data "
                    "was built with another processor or other min_pixels/max_pixels; build again with this one",
                    field=f"{_row_name(examples[b], b)}: {MEDIA_FIELD}",
                )

    def features_per_image(self, pixels: Mapping[str, Any], count: int) -> list[int]:
        """How many features the model will make for each processed image."""
        grid = pixels.get("image_grid_thw")
        if grid is not None:
            return (grid.prod(-1) // self.facts.merge_size**2).tolist()
        if self.facts.tokens_per_image is not None and len(pixels["pixel_values"]) == count:
            return [int(self.facts.tokens_per_image)] * count
        raise ConfigError(
            f"cannot count the features of {self.facts.model_type!r} images from its processor's output "
            f"({', '.join(pixels)}): the collator counts image_grid_thw (Qwen-VL) or a fixed mm_tokens_per_image "
            "(Gemma 3)"
        )

    def _mrope_positions(
        self, ids: torch.Tensor, text: torch.Tensor, seq_lengths: list[list[int]], grids: torch.Tensor | None
    ) -> torch.Tensor:
        """(4, B, L): the text row on top of the model's own 3 mRoPE rows, computed per sequence."""
        rope_index = self.rope_index
        assert rope_index is not None  # checked when the collator was made (an MROPE collator has one)
        rope = text[None].repeat(3, 1, 1)
        next_grid = 0
        for b, lengths in enumerate(seq_lengths):
            begin = 0
            for n in lengths:
                seq = ids[b, begin : begin + n][None]
                is_image: Any = seq == self.facts.image_token_id  # a bool tensor (as above)
                count = _image_runs(is_image[0])
                if count:
                    assert grids is not None  # spans were checked: there are images, so there are grids
                    own = grids[next_grid : next_grid + count]
                    next_grid += count
                    pos, _ = rope_index(seq, mm_token_type_ids=is_image.int(), image_grid_thw=own)
                    rope[:, b, begin : begin + n] = pos[:, 0]
                begin += n
        return torch.cat([text[None], rope], dim=0)


def _run_length(is_image: torch.Tensor, start: int) -> int:
    """How many image tokens run from `start` (0 when `start` is not one)."""
    rest = is_image[start:].int()
    return int(rest.cumprod(0).sum()) if len(rest) else 0


def _image_runs(is_image: torch.Tensor) -> int:
    """The number of runs of image tokens (one per image)."""
    flags = is_image.int()
    return int((flags[1:] > flags[:-1]).sum()) + int(flags[:1].sum()) if len(flags) else 0


def block_masks(
    seq_lengths: list[list[int]], is_image: torch.Tensor, *, sliding_window: int | None, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """Gemma 3's two attention masks for packed rows, (B, 1, L, L) additive (0 or the dtype's min).

    A query sees a key of its own sequence that is not after it, or any key of its own image
    (images attend both ways); sliding layers also need `q - k < sliding_window`, counted inside
    the sequence, exactly as `masking_utils.sliding_window_overlay` does.
    """
    rows, width = is_image.shape
    seq = torch.stack([torch.repeat_interleave(torch.arange(len(n)), torch.tensor(n)) for n in seq_lengths])
    starts = torch.zeros_like(is_image, dtype=torch.long)
    starts[:, 1:] = (is_image[:, 1:] & ~is_image[:, :-1]).long()
    starts[:, 0] = is_image[:, 0].long()
    block = torch.where(is_image, starts.cumsum(1), 0)  # image k of the row -> k (1-based); text -> 0
    q, k = torch.arange(width)[:, None], torch.arange(width)[None, :]
    same_seq = seq[:, :, None] == seq[:, None, :]
    same_image = (block[:, :, None] == block[:, None, :]) & (block[:, :, None] > 0)
    full = same_seq & ((k <= q) | same_image)
    masks = {"full_attention": full}
    if sliding_window is not None:
        masks["sliding_attention"] = full & (k > q - sliding_window)
    low = torch.finfo(dtype).min
    out = BlockMasks({name: torch.where(m, 0.0, low).to(dtype)[:, None] for name, m in masks.items()})
    out["tokens"] = (seq >= 0).long()
    return out


class BlockMasks(dict):
    """Gemma 3's masks by layer type (its forward uses a dict `attention_mask` as is), plus
    `tokens`, (B, L) ones: SFTTrainer counts a batch's tokens as `inputs["attention_mask"].sum()`."""

    def sum(self) -> torch.Tensor:
        return self["tokens"].sum()


def model_inputs(model: Any) -> frozenset[str]:
    """The keyword names `model`'s forward takes (through a peft wrapper too)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return frozenset(inspect.signature(base.forward).parameters)


def rope_index_of(model: Any) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The model's own `get_rope_index` (through a peft wrapper too).

    Raises:
        ConfigError: the model has none.
    """
    for module in model.modules():
        method = getattr(module, "get_rope_index", None)
        if callable(method):
            return method
    raise ConfigError(f"{type(model).__name__} has no get_rope_index: not a multimodal-RoPE model")


def _which(k: int, item_row: list[int]) -> int:
    """The index of item `k` (of the batch) within its own row."""
    return item_row[:k].count(item_row[k])


def _row_name(example: Mapping[str, Any], b: int) -> str:
    """How an error names a row: its source location when the row carries one."""
    for key in ("location", "source", "record"):
        if example.get(key) is not None:
            return f"record {example[key]}"
    return f"row {b} of the batch"
