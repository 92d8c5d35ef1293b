"""Recipe files: many sources, each with its own build options and a share of one budget.

```yaml
tokenizer: ../shared/tokenizers/qwen2.5-instruct
max_length: 4096                 # any build option here is the default of every source
mix_by: trained_tokens           # records | tokens | trained_tokens | all (every record once, no shares)
total: 20_000_000                # budget in that unit; omitted = the most every source allows
sources:
  - data: chats/*.jsonl          # a file, a glob or a folder, relative to this file
    weight: 0.5
  - data: lamini_docs_nested.jsonl
    template: question-answer
    weight: 0.5
    epochs_max: 3                # may repeat up to 3x to reach its share, never more
dedup: exact                     # none | exact | near
decontaminate: [evals/*.jsonl]
```

`load_recipe` reads and checks the whole file before anything is read or tokenized; every
source's options are checked by `BuildOptions` exactly as a single build's are.
"""

from __future__ import annotations

import glob
import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ftdata.io.compressed import data_suffix
from ftdata.io.config_files import YamlFile, check_code_reader, read_yaml_file, resolve_paths
from ftdata.io.declarations import declaration_kind, yaml_file
from ftdata.io.declared import split_pick
from ftdata.errors import ConfigError
from ftdata.guard.inputs import Digests, Input, InputKind, data_input, text_digest
from ftdata.options import DATA_FIELDS, FIELDS, BuildOptions, plain
from ftdata.io.store import is_uri
from ftdata.run.task import check_options
from ftdata.types import _Choice

_BUILD_OPTIONS = tuple(FIELDS)

# Build options that shape the one output (or the run that makes it): set once, at the top.
WHOLE_BUILD_OPTIONS = frozenset(
    {
        "max_length",
        "packing",
        "pad_to_multiple_of",
        "padding",
        "padding_side",
        "test_size",
        "seed",
        "shuffle",
        "stop_tokens",
        "engine",
        "num_workers",
        "ray_address",
        "batch_size",
        "rejects_path",
        "cache",
        "cache_dir",
        "max_reject_ratio",
        "task",
    }
)
SOURCE_OPTIONS = tuple(name for name in _BUILD_OPTIONS if name not in WHOLE_BUILD_OPTIONS)
SOURCE_KEYS = ("data", "name", "weight", "epochs_max", *SOURCE_OPTIONS)
RECIPE_KEYS = ("sources", "tokenizer", "mix_by", "total", "dedup", "near_threshold", "decontaminate", "ngram")
_GLOB_CHARS = frozenset("*?[")


class MixBy(_Choice):
    """The unit that weights, `total` and achieved shares count."""

    RECORDS = "records"
    TOKENS = "tokens"  # every token of a record's sequence
    TRAINED_TOKENS = "trained_tokens"  # the tokens that carry loss
    ALL = "all"  # every record of every source once, in order: no shares (LLaMA-Factory's and axolotl's concat)

    @property
    def unit(self) -> str:
        """The unit shares are counted in (`all` counts records)."""
        return "records" if self is MixBy.ALL else self.value


class Dedup(_Choice):
    """How records that repeat another one (across all sources, in build order) are removed."""

    NONE = "none"
    EXACT = "exact"  # the same normalised text (ftdata.mix.dedup)
    NEAR = "near"  # estimated Jaccard similarity >= near_threshold (MinHash LSH)


@dataclass(frozen=True, slots=True)
class RecipeSource:
    """One source of a recipe.

    `options` are the recipe's defaults with this source's own on top, checked by
    `BuildOptions`: what a single build of this source would take.
    """

    name: str
    data: str  # a file, a glob or a folder; absolute, or a URI
    weight: float  # as given; Recipe.shares normalises
    epochs_max: float  # how many passes over this source its share may take
    options: Mapping[str, Any]

    def build_options(self) -> BuildOptions:
        """This source's options as a single build takes them."""
        return BuildOptions.from_mapping(self.options)

    def files(self) -> list[str]:
        """The paths `data` names: a glob's matches (sorted), else `data` itself.

        Raises:
            ConfigError: a glob that matches nothing, or a path that does not exist.
        """
        return expand(self.data, what=f"source {self.name!r}")


@dataclass(frozen=True, slots=True)
class Recipe:
    """A mixture of sources built as one dataset (see the module docstring for the file)."""

    sources: tuple[RecipeSource, ...]
    tokenizer: str | None = None  # None = the bundled SmolLM2
    mix_by: MixBy = MixBy.RECORDS
    total: int | None = None  # budget in mix_by units; None = the most every source's epochs_max allows
    seed: int = 42  # sampling, and the build's own seed
    dedup: Dedup = Dedup.NONE
    near_threshold: float = 0.8
    decontaminate: tuple[str, ...] = ()  # evaluation files: paths or globs, absolute
    ngram: int = 13
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # recipe-level build options
    origin: str = "recipe"  # the file, in messages and in build.json
    declared: str = ""  # the tool whose declaration this recipe reads (LLaMA-Factory, axolotl); "" for a recipe
    digest: str = ""  # sha256 of the file's bytes it was parsed from ("" for a recipe made in memory)

    @property
    def shares(self) -> tuple[float, ...]:
        """Each source's target share of the budget: its weight over the sum of weights."""
        total = sum(s.weight for s in self.sources)
        return tuple(s.weight / total for s in self.sources)

    def build_options(self) -> BuildOptions:
        """The options of the whole build (max_length, packing, test_size, seed, engine, ...)."""
        return BuildOptions.from_mapping(self.options)

    def source_options(self, source: RecipeSource) -> BuildOptions:
        """The options `source` is read and built with: the recipe's, then its own."""
        return BuildOptions.from_mapping({**self.options, **source.options})

    def eval_files(self) -> list[str]:
        """The evaluation files `decontaminate` names, globs expanded, in order.

        Raises:
            ConfigError: a glob that matches nothing, or a path that does not exist.
        """
        return [path for pattern in self.decontaminate for path in expand(pattern, what="decontaminate")]

    @classmethod
    def from_mapping(
        cls,
        mapping: Mapping[str, Any],
        *,
        base: Path | None = None,
        origin: str = "recipe",
        allow_code: bool = False,
        declared: str = "",
        digest: str = "",
    ) -> Recipe:
        """Check a recipe's keys and values; relative paths are taken against `base` (default: cwd).

        `origin` names the recipe in messages (load_recipe passes the file's path, `digest` its bytes'). A source
        whose `reader` is Python code (`module:function`) needs `allow_code=True` (`--allow-code`).

        Raises:
            ConfigError: one line naming the recipe, the source (`sources[1] (glaive)`) and the key:
                an unknown key (with the valid ones), a whole-build option set on a source, a bad
                value, no sources, or two sources with one name.
        """
        base = Path.cwd() if base is None else base
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"{origin}: a recipe must be a mapping of key: value, got {type(mapping).__name__}")
        _check_keys(mapping, (*RECIPE_KEYS, *_BUILD_OPTIONS), where=origin)
        top = resolve_paths(mapping, base)
        options = {key: top[key] for key in _BUILD_OPTIONS if key in top}
        whole = _checked(options, where=origin)
        raw = top.get("sources")
        if not isinstance(raw, list) or not raw:
            raise ConfigError(
                f"{origin}: sources must be a non-empty list of {{data: path, weight: number}}, got {raw!r}"
            )
        defaults = {key: value for key, value in options.items() if key not in WHOLE_BUILD_OPTIONS}
        sources = tuple(
            _source(item, defaults=defaults, whole=options, base=base, where=f"{origin}: sources[{i}]")
            for i, item in enumerate(raw)
        )
        for source in sources:
            check_code_reader(
                source.options.get("reader"), origin=f"{origin}: source {source.name!r}", allow_code=allow_code
            )
        _check_weights(sources, raw, origin=origin)
        if top.get("mix_by") == MixBy.ALL.value and (given := [k for k in ("total", "weight") if _given(k, top, raw)]):
            raise ConfigError(
                f"{origin}: mix_by all takes every record of every source once; {' and '.join(given)} set shares: "
                "drop them, or mix by records, tokens or trained_tokens"
            )
        names = [s.name for s in sources]
        if len(set(names)) < len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise ConfigError(f"{origin}: two sources are named {twice!r}; add `name:` to one of them")
        return cls(
            sources=sources,
            tokenizer=_tokenizer(_optional_str(top.get("tokenizer"), "tokenizer", where=origin), base),
            mix_by=_choice(MixBy, top.get("mix_by") or MixBy.RECORDS, "mix_by", where=origin),  # type: ignore[arg-type]  # _choice returns the enum it is given (typed as the base)
            total=_total(top.get("total"), where=origin),
            seed=whole.data.seed,
            dedup=_choice(Dedup, top.get("dedup") or Dedup.NONE, "dedup", where=origin),  # type: ignore[arg-type]  # as above
            near_threshold=_fraction(top.get("near_threshold", 0.8), "near_threshold", where=origin),
            decontaminate=tuple(_paths(top.get("decontaminate"), base=base, where=origin)),
            ngram=_positive_int(top.get("ngram", 13), "ngram", where=origin),
            options=MappingProxyType(options),
            origin=origin,
            declared=declared,
            digest=digest,
        )


def check_nothing_beside(recipe: Recipe, options: Mapping[str, Any]) -> None:
    """A recipe carries its data options: one given beside it (a flag, a keyword) would be ambiguous.

    Raises:
        ConfigError: naming the options that are not at their defaults.
    """
    beside = beside_options(options)
    if beside and not recipe.declared:  # a declaration's options given beside it are read into it (load_recipe)
        raise ConfigError(
            f"{recipe.origin}: a recipe carries its data options: set {', '.join(beside)} in the recipe, not beside it"
        )


def beside_options(options: Mapping[str, Any]) -> list[str]:
    """The data options `options` sets away from their defaults."""
    return sorted(k for k, v in options.items() if k in DATA_FIELDS and v != DATA_FIELDS[k].default)


def load_recipe(path: str | Path, *, allow_code: bool = False, yaml: YamlFile | None = None) -> Recipe:
    """Read a recipe file (YAML); paths in it are relative to the file (see `Recipe.from_mapping`). `yaml`: the
    file as read already (`ftdata.io.declarations.yaml_file`): it is read once, and those bytes are its digest.

    Raises:
        ConfigError: an unreadable file or anything `Recipe.from_mapping` refuses, naming the file.
    """
    path = Path(path)
    file = yaml or read_yaml_file(path)
    return Recipe.from_mapping(
        file.values, base=path.parent, origin=str(path), allow_code=allow_code, digest=file.digest
    )


def recipe_inputs(recipe: Recipe, files: Digests) -> list[Input]:
    """What a recipe build reads besides each source's stage (`Stage.inputs`): the recipe (its file's bytes
    and what they resolved to: sources, weights, options, globs' matches), every source file, every
    evaluation file `decontaminate` names.

    Raises:
        ConfigError: a glob that matches nothing, a path that does not exist.
    """
    sources = [
        (spec.name, spec.data, spec.weight, spec.epochs_max, plain(spec.build_options()), spec.files())
        for spec in recipe.sources
    ]
    settings = [
        recipe.tokenizer,
        recipe.mix_by.value,
        recipe.total,
        recipe.seed,
        recipe.dedup.value,
        recipe.near_threshold,
        recipe.decontaminate,
        recipe.ngram,
        plain(recipe.build_options()),
        sources,
    ]
    origin = Path(recipe.origin)
    on_disk = recipe.digest  # the bytes it was parsed from: the file is not read again to digest it
    resolved = text_digest(on_disk + json.dumps(settings, sort_keys=True, default=str))
    out = [Input(InputKind.RECIPE, recipe.origin, resolved, path=str(origin.absolute()) if origin.is_file() else "")]
    out += [data_input(path, files) for *_, paths in sources for path in paths]
    out += [data_input(path, files, kind=InputKind.EVAL_SET) for path in recipe.eval_files()]
    return out


def is_recipe(path: str | Path, *, yaml: YamlFile | None = None) -> bool:
    """Whether `path` is a recipe: a `.yaml`/`.yml` file whose top level has `sources:`, or another tool's
    declaration of its datasets (`ftdata.io.declarations`). `yaml`: the file as `yaml_file` read it already.

    Raises:
        ConfigError: a YAML file that cannot be read or parsed.
    """
    yaml = yaml or yaml_file(path)
    if declaration_kind(path, yaml=yaml) is not None:
        return True
    return yaml is not None and "sources" in yaml.values and split_pick(path)[1] is None  # `#NAMES` picks no recipe


def expand(pattern: str, *, what: str) -> list[str]:
    """The paths a data pattern names: a glob's matches (sorted; `**` recurses), else the path.

    Raises:
        ConfigError: a glob that matches nothing, or a path that does not exist.
    """
    if is_uri(pattern):
        return [pattern]
    if _GLOB_CHARS & set(pattern):
        found = sorted(glob.glob(pattern, recursive=True))
        if not found:
            raise ConfigError(f"{what}: {pattern!r} matches no file")
        return found
    if not os.path.exists(pattern):
        raise ConfigError(f"{what}: {pattern!r}: no such file or folder")
    return [pattern]


def _source(item: Any, *, defaults: dict[str, Any], whole: dict[str, Any], base: Path, where: str) -> RecipeSource:
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where}: a source must be a mapping like {{data: train.jsonl, weight: 0.5}}, got {item!r}")
    data = item.get("data")
    if not isinstance(data, str) or not data.strip():
        raise ConfigError(f"{where}: data must be a path, glob or folder, got data={data!r}")
    name = item.get("name")
    if name is None:
        name = _stem(data)
    elif not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: name must be a non-empty string, got name={name!r}")
    where = f"{where} ({name})"
    for key in item:
        if key in WHOLE_BUILD_OPTIONS or key in RECIPE_KEYS:
            raise ConfigError(
                f"{where}: {key} applies to the whole build; set it at the top of the recipe, not per source"
            )
    _check_keys(item, SOURCE_KEYS, where=where)
    own = resolve_paths({k: v for k, v in item.items() if k in SOURCE_OPTIONS}, base)
    merged = {**defaults, **own}
    _checked({**whole, **merged}, where=where)  # cross-checks (e.g. with max_length) as one build makes them
    weight = item.get("weight", 1.0)
    if (
        isinstance(weight, int) and not isinstance(weight, bool) and weight > sys.float_info.max
    ):  # float(weight) would overflow
        raise ConfigError(
            f"{where}: weight is larger than a float holds (an integer of {weight.bit_length():,} bits); only the "
            "ratio "
            "of the weights counts: scale them down"
        )
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (math.isfinite(weight) and weight > 0):
        raise ConfigError(f"{where}: weight must be a number > 0, got weight={weight!r}")
    epochs = item.get("epochs_max", 1)
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not (math.isfinite(epochs) and epochs >= 1):
        raise ConfigError(
            f"{where}: epochs_max must be a number >= 1 (passes over the source), got epochs_max={epochs!r}"
        )
    return RecipeSource(
        name=name, data=_path(data, base), weight=float(weight), epochs_max=epochs, options=MappingProxyType(merged)
    )


def _given(key: str, top: Mapping[str, Any], sources: list[Any]) -> bool:
    """Whether the recipe sets `key` at the top or on a source (`weight`, `total`)."""
    return key in top or any(isinstance(item, Mapping) and key in item for item in sources)


def _checked(options: dict[str, Any], *, where: str) -> BuildOptions:
    try:
        checked = BuildOptions.from_mapping(options)
        check_options(checked.data)  # what its task refuses (a task given; else the sources' data names it)
        return checked
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _choice(cls: type[_Choice], value: Any, name: str, *, where: str) -> _Choice:
    try:
        return cls.parse(value, name=name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _check_keys(mapping: Mapping[str, Any], valid: tuple[str, ...], *, where: str) -> None:
    unknown = [str(key) for key in mapping if key not in valid]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")


def _check_weights(sources: tuple[RecipeSource, ...], raw: list[Any], *, origin: str) -> None:
    given = ["weight" in item for item in raw]
    if any(given) and not all(given):
        missing = ", ".join(f"sources[{i}] ({s.name})" for i, (s, g) in enumerate(zip(sources, given)) if not g)
        raise ConfigError(f"{origin}: give every source a weight or none (none = equal shares); no weight: {missing}")
    if not math.isfinite(sum(s.weight for s in sources)):  # 1e308 twice: the shares would be inf / inf
        raise ConfigError(
            f"{origin}: the weights add up to more than a float holds "
            f"({' + '.join(f'{s.weight:g}' for s in sources)}); "
            "only their ratio counts: scale them down, e.g. 1 and 1"
        )


def _stem(data: str) -> str:
    """`lamini_docs.jsonl.gz` -> `lamini_docs`; `chats/*.jsonl` -> `chats` (a glob names its folder)."""
    path = Path(data.rstrip("/"))
    while _GLOB_CHARS & set(path.name) and path.parent != path:
        path = path.parent
    name = path.name if data_suffix(path) == path.suffix.lower() else Path(path.name).stem  # under .gz, .zst, ...
    return Path(name).stem


def _path(value: str, base: Path) -> str:
    if is_uri(value):
        return value
    path = Path(value).expanduser()
    return os.path.normpath(path if path.is_absolute() else base / path)


def _tokenizer(value: str | None, base: Path | None) -> str | None:
    """A tokenizer folder relative to the recipe file when one is there; else as given (a cached hub id)."""
    if value is None or base is None or is_uri(value) or Path(value).expanduser().is_absolute():
        return value
    candidate = Path(_path(value, base))
    return str(candidate) if candidate.exists() else value


def _paths(value: Any, *, base: Path, where: str) -> list[str]:
    items = [value] if isinstance(value, str) else [] if value is None else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
        raise ConfigError(f"{where}: decontaminate must be a list of paths or globs, got decontaminate={value!r}")
    return [_path(v, base) for v in items]


def _optional_str(value: Any, name: str, *, where: str) -> str | None:
    if value is not None and not (isinstance(value, str) and value):
        raise ConfigError(f"{where}: {name} must be a path or name, got {name}={value!r}")
    return value


def _total(value: Any, *, where: str) -> int | None:
    if value is None:
        return None
    try:  # 20_000_000 arrives as an int from YAML; "20_000_000" as a string from elsewhere
        total = int(value) if isinstance(value, str) else value
    except ValueError:
        total = value
    if isinstance(total, bool) or not isinstance(total, int) or total <= 0:
        raise ConfigError(
            f"{where}: total must be a positive integer (the budget in mix_by units), got total={value!r}"
        )
    return total


def _positive_int(value: Any, name: str, *, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: {name} must be an integer >= 1, got {name}={value!r}")
    return value


def _fraction(value: Any, name: str, *, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"{where}: {name} must be a number in (0, 1), got {name}={value!r}")
    return float(value)


__all__ = ["Dedup", "MixBy", "Recipe", "RecipeSource", "expand", "is_recipe", "load_recipe", "recipe_inputs"]
