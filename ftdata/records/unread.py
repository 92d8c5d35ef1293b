"""What an SFT record holds that its rows will not say: each a note naming the option that would use it, or a reject.

Nothing present in the data vanishes in silence. An SFT build reads a record's conversation; beside it, a record
may carry what another task or tool reads, or text a tool fills in before training:

- a column that looks like a label, a score or a tag (`label: 3`, `score: 8.5`, `tag: "math"`): SFT trains every
  response alike, so the column changes nothing; the note names what reads it (true/false labels build KTO rows,
  scores go with preference pairs or a prompt set's reward columns);
- video (a `videos` column, `<video>` tags, LLaMA-Factory and ms-swift): no processor family here reads video, and
  rows without it would train the answer to a video the model never saw: the record is rejected
  (`media_unsupported`), never built as text;
- template placeholders left in a response (`{{name}}`, `{{author}}` in LLaMA-Factory's `identity.json`, which its
  users fill with `sed` before training): trained literally, the model learns to say "{{name}}"; a note names them.

Images and audio are read by the media seam (`ftdata.records.media`); a text build refuses them per record
(`ftdata.media.expand.no_processor`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ftdata.errors import Location, UnusableRecord
from ftdata.outcomes import Note, NoteCode, RejectCode
from ftdata.types import Example

LABELS = ("label", "kto_tag", "tag")
SCORES = ("score", "scores", "rating", "ratings", "reward", "rewards")
VIDEO_COLUMNS = ("videos", "video")
_WATCHED = frozenset((*LABELS, *SCORES, *VIDEO_COLUMNS))  # a row with none of these columns is noted for none
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def _present(value: Any) -> bool:
    return value not in (None, "", [], {})


def _label_note(column: str, value: Any) -> Note:
    if isinstance(value, bool):
        use = "KTO rows read it: build without --task sft (or --task kto)"
    else:
        use = "a true/false label builds KTO rows (desirable or not); a class label trains nothing in SFT"
    return Note(NoteCode.UNUSED_COLUMN, f"column {column!r} is not used by an SFT build; {use}")


def _score_note(column: str) -> Note:
    return Note(
        NoteCode.UNUSED_COLUMN,
        f"column {column!r} is not used by an SFT build (every response is trained alike); scored answers make "
        "preference pairs (chosen/rejected, --task preference), and a prompt set keeps it as a reward column "
        "(--task prompts)",
    )


def unread(examples: tuple[Example, ...], row: Any, location: Location, claimed: frozenset[str]) -> tuple[Example, ...]:
    """`examples` (read from `row`) with a note for each column or placeholder the rows will not carry.

    `claimed`: the columns a column map reads (never noted).

    Raises:
        UnusableRecord: the record carries video (`media_unsupported`).
    """
    notes: list[Note] = []
    if isinstance(row, Mapping) and not _WATCHED.isdisjoint(row):
        for column in VIDEO_COLUMNS:
            if column not in claimed and _present(row.get(column)):
                raise UnusableRecord(
                    f"the record has video (column {column!r}); no processor family here reads video, and a row "
                    "without it would train an answer to a video the model never sees: drop the column or the record",
                    location=location,
                    field=column,
                    code=RejectCode.MEDIA_UNSUPPORTED,
                )
        notes += [_label_note(c, row[c]) for c in LABELS if c not in claimed and _present(row.get(c))]
        notes += [_score_note(c) for c in SCORES if c not in claimed and _present(row.get(c))]
    if any("<video>" in m.content for e in examples for m in e.messages):
        raise UnusableRecord(
            "a message holds a <video> tag; no processor family here reads video: drop the video or the record",
            location=location,
            field="messages",
            code=RejectCode.MEDIA_UNSUPPORTED,
        )
    responses = [m.content for e in examples for m in e.messages if m.role == "assistant"]
    names = sorted({"{{" + name + "}}" for text in responses for name in PLACEHOLDER.findall(text)})
    if names:
        notes.append(
            Note(
                NoteCode.PLACEHOLDER,
                f"template placeholders in a response, trained as written: {', '.join(names)}; fill them in the "
                "data first (LLaMA-Factory's identity.json: your model's name and author)",
            )
        )
    if not notes:
        return examples
    return tuple(replace(e, notes=(*e.notes, *notes)) for e in examples)


__all__ = ["unread"]
