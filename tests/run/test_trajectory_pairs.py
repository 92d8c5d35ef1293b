"""Multi-turn agent preference pairs (`ftdata.run.trajectory_pairs`): chosen and rejected are several messages each
after a shared prompt, diverging mid-trajectory (tests/agent_pairs.py: real Harbor trajectories, the rejected side
edited). Held against the template's own rendering (Qwen2.5's `apply_chat_template`, tokenized): the prompt ids are
the inference prompt's tokens and a prefix of both sides' renders, each completion is the tokens the render writes
after them; against SFT's rule: a completion's mask is the labels SFT gives the same conversation with the prompt's
turns untrained (every assistant turn after the divergence trained, tool results not); and the note says where the
sides diverge (message, token)."""

from __future__ import annotations

import json
from os.path import commonprefix
from pathlib import Path

import pytest
from agent_pairs import openhands, terminus
from support import tokenizer

import ftdata
from ftdata.errors import FtdataError
from ftdata.outcomes import NoteCode
from ftdata.types import IGNORE_INDEX

QWEN = "qwen2.5-instruct"


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _template_ids(tok, messages: list[dict], tools, **kwargs) -> list[int]:
    text = tok.apply_chat_template(messages, tools=tools or None, tokenize=False, **kwargs)
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("pairs")
    records = [openhands(), terminus()]
    result = ftdata.build(str(_write(folder / "pairs.jsonl", records)), tokenizer=tokenizer(QWEN), max_length=8192)
    return records, result


def test_the_shared_prompt_is_token_exact_and_each_completion_is_what_the_template_writes_after_it(built) -> None:
    records, result = built
    tok = tokenizer(QWEN)
    assert result.dataset.column_names == ["prompt_ids", "chosen_ids", "rejected_ids", "chosen_mask", "rejected_mask"]
    assert len(result.dataset) == 2 and result.report.n_rejected == 0
    for record, row in zip(records, result.dataset):
        tools = record.get("tools")
        prompt = _template_ids(tok, record["prompt"], tools, add_generation_prompt=True)
        assert row["prompt_ids"] == prompt  # the inference prompt, as the template writes it
        for side in ("chosen", "rejected"):
            whole = _template_ids(tok, record["prompt"] + record[side], tools)
            ids = row[f"{side}_ids"]
            assert whole[: len(prompt)] == prompt  # the prompt is a prefix of the side's render, token for token
            assert whole[len(prompt) : len(prompt) + len(ids)] == ids
            assert tok.decode(whole[len(prompt) + len(ids) :]) == "\n"  # what Qwen writes after the stop token
            assert ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")


def test_a_completion_trains_its_assistant_turns_and_not_the_tool_results_between_them(built) -> None:
    records, result = built
    tok = tokenizer(QWEN)
    for record, row in zip(records, result.dataset):
        for side in ("chosen", "rejected"):
            ids, mask = row[f"{side}_ids"], row[f"{side}_mask"]
            runs: list[tuple[int, list[int]]] = []
            for token, bit in zip(ids, mask):
                if not runs or runs[-1][0] != bit:
                    runs.append((bit, []))
                runs[-1][1].append(token)
            assert [bit for bit, _ in runs] == [1, 0, 1]  # call, result, next turn
            trained = [tok.decode(tokens) for bit, tokens in runs if bit]
            read = tok.decode(runs[1][1])
            first, result_message, last = record[side]
            assert trained[0].startswith(first["content"]) and trained[1].startswith(last["content"])
            assert all(text.endswith("<|im_end|>") for text in trained)  # each turn's stop token trained
            assert result_message["content"] in read and read.endswith("<|im_start|>assistant\n")
            assert first["content"] not in read


def test_the_masks_are_the_labels_sft_gives_the_same_trajectory(built, tmp_path: Path) -> None:
    records, result = built
    for record, row in zip(records, result.dataset):
        for side in ("chosen", "rejected"):
            messages = [{**m, "train": False} if m["role"] == "assistant" else m for m in record["prompt"]]
            sft_record = {"messages": messages + record[side], **({"tools": record["tools"]} if "tools" in record else {})}
            sft = ftdata.build(str(_write(tmp_path / "sft.jsonl", [sft_record])), tokenizer=tokenizer(QWEN), max_length=8192)
            (sft_row,) = sft.dataset
            p, ids = len(row["prompt_ids"]), row[f"{side}_ids"]
            assert sft_row["input_ids"][: p + len(ids)] == row["prompt_ids"] + ids
            labels = sft_row["labels"]
            assert all(label == IGNORE_INDEX for label in labels[:p] + labels[p + len(ids) :])
            assert [int(label != IGNORE_INDEX) for label in labels[p : p + len(ids)]] == row[f"{side}_mask"]


def test_the_divergence_is_reported_by_message_and_token(built) -> None:
    records, result = built
    texts = result.report.note_texts[NoteCode.TRAJECTORY_PAIR]
    assert result.report.notes[NoteCode.TRAJECTORY_PAIR] == 2
    for record, row, text in zip(records, result.dataset, texts):
        at = len(record["prompt"])
        token = len(row["prompt_ids"]) + len(commonprefix([row["chosen_ids"], row["rejected_ids"]]))
        trained = [sum(row[f"{side}_mask"]) for side in ("chosen", "rejected")]
        assert text == (
            f"chosen and rejected diverge at message {at}, token {token} (after a shared prompt of {at} messages, "
            f"{len(row['prompt_ids'])} tokens); chosen: 3 messages, {trained[0]} of {len(row['chosen_ids'])} tokens "
            f"trained; rejected: 3 messages, {trained[1]} of {len(row['rejected_ids'])} tokens trained (tool results "
            "and the headers between turns read, not trained)"
        )
    assert "diverge at message 3" in texts[1]  # terminus: after the shared first call and its output


def test_kto_labels_each_trajectory_and_masks_it(tmp_path: Path, built) -> None:
    _, pairs = built
    result = ftdata.build(str(_write(tmp_path / "kto.jsonl", [terminus()])), tokenizer=tokenizer(QWEN), task="kto")
    assert result.dataset.column_names == ["prompt_ids", "completion_ids", "label", "completion_mask"]
    assert result.dataset["label"] == [True, False]
    pair = pairs.dataset[1]
    assert result.dataset["completion_ids"] == [pair["chosen_ids"], pair["rejected_ids"]]
    assert result.dataset["completion_mask"] == [pair["chosen_mask"], pair["rejected_mask"]]
    (text, _) = result.report.note_texts[NoteCode.TRAJECTORY_PAIR]
    assert text.startswith(f"the completion starts at message 3, token {len(pair['prompt_ids'])} (after a shared")


def test_single_turn_rows_before_a_trajectory_get_full_masks(tmp_path: Path) -> None:
    single = {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}
    data = _write(tmp_path / "mixed.jsonl", [single, terminus()])
    result = ftdata.build(str(data), tokenizer=tokenizer(QWEN), batch_size=1)  # the masks come with the second batch
    first = result.dataset[0]
    assert first["chosen_mask"] == [1] * len(first["chosen_ids"]) and first["rejected_mask"] == [1] * len(first["rejected_ids"])
    assert result.report.trained_tokens == sum(sum(m) for m in [*result.dataset["chosen_mask"], *result.dataset["rejected_mask"]])
    alone = ftdata.build(str(_write(tmp_path / "one.jsonl", [single])), tokenizer=tokenizer(QWEN))
    assert alone.dataset.column_names == ["prompt_ids", "chosen_ids", "rejected_ids"]  # no trajectory: no mask columns


def test_a_long_trajectory_pair_is_not_cut_by_keep_response_and_keep_start_cuts_its_masks(tmp_path: Path) -> None:
    data = _write(tmp_path / "p.jsonl", [terminus()])
    with pytest.raises(FtdataError, match=r"too long: 949 tokens \(prompt 819 \+ longer completion 130\) > max_length 600; the shared "
                       r"prompt of a completion of several messages is not cut yet \(keep_start, keep_end cut it\)$"):
        ftdata.build(str(data), tokenizer=tokenizer(QWEN), max_length=600)
    whole = ftdata.build(str(data), tokenizer=tokenizer(QWEN)).dataset[0]
    cut = ftdata.build(str(data), tokenizer=tokenizer(QWEN), max_length=900, truncation="keep_start").dataset[0]
    assert cut["chosen_ids"] == whole["chosen_ids"][:81] and cut["chosen_mask"] == whole["chosen_mask"][:81]
    assert cut["rejected_mask"] == whole["rejected_mask"][:81]


def test_stats_plan_the_tokens_a_trajectory_pair_trains_not_its_tool_results(built, tmp_path: Path) -> None:
    """What `ftdata stats` and a recipe's planner read (`planned`): each pair's tokens, and of them the ones its
    completions train (the masks' ones), as the build's rows hold them."""
    from ftdata.options import DataOptions
    from ftdata.run.stage import Stage

    records, result = built
    stage = Stage(tokenizer(QWEN), DataOptions(task="preference", max_length=8192))
    stats = stage.task.stats(str(_write(tmp_path / "pairs.jsonl", records)), stage)
    _, rejected, tokens, trained = stats.planned()
    rows = result.dataset.to_list()
    masks = [sum(r["chosen_mask"]) + sum(r["rejected_mask"]) for r in rows]
    assert rejected == 0 and list(trained) == masks and stats.kept_trained == sum(masks)
    assert list(tokens) == [len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows]
    assert all(m < len(r["chosen_ids"]) + len(r["rejected_ids"]) for m, r in zip(masks, rows))  # tool results read
