"""`ftdata preview` and `ftdata stats` show what `ftdata build` writes: the task line of its summary (the task and
why it was chosen) for every task, and under `--history tree` the trees a build writes (rows = trees, tokens = the
tokens they forward), the same numbers as the build's summary and build.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support import TOKENIZERS
from test_cli import cached_tokenizers  # noqa: F401  - the fixture: each tokenizer loaded once
from ftdata.cli.app import app

QWEN = TOKENIZERS / "qwen2.5-instruct"
SFT_REASON = "the first record is SFT data (a conversation, or an instruction and its response)"


def run(*args: object) -> object:
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str, reasoning: str, **extra: object) -> dict[str, object]:
    return {"role": "assistant", "content": text, "reasoning_content": reasoning, **extra}


CHATS = [  # qwen3 drops old reasoning: the 3-turn record splits into 3 rows that share their start
    {"messages": [user("What is 2+2?"), assistant("4", "Add two and two."), user("And 3+3?"),
                  assistant("6", "Add three and three."), user("And 4+4?"), assistant("8", "Four and four.")]},
    {"messages": [user("Name a colour."), assistant("Blue.", "Any colour will do.")]},
]  # fmt: skip


@pytest.mark.parametrize(
    ("rows", "task", "reason"),
    [
        ([{"messages": [user("Hi"), {"role": "assistant", "content": "Hello!"}]}], "sft", SFT_REASON),
        (
            [{"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}],
            "preference",
            "the first record is a preference pair (chosen/rejected)",
        ),
        ([{"prompt": "What is 2+2?"}], "prompts", "the first record is a prompt with no completion (prompt)"),
    ],
)
def test_preview_and_stats_print_the_build_summarys_task_line(
    tmp_path: Path, rows: list[dict], task: str, reason: str
) -> None:
    data = jsonl(tmp_path / "d.jsonl", rows)
    build = run("build", data, "-o", tmp_path / "out", "--no-cache")
    line = f"{task}: {reason}"
    assert f"task            {line}\n" in build.stdout  # the summary (COLUMNS=200: not wrapped)
    counts = json.loads((tmp_path / "out" / "build.json").read_text())["counts"]
    assert (counts["task"], counts["task_reason"]) == (task, reason)
    assert f"\ntask       {line}\n" in run("preview", data).stdout
    assert f"\ntask          {line}\n" in run("stats", data).stdout
    stats = json.loads(run("stats", data, "--json").stdout)
    assert (stats["task"], stats["task_reason"]) == (task, reason)
    header = json.loads(run("preview", data, "--json").stdout.splitlines()[0])
    assert (header["type"], header["task"], header["task_reason"]) == ("header", task, reason)


def test_a_given_task_says_so(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "qa.jsonl", [{"prompt": "What is 2+2?", "answer": "4"}])
    assert "\ntask       sft: the first record is question/answer data (prompt, answer), built as SFT" in (
        run("preview", data).stdout
    )
    assert "\ntask          prompts: given (task=prompts)\n" in run("stats", data, "--task", "prompts").stdout


@pytest.mark.skipif(not QWEN.is_dir(), reason=f"real tokenizers not found at {QWEN}")
def test_tree_stats_count_what_the_tree_build_writes(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "chats.jsonl", CHATS)
    args = ("-t", QWEN, "--chat-template", "qwen3", "--history", "tree")
    own = (*args, "--no-tree-across-records")
    for flags, (trees, tokens) in ((own, (2, 117)), (args, (1, 114))):
        run("build", data, *flags, "-o", tmp_path / "out", "--no-cache")
        counts = json.loads((tmp_path / "out" / "build.json").read_text())["counts"]
        stats = json.loads(run("stats", data, *flags, "--json").stdout)
        # 3 + 1 split rows (164 tokens) written as 2 trees (record 1's three rows share their start), or as 1
        # across records (both open with the same user header: 3 tokens fewer)
        assert (counts["rows"], counts["sequences"], counts["tokens"], counts["trained_tokens"]) == (
            trees,
            trees,
            tokens,
            52,
        )
        assert (stats["rows"], stats["tokens"], stats["trained_tokens"]) == (trees, tokens, 52)
        assert (stats["split_rows"], stats["split_tokens"], stats["records"], stats["examples"]) == (4, 164, 2, 2)
        assert (stats["epoch"]["sequences"], stats["epoch"]["tokens"], stats["epoch"]["trained"]) == (trees, tokens, 52)
    split = json.loads(run("stats", data, *args[:-1], "inference", "--json").stdout)
    assert (split["rows"], split["tokens"], split["trained_tokens"]) == (4, 164, 52)
    assert "split_rows" not in split  # history=inference writes the split rows themselves
    text = run("stats", data, *own).stdout
    assert "4 rows written as 2 tree rows (history=tree: each prefix the rows share written once)" in text
    assert "tokens        117 forwarded (each tree's unique tokens; 164 in the 4 rows), 52 trained (44.4% " in text
    run("build", data, *own, "--packing", "-o", tmp_path / "packed", "--no-cache")
    packing = json.loads((tmp_path / "packed" / "build.json").read_text())["counts"]["packing"]["train"]
    assert (packing["rows"], packing["sequences"], packing["tokens"]) == (1, 2, 117)
    stats = json.loads(run("stats", data, *own, "--json").stdout)
    assert {k: stats["epoch"]["packing"][k] for k in ("rows", "sequences", "tokens", "fill_ratio")} == {
        "rows": 1,
        "sequences": 2,
        "tokens": 117,
        "fill_ratio": packing["fill_ratio"],
    }
    assert "fill 5.7%: 2 sequences -> 1 rows of 2,048" in text  # the build's fill (train) 5.7%
    assert "4 rows written as 1 tree row (history=tree: " in run("stats", data, *args).stdout


@pytest.mark.skipif(not QWEN.is_dir(), reason=f"real tokenizers not found at {QWEN}")
def test_tree_preview_says_how_a_split_record_is_written(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "chats.jsonl", CHATS)
    args = ("-t", QWEN, "--chat-template", "qwen3", "--history", "tree")
    text = run("preview", data, *args, "--no-color").stdout
    line = (
        "tree: its 3 rows are written as 1 prefix tree: 90 unique tokens forwarded (137 in the rows), 38 trained "
        "(history=tree)"
    )
    assert text.count("\ntree: ") == 1  # once, on the split record's first row; record 2 is one row
    assert f"12 trained\n{line}\nsplit: row 1 of 3: trains messages[5]\n" in text
    views = [json.loads(x) for x in run("preview", data, *args, "--json").stdout.splitlines()[1:]]
    assert [v.get("tree") for v in views] == [
        {"rows": 3, "row_tokens": 137, "trees": 1, "tokens": 90, "trained": 38},
        None,
        None,
        None,
    ]
    # the record's trees and the single row of record 2 add up to a tree-per-record build's 117 tokens and 52 trained
    assert 90 + views[3]["counts"]["tokens"] == 117 and 38 + views[3]["counts"]["trained"] == 52
    assert "\ntree: " not in run("preview", data, *args[:-1], "inference", "--no-color").stdout


def test_tree_with_media_is_refused_naming_the_options(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "chats.jsonl", CHATS)
    result = CliRunner().invoke(app, ["build", str(data), "--history", "tree", "--processor", "proc", "-o", "o"])
    assert result.exit_code == 2
    assert result.output == (
        "error: --history tree writes a record's rows as one prefix tree: --processor proc builds rows with media, "
        "which are not built as trees yet; use --history inference (the same trained tokens, as split rows)\n"
    )
