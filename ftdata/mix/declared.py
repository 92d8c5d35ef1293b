"""Other tools' dataset declarations as recipes: `open_recipe` reads a recipe file, or a LLaMA-Factory
`dataset_info.json` (`#NAME,NAME` picks its entries) or an axolotl config as the recipe of its datasets
(`ftdata.io.declarations`): each dataset one source, every record once (`mix_by: all`), the data options given
beside it (flags, keywords) their defaults."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError
from ftdata.io.config_files import YamlFile
from ftdata.io.declarations import Declaration, declaration_kind, read_declaration, yaml_file
from ftdata.mix.recipe import Recipe, beside_options, check_nothing_beside, is_recipe, load_recipe
from ftdata.options import BuildOptions, plain

__all__ = ["open_recipe", "recipe_of"]


def recipe_of(source: Any, given: Mapping[str, Any], *, allow_code: bool = False) -> Recipe | None:
    """The recipe `source` is (a `Recipe`, a recipe file, or another tool's declaration of its datasets, opened
    with the options `given` beside it), or None when it is data: the one place that decides "recipe or data".

    Raises:
        ConfigError: what `is_recipe` or `open_recipe` refuses.
    """
    if isinstance(source, Recipe):
        return source
    if not isinstance(source, (str, Path)):
        return None
    yaml = yaml_file(source)  # the one read of a YAML file: the bytes parsed are the bytes the build's key digests
    return open_recipe(source, given, allow_code=allow_code, yaml=yaml) if is_recipe(source, yaml=yaml) else None


def open_recipe(
    path: str | Path, given: Mapping[str, Any], *, allow_code: bool = False, yaml: YamlFile | None = None
) -> Recipe:
    """The recipe `path` names, with the options `given` beside it (a recipe carries its own data options:
    one given beside it is refused; a declaration takes them as its datasets' defaults). `yaml`: the file as
    `ftdata.io.declarations.yaml_file` read it already.

    Raises:
        ConfigError: what `load_recipe` or `read_declaration` refuses; a data option beside a recipe; an option
            given beside a declaration that one of its datasets sets otherwise.
    """
    yaml = yaml or yaml_file(path)
    if declaration_kind(path, yaml=yaml) is None:
        recipe = load_recipe(path, allow_code=allow_code, yaml=yaml)
        check_nothing_beside(recipe, given)
        return recipe
    return _declared(read_declaration(path, yaml=yaml), given)


def _declared(declaration: Declaration, given: Mapping[str, Any]) -> Recipe:
    """The recipe of a declaration's datasets, with the data options given beside it as their defaults."""
    mapping = declaration.recipe()
    for key in beside_options(given):
        value = _normal(key, given[key])
        sets = [mapping] if key in mapping else [s for s in mapping["sources"] if key in s]
        for item in sets:
            if _normal(key, item[key]) != value:
                whose = f"dataset {item['name']!r}" if item is not mapping else "the declaration"
                raise ConfigError(
                    f"{declaration.origin}: {whose} sets {key}={item[key]!r} ({declaration.tool}'s); "
                    f"drop {key}={given[key]!r} given beside it"
                )
        mapping[key] = given[key]
    return Recipe.from_mapping(
        mapping, base=Path.cwd(), origin=declaration.origin, declared=declaration.tool, digest=declaration.digest
    )


def _normal(key: str, value: Any) -> Any:
    """`value` of option `key` as the options hold it (`alpaca` -> `instruction`, enums as values)."""
    try:
        return plain(BuildOptions.from_mapping({key: value}))[key]
    except ConfigError:  # an option checked only beside another: compared as given
        return value
