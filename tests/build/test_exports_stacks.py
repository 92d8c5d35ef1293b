"""Each stack's own loader reads `ftdata export` and trains the build's tokens (slow: each stack runs in a venv of its
own, made once by scripts/stacks/STACK.sh; a test skips, saying so, while that venv is missing).

The check is scripts/stacks/agree.py, as a user runs it: the stack's loader (scripts/stacks/read_STACK.py, in its
venv) prints the ids and trained positions of each row; they are compared with the build's, row for row.

- token-id stacks (SkyRL's `load_from_pretokenized`, LLaMA-Factory's `tokenized_path` + its SFT collator, axolotl's
  dataset preparation, tinker's `Datum`, the collator of the TRL Unsloth pins): the same ids and trained positions
  in every row;
- verl's `MultiTurnSFTDataset`, which tokenizes the messages itself, measured two ways: from the Parquet file as it
  reads it (nested values come back as Arrow structs: every key any record has, null where it has none), and on
  each record's exact messages (its own per-message tokenization alone).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from support import DATASETS, ROOT, TOKENIZERS

import ftdata
from ftdata.build.exports import export

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}"),
]

GLAIVE = DATASETS / "sharegpt" / "llamafactory_glaive_toolcall_en_demo.json"
STACKS_ROOT = Path(os.environ.get("FTDATA_STACKS", Path.home() / ".cache" / "ftdata" / "stacks"))


def venv(stack: str) -> Path:
    found = sorted(p.parent for p in STACKS_ROOT.glob(f"{stack}-*/.complete"))
    if not found:
        pytest.skip(f"no {stack} venv under {STACKS_ROOT}: make it with scripts/stacks/{stack}.sh")
    return found[-1]


def agree(stack: str, out: Path, tmp_path: Path) -> list[dict[str, Any]]:
    venv(stack)
    report = tmp_path / f"{stack}.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "stacks" / "agree.py"), stack, str(out), "--json", str(report)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return json.loads(report.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def glaive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 multi-turn tool-calling records (tool calls, tool results) on Qwen2.5, exported to every stack."""
    out = tmp_path_factory.mktemp("glaive") / "out"
    ftdata.build(str(GLAIVE), str(out), tokenizer=str(TOKENIZERS / "qwen2.5-instruct"), limit=100)
    export(out, "skyrl,llamafactory,axolotl,tinker,unsloth,verl")
    return out


@pytest.mark.parametrize("stack", ["skyrl", "llamafactory", "axolotl", "tinker", "unsloth"])
def test_token_id_stacks_train_the_builds_tokens_row_for_row(stack: str, glaive: Path, tmp_path: Path) -> None:
    (result,) = agree(stack, glaive, tmp_path)
    built = ftdata.load(glaive).report
    assert result["rows"] == built.rows and result["rows_differing"] == 0, result["differing"][:3]
    assert result["trained_tokens_stack"] == result["trained_tokens_ftdata"] == built.trained_tokens


def test_verl_tokenizes_the_same_ids_and_also_trains_the_newline_after_each_turn(glaive: Path, tmp_path: Path) -> None:
    """On the exact messages verl writes the build's ids for every record, and trains one more token per assistant
    turn: the newline the template writes after `<|im_end|>`, which the model never generates (inference stops at
    `<|im_end|>`)."""
    parquet, exact = agree("verl", glaive, tmp_path)
    assert (exact["mode"], exact["ids_differ"], exact["refused"]) == ("exact", 0, 0)
    turns = {}
    for row in pq.read_table(glaive / "export-verl" / "train.parquet", columns=["record", "conversation"]).to_pylist():
        turns[row["record"]] = sum(m["role"] == "assistant" for m in json.loads(row["conversation"])["messages"])
    assert exact["rows_differing"] == len(turns)  # every record: its newlines
    for row in exact["differing"]:
        n = turns[row["record"]]
        assert row["detail"] == f"{n} tokens trained only by the stack ('\\n' x{n})"
    assert exact["trained_tokens_stack"] - exact["trained_tokens_ftdata"] == sum(turns.values())
    # read from its Parquet file, the tool schemas come back with every property any record has (null elsewhere):
    # no record with tools is rendered as written
    assert parquet["mode"] == "parquet" and parquet["rows_differing"] == parquet["rows"] == len(turns)
    assert any("null" in row["detail"] for row in parquet["differing"])


def test_verl_loses_the_reasoning_of_agent_turns_a_qwen3_template_writes(tmp_path: Path) -> None:
    """The ATIF trajectories (tool calls, observations, reasoning) on Qwen2.5 with TRL's Qwen3 template, which
    writes a turn's think block only after the last user query: verl renders each assistant message alone (no user
    turn before it), so no turn gets its think block, and the token ids part from the build's in every record."""
    import trl
    from transformers import AutoTokenizer

    venv("verl")
    tok = AutoTokenizer.from_pretrained(str(TOKENIZERS / "qwen2.5-instruct"))
    tok.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text(encoding="utf-8")
    tok.save_pretrained(str(tmp_path / "qwen3"))
    out = tmp_path / "atif"
    ftdata.build(str(DATASETS / "agent_traces" / "atif"), str(out), tokenizer=str(tmp_path / "qwen3"), max_length=16384)
    export(out, "verl")
    parquet, exact = agree("verl", out, tmp_path)
    assert exact["rows"] == exact["ids_differ"] == 10 and exact["split_records"] == 7
    parted = [row["detail"] for row in exact["differing"]]
    assert all("<|im_start|>assistant\\n<think>" in d.split(" vs stack ")[0] for d in parted)  # ftdata's side
    assert not any("assistant\\n<think>" in d.split(" vs stack ")[1] for d in parted)  # never on verl's


def test_verl_rl_reads_the_prompt_sets_prompts_and_ground_truth(tmp_path: Path) -> None:
    """A prompt set (GSM8K's first 20 test questions) through verl's own `RLHFDataset`: every prompt kept (its
    length filter), each the build's messages, its ground truth the build's answer column."""
    where = venv("verl")
    out = tmp_path / "gsm"
    ftdata.build(str(ROOT / "examples" / "data" / "gsm8k_test_20.jsonl"), str(out), task="prompts")
    export(out, "verl")
    inputs = ftdata.load(out).manifest["inputs"]
    tokenizer = next(i.get("path") or i["name"] for i in inputs if i["kind"] == "tokenizer")
    script = ROOT / "scripts" / "stacks" / "read_verl_rl.py"
    done = subprocess.run(
        [str(where / "bin" / "python"), str(script), str(out / "export-verl"), tokenizer],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    built = ftdata.load(out).dataset
    assert [g["prompt"] for g in got] == built["prompt"] and [g["ground_truth"] for g in got] == built["answer"]
    assert [g["index"] for g in got] == list(range(20)) and {g["data_source"] for g in got} == {"gsm8k_test_20.jsonl"}


@pytest.mark.parametrize(("stack", "reader"), [("llamafactory", "read_llamafactory.py"), ("unsloth", "read_unsloth_pairs.py")])  # fmt: skip
def test_dpo_collators_train_the_builds_pairs(stack: str, reader: str, tmp_path: Path) -> None:
    """The DPO pairs of LLaMA-Factory's own demo, built on Qwen2.5, exported, and batched by the stack's own DPO
    collator (LLaMA-Factory's `PairwiseDataCollatorWithPadding` after `tokenized_path`; TRL's
    `DataCollatorForPreference`, as Unsloth pins it): each side is the build's prompt then that completion, and
    exactly the completion is trained."""
    where = venv(stack)
    out = tmp_path / "dpo"
    tok = str(TOKENIZERS / "qwen2.5-instruct")
    ftdata.build(str(DATASETS / "preference" / "llamafactory_dpo_en_demo.json"), str(out), tokenizer=tok, limit=40)
    export(out, stack)
    done = subprocess.run(
        [str(where / "bin" / "python"), str(ROOT / "scripts" / "stacks" / reader), str(out / f"export-{stack}"), tok],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    read = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    built = ftdata.load(out).dataset.to_list()
    assert len(read) == len(built) > 30
    trained = 0
    for mine, theirs in zip(built, read):
        for side in ("chosen", "rejected"):
            n = len(mine[side + "_ids"])
            assert theirs[side + "_ids"] == mine["prompt_ids"] + mine[side + "_ids"]
            assert theirs[side + "_mask"] == [0] * len(mine["prompt_ids"]) + [1] * n
            trained += sum(theirs[side + "_mask"])
    assert trained == sum(len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in built)
