"""`ftdata export OUT --to STACK`: each stack's files hold exactly the build's token ids and trained positions, in
that stack's columns and layout (tinker's Datum shifted by one); text stacks get the kept records' messages.

The build is real data: LLaMA-Factory's glaive tool-call demo (multi-turn, tool calls, tool results) on the
Qwen2.5 tokenizer. Each stack's own loader reads these files in tests/build/test_exports_stacks.py (slow).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
import pytest
from support import DATASETS, TOKENIZERS

import ftdata
from ftdata.build.exports import STACKS, export
from ftdata.errors import ConfigError
from ftdata.types import IGNORE_INDEX

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")

GLAIVE = DATASETS / "sharegpt" / "llamafactory_glaive_toolcall_en_demo.json"
QWEN = TOKENIZERS / "qwen2.5-instruct"


def build(out: Path, **options: Any) -> ftdata.BuildResult:
    return ftdata.build(str(GLAIVE), str(out), tokenizer=str(QWEN), limit=24, **options)


@pytest.fixture(scope="module")
def glaive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, datasets.Dataset]:
    out = tmp_path_factory.mktemp("glaive") / "out"
    build(out, test_size=4)
    export(out, list(STACKS))
    return out, ftdata.load(out).dataset


def trained(labels: list[int]) -> list[int]:
    return [int(label != IGNORE_INDEX) for label in labels]


def test_skyrl_holds_input_ids_and_a_full_sequence_loss_mask(glaive: tuple[Path, Any]) -> None:
    out, built = glaive
    for split in ("train", "test"):
        table = pq.read_table(out / "export-skyrl" / f"{split}.parquet")
        assert table.column_names == ["input_ids", "loss_mask"]
        assert table["input_ids"].to_pylist() == built[split]["input_ids"]
        assert table["loss_mask"].to_pylist() == [trained(labels) for labels in built[split]["labels"]]


def test_axolotl_and_llamafactory_hold_the_builds_ids_attention_and_labels(glaive: tuple[Path, Any]) -> None:
    out, built = glaive
    table = pq.read_table(out / "export-axolotl" / "train.parquet")
    assert table.column_names == ["input_ids", "attention_mask", "labels"]
    assert table["labels"].to_pylist() == built["train"]["labels"]
    assert table["attention_mask"].to_pylist() == [[1] * len(ids) for ids in built["train"]["input_ids"]]
    lf = datasets.load_from_disk(str(out / "export-llamafactory" / "tokenized"))
    assert sorted(lf) == ["train", "validation"]  # LLaMA-Factory's name for the held-out split
    for ours, theirs in (("train", "train"), ("test", "validation")):
        assert lf[theirs].column_names == ["input_ids", "attention_mask", "labels"]
        assert lf[theirs]["input_ids"] == built[ours]["input_ids"] and lf[theirs]["labels"] == built[ours]["labels"]


def test_unsloth_gets_the_builds_own_rows_without_the_record_column(glaive: tuple[Path, Any]) -> None:
    out, built = glaive
    rows = datasets.load_from_disk(str(out / "export-unsloth" / "dataset"))
    assert rows["train"].column_names == ["input_ids", "attention_mask", "labels"]
    assert rows["train"]["labels"] == built["train"]["labels"]


def test_tinker_datums_predict_the_next_token_with_the_weight_of_its_label(glaive: tuple[Path, Any]) -> None:
    out, built = glaive
    lines = (out / "export-tinker" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(built["train"])
    for line, ids, labels in zip(lines, built["train"]["input_ids"], built["train"]["labels"]):
        datum = json.loads(line)
        assert datum["model_input"] == {"chunks": [{"type": "encoded_text", "tokens": ids[:-1]}]}
        assert datum["loss_fn_inputs"]["target_tokens"] == ids[1:]
        # weight i scores target_tokens[i] = ids[i+1]
        assert datum["loss_fn_inputs"]["weights"] == [float(t) for t in trained(labels)[1:]]


def test_verl_gets_each_kept_record_once_with_per_message_loss_masks(glaive: tuple[Path, Any]) -> None:
    out, built = glaive
    table = pq.read_table(out / "export-verl" / "train.parquet").to_pylist()
    assert [row["record"] for row in table] == list(dict.fromkeys(built["train"]["record"]))
    first = json.loads(table[0]["conversation"])
    source = json.loads(GLAIVE.read_text(encoding="utf-8"))
    index = int(table[0]["record"].rsplit("[", 1)[1].rstrip("]"))
    assert first["tools"] == [{"type": "function", "function": t} for t in json.loads(source[index]["tools"])]
    roles = [m["role"] for m in first["messages"]]
    assert [m["loss_mask"] for m in first["messages"]] == [int(r == "assistant") for r in roles]
    assert len(roles) == len(source[index]["conversations"])  # function_call turns are assistant turns
    assert "enable_thinking" not in pq.read_schema(out / "export-verl" / "train.parquet").names  # no record sets it
    prime = pq.read_table(out / "export-prime-rl" / "train.parquet").to_pylist()[0]
    assert [m["role"] for m in prime["prompt"]] == roles[: roles.index("assistant")]
    assert len(prime["prompt"]) + len(prime["completion"]) == len(roles)


def test_export_json_names_the_build_and_its_counts(glaive: tuple[Path, Any]) -> None:
    out, built = glaive
    build_json = json.loads((out / "build.json").read_text(encoding="utf-8"))
    for stack in STACKS:
        record = json.loads((out / f"export-{stack}" / "export.json").read_text(encoding="utf-8"))
        assert record["fingerprint"] == build_json["fingerprint"] and record["stack"] == stack
        assert record["counts"]["train"]["trained_tokens"] == sum(map(sum, map(trained, built["train"]["labels"])))
        assert record["counts"]["train"]["rows"] == len(built["train"])
        assert any(str(out / f"export-{stack}") in line for line in record["config"])  # the lines that consume it


def test_packed_rows_are_exported_one_document_a_row(tmp_path: Path) -> None:
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    build(plain)
    build(packed, packing=True, max_length=4096)
    (skyrl,) = export(packed, "skyrl")
    assert skyrl.manifest["layout"] == {"built": "packed", "written": "plain (one document a row)"}
    docs = pq.read_table(packed / "export-skyrl" / "train.parquet").to_pylist()
    rows = ftdata.load(plain).dataset
    # the same documents (packing reorders them); a packed document's first label is never trained in either
    assert sorted(d["input_ids"] for d in docs) == sorted(rows["input_ids"])
    assert sum(map(sum, (d["loss_mask"] for d in docs))) == sum(map(sum, map(trained, rows["labels"])))
    (unsloth,) = export(packed, "unsloth")  # TRL's padding-free collator reads packed rows as they are
    kept = datasets.load_from_disk(str(packed / "export-unsloth" / "dataset"))["train"]
    assert unsloth.manifest["layout"] == {"built": "packed", "written": "packed"}
    assert unsloth.manifest["counts"]["train"]["rows"] == len(kept) == len(ftdata.load(packed).dataset) < len(docs)
    assert "seq_lengths" in kept.column_names and "position_ids" in kept.column_names
    with pytest.raises(ConfigError, match=r"packed rows keep no record locations; verl reads records: build without"):
        export(packed, "verl")


def test_a_rebuild_removes_the_exports_of_the_build_before(tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(out)
    export(out, "skyrl,axolotl")
    assert (out / "export-skyrl").is_dir() and (out / "export-axolotl" / "export.json").is_file()
    build(out, max_length=2048)
    assert not (out / "export-skyrl").exists() and not (out / "export-axolotl").exists()


def test_a_prompt_set_goes_to_verl_rl_with_its_reward_column_as_ground_truth(tmp_path: Path) -> None:
    data = Path(__file__).resolve().parents[2] / "examples" / "data" / "gsm8k_test_20.jsonl"
    ftdata.build(str(data), str(tmp_path / "gsm"), task="prompts")
    (verl,) = export(tmp_path / "gsm", "verl")
    rows = pq.read_table(tmp_path / "gsm" / "export-verl" / "train.parquet").to_pylist()
    source = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in rows] == [[{"role": "user", "content": s["question"]}] for s in source]
    assert [r["reward_model"] for r in rows] == [{"style": "rule", "ground_truth": s["answer"]} for s in source]
    assert rows[3]["data_source"] == "gsm8k_test_20.jsonl" and rows[3]["extra_info"]["index"] == 3
    assert verl.manifest["counts"] == {"train": {"rows": 20}} and "'answer' column" in verl.manifest["notes"][0]
    with pytest.raises(ConfigError, match=r"a prompts build; skyrl cannot take it: .* prompt sets to verl"):
        export(tmp_path / "gsm", "skyrl")


def test_unknown_stacks_and_other_tasks_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--to names no stack ftdata exports to: nemo; choose from skyrl, "):
        export(tmp_path, "skyrl,nemo")
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(json.dumps({"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}) + "\n", encoding="utf-8")
    ftdata.build(str(prefs), str(tmp_path / "dpo"), task="preference")
    with pytest.raises(ConfigError, match=r"a preference build; skyrl cannot take it: .* preference pairs to llamafactory, unsloth"):
        export(tmp_path / "dpo", "skyrl")


def test_pairs_go_to_llamafactorys_pairwise_columns_and_to_unsloth_as_built(tmp_path: Path) -> None:
    """LLaMA-Factory's PairwiseDatasetProcessor writes each side as the prompt then the completion, the prompt's
    labels -100; TRL's DPOTrainer (Unsloth) takes the build's own prompt_ids/chosen_ids/rejected_ids."""
    out = tmp_path / "dpo"
    ftdata.build(str(DATASETS / "preference" / "llamafactory_dpo_en_demo.json"), str(out), max_length=512, test_size=0.1)
    built = ftdata.load(out).dataset
    (lf, unsloth) = export(out, "llamafactory,unsloth")
    pairs = datasets.load_from_disk(str(lf.folder / "tokenized"))
    assert set(pairs) == {"train", "validation"} and len(pairs["train"]) == len(built["train"])
    for mine, theirs in zip(built["train"], pairs["train"]):
        for side in ("chosen", "rejected"):
            assert theirs[f"{side}_input_ids"] == mine["prompt_ids"] + mine[f"{side}_ids"]
            assert theirs[f"{side}_labels"] == [IGNORE_INDEX] * len(mine["prompt_ids"]) + mine[f"{side}_ids"]
            assert theirs[f"{side}_attention_mask"] == [1] * len(theirs[f"{side}_input_ids"])
    assert lf.manifest["counts"]["train"]["pairs"] == len(built["train"]) and "stage: dpo" in lf.manifest["config"]
    rows = datasets.load_from_disk(str(unsloth.folder / "dataset"))
    assert rows["train"].to_dict() == built["train"].to_dict()


def test_tree_rows_are_exported_as_the_split_rows_they_hold(tmp_path: Path) -> None:
    """A stack that cannot attend along a tree gets the tree's paths: the rows history=inference builds, each
    trained token once in its own context (records whose Qwen3-style template drops old reasoning)."""
    from test_chat_tools import template_tokenizer
    from test_tree_rows import RECORDS

    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    tok = template_tokenizer("qwen3", ("<think>", "</think>"))
    for history in ("inference", "tree"):
        ftdata.build(str(data), str(tmp_path / history), tokenizer=tok, history=history)
    (axolotl,) = export(tmp_path / "tree", "axolotl")
    assert axolotl.manifest["layout"] == {"built": "tree", "written": "split rows"}
    assert "cannot attend along a tree" in axolotl.manifest["notes"][0]
    split = ftdata.load(tmp_path / "inference").dataset
    rows = pq.read_table(tmp_path / "tree" / "export-axolotl" / "train.parquet").to_pylist()
    assert len(split) == len(rows) == 6  # 3 + 1 + 2 split rows; the build holds them as 1 tree across the 3 records
    assert sorted((r["input_ids"], r["labels"]) for r in rows) == sorted(zip(split["input_ids"], split["labels"]))
