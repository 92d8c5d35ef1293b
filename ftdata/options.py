"""A build's options in three objects, each validated once at the boundary:

    DataOptions    what the rows are made of (template, max_length, mask, truncation, ...):
                   its serialised form is in the build's key (the files it names, by their bytes)
    RunOptions     where and how the work runs (engine, workers, batch size, the reject limit):
                   the same rows whatever they are
    OutputOptions  where the side files go (rejects, the build cache)

`BuildOptions` holds the three. The same flat names work everywhere: the Python API
(`build_sft_dataset(..., max_length=512)`), the CLI (`--max-length 512`) and YAML
(`max_length: 512`); `BuildOptions.from_mapping` sorts them into their object, and `plain`
is the one serialiser (build.json, the fingerprint, a training run's saved config).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from numbers import Integral
from pathlib import Path
import types
import typing
from typing import Any, ClassVar

from ftdata.errors import ConfigError
from ftdata.guard.bounds import MAX_DECOMPRESSED_BYTES, MAX_LINE_BYTES, MAX_MESSAGES, MAX_STRING_CHARS, ReadBounds
from ftdata.io.delimited import check_delimiter
from ftdata.records.formats import FORMAT_ALIASES, FORMATS, format_name
from ftdata.records.prompts import RewardColumns
from ftdata.types import (
    AudioWindow,
    Engine,
    HistoryMode,
    MaskPolicy,
    OnError,
    Padding,
    PaddingSide,
    PromptCut,
    SpecialTokens,
    SystemMode,
    Task,
    TruncationPolicy,
    _Choice,
)


# apply_chat_template's own parameters: ftdata passes them on every render.
RESERVED_TEMPLATE_KWARGS = frozenset(
    {
        "messages",
        "conversation",
        "tools",
        "documents",
        "add_generation_prompt",
        "continue_final_message",
        "tokenize",
        "padding",
        "truncation",
        "max_length",
        "return_tensors",
        "return_dict",
        "return_assistant_tokens_mask",
        "tokenizer_kwargs",
        "chat_template",
    }
)


def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class DataOptions:
    """What the rows are made of: every option here changes the output, and only these do."""

    template: str | None = _opt(
        None,
        "prompt template name or .jinja path; None = the tokenizer's chat template (else alpaca); chatml = the "
        "tokenizer's own chat template, which must be ChatML",
    )
    chat_template: str | None = _opt(
        None,
        "render with this chat template instead of the tokenizer's (or the processor's): a .jinja file or a "
        "template TRL ships by name (qwen3, llama3, ...); the tokenizer folder is not changed; ftdata train saves it "
        "with the tokenizer (TRL's chat_template_path)",
    )
    max_length: int = _opt(2048, "longest sequence in tokens (and the packed row length)")
    packing: bool = _opt(False, "pack sequences into max_length rows (best-fit decreasing)")
    pad_to_multiple_of: int | None = _opt(
        None,
        "packing: pad each sequence (pad tokens, label -100) to a multiple of this, e.g. 2 x the context-parallel "
        "size; must divide max_length",
    )
    test_size: float | int | None = _opt(
        None,
        "held-out split of whole records (a cut record never straddles it): a fraction (0.1) or a record count (200)",
    )
    seed: int = _opt(42, "seed for shuffling, splitting and packing")
    format: str | None = _opt(
        None,
        f"record format, detected per record when None: {', '.join(FORMATS)} "
        f"(also {', '.join(f'{k} = {v}' for k, v in FORMAT_ALIASES.items())})",
    )
    task: Task | None = _opt(
        None,
        "what the rows are: sft (input_ids + labels), preference (prompt_ids, chosen_ids, rejected_ids; also dpo) "
        "or kto (prompt_ids, completion_ids, label), prompts (prompt, prompt_ids and the reward columns, for "
        "GRPO/RLOO; "
        "also grpo); None = from the data: preference-shaped records (chosen/rejected) build preference rows, prompts "
        "with no completion build a prompt set, and messages + a true/false label must be told kto or sft",
    )
    columns: dict[str, str] | None = _opt(
        None,
        "column map {field: column}, applied before detection, e.g. {'output': 'std_answer'}; a dotted column reads a "
        "nested field ({'answer': 'reward_model.ground_truth'}); a mapped column is read only as its field; "
        "role= and content= name the keys inside each message ({'role': 'speaker', 'content': 'text'}); a prompt "
        "set may name columns of its own",
    )
    roles: dict[str, str] | None = _opt(None, "extra role names, e.g. {'narrator': 'assistant'}")
    input_join: str | None = _opt(
        None,
        "instruction data: join the input to the instruction with this text in its user turn before any template, "
        "as LLaMA-Factory does ('\\n'); None: a prompt template places the input, a chat template adds it after a "
        "blank line",
    )
    reader: str | None = _opt(
        None, "force a reader: json, jsonl, csv, parquet, text (one document a line), hf or 'module:function'"
    )
    delimiter: str | None = _opt(
        None,
        "CSV field separator: ',', ';', '|' or a tab ('\\t' or 'tab'); None = sniffed from the header line (a tab "
        "for .tsv)",
    )
    field: str | None = _opt(
        None, "JSON only: the key of the top-level object that holds the records, e.g. 'data' for {\"data\": [...]}"
    )
    filter: str | Callable[[Any], bool] | None = _opt(
        None, "keep rows where this Jinja expression is true, e.g. 'not input'"
    )
    shuffle: bool = _opt(False, "shuffle records (with seed) before splitting")
    limit: int | None = _opt(None, "read at most this many records")
    mask: MaskPolicy = _opt(
        MaskPolicy.ALL_ASSISTANT, "which tokens carry loss: all_assistant, last_assistant, train_on_prompt"
    )
    history: HistoryMode = _opt(
        HistoryMode.INFERENCE,
        "multi-turn records whose chat template writes a turn differently in history than as the "
        "last turn (dropped reasoning, a moved system prompt): inference trains every turn as inference sees it, "
        "splitting the record into the fewest rows that do; tree trains exactly those rows, written as prefix "
        "trees (each shared prefix once, across records too: tree_across_records; position_ids and tree_lengths, "
        "for ftdata train or a trainer that attends along a tree, docs/packing.md); one_row keeps one row and "
        "trains history turns as the full render writes them",
    )
    tree_across_records: bool = _opt(
        True,
        "history=tree: records of a batch that start with the same tokens (a harness's system prompt and tool "
        "schemas) share one tree of at most max_length tokens, that prefix forwarded once for them all (exact: each "
        "trained token once, in its own context); false, or with test_size (held-out records are drawn one by "
        "one): a tree per record",
    )
    recorded_ids: bool = _opt(
        False,
        "an agent turn with recorded completion token ids (ATIF metrics.completion_token_ids) trains those ids "
        "instead of the turn's re-tokenized text, where they decode to the same text (else a note, and the "
        "re-tokenized turn)",
    )
    system_prompt: str | None = _opt(None, "system message to add (or override with system_mode=override)")
    system_mode: SystemMode = _opt(SystemMode.ADD, "add, override, or fold (into the first user turn)")
    mask_reasoning: bool = _opt(False, "train only the answer of a turn with reasoning; the reasoning stays context")
    chat_template_kwargs: dict[str, Any] | None = _opt(
        None, "extra chat-template variables for every render, e.g. {'enable_thinking': false}; a record's own win"
    )
    stop_tokens: list[str] | None = _opt(
        None,
        "tokens inference stops on besides the template's end-of-turn markers and generation_config.json's "
        "eos_token_id (read from the tokenizer folder), e.g. ['<|eom_id|>']; each must be one token of the tokenizer",
    )
    special_tokens_in_data: SpecialTokens = _opt(
        SpecialTokens.REJECT,
        "a record whose text holds a control token (<|im_end|>, [INST]): reject it, or train it as the "
        "plain text it is (tokenized with special tokens split)",
    )
    add_chat_tokens: bool = _opt(
        False,
        "add the chat template's markers (<|im_start|>, <|im_end|>, ...) that the tokenizer splits into "
        "several tokens as special tokens before building (TRL's clone_chat_template, Axolotl's tokens:); "
        "ftdata train then resizes the embeddings, trains the new rows and saves the tokenizer with the adapter",
    )
    truncation: TruncationPolicy = _opt(
        TruncationPolicy.KEEP_RESPONSE, "keep_response, keep_start (right), keep_end (left), split, drop, error"
    )
    prompt_cut: PromptCut = _opt(
        PromptCut.END,
        "keep_response and split: what a too-long prompt message loses: end (keep its head), "
        "middle (keep head and tail, '[...]' between) or start (keep its tail)",
    )
    max_prompt_length: int | None = _opt(
        None,
        "prompts: the longest prompt in tokens (the rollout engine's budget; default max_length); a longer "
        "prompt is rejected (too_long), or cut with cut_prompts",
    )
    cut_prompts: bool = _opt(
        False,
        "prompts: cut a prompt over max_prompt_length instead of rejecting it (its longest message shortened "
        "by prompt_cut; a start_cut/end_cut note in the rejects file, the row kept)",
    )
    reward_columns: dict[str, str] | None = _opt(
        None,
        "prompts: the reward columns and their types, e.g. {'answer': 'string'} (string, int, float, bool, "
        "list[T], struct, struct{KEY: T, ...}, json; skip leaves a column out); default: every column of the first "
        "record that is not the prompt, objects as structs Arrow unifies over the records, lists as lists; named, a "
        "subset: the first record's other columns are "
        "skipped",
    )
    padding: Padding = _opt(Padding.NONE, "pad every row to max_length (unpacked output only)")
    padding_side: PaddingSide = _opt(PaddingSide.RIGHT, "where padding goes when padding=max_length")
    on_error: OnError = _opt(OnError.RAISE, "malformed records: raise (stop at the first) or skip (reject and go on)")
    max_line_bytes: int = _opt(
        MAX_LINE_BYTES,
        "longest line a reader takes (JSONL, CSV); a longer one is skipped unread: a located "
        "reject (on_error=skip) or error, in bounded memory",
    )
    max_string_chars: int = _opt(
        MAX_STRING_CHARS,
        "longest string a record may hold (the most one render may hold); a longer one is a "
        "located reject (on_error=skip) or error",
    )
    max_decompressed_bytes: int = _opt(
        MAX_DECOMPRESSED_BYTES,
        "bytes one compressed input file (.gz, .zst, .bz2, .xz) may decompress to, and a "
        "pipe (stdin, a FIFO, <(...)) may give; past that it is a one-line error",
    )
    max_messages: int = _opt(
        MAX_MESSAGES,
        "most messages one conversation may hold; a longer one is a reject (too_many_messages): "
        "its render and masking work grows with every turn",
    )
    processor: str | None = _opt(
        None,
        "media (images, audio): the model's processor folder (tokenizer, preprocessor_config.json, chat template; "
        "in Python also a transformers processor); each media item is counted and expanded with it (docs/media.md)",
    )
    max_images: int | None = _opt(None, "with processor: reject a record with more images than this (media_too_many)")
    max_image_pixels: int | None = _opt(
        None,
        "with processor: reject a record with an image of more pixels (width x height, from its header) than this "
        "(media_too_large)",
    )
    audio_window: AudioWindow = _opt(
        AudioWindow.REJECT,
        "with processor: a clip longer than the processor's window (Qwen2-Audio, Gemma 3n: 30 s) is rejected "
        "(media_too_long), or with cut kept as the processor cuts it (the row equals the processor's; an audio_cut "
        "note counts the seconds dropped)",
    )
    image_dir: str | None = _opt(
        None,
        "with processor: the image store where inline images (data: URIs, bytes) are written once as "
        "<sha256>.<ext>; default ~/.cache/ftdata/images ($FTDATA_IMAGE_DIR); a build to OUT also publishes its own "
        "in OUT/images",
    )

    def __post_init__(self) -> None:
        parse_choices(self)
        self._check_rows()
        self._check_reading()
        self._check_rendering()
        self._check_counts()

    def _check_rows(self) -> None:
        """The row shape: length, split, packing and padding, seed."""
        if not isinstance(self.max_length, int) or self.max_length <= 0:
            raise ConfigError(f"max_length must be a positive integer, got max_length={self.max_length!r}")
        if self.test_size is not None and not (
            (isinstance(self.test_size, float) and 0 < self.test_size < 1)
            or (isinstance(self.test_size, int) and self.test_size > 0)
        ):
            raise ConfigError(
                f"test_size must be a fraction in (0, 1) or a positive count, got test_size={self.test_size!r}"
            )
        if self.packing and self.padding is not Padding.NONE:
            raise ConfigError("packing and padding=max_length conflict: packed rows need no padding; drop one")
        if self.pad_to_multiple_of is not None and not self.packing:
            raise ConfigError(
                f"pad_to_multiple_of={self.pad_to_multiple_of!r} pads packed sequences: add packing=True (--packing)"
            )
        check_pad_multiple(self.pad_to_multiple_of, max_length=self.max_length)
        if self.history is HistoryMode.TREE and (self.padding != "none" or self.processor is not None):
            why = (
                "padding=max_length pads each row itself; drop one"
                if self.processor is None
                else f"processor={self.processor!r} builds rows with media, which are not built as trees yet; use "
                "history='inference' (the same trained tokens, as split rows)"
            )
            raise ConfigError(f"history='tree' writes a record's rows as one prefix tree: {why}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be an integer in [0, 2**32), got seed={self.seed!r}")

    def _check_reading(self) -> None:
        """How records are read: format, CSV delimiter, JSON field, maps, limit and the read bounds."""
        self.format = format_name(self.format)
        self.delimiter = check_delimiter(self.delimiter)
        if self.field is not None and (not isinstance(self.field, str) or not self.field):
            raise ConfigError(f"field must be the key that holds the records, e.g. 'data'; got field={self.field!r}")
        if self.input_join is not None and not isinstance(self.input_join, str):
            raise ConfigError(f"input_join must be a string such as '\\n', got input_join={self.input_join!r}")
        if self.input_join is not None:  # as typed on a command line: '\n' is a newline
            self.input_join = self.input_join.replace("\\n", "\n").replace("\\t", "\t")
        for name in ("columns", "roles"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(f"{name} must be a mapping like {{'output': 'answer'}}, got {value!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ConfigError(f"limit must be an integer >= 1, got limit={self.limit!r}")
        ReadBounds.of(self)  # checks the three read bounds
        if not isinstance(self.max_messages, int) or isinstance(self.max_messages, bool) or self.max_messages < 2:
            raise ConfigError(
                "max_messages must be an integer >= 2 (a user turn and a reply), got "
                f"max_messages={self.max_messages!r}"
            )

    def _check_rendering(self) -> None:
        """What records render with: the templates, their kwargs, the stop tokens."""
        if self.chat_template is not None and (
            not isinstance(self.chat_template, str) or not self.chat_template.strip()
        ):
            raise ConfigError(
                "chat_template must be a .jinja file or a TRL template name like 'qwen3', got "
                f"chat_template={self.chat_template!r}"
            )
        if self.chat_template is not None and self.template not in (None, "chatml"):
            raise ConfigError(
                f"chat_template={self.chat_template!r} renders with a chat template, template={self.template!r} with a "
                "prompt template: drop one"
            )
        if self.chat_template_kwargs is not None:
            if not isinstance(self.chat_template_kwargs, Mapping):
                raise ConfigError(
                    "chat_template_kwargs must be a mapping like {'enable_thinking': False}, "
                    f"got chat_template_kwargs={self.chat_template_kwargs!r}"
                )
            taken = sorted(set(self.chat_template_kwargs) & RESERVED_TEMPLATE_KWARGS)
            if taken:
                raise ConfigError(
                    f"chat_template_kwargs cannot set {', '.join(taken)} (ftdata sets them per render); "
                    f"got chat_template_kwargs={self.chat_template_kwargs!r}"
                )
            self.chat_template_kwargs = dict(self.chat_template_kwargs)
        if self.stop_tokens is not None:
            self.stop_tokens = parse_stop_tokens(self.stop_tokens)

    def _check_counts(self) -> None:
        """The values of the media and prompt-set options (what each means for a task or a medium is theirs:
        `TaskModule.rules`, `ftdata.media`)."""
        for name in ("max_images", "max_image_pixels"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"{name} must be an integer >= 1, got {name}={value!r}")
        if self.max_prompt_length is not None and (
            not isinstance(self.max_prompt_length, int)
            or isinstance(self.max_prompt_length, bool)
            or self.max_prompt_length < 1
        ):
            raise ConfigError(
                f"max_prompt_length must be a positive integer, got max_prompt_length={self.max_prompt_length!r}"
            )
        if self.reward_columns is not None:
            if not isinstance(self.reward_columns, Mapping):
                raise ConfigError(
                    f"reward_columns must be a mapping like {{'answer': 'string'}}, got "
                    f"reward_columns={self.reward_columns!r}"
                )
            self.reward_columns = RewardColumns(self.reward_columns).types

    @property
    def shares_trees(self) -> bool:
        """Whether history=tree grows trees across records: asked for, and no held-out split (which draws records
        one by one, so a tree holds the records of one split only by holding one record)."""
        return self.tree_across_records and self.test_size is None

    def fingerprint(self) -> dict[str, Any]:
        """The serialised options that shape the rows (a resumed run compares them); the build's key takes
        them without those that name files (`template`, `chat_template`, `processor`): their bytes stand for them."""
        out = plain(self)
        out.pop("image_dir", None)  # where inline images are kept, not what the rows hold (`sha256:` refs)
        if self.history is not HistoryMode.TREE:  # shapes tree rows only: every other build keeps its key
            out.pop("tree_across_records", None)
        if self.processor is not None and not isinstance(
            self.processor, str
        ):  # a processor object: its class and source
            out["processor"] = (
                f"{type(self.processor).__name__}:{getattr(self.processor.tokenizer, 'name_or_path', '')}"
            )
        return out


@dataclass
class RunOptions:
    """Where and how the per-record work runs; the rows are the same whatever these are."""

    engine: Engine = _opt(
        Engine.LOCAL,
        "where rendering and tokenization run: local (this process), processes (worker processes: forked from a fork "
        "server on Linux, spawned elsewhere; inputs under a few thousand records stay local) or ray (a Ray cluster); "
        "same output every way",
    )
    num_workers: int | None = _opt(
        None, "workers for engine=processes or ray (default: one per CPU core / the cluster's CPUs)"
    )
    ray_address: str | None = _opt(
        None, "engine=ray: the cluster to join ('auto', 'ray://head:10001'); None starts a local one"
    )
    batch_size: int = _opt(
        512, "records per tokenizer batch / worker chunk (fewer where they reach 1,000,000 characters of text)"
    )
    max_reject_ratio: float | None = _opt(
        None, "fail (exit 4) when more than this fraction of the records read is rejected, e.g. 0.05; None = never"
    )

    def __post_init__(self) -> None:
        parse_choices(self)
        if self.ray_address is not None and not isinstance(self.ray_address, str):
            raise ConfigError(
                "ray_address must be a cluster address like 'auto' or 'ray://head:10001', got "
                f"ray_address={self.ray_address!r}"
            )
        for name in ("num_workers", "batch_size"):
            value = getattr(self, name)
            if not (value is None and name == "num_workers") and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ConfigError(f"{name} must be an integer >= 1, got {name}={value!r}")
        if self.max_reject_ratio is not None and (
            isinstance(self.max_reject_ratio, bool)
            or not isinstance(self.max_reject_ratio, (int, float))
            or not 0 <= self.max_reject_ratio <= 1
        ):
            raise ConfigError(
                f"max_reject_ratio must be a fraction in [0, 1], got max_reject_ratio={self.max_reject_ratio!r}"
            )


@dataclass
class OutputOptions:
    """Where a build's side files go."""

    rejects_path: str | None = _opt(None, "write rejected and cut records here (JSONL)")
    cache: bool = _opt(
        True,
        "a build to a folder reuses (and keeps) an unchanged build from cache_dir, by default ~/.cache/ftdata/builds; "
        "off: build from scratch and cache nothing",
    )
    cache_dir: str | None = _opt(
        None, "the build cache folder: a build with the same input bytes and options is reused from it"
    )
    serving_url: str | None = _opt(
        None,
        "after the build, check every trained turn against the vLLM render server at this URL "
        "(`ftdata check-serving OUT --url URL`; exit 1 when a turn differs); None = no check",
    )

    def __post_init__(self) -> None:
        if self.serving_url is not None and not str(self.serving_url).startswith(("http://", "https://")):
            raise ConfigError(
                f"serving_url must be an http(s) URL, got serving_url={self.serving_url!r} (http://127.0.0.1:8000)"
            )
        if not isinstance(self.cache, bool):
            raise ConfigError(f"cache must be true or false, got cache={self.cache!r}")
        if not self.cache and self.cache_dir is not None:
            raise ConfigError(f"cache=False and cache_dir={self.cache_dir!r} conflict: drop one")


_GROUPS: dict[str, type] = {"data": DataOptions, "run": RunOptions, "output": OutputOptions}
FIELDS: dict[str, Field[Any]] = {f.name: f for group in _GROUPS.values() for f in fields(group)}
"""Every option by its flat name, in flag order: the CLI flags, the YAML keys and docs/cli.md come from these."""
DATA_FIELDS: dict[str, Field[Any]] = {f.name: f for f in fields(DataOptions)}
_GROUP_OF: dict[str, str] = {f.name: name for name, group in _GROUPS.items() for f in fields(group)}


def _choice_of(hint: Any) -> type[_Choice] | None:
    """The `_Choice` enum a field's type names (`Task | None`: Task), else None."""
    kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return next((kind for kind in kinds if isinstance(kind, type) and issubclass(kind, _Choice)), None)


CHOICES: dict[type, dict[str, type[_Choice]]] = {
    group: {name: kind for name, hint in typing.get_type_hints(group).items() if (kind := _choice_of(hint)) is not None}
    for group in _GROUPS.values()
}
"""Each options object's closed choices by field name: their enums, parsed once in `__post_init__`."""


def parse_choices(options: Any) -> None:
    """Every closed choice of `options` (a string from the CLI, YAML or a keyword) as its enum, in place.

    Raises:
        ConfigError: a value that is none of the choices, listing them (`mask must be one of ...; got mask='x'`).
    """
    for name, kind in CHOICES[type(options)].items():
        value = getattr(options, name)
        if value is not None:
            setattr(options, name, kind.parse(value, name=name))


@dataclass(frozen=True, init=False)
class BuildOptions:
    """The options of a build, as the three objects; constructed from flat names.

    >>> opts = BuildOptions(max_length=512, engine="processes")
    >>> opts.data.max_length, opts.run.engine.value
    (512, 'processes')
    """

    data: DataOptions
    run: RunOptions
    output: OutputOptions

    def __init__(
        self,
        data: DataOptions | None = None,
        run: RunOptions | None = None,
        output: OutputOptions | None = None,
        **flat: Any,
    ) -> None:
        given = {"data": data, "run": run, "output": output}
        split = _split(flat)
        for name, group in _GROUPS.items():
            value = given[name]
            if value is not None and split[name]:
                raise ConfigError(f"pass {', '.join(split[name])} in {name}= or as keywords, not both")
            object.__setattr__(self, name, value if value is not None else group(**split[name]))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> BuildOptions:
        """Build from flat keyword options, rejecting unknown names with the valid list."""
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        """Every option by its flat name, as its value (enums and callables as they are)."""
        return {name: getattr(getattr(self, group), name) for name, group in _GROUP_OF.items()}

    task_reason: ClassVar[str] = ""
    """Why the build makes its task's rows (`ftdata.run.task.with_task`): for the report, not an option."""

    def updated(self, **flat: Any) -> BuildOptions:
        """A copy with the options `flat` (flat names) replaced, checked as at construction; its `task_reason`
        stays (a new task drops it: `with_task` says the new one's)."""
        out = BuildOptions.from_mapping({**self.to_mapping(), **flat})
        return out if "task" in flat else out.with_task_reason(self.task_reason)

    def with_task_reason(self, reason: str) -> BuildOptions:
        """A copy that says why its task was chosen (`task_reason`)."""
        out = BuildOptions(data=self.data, run=self.run, output=self.output)
        object.__setattr__(out, "task_reason", reason)
        return out


def _split(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Flat options sorted into their object, by name; unknown names are one error with the valid list."""
    unknown = sorted(set(flat) - set(FIELDS))
    if "num_proc" in unknown:
        raise ConfigError("num_proc was replaced by engine and num_workers: use engine='processes', num_workers=N")
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(FIELDS))}")
    out: dict[str, dict[str, Any]] = {name: {} for name in _GROUPS}
    for key, value in flat.items():
        out[_GROUP_OF[key]][key] = value
    return out


def plain(options: Any) -> dict[str, Any]:
    """Options (any of the three, or `BuildOptions`, flat) as JSON/YAML values: enums as their
    values, a callable filter as its repr. The one serialiser: build.json, the fingerprint, saved runs."""
    values = (
        options.to_mapping()
        if isinstance(options, BuildOptions)
        else {f.name: getattr(options, f.name) for f in fields(options)}
    )
    return {
        name: value.value if hasattr(value, "value") else repr(value) if callable(value) else value
        for name, value in values.items()
    }


def parse_stop_tokens(value: Any) -> list[str]:
    """`"<|eom_id|>,<|eot_id|>"` or a list of strings -> a list of distinct non-empty tokens.

    Raises:
        ConfigError: not a string or a list of strings.
    """
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(t, str) for t in items):
        raise ConfigError(f"stop_tokens must be a list of token strings like ['<|eom_id|>'], got stop_tokens={value!r}")
    return list(dict.fromkeys(t.strip() for t in items if t.strip()))


def option_kind(name: str) -> str:
    """How a field is spelled on the command line: bool, int, number, pairs, json or text."""
    special = {
        "columns": "pairs",
        "roles": "pairs",
        "test_size": "number",
        "limit": "int",
        "num_workers": "int",
        "pad_to_multiple_of": "int",
        "chat_template_kwargs": "json",
        "stop_tokens": "tokens",
        "max_reject_ratio": "float",
        "max_images": "int",
        "max_image_pixels": "int",
        "max_prompt_length": "int",
        "reward_columns": "pairs",
    }
    if name in special:
        return special[name]
    default = FIELDS[name].default
    if isinstance(default, bool):
        return "bool"
    return "int" if isinstance(default, int) else "text"


_YAML_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "bool": ((bool,), "true or false (unquoted)"),
    "int": ((int,), "a whole number"),
    "number": ((int, float), "a count (200) or a fraction (0.1)"),
    "float": ((int, float), "a number"),
    "pairs": ((dict,), "a mapping, e.g. {output: answer}"),
    "json": ((dict, str), "a mapping, e.g. {enable_thinking: false}"),
    "text": ((str,), "a string"),
    "tokens": ((list, str), "a list of token strings, e.g. ['<|eom_id|>']"),
}


def check_type(origin: str | Path, key: str, value: Any) -> None:
    """A YAML value must have its option's type: `packing: 'false'` is a string, not false.

    Raises:
        ConfigError: naming the file, the key, the value and the type expected.
    """
    if value is None:
        return
    kind = option_kind(key) if key in FIELDS else "text"
    types, wanted = _YAML_TYPES[kind]
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if ok and kind == "pairs":
        ok = all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    if not ok:
        raise ConfigError(f"{origin}: {key} must be {wanted}, got {type(value).__name__} {value!r:.60}")


def check_pad_multiple(pad_to_multiple_of: int | None, *, max_length: int) -> None:
    """`pad_to_multiple_of` is None or an integer >= 1 that divides `max_length` (so a padded
    sequence that fitted still fits).

    Raises:
        ConfigError: naming the value and the fix.
    """
    if pad_to_multiple_of is None:
        return
    value = pad_multiple(pad_to_multiple_of)
    if max_length % value:
        raise ConfigError(
            f"pad_to_multiple_of={value} must divide max_length={max_length} (a padded sequence must still fit "
            f"a row); use a max_length such as {max_length - max_length % value or value}"
        )


def pad_multiple(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ConfigError(f"pad_to_multiple_of must be an integer >= 1, got pad_to_multiple_of={value!r}")
    return int(value)
