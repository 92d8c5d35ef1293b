"""Message contents as lists of parts, for chat templates that read no string content.

LLaVA-Next's and Idefics3/SmolVLM's templates read `message['content']` only as a list of
parts (`{% for line in message['content'] %}{% if line['type'] == 'text' %}...`,
`message['content'][0]['text']`): given a string they raise or drop it. ftdata keeps every
content a string everywhere (one `MEDIA` character per item, docs/media.md) and converts at
the Jinja call only, for the templates that need it:

    "\\ufffcWho is this?"  ->  [{"type": "image"}, {"type": "text", "text": "Who is this?"}]

Text runs become text parts and each `MEDIA` an image part, in order; a content with no text
and no image is one empty text part (`content[0]['text']` must exist). The template then puts
each image where it puts images (LLaVA-Next: every image first, then the text) and writes its
own markup for it (`<image>\\n`); that markup is turned back into one `MEDIA` per image, so
every layer above (turn location, content spans, expansion) sees the same kind of rendering in
either form. The markup holds a token of the tokenizer's own, which a record's text cannot
hold while it is rendered (control-token text is rejected, or stood in for by private-use
characters, before any render: `render._Escapes`), so it is the template's, never the user's.

Which form a template gets is probed once per template (`contents_of`): string contents when
it writes string contents as given (Qwen2-VL, Gemma 3 and every text template take strings:
nothing changes for their text records), else parts when it writes text parts as given
(LLaVA-Next, Idefics3, SmolVLM); neither is the string form's TemplateError at the build's start,
which then says what lists of parts did too (`Contents.why`). A record with media is given parts
by every template that writes parts, marks up an image part with its own markup and renders a
conversation with media otherwise as parts than as strings (`Contents.media`, probed once): that is
what the processor's `apply_chat_template` renders at inference, where images come as parts, so the
row is the template's rendering of the parts (Gemma 3 trims each text part: "Compare " and an image
render as "Compare<start_of_image>"); where the two renderings are the same (Qwen-VL) the cheaper
string render is kept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ftdata.errors import TemplateError
from ftdata.chat.probes import PROBE, PROBE_TOOL, probe_messages
from ftdata.chat.sentinels import TemplateRender, changed_span
from ftdata.records.media import MEDIA  # one image in a message's text


class ContentForm(Enum):
    STRING = "string"  # `content` as a string (with one MEDIA per image)
    PARTS = "parts"  # `content` as [{"type": "text", "text": ...}, {"type": "image"}, ...]


@dataclass(frozen=True, slots=True)
class Contents:
    """How one chat template takes message contents."""

    form: ContentForm
    image_text: str = ""  # what the template writes for one image part ('' when nothing tellable from text)
    why: str = ""  # neither form renders: what the parts probe did (said with the string form's TemplateError)
    media: ContentForm = ContentForm.STRING  # the form of a record with media: PARTS when the template writes them

    def form_of(self, messages: Sequence[Mapping[str, Any]]) -> ContentForm:
        """The form `messages` are rendered in: parts for a record with media where the template writes parts."""
        return self.form if self.media is self.form or not media_count(messages) else self.media


STRING = Contents(ContentForm.STRING)


def to_parts(content: str | None) -> list[dict[str, str]]:
    """A string content (one MEDIA per image) as a list of text and image parts, in order.

    >>> to_parts("\\ufffcWho is this?")
    [{'type': 'image'}, {'type': 'text', 'text': 'Who is this?'}]
    """
    parts: list[dict[str, str]] = []
    for k, run in enumerate((content or "").split(MEDIA)):
        if k:
            parts.append({"type": "image"})
        if run:
            parts.append({"type": "text", "text": run})
    return parts or [{"type": "text", "text": ""}]


def as_parts(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`messages` with every string (or empty) content as parts; contents already lists stay as they are."""
    return [
        dict(m) if isinstance(m.get("content"), list) else {**m, "content": to_parts(m.get("content"))}
        for m in messages
    ]


def collapse(text: str, contents: Contents, images: int) -> str:
    """A parts rendering with each image the template wrote turned back into one MEDIA.

    Raises:
        TemplateError: the template writes images in a form that cannot be told from text, or
            wrote another number of them than it was given.
    """
    if not images:
        return text
    if not contents.image_text:
        raise TemplateError(
            "the chat template writes no markup with a token of its tokenizer for an image part, so its images "
            "cannot be located in the rendering; use the model's own template"
        )
    written = text.count(contents.image_text)
    if written != images:
        raise TemplateError(
            f"the chat template wrote {written} image(s) ({contents.image_text!r}) for {images} image part(s)"
        )
    return text.replace(contents.image_text, MEDIA)


def media_count(messages: Sequence[Mapping[str, Any]]) -> int:
    return sum(m["content"].count(MEDIA) for m in messages if isinstance(m.get("content"), str))


_CACHE: dict[tuple[str, ...], Contents] = {}


def contents_of(render: TemplateRender) -> Contents:
    """How `render`'s template takes contents: strings when it writes the probe's string contents
    in order, else parts when it writes them as text parts; cached per template, kwargs and tokenizer."""
    tok = render.tokenizer
    key = (
        repr(getattr(tok, "chat_template", None)),
        json.dumps(render.kwargs, sort_keys=True, default=str),
        str(tok.bos_token),
        str(tok.eos_token),
        str(len(tok)),
        repr(render.tools),
    )
    found = _CACHE.get(key)
    if found is None:
        found = _probe(render)
        if len(_CACHE) < 256:
            _CACHE[key] = found
    return found


def _writes(render: TemplateRender, messages: list[dict[str, Any]]) -> str:
    """'' when the template writes the probe contents in order
    (with a tool schema if it needs one), else what it did."""
    why = ""
    for tools in (None, [PROBE_TOOL]):
        try:
            text = render(messages, tools=tools)
        except TemplateError as exc:
            why = str(exc)
            continue
        at = [text.find(PROBE[n]) for n in ("u1", "a1", "u2", "a2")]
        if min(at) >= 0 and at == sorted(at):
            return ""
        why = f"the probe contents are not all written in order: {text[:120]!r}"
    return why


def _probe(render: TemplateRender) -> Contents:
    plain = probe_messages("u1", "a1", "u2", "a2")
    string_why = _writes(render, plain)
    parts_why = _writes(render, as_parts(plain))
    if not string_why:  # records with media as parts where the template renders their parts otherwise
        image_text = "" if parts_why else _image_text(render)
        media = (
            ContentForm.PARTS
            if image_text and _parts_differ(render, Contents(ContentForm.PARTS, image_text))
            else ContentForm.STRING
        )
        return Contents(ContentForm.STRING, image_text=image_text, media=media)
    if parts_why:  # neither: the build refuses the template with both reasons
        return Contents(ContentForm.STRING, why=parts_why)
    return Contents(ContentForm.PARTS, image_text=_image_text(render), media=ContentForm.PARTS)


_MEDIA_PROBE = (  # text on both sides of an item, with the spaces a template may trim; an item first and last
    {"role": "system", "content": " Be brief. "},
    {"role": "user", "content": f" Compare {MEDIA} with {MEDIA}. "},
    {"role": "assistant", "content": " Both charts. "},
    {"role": "user", "content": f"{MEDIA}\nAnd this{MEDIA}"},
    {"role": "assistant", "content": "A logo."},
)


def _parts_differ(render: TemplateRender, parts: Contents) -> bool:
    """Whether the template renders a conversation with media as parts otherwise than as strings (Gemma 3 trims
    each text part); the string form is the cheaper render, so it is kept where the two are the same."""
    messages = list(_MEDIA_PROBE)
    try:
        as_string = render(messages)
    except TemplateError:
        messages = messages[1:]  # a template that refuses system turns
        try:
            as_string = render(messages)
        except TemplateError:
            return True
    try:
        as_parts_ = collapse(render(as_parts(messages)), parts, media_count(messages))
    except TemplateError:
        return False
    return as_parts_ != as_string


def _image_text(render: TemplateRender) -> str:
    """What the template writes for one image part: a user turn rendered with and without one differ
    there. '' when that holds no added token of the tokenizer (it could then be a user's text)."""
    mark = "\ue000"
    try:
        with_image = render([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": mark}]}])
        without = render([{"role": "user", "content": [{"type": "text", "text": mark}]}])
    except TemplateError:
        return ""
    start, end = changed_span(with_image, without)
    text = with_image[start:end]
    added = getattr(render.tokenizer, "added_tokens_encoder", {}) or {}
    return text if any(t.strip() and t in text for t in added) else ""


__all__ = ["STRING", "ContentForm", "Contents", "as_parts", "collapse", "contents_of", "media_count", "to_parts"]
