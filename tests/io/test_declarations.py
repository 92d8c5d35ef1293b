"""Other tools' declarations as sources: LLaMA-Factory's own dataset_info.json (tests/io/declarations/, with its
demo files from ../shared/datasets beside it) and axolotl `datasets:` entries build the rows ftdata's own
options build on the same files; what ftdata reads differently is refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from support import DATASETS, TOKENIZERS, tokenizer

import ftdata
from ftdata.errors import ConfigError
from ftdata.io.declarations import declaration_kind, read_declaration
from ftdata.mix.declared import open_recipe

HERE = Path(__file__).resolve().parent
INFO = HERE / "declarations" / "dataset_info.json"
DEMOS = {  # LLaMA-Factory's file_name -> the copy in ../shared/datasets
    "alpaca_en_demo.json": "alpaca/llamafactory_alpaca_en_demo.json",
    "glaive_toolcall_en_demo.json": "sharegpt/llamafactory_glaive_toolcall_en_demo.json",
    "dpo_en_demo.json": "preference/llamafactory_dpo_en_demo.json",
    "kto_en_demo.json": "preference/llamafactory_kto_en_demo.json",
}

pytestmark = pytest.mark.skipif(not DATASETS.is_dir(), reason=f"shared datasets not found at {DATASETS}")


def llamafactory_data(root: Path) -> Path:
    """A LLaMA-Factory `data/` folder: its real dataset_info.json and the demo files it names (symlinks)."""
    data = root / "data"
    data.mkdir()
    shutil.copy(INFO, data / "dataset_info.json")
    for name, shared in DEMOS.items():
        (data / name).symlink_to(DATASETS / shared)
    return data


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return llamafactory_data(tmp_path)


def rows(result: Any, *columns: str) -> list[tuple[Any, ...]]:
    dataset = result.dataset
    return list(zip(*(dataset[c] for c in columns)))


def test_the_alpaca_entry_builds_what_format_alpaca_builds_on_its_file(data: Path) -> None:
    declared = ftdata.build(f"{data}#alpaca_en_demo", limit=200)
    plain = ftdata.build(data / "alpaca_en_demo.json", format="alpaca", input_join="\n", limit=200)
    assert len(declared.dataset) == len(plain.dataset) > 190
    assert rows(declared, "input_ids", "labels") == rows(plain, "input_ids", "labels")
    # LLaMA-Factory joins prompt and query with one newline: only the records with an input differ from ftdata's
    # own default (a blank line), and only in their prompt
    default = ftdata.build(data / "alpaca_en_demo.json", format="alpaca", limit=200)
    records = json.loads((data / "alpaca_en_demo.json").read_text())
    index = [int(where.rsplit("[", 1)[1].rstrip("]")) for where in declared.dataset["record"]]  # file.json[i]
    differ = {i for i, (a, b) in enumerate(zip(rows(declared, "input_ids"), rows(default, "input_ids"))) if a != b}
    assert differ and differ == {i for i, r in enumerate(index) if records[r]["input"]}
    assert rows(declared, "labels") != rows(default, "labels")  # the prompt is longer or shorter: labels shift
    first = min(differ)
    text = tokenizer(None).decode(declared.dataset["input_ids"][first])
    record = records[index[first]]
    assert f"{record['instruction']}\n{record['input']}<|im_end|>" in text


def test_the_input_joins_the_instructions_own_turn_after_the_history() -> None:
    from ftdata.errors import Location
    from ftdata.records.formats import to_examples

    row = {"instruction": "And this?", "input": "x = 2", "output": "2", "history": [["What is x = 1?", "1"]]}
    (example,) = to_examples(row, Location("a.json", index=0))
    joined = example.with_input_joined("\n")
    assert [m.content for m in joined.messages] == ["What is x = 1?", "1", "And this?\nx = 2", "2"]
    assert joined.context == "" and example.with_input_joined("\n").messages != example.messages
    no_input = {"instruction": "", "input": "x = 2", "output": "2"}
    assert to_examples(no_input, Location("a.json", index=1))[0].with_input_joined("\n").messages[0].content == "x = 2"


@pytest.mark.skipif(not (TOKENIZERS / "qwen2.5-instruct").is_dir(), reason="qwen2.5-instruct tokenizer not found")
def test_the_sharegpt_entry_with_tools_trains_its_function_calls(data: Path) -> None:
    qwen = tokenizer("qwen2.5-instruct")
    declared = ftdata.build(f"{data}/dataset_info.json#glaive_toolcall_en_demo", tokenizer=qwen, limit=40)
    plain = ftdata.build(
        data / "glaive_toolcall_en_demo.json",
        tokenizer=qwen,
        format="sharegpt",
        columns={"messages": "conversations", "tools": "tools"},
        limit=40,
    )
    assert rows(declared, "input_ids", "labels") == rows(plain, "input_ids", "labels")
    trained = [qwen.decode([t for t in labels if t != -100]) for labels in declared.dataset["labels"]]
    calls = [t for t in trained if "<tool_call>" in t]
    assert len(calls) >= 10 and all('"name": ' in t for t in calls)  # the function_call turns, trained as calls
    rendered = qwen.decode(declared.dataset["input_ids"][0])
    assert "<tools>" in rendered and "<tool_response>" in rendered  # schemas and observations, in the prompt


def test_a_ranking_entry_builds_pairs_and_a_kto_tag_entry_kto_rows(data: Path) -> None:
    pairs = ftdata.build(f"{data}#dpo_en_demo", limit=30, max_length=1024)
    assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(pairs.dataset.column_names)
    plain = ftdata.build(data / "dpo_en_demo.json", task="preference", limit=30, max_length=1024)
    assert rows(pairs, "chosen_ids", "rejected_ids") == rows(plain, "chosen_ids", "rejected_ids")

    kto = ftdata.build(f"{data}#kto_en_demo", limit=40, max_length=1024)
    assert {"prompt_ids", "completion_ids", "label"} <= set(kto.dataset.column_names)
    labels = [r["label"] for r in json.loads((data / "kto_en_demo.json").read_text())[:40]]
    assert kto.report.n_rejected == 0 and kto.dataset["label"] == labels and set(labels) == {True, False}


def test_entries_picked_together_are_their_records_one_after_the_other(data: Path) -> None:
    both = ftdata.build(f"{data}#alpaca_en_demo,glaive_toolcall_en_demo", limit=20)
    alpaca = ftdata.build(data / "alpaca_en_demo.json", format="alpaca", input_join="\n", limit=20)
    glaive = ftdata.build(
        data / "glaive_toolcall_en_demo.json",
        format="sharegpt",
        columns={"messages": "conversations", "tools": "tools"},
        limit=20,
    )
    assert len(alpaca.dataset) == 20 and len(glaive.dataset) > 0  # the bundled template writes no tool calls
    assert rows(both, "input_ids", "labels") == rows(alpaca, "input_ids", "labels") + rows(
        glaive, "input_ids", "labels"
    )


def test_entries_of_different_tasks_cannot_be_built_together(data: Path) -> None:
    with pytest.raises(ConfigError, match=r"make different rows: alpaca_en_demo \(sft\), dpo_en_demo \(preference\)"):
        read_declaration(f"{data}/dataset_info.json#alpaca_en_demo,dpo_en_demo")


def test_a_hub_entry_is_one_line_saying_so(data: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        ftdata.build(f"{data}#alpaca_en")
    assert str(raised.value) == (
        f"{data / 'dataset_info.json'}: dataset 'alpaca_en' is a hub entry (hf_hub_url: 'llamafactory/alpaca_en'); "
        "ftdata loads nothing from the hub: download it and declare the local copy with file_name"
    )


def test_a_typo_or_no_pick_lists_the_names(data: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"no dataset named 'alpaca_en_dem'; the names are identity, alpaca_en_demo, "
    ):
        read_declaration(f"{data}#alpaca_en_dem")
    with pytest.raises(ConfigError, match=r"declares 104 datasets; pick them by name, e.g. .*#identity: identity, "):
        read_declaration(data)
    with pytest.raises(ConfigError, match=r"dataset 'identity': file_name 'identity.json' is not beside the json"):
        read_declaration(f"{data}#identity")


def test_an_option_beside_the_declaration_is_its_default_unless_an_entry_sets_it(data: Path) -> None:
    recipe = open_recipe(f"{data}#alpaca_en_demo", {"max_length": 512, "mask": "last_assistant"})
    assert recipe.source_options(recipe.sources[0]).data.max_length == 512
    assert recipe.declared == "LLaMA-Factory" and recipe.mix_by.value == "all"
    with pytest.raises(ConfigError, match=r"dataset 'alpaca_en_demo' sets format='alpaca' \(LLaMA-Factory's\); drop"):
        open_recipe(f"{data}#alpaca_en_demo", {"format": "messages"})
    with pytest.raises(ConfigError, match=r"the declaration sets task='preference' .*; drop task='sft'"):
        open_recipe(f"{data}#dpo_en_demo", {"task": "sft"})


def write_info(folder: Path, entry: dict[str, Any], rows: list[Any]) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "chats.json").write_text(json.dumps(rows))
    (folder / "dataset_info.json").write_text(json.dumps({"chats": {"file_name": "chats.json", **entry}}))
    return folder


CHAT = [{"speaker": "customer", "text": "Is the shop open?"}, {"speaker": "agent", "text": "Yes, until six."}]


def test_tags_name_the_message_keys_and_the_roles(tmp_path: Path) -> None:
    entry = {
        "formatting": "sharegpt",
        "columns": {"messages": "dialog", "system": "sys"},
        "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "customer", "assistant_tag": "agent"},
    }
    folder = write_info(tmp_path / "data", entry, [{"dialog": CHAT, "sys": "Be brief."}])
    source = read_declaration(folder).sources[0]
    assert source.options == {
        "format": "sharegpt",
        "columns": {"messages": "dialog", "system": "sys", "role": "speaker", "content": "text"},
        "roles": {"customer": "user", "agent": "assistant"},
    }
    declared = ftdata.build(folder)
    plain = [
        {
            "messages": [
                {"role": "user", "content": "Is the shop open?"},
                {"role": "assistant", "content": "Yes, until six."},
            ],
            "system": "Be brief.",
        }
    ]
    assert rows(declared, "input_ids", "labels") == rows(ftdata.build(plain), "input_ids", "labels")


def test_tags_hold_for_both_sides_of_a_sharegpt_pair(tmp_path: Path) -> None:
    entry = {
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {"messages": "dialog", "chosen": "good", "rejected": "bad"},
        "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "customer", "assistant_tag": "agent"},
    }
    pair = {"dialog": CHAT[:1], "good": CHAT[1], "bad": {"speaker": "agent", "text": "No idea."}}
    declared = ftdata.build(write_info(tmp_path / "data", entry, [pair]))
    plain = {
        "prompt": [{"role": "user", "content": "Is the shop open?"}],
        "chosen": [{"role": "assistant", "content": "Yes, until six."}],
        "rejected": [{"role": "assistant", "content": "No idea."}],
    }
    columns = ("prompt_ids", "chosen_ids", "rejected_ids")
    assert rows(declared, *columns) == rows(ftdata.build([plain], task="preference"), *columns)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"num_samples": 10}, r"num_samples=10: LLaMA-Factory draws that many records at random; .* limit=N"),
        ({"split": "test"}, r"split='test': a local file has one split \(train\)"),
        ({"columns": {"videos": "videos"}}, r"columns.videos='videos': ftdata reads images and audio, not video"),
        ({"columns": {"images": "pics"}}, r"columns.images='pics': ftdata reads images from a column named images"),
        ({"columns": {"messages": "dialog"}}, r"columns.messages='dialog': applies to sharegpt formatting, not alpaca"),
        ({"formatting": "sharegpt", "tags": {"function_tag": "call"}}, r"tags.function_tag='call': ftdata reads tool"),
        ({"ranking": True, "columns": {"kto_tag": "label"}}, r"ranking and columns.kto_tag both set"),
        ({"formating": "sharegpt"}, r"unknown key 'formating'; LLaMA-Factory's keys are file_name, formatting"),
    ],
)
def test_what_ftdata_reads_otherwise_is_refused_in_one_line(
    tmp_path: Path, entry: dict[str, Any], message: str
) -> None:
    folder = write_info(tmp_path / "data", entry, [{"instruction": "a", "output": "b"}])
    with pytest.raises(ConfigError, match=rf"dataset 'chats': {message}") as raised:
        read_declaration(folder)
    assert "\n" not in str(raised.value)


def test_what_is_a_declaration(data: Path, tmp_path: Path) -> None:
    assert declaration_kind(data) == declaration_kind(f"{data}/dataset_info.json#kto_en_demo") == "LLaMA-Factory"
    assert declaration_kind(data / "alpaca_en_demo.json") is None
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"sources:\n  - data: {data / 'alpaca_en_demo.json'}\n")
    assert declaration_kind(recipe) is None


# --- axolotl -------------------------------------------------------------------------------------------------

FASTCHAT = DATASETS / "sharegpt" / "fastchat_dummy_conversation.json"
AXOLOTL = f"""\
base_model: NousResearch/Meta-Llama-3-8B   # ignored where --tokenizer gives one
sequence_len: 1024
datasets:
  - path: {FASTCHAT}
    type: chat_template
    field_messages: conversations
    message_property_mappings:
      role: from
      content: value
    roles:
      user: [human]
      assistant: [gpt]
    roles_to_train: [assistant]
    train_on_eos: turn
"""


def test_an_axolotl_chat_template_entry_builds_what_ftdatas_own_options_build(tmp_path: Path) -> None:
    config = tmp_path / "axolotl.yml"
    config.write_text(AXOLOTL)
    assert declaration_kind(config) == "axolotl"
    (source,) = read_declaration(config).sources
    assert source.options == {
        "columns": {"messages": "conversations", "role": "from", "content": "value"},
        "roles": {"human": "user", "gpt": "assistant"},
    }
    smol = tokenizer(None)
    declared = ftdata.build(config, tokenizer=smol, limit=60)
    own = ftdata.build(
        FASTCHAT,
        tokenizer=smol,
        columns={"messages": "conversations", "role": "from", "content": "value"},
        roles={"human": "user", "gpt": "assistant"},
        max_length=1024,
        limit=60,
    )
    assert len(declared.dataset) == 60
    assert rows(declared, "input_ids", "labels") == rows(own, "input_ids", "labels")
    assert rows(own, "input_ids", "labels") == rows(
        ftdata.build(FASTCHAT, tokenizer=smol, limit=60), "input_ids", "labels"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            "    roles_to_train: [user, assistant]",
            r"roles_to_train=\['user', 'assistant'\]: ftdata trains what the model",
        ),
        ("    train_on_eos: all", r"train_on_eos='all': ftdata trains each trained turn's end-of-turn token"),
        ("    message_property_mappings: {role: from, content: value, weight: w}", r"message_property_mappings.weight"),
        ("    chat_template: chatml", r"chat_template='chatml': ftdata's chat_template takes a .jinja file or"),
        ("    type: sharegpt", r"type='sharegpt': ftdata reads chat_template \(and alpaca\) datasets"),
        ("    shards: 4", r"shards=4: ftdata reads the whole file; the nearest is limit=N"),
    ],
)
def test_axolotl_keys_ftdata_reads_otherwise_are_refused_in_one_line(tmp_path: Path, change: str, message: str) -> None:
    key = change.split(":")[0]
    lines = [line for line in AXOLOTL.splitlines() if not line.startswith(key + ":")]
    if key.strip() == "message_property_mappings":
        lines = [line for line in lines if not line.startswith(("      role:", "      content:"))]
    config = tmp_path / "axolotl.yml"
    config.write_text("\n".join([*lines, change]) + "\n")
    with pytest.raises(ConfigError, match=rf"axolotl.yml: datasets\[0\]: {message}"):
        read_declaration(config)


def test_an_axolotl_hub_path_is_refused_offline(tmp_path: Path) -> None:
    config = tmp_path / "axolotl.yml"
    config.write_text("datasets:\n  - path: mlabonne/FineTome-100k\n    type: chat_template\n")
    with pytest.raises(
        ConfigError,
        match=r"datasets\[0\]: path 'mlabonne/FineTome-100k' is not a local file or folder \(a hub dataset\?\); "
        "ftdata loads nothing from the hub",
    ):
        ftdata.build(config)


def test_mix_by_all_takes_no_shares(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"mix_by: all\nsources:\n  - data: {FASTCHAT}\n    weight: 2\n")
    with pytest.raises(ConfigError, match=r"mix_by all takes every record of every source once; weight set shares"):
        ftdata.build(recipe)


# --- docs/bring-your-data.md: "Coming from LLaMA-Factory" and "Coming from axolotl" are real output ------------

PAGE = Path(__file__).resolve().parents[2] / "docs" / "bring-your-data.md"
QWEN = TOKENIZERS / "qwen2.5-instruct"


def page_sections() -> str:
    text = PAGE.read_text(encoding="utf-8")
    start = text.index("## Coming from LLaMA-Factory")
    return text[start : text.index("\n## ", text.index("## Coming from axolotl"))]


@pytest.mark.skipif(not QWEN.is_dir(), reason="qwen2.5-instruct tokenizer not found")
def test_the_pages_llamafactory_and_axolotl_examples_are_real_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    from test_docs import EXAMPLE, _normalize_build, _run

    llamafactory_data(tmp_path)  # the page's folder: data/, models/, chats/, axolotl.yml (its YAML block)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "qwen2.5-instruct").symlink_to(QWEN)
    (tmp_path / "chats").mkdir()
    (tmp_path / "chats" / "fastchat_dummy_conversation.json").symlink_to(FASTCHAT)
    text = page_sections()
    (config,) = re.findall(r"```yaml\n(.*?)```", text, re.S)
    (tmp_path / "axolotl.yml").write_text(config)
    monkeypatch.chdir(tmp_path)
    examples = [(m.group(2), m.group(3)) for m in EXAMPLE.finditer(text)]
    assert len(examples) == 3
    for command, shown in examples:
        got = _run(f"{command} --cache-dir {tmp_path / 'cache'}")
        assert _normalize_build(got, "out/", "out/") == _normalize_build(shown, "out/", "out/"), command
