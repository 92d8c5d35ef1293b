"""Recipe files: keys, defaults, per-source options checked as a single build checks them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import DATASETS

from ftdata.errors import ConfigError
from ftdata.mix.recipe import Dedup, MixBy, Recipe, is_recipe, load_recipe
from ftdata.options import BuildOptions

needs_data = pytest.mark.skipif(not DATASETS.is_dir(), reason=f"shared datasets not found at {DATASETS}")

EXAMPLE = """\
tokenizer: ../tok
max_length: 4096
packing: true
mix_by: trained_tokens
total: 20_000_000
truncation: drop
sources:
  - data: chats/*.jsonl
    weight: 0.5
  - data: {data}/sharegpt/llamafactory_glaive_toolcall_en_demo.json
    weight: 0.3
    chat_template_kwargs: {{enable_thinking: false}}
  - data: {data}/lamini/lamini_docs_nested.jsonl
    template: question-answer
    columns: {{output: answer}}
    system_prompt: "You answer questions about Lamini."
    weight: 0.2
    epochs_max: 3
    truncation: keep_response
dedup: exact
decontaminate: [evals/*.jsonl]
"""


def _write(folder: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _recipe(**top: object) -> dict[str, object]:
    return {"sources": [{"data": "a.jsonl"}, {"data": "b.jsonl"}], **top}


@needs_data
def test_the_issue_example_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "tok").mkdir()
    folder = tmp_path / "recipes"
    folder.mkdir()
    recipe = load_recipe(_write(folder, EXAMPLE.format(data=os.path.relpath(DATASETS, folder))))
    assert [s.name for s in recipe.sources] == ["chats", "llamafactory_glaive_toolcall_en_demo", "lamini_docs_nested"]
    assert recipe.sources[0].data == str(folder / "chats" / "*.jsonl")
    assert recipe.sources[2].data == str(DATASETS / "lamini" / "lamini_docs_nested.jsonl")
    assert recipe.tokenizer == str(tmp_path / "tok")
    assert (recipe.mix_by, recipe.total, recipe.dedup, recipe.ngram, recipe.near_threshold) == (
        MixBy.TRAINED_TOKENS, 20_000_000, Dedup.EXACT, 13, 0.8
    )
    assert recipe.decontaminate == (str(folder / "evals" / "*.jsonl"),)
    assert recipe.shares == pytest.approx((0.5, 0.3, 0.2))
    assert [s.epochs_max for s in recipe.sources] == [1, 1, 3]
    # recipe-level options are every source's defaults; whole-build ones stay at the top
    assert dict(recipe.sources[0].options) == {"truncation": "drop"}
    assert dict(recipe.sources[1].options) == {"truncation": "drop", "chat_template_kwargs": {"enable_thinking": False}}
    lamini = recipe.sources[2].build_options().data
    assert (lamini.template, lamini.columns, lamini.truncation.value) == ("question-answer", {"output": "answer"}, "keep_response")
    assert lamini.system_prompt == "You answer questions about Lamini."
    whole = recipe.build_options().data
    assert (whole.max_length, whole.packing, whole.seed) == (4096, True, 42)
    assert recipe.sources[2].files() == [str(DATASETS / "lamini" / "lamini_docs_nested.jsonl")]
    with pytest.raises(ConfigError, match=r"source 'chats': '.*chats/\*\.jsonl' matches no file"):
        recipe.sources[0].files()


def test_a_source_takes_exactly_what_a_single_build_takes() -> None:
    single = {"format": "sharegpt", "roles": {"narrator": "assistant"}, "mask": "last_assistant", "filter": "not input",
              "limit": 10, "system_mode": "override", "system_prompt": "Be brief.", "on_error": "skip"}  # fmt: skip
    recipe = Recipe.from_mapping({"sources": [{"data": "a.jsonl", **single}]}, base=Path("/data"))
    assert vars(recipe.sources[0].build_options()) == vars(BuildOptions.from_mapping(single))
    assert recipe.sources[0].data == "/data/a.jsonl"


def test_weights_default_to_equal_shares_and_names_to_the_stem() -> None:
    recipe = Recipe.from_mapping({"sources": [
        {"data": "x/train.jsonl.gz"}, {"data": "chats/**/*.jsonl"}, {"data": "folder/"}, {"data": "y.csv", "name": "mine"},
    ]}, base=Path("/d"))  # fmt: skip
    assert [s.name for s in recipe.sources] == ["train", "chats", "folder", "mine"]
    assert recipe.shares == (0.25, 0.25, 0.25, 0.25)
    assert (recipe.mix_by, recipe.total, recipe.dedup, recipe.decontaminate) == (MixBy.RECORDS, None, Dedup.NONE, ())


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"sources": [{"data": "a.jsonl"}, {"data": "g.json", "max_length": 512}]},
         r"^r\.yaml: sources\[1\] \(g\): max_length applies to the whole build; set it at the top"),
        ({"sources": [{"data": "a.jsonl", "packing": True}]}, r"sources\[0\] \(a\): packing applies to the whole build"),
        ({"sources": [{"data": "a.jsonl", "seed": 1}]}, r"sources\[0\] \(a\): seed applies to the whole build"),
        ({"sources": [{"data": "a.jsonl", "total": 5}]}, r"sources\[0\] \(a\): total applies to the whole build"),
        ({"sources": [{"data": "a.jsonl", "colums": {}}]},
         r"sources\[0\] \(a\): unknown key\(s\) colums; valid keys: data, name, weight, epochs_max, template, chat_template, format, columns,"),
        (_recipe(max_lenght=3), r"^r\.yaml: unknown key\(s\) max_lenght; valid keys: sources, tokenizer, mix_by, total, "),
        ({"sources": [{"data": "a.jsonl", "weight": 0}]}, r"sources\[0\] \(a\): weight must be a number > 0, got weight=0"),
        ({"sources": [{"data": "a.jsonl", "weight": 1e308}, {"data": "b.jsonl", "weight": 1e308}]},
         r"^r\.yaml: the weights add up to more than a float holds \(1e\+308 \+ 1e\+308\); only their ratio counts: scale them down"),
        ({"sources": [{"data": "a.jsonl", "weight": 10**400}]},
         r"^r\.yaml: sources\[0\] \(a\): weight is larger than a float holds \(an integer of 1,329 bits\); only the ratio"),
        ({"sources": [{"data": "a.jsonl", "weight": 1}, {"data": "b.jsonl"}]},
         r"give every source a weight or none \(none = equal shares\); no weight: sources\[1\] \(b\)"),
        ({"sources": [{"data": "a.jsonl", "epochs_max": 0.5}]}, r"epochs_max must be a number >= 1"),
        ({"sources": [{"data": "a.jsonl"}, {"data": "x/a.json"}]}, r"two sources are named 'a'"),
        ({"sources": [{"data": "a.jsonl", "mask": "bogus"}]},
         r"sources\[0\] \(a\): mask must be one of all_assistant, last_assistant, train_on_prompt; got mask='bogus'"),
        ({"sources": [{"data": "a.jsonl", "template": "alpaca", "chat_template_kwargs": {"tools": []}}]},
         r"sources\[0\] \(a\): chat_template_kwargs cannot set tools"),
        ({"sources": [{"data": "a.jsonl", "reader": "evil:run"}]}, r"source 'a' names Python code \('evil:run'\)"),
        ({"sources": []}, r"sources must be a non-empty list"),
        ({"sources": [{"weight": 1}]}, r"sources\[0\]: data must be a path, glob or folder, got data=None"),
        (_recipe(total=1.5), r"total must be a positive integer \(the budget in mix_by units\), got total=1.5"),
        (_recipe(total=0), r"total must be a positive integer"),
        (_recipe(mix_by="bytes"), r"^r\.yaml: mix_by must be one of records, tokens, trained_tokens, all; got mix_by='bytes'"),
        (_recipe(dedup="fuzzy"), r"dedup must be one of none, exact, near"),
        (_recipe(near_threshold=1), r"near_threshold must be a number in \(0, 1\)"),
        (_recipe(ngram=0), r"ngram must be an integer >= 1, got ngram=0"),
        (_recipe(decontaminate=[3]), r"decontaminate must be a list of paths or globs"),
        (_recipe(max_length=-3), r"^r\.yaml: max_length must be a positive integer"),
        ({"packing": True, "pad_to_multiple_of": 8, "sources": [{"data": "a.jsonl", "truncation": "nah"}]},
         r"sources\[0\] \(a\): truncation must be one of"),
    ],
)  # fmt: skip
def test_mistakes_are_one_line_naming_the_file_source_and_key(mapping: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Recipe.from_mapping(mapping, origin="r.yaml")
    assert "\n" not in str(info.value)


def test_total_takes_underscores_and_code_readers_need_allow_code(tmp_path: Path) -> None:
    assert Recipe.from_mapping(_recipe(total="20_000_000")).total == 20_000_000
    assert load_recipe(_write(tmp_path, "total: 1_000\nsources: [{data: a.jsonl}]\n")).total == 1000
    code = {"sources": [{"data": "a.jsonl", "reader": "mymod:read"}]}
    assert Recipe.from_mapping(code, allow_code=True).sources[0].options["reader"] == "mymod:read"


def test_is_recipe(tmp_path: Path) -> None:
    assert is_recipe(_write(tmp_path, "sources:\n  - data: a.jsonl\n"))
    assert is_recipe(_write(tmp_path, "sources: []\n", "r.yml"))
    assert not is_recipe(_write(tmp_path, "data: a.jsonl\nmax_length: 512\n", "build.yaml"))
    assert not is_recipe(_write(tmp_path, '{"sources": 1}\n', "rows.jsonl"))
    assert not is_recipe(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="bad.yaml"):
        is_recipe(_write(tmp_path, "sources: [\n", "bad.yaml"))


@needs_data
def test_eval_files_expand_globs_in_order(tmp_path: Path) -> None:
    recipe = Recipe.from_mapping(
        {"sources": [{"data": "a.jsonl"}], "decontaminate": ["lamini/lamini_docs*.jsonl", "dolly"]}, base=DATASETS
    )
    assert recipe.eval_files() == [
        str(DATASETS / "lamini" / name)
        for name in ("lamini_docs.jsonl", "lamini_docs_nested.jsonl", "lamini_docs_prompt_formatted_manfredss.jsonl")
    ] + [str(DATASETS / "dolly")]
    missing = Recipe.from_mapping({"sources": [{"data": "a.jsonl"}], "decontaminate": "nope.jsonl"}, base=tmp_path)
    with pytest.raises(ConfigError, match=r"decontaminate: '.*nope\.jsonl': no such file or folder"):
        missing.eval_files()
