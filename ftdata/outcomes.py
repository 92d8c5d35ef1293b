"""What can happen to a record: the stage that rejected (or cut) it and a closed code for why,
and the notes a kept record carries.

Codes are set where the reason is known (the error raised, the truncation applied, the note
made) and counted as they are; the free-text reason or note sits beside them for people.
Nothing recovers a category by reading a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RejectStage(StrEnum):
    """Where in the pipeline a record was rejected or cut."""

    READ = "read"  # the reader could not read the row faithfully
    FILTER = "filter"  # the `filter` expression was false
    FORMAT = "format"  # the row could not become an Example
    RENDER = "render"  # the template could not render it, or would render it wrong
    VERIFY = "verify"  # the trained tokens do not cover / decode to the response text
    TRUNCATE = "truncate"  # too long for max_length: cut (kept) or rejected
    MIX = "mix"  # a recipe removed it: a duplicate, an evaluation overlap, or not drawn for its source's share


class RejectCode(StrEnum):
    """Why a record was rejected or cut (one per cause that exists in the code)."""

    UNREADABLE = "unreadable"  # duplicate keys, nesting too deep, a lone surrogate, a bad CSV row
    FILTERED = "filtered"
    MALFORMED = "malformed"  # a field is missing, null or of the wrong type (any plain RecordError)
    EMPTY_RESPONSE = "empty_response"
    NO_ASSISTANT = "no_assistant"
    ASSISTANT_FIRST = "assistant_first"  # an assistant turn before any user turn
    NOTHING_TO_TRAIN = "nothing_to_train"  # every assistant turn has train=false under the mask
    CONTROL_TOKEN = "control_token"  # the text holds a special token the tokenizer would not read as text
    TOOL_ARGUMENTS = "tool_arguments"  # tool-call arguments the template cannot write
    NOT_RENDERED = "not_rendered"  # the template does not write tool calls, reasoning or tool schemas
    TEMPLATE_ERROR = "template_error"  # the chat template raised on the record
    UNMASKABLE = "unmaskable"  # an assistant turn cannot be located in the rendering
    UNVERIFIABLE = "unverifiable"  # the trained tokens fail the coverage or decode check
    INCOMPLETE = "incomplete"  # another example of the same record was rejected (kept whole or not at all)
    TOO_LONG = "too_long"  # truncation=drop; a preference pair whose longer completion cannot fit with the template
    RESPONSE_TOO_LONG = "response_too_long"  # the response alone does not fit
    PROMPT_TOO_LONG = "prompt_too_long"  # the system prompt and tool schemas (never cut) leave no room for the response
    NO_RESPONSE_LEFT = "no_response_left"  # the cut kept no trained token
    TURNS_DROPPED = "turns_dropped"  # cut: whole oldest exchanges dropped, the rest re-rendered
    PROMPT_SHORTENED = "prompt_shortened"  # cut: a prompt message's text shortened (oldest exchanges maybe dropped too)
    END_CUT = "end_cut"  # cut: truncation=keep_start (a pair: each completion's end)
    START_CUT = "start_cut"  # cut: truncation=keep_end shortened a response's start (a pair: its shared prompt's)
    SPLIT = "split"  # cut: truncation=split made several conversations
    DUPLICATE = "duplicate"  # recipe dedup: the record repeats one kept before it
    CONTAMINATED = "contaminated"  # recipe decontaminate: an n-gram of it is in an evaluation record
    NOT_DRAWN = "not_drawn"  # recipe mixing: its source's share was met without it (not an error)
    OVER_LIMIT = (
        "over_limit"  # past a bound: a line, a string (max_line_bytes, max_string_chars), a render's time or size
    )
    TOO_MANY_MESSAGES = "too_many_messages"  # more messages than max_messages
    # preference data (ftdata.records.preference): a pair or an unpaired (KTO) record
    CHOSEN_IS_REJECTED = "chosen_is_rejected"  # the two sides are the same conversation: nothing to prefer
    PROMPT_MISMATCH = "prompt_mismatch"  # the sides differ before their final assistant turns
    NOT_ASSISTANT_END = "not_assistant_end"  # a side (or a KTO completion) does not end with an assistant turn
    NO_PREFERENCE = "no_preference"  # the data's scores tie: neither side is preferred
    # media (ftdata.media): every media reject names the file and the fix
    MEDIA_MISMATCH = "media_mismatch"  # image placeholders and images differ in number
    MEDIA_MISSING = "media_missing"  # an image file that does not exist
    MEDIA_UNREADABLE = "media_unreadable"  # not an image, a corrupt header, a bad data: URI, an unsupported value
    MEDIA_URL = "media_url"  # an http(s) image: ftdata never fetches
    MEDIA_TOO_LARGE = "media_too_large"  # an image over the pixel budget (max_image_pixels)
    MEDIA_TOO_MANY = "media_too_many"  # more images than max_images
    MEDIA_IN_RESPONSE = "media_in_response"  # an image in a trained turn: the model cannot write image tokens
    MEDIA_NO_PROCESSOR = "media_no_processor"  # a record with images in a build without a processor
    MEDIA_UNSUPPORTED = "media_unsupported"  # a record with video: no processor family here reads it
    MEDIA_TOO_LONG = "media_too_long"  # the response and its images cannot fit max_length (images are never cut)
    MEDIA_UNVERIFIABLE = "media_unverifiable"  # an expanded image's tokens differ from the processor's count
    MEDIA_TOO_SHORT = "media_too_short"  # an audio clip too short for the feature extractor to make a token
    MEDIA_REFUSED = "media_refused"  # the processor refuses the item (its reason: an aspect ratio past its limit, ...)


class NoteCode(StrEnum):
    """What a note on a kept record says (one per note the code makes)."""

    ROLE_MAPPED = "role_mapped"  # a role name of the data mapped to a chat role (`human` -> `user`)
    FUNCTION_CALL_JOINED = "function_call_joined"  # a function_call turn joined the assistant text before it
    PREFORMATTED = "preformatted"  # a user turn already holds a prompt template's header
    SYSTEM_IGNORED = "system_ignored"  # the prompt template has no {{ system }}
    SYSTEM_DROPPED = "system_dropped"  # the chat template dropped the system message
    REASONING_DROPPED = "reasoning_dropped"  # the chat template drops an assistant turn's reasoning
    REASONING_MOVED = "reasoning_moved"  # a leading <think>…</think> in an assistant content moved into its reasoning
    REASONING_PROMPT_CLOSED = "reasoning_prompt_closed"  # the generation prompt closes the think block
    THINKING_ON = "thinking_on"  # a record with reasoning rendered with the template's thinking switch on
    PROMPT_ROW = "prompt_row"  # a turn trained after its inference prompt, which no render of the record writes
    PROMPT_OPENS = (
        "prompt_opens"  # a prompt set: the generation prompt opens a block the completion continues (`<think>\n`)
    )
    EOS_APPENDED = "eos_appended"  # the template writes no end-of-turn marker: EOS appended and trained
    THINK_BOILERPLATE = "think_boilerplate"  # the rule trains the template's own empty think block
    USER_TRAIN_IGNORED = "user_train_ignored"  # train=true on a non-assistant turn
    REPAIRED = "repaired"  # a token crossed a response edge: re-tokenized split at the edge
    RESULTS_ENCODED = "results_encoded"  # preview only: the template encodes tool results as a string
    SUPERVISION_IGNORED = "supervision_ignored"  # loss_weight/train_detail on a turn that carries no loss
    TRAJECTORY_PAIR = "trajectory_pair"  # a preference pair whose completions are several messages: where they diverge
    JSON_TEXT = "json_text"  # a prompt set's object column Arrow cannot unify over the records: stored as JSON text
    TRAIN_DETAIL_WIDENED = "train_detail_widened"  # a token across a train_detail edge stays trained (Axolotl's rule)
    MEDIA_PLACED = (
        "media_placed"  # no placeholder in the messages: the column's items go before the first user text (TRL)
    )
    AUDIO_CUT = "audio_cut"  # audio_window=cut: a clip past the processor's window, the seconds it drops
    TOKEN_DRIFT = "token_drift"  # a turn's recorded completion token ids differ from the tokens trained (ATIF)
    STOP_MISSING = "stop_missing"  # a turn's recorded completion token ids lack only the stop token (ATIF)
    HARNESS_EVENT = "harness_event"  # a harness event marker step (ATIF), not a chat turn: left out
    TRAJECTORY_FOUND = "trajectory_found"  # a trajectory this one points to is a file in its folder (ATIF)
    TRAJECTORY_MISSING = "trajectory_missing"  # a trajectory this one points to is not in its folder (ATIF)
    SYSTEM_MOVED = "system_moved"  # a later system turn the template cannot write there, joined to a user turn
    SUPERVISION = "supervision"  # preview only: the turns' loss weights and train_detail ranges
    UNUSED_COLUMN = "unused_column"  # a label, score or tag column the task does not read (the note names who does)
    PLACEHOLDER = "placeholder"  # a response holds template placeholders ({{name}}) trained as written
    SESSION_LEFT_OUT = "session_left_out"  # an agent session's events that no model context held, counted by kind
    SESSION_NO_TOOLS = "session_no_tools"  # an agent session file holds no tool schemas: built without them
    AGENT_TRACE_COLUMNS = "agent_trace_columns"  # an HF agent-trace row's columns that are not the conversation
    PUBLISHED_SHAPE = (
        "published_shape"  # a published set's own markup became messages/tools (Hermes' <tools> system text)
    )


@dataclass(frozen=True, slots=True)
class Note:
    """A note on a kept record: `code` is what code checks and reports count, `text` says it to a person."""

    code: NoteCode
    text: str

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code.value, "text": self.text}


def has_note(notes: tuple[Note, ...] | list[Note], code: NoteCode) -> bool:
    """Whether any of `notes` has `code`."""
    return any(note.code is code for note in notes)


__all__ = ["Note", "NoteCode", "RejectCode", "RejectStage", "has_note"]
