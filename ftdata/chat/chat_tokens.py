"""`add_chat_tokens`: the chat template's markers as special tokens of the tokenizer.

A ChatML template on a base tokenizer (Llama-3, Gemma, Mistral, Phi, DeepSeek) writes
`<|im_start|>` and `<|im_end|>`, which that tokenizer splits into `<`, `|`, `im`, `_end`, `|>`:
the model must learn a five-token closer, and inference has to stop on a string. TRL's
`clone_chat_template` and Axolotl's `tokens:` add such markers to the tokenizer as tokens;
`add_chat_tokens=True` does the same, with the markers found from the template's own renders:

    probe    [system "\\ue000", user "\\ue001", assistant "\\ue002", user "\\ue003", assistant "\\ue004"]
    render   <|im_start|>system\\n\\ue000<|im_end|>\\n<|im_start|>user\\n\\ue001<|im_end|>\\n ...
    markup   the text between the sentinels (and the generation prompt)
    markers  its bracketed pieces, `<|...|>`, `<｜...｜>`, `<name>`, `</name>`, `[NAME]`, `[/NAME]`,
             that the tokenizer does not already read as one token: ['<|im_start|>', '<|im_end|>']

Role names and newlines in the markup are plain text and stay so. `ftdata train` then resizes
the model's embeddings and trains the new rows (`ftdata.train.model`).
"""

from __future__ import annotations

import copy
import itertools
import re
from typing import Any

from tokenizers import Tokenizer

from ftdata.chat.renderer import ChatRenderer
from ftdata.chat.stops import one_token
from ftdata.errors import TemplateError

# What a transformers 5 tokenizer built its Rust tokenizer from in __init__ (the vocabulary and merges as Python
# objects), never read or changed after it: a copy shares them (copying Qwen2.5's 151k merges one tuple at a time was
# half of a 1.3 s deepcopy; Gemma 3's 515k: 1.4 of 3.6 s).
INIT_TABLES = ("_vocab", "_merges", "_vocab_scores")

# A chat marker: <|im_end|>, <｜Assistant｜> (DeepSeek's full-width bars), <start_of_turn>, </s>, [INST], [/INST].
MARKER = re.compile(r"<\|[^<>|\s]+\|>|<｜[^<>｜]+｜>|</?[A-Za-z_][\w.-]*>|\[/?[A-Z][A-Z_]*\]")


def chat_markers(tokenizer: Any) -> list[str]:
    """The markers the tokenizer's chat template writes around messages that are not one token of it, in order.

    Raises:
        TemplateError: the tokenizer has no chat template, or it renders no probe conversation.
    """
    render = ChatRenderer(tokenizer)
    marks = [chr(0xE000 + i) for i in range(5)]
    turns = [
        ("system", marks[0]),
        ("user", marks[1]),
        ("assistant", marks[2]),
        ("user", marks[3]),
        ("assistant", marks[4]),
    ]
    texts = []
    for first in (0, 1):  # a template that raises on a system turn is probed without one
        messages = [{"role": role, "content": text} for role, text in turns[first:]]
        try:
            texts = [render(messages), render(messages[: 2 - first], generation=True)]
            break
        except TemplateError:
            continue
    if not texts:
        raise TemplateError(
            "add_chat_tokens: the chat template renders no plain conversation, so its markers cannot be found"
        )
    split = re.compile("[" + "".join(marks) + "]")
    found: dict[str, None] = {}
    for text in texts:
        for markup in split.split(text):
            found.update(dict.fromkeys(MARKER.findall(markup)))
    return [m for m in found if not one_token(m, tokenizer)]


def with_chat_tokens(tokenizer: Any) -> Any:
    """A copy of `tokenizer` with the template's markers added as special tokens (`tokenizer`
    itself when every marker already is one token: so applying it twice changes nothing)."""
    markers = chat_markers(tokenizer)
    if not markers:
        return tokenizer
    from tokenizers import AddedToken

    extended = copy_tokenizer(tokenizer)
    tokens = [
        AddedToken(m, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False) for m in markers
    ]
    extended.add_special_tokens({"additional_special_tokens": tokens}, replace_extra_special_tokens=False)
    return extended


def copy_tokenizer(tokenizer: Any) -> Any:
    """A copy of `tokenizer` to add tokens to and set attributes of: its Python state deep-copied, sharing the tables
    its __init__ built from (`INIT_TABLES`), over a copy of its Rust tokenizer (`copy_backend`)."""
    shared = {id(table): table for name in INIT_TABLES if (table := vars(tokenizer).get(name)) is not None}
    if isinstance(backend := vars(tokenizer).get("_tokenizer"), Tokenizer):
        shared[id(backend)] = copy_backend(backend)
    return copy.deepcopy(tokenizer, shared)  # a memo entry is the copy deepcopy uses: the table itself, the backend's


def copy_backend(backend: Tokenizer) -> Tokenizer:
    """A copy of a Rust tokenizer to add tokens to and set flags, padding or truncation of: a new one over the same
    model, normalizer, pre-tokenizer, post-processor and decoder (shared: ftdata and transformers replace them, never
    change them in place), with its added tokens re-added in id order, its padding and truncation. A deep copy
    serialises the whole tokenizer and parses it again (Qwen2.5's 0.55 s, Gemma 3's 1.9 s; 0.01-0.03 and 0.12-0.33 s
    this way); the copy serialises (`to_str`) as the deep copy does. Where an added token would come back with another
    id (one added before its model was replaced by a model that holds its text), a deep copy."""
    fresh = Tokenizer(backend.model)
    for part in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        if (value := getattr(backend, part)) is not None:
            setattr(fresh, part, value)
    added = backend.get_added_tokens_decoder()
    for special, run in itertools.groupby((added[i] for i in sorted(added)), key=lambda token: token.special):
        (fresh.add_special_tokens if special else fresh.add_tokens)(list(run))
    if fresh.get_added_tokens_decoder() != added:  # `AddedToken`s compare by text and every flag
        return copy.deepcopy(backend)
    fresh.encode_special_tokens = backend.encode_special_tokens
    if (padding := backend.padding) is not None:
        fresh.enable_padding(**padding)
    if (truncation := backend.truncation) is not None:
        fresh.enable_truncation(**truncation)
    return fresh


def added_token_ids(tokenizer: Any, base_vocab: int) -> list[int]:
    """Ids of the tokens past the model's embedding rows (`base_vocab`): the rows training must learn."""
    return list(range(base_vocab, len(tokenizer)))


__all__ = ["MARKER", "added_token_ids", "chat_markers", "copy_backend", "copy_tokenizer", "with_chat_tokens"]
