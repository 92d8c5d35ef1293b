"""Preference builds go through the same driver, run loop, executors, cache and recipes as SFT builds; and
`ftdata preview` / `ftdata stats` show pairs (docs/preference.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import DATASETS
from typer.testing import CliRunner

import ftdata
from ftdata.cli.app import app
from ftdata.errors import ConfigError
from ftdata.outcomes import RejectCode
from ftdata.run import executors

pytestmark = pytest.mark.skipif(not DATASETS.is_dir(), reason=f"shared data not found at {DATASETS}")
DPO = DATASETS / "preference" / "llamafactory_dpo_en_demo.json"
KTO = DATASETS / "preference" / "llamafactory_kto_en_demo.json"


def build(**options):
    result = ftdata.prepare(DPO, max_length=1024, limit=60, batch_size=8, **options)
    report = result.report.to_dict()
    for volatile in ("seconds", "rejects_path", "cached", "fingerprint"):
        report.pop(volatile)
    return result.dataset.to_list(), report


def test_engine_processes_builds_the_rows_and_counts_of_engine_local(monkeypatch, smol) -> None:
    local = build(tokenizer=smol)
    monkeypatch.setattr(executors, "IN_PROCESS_BELOW", 0)  # a pool even for 60 records
    assert build(tokenizer=smol, engine="processes", num_workers=2) == local
    rows, report = local
    assert report["sequences"] == len(rows) == 60 and report["cut"] == {"turns_dropped": 13, "prompt_shortened": 2}


def test_a_cached_preference_build_is_reused_and_keyed_apart_from_sft(tmp_path, smol) -> None:
    first = ftdata.prepare(DPO, tokenizer=smol, limit=20, cache_dir=str(tmp_path))
    again = ftdata.prepare(DPO, tokenizer=smol, limit=20, cache_dir=str(tmp_path))
    assert again.report.cached and not first.report.cached and again.dataset.to_list() == first.dataset.to_list()
    sft = ftdata.prepare(DPO, tokenizer=smol, limit=20, cache_dir=str(tmp_path), task="sft")
    assert not sft.report.cached and sft.report.fingerprint != first.report.fingerprint
    assert sft.dataset.column_names == ["input_ids", "attention_mask", "labels", "record"]


def _recipe(tmp_path: Path, *, mix_by: str, extra: str = "") -> Path:
    records = json.loads(DPO.read_text(encoding="utf-8"))
    (tmp_path / "a.json").write_text(json.dumps(records[:60]), encoding="utf-8")
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    trl = [{"prompt": [{"role": roles[m["from"]], "content": m["value"]} for m in r["conversations"]],
            "chosen": [{"role": "assistant", "content": r["chosen"]["value"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]["value"]}]} for r in records[60:120]]  # fmt: skip
    trl.append({**trl[0], "chosen": [{"role": "assistant", "content": "Another answer to the same prompt."}]})
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trl), encoding="utf-8")
    path = tmp_path / "recipe.yaml"
    path.write_text(f"max_length: 2048\nmix_by: {mix_by}\n{extra}sources:\n  - data: a.json\n    weight: 0.5\n  - data: b.jsonl\n    weight: 0.5\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("mix_by", ["records", "tokens"])
def test_a_recipe_mixes_preference_sources_by_pairs_or_tokens(tmp_path, smol, mix_by) -> None:
    result = ftdata.build(_recipe(tmp_path, mix_by=mix_by), tokenizer=smol)
    assert result.dataset.column_names == ["prompt_ids", "chosen_ids", "rejected_ids"] and result.report.task == "preference"
    mix = {row["source"]: row for row in result.report.mix}
    assert abs(mix["a"][mix_by]["share"] - 0.5) < 0.02 and abs(mix["b"][mix_by]["share"] - 0.5) < 0.02
    assert mix["a"]["tokens"]["used"] + mix["b"]["tokens"]["used"] == result.report.tokens


def test_a_recipe_dedups_and_decontaminates_pairs_on_their_prompt(tmp_path, smol) -> None:
    records = json.loads(DPO.read_text(encoding="utf-8"))
    asked = next(m["value"] for m in records[70]["conversations"] if m["from"] == "human")
    assert len(asked.split()) >= 13
    (tmp_path / "eval.jsonl").write_text(json.dumps({"instruction": asked, "output": "x"}) + "\n", encoding="utf-8")
    path = _recipe(tmp_path, mix_by="records", extra="dedup: exact\ndecontaminate: [eval.jsonl]\n")
    result = ftdata.build(path, tokenizer=smol, rejects_path=str(tmp_path / "rejects.jsonl"))
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    by_code = {}
    for r in rejects:
        by_code.setdefault(r["code"], []).append(r["location"])
    assert by_code["contaminated"] == [f"{tmp_path / 'b.jsonl'}:11"]  # records[70] is line 11 of b.jsonl
    # the last line of b.jsonl repeats the prompt of its first line with another chosen answer: a duplicate by prompt
    assert f"{tmp_path / 'b.jsonl'}:61" in by_code["duplicate"]
    assert result.report.rejected[RejectCode.DUPLICATE] >= 1


def test_a_recipe_of_preference_and_sft_sources_is_refused(tmp_path, smol) -> None:
    (tmp_path / "pairs.json").write_text(DPO.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "sft.jsonl").write_text(json.dumps({"instruction": "hi", "output": "yo"}) + "\n", encoding="utf-8")
    path = tmp_path / "recipe.yaml"
    path.write_text("sources:\n  - data: pairs.json\n    weight: 1\n  - data: sft.jsonl\n    weight: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"different kinds of data \(pairs is preference, sft is sft\)"):
        ftdata.build(path, tokenizer=smol)


def test_preview_shows_the_prompt_once_and_each_completion_trained(tmp_path) -> None:
    result = CliRunner().invoke(app, ["preview", str(DPO), "-n", "1", "--no-color"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "── pair 1 · " in out and "prompt 52 tokens; chosen 341, rejected 116 (trained)" in out
    assert out.count("<|im_start|>user\nHi! I'd like to create a new language game") == 1
    assert "chosen:\n⟦That sounds like a fun" in out and "rejected:\n⟦Hello! I'd be happy" in out
    assert out.count("<|im_end|>⟧") == 2  # each completion ends with its end-of-turn, trained


def test_preview_json_gives_one_object_per_pair() -> None:
    result = CliRunner().invoke(app, ["preview", str(KTO), "--task", "kto", "-n", "2", "--json", "--tokens"])
    assert result.exit_code == 0, result.output
    header, *pairs = (json.loads(line) for line in result.stdout.splitlines())
    assert header["type"] == "header" and header["options"]["task"] == "kto"
    assert [p["type"] for p in pairs] == ["pair", "pair"]
    first = pairs[0]
    assert set(first["counts"]) == {"prompt", "completion (desirable)"} and first["prompt"].endswith("<|im_start|>assistant\n")
    assert all(t["label"] == -100 for t in first["tokens"]["prompt"])
    # The prompt's tokens spell it: its offsets (computed only when read, the build tokenizes prompts without them).
    assert "".join(t["text"] for t in first["tokens"]["prompt"]) == first["prompt"]
    assert all(t["label"] == t["id"] for t in first["tokens"]["completion (desirable)"])


def test_stats_reports_pairs_lengths_bias_shared_starts_repeats_and_rejects() -> None:
    result = CliRunner().invoke(app, ["stats", str(DPO), "--max-length", "1024", "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert (stats["records"], stats["pairs"], stats["rejected"]) == (300, 300, {"too_long": 5})  # at max_length 1024
    assert set(stats["lengths"]) == {"prompt", "chosen", "rejected"} and stats["lengths"]["prompt"]["max"] == 4102
    assert stats["length_bias"] == {"chosen_longer": 0.4233, "same_length": 0.0033, "chosen_shorter": 0.5733}
    assert stats["shared_start"]["pairs"] == 0.27 and stats["repeated"] == 5
    policies = {p["policy"]: p for p in stats["truncation_policies"]}
    assert (policies["keep_response"]["cut"], policies["keep_response"]["dropped"]) == (94, 5)
    assert stats["kept"]["rows"] == 295


def test_stats_of_kto_data_counts_the_labels() -> None:
    result = CliRunner().invoke(app, ["stats", str(KTO), "--task", "kto", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["labels"] == {"desirable": 150, "undesirable": 150}


def test_kto_data_without_task_builds_as_kto_and_says_why(tmp_path) -> None:
    result = CliRunner().invoke(app, ["build", str(KTO), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "kto: the first record is a completion with a true/false 'label'" in result.output
    assert json.loads((tmp_path / "out" / "build.json").read_text())["counts"]["task"] == "kto"
