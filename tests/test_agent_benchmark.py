"""benchmarks/agent_throughput.py's examples, built small so the benchmark cannot rot: the shared ATIF trajectories
concatenated to a size, valid OpenAI messages that ftdata builds without a reject."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from support import ROOT, SHARED, tokenizer

import ftdata

ATIF = SHARED / "datasets/agent_traces/atif"
pytestmark = pytest.mark.skipif(not ATIF.is_dir(), reason="needs ../shared/datasets/agent_traces")


def bench():
    name = "agent_throughput"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_examples_are_the_trajectories_concatenated_to_the_size_asked() -> None:
    b = bench()
    examples = b.build_examples(3, 30_000)
    system, bodies, tools = b.trajectories()
    assert len(bodies) == 9 and [t["function"]["name"] for t in tools] == [
        "execute_bash", "think", "finish", "execute_ipython_cell", "task_tracker", "str_replace_editor",
    ]  # fmt: skip
    texts = {m["content"] for body in bodies for m in body}
    lines = [json.dumps(e, ensure_ascii=False) for e in examples]
    assert examples == b.build_examples(3, 30_000) and len(set(lines)) == 3  # seeded, each in an order of its own
    for example, line in zip(examples, lines):
        messages = example["messages"]
        assert messages[0] == system and system["content"].startswith("You are OpenHands agent")
        assert example["tools"] == tools and messages[-1]["role"] == "assistant"
        assert 25_000 < len(line) < 30_000 + max(len(json.dumps(body)) for body in bodies)
        assert all(not (a["role"] == b_["role"] == "user") for a, b_ in zip(messages, messages[1:]))
        assert all(m["role"] != "system" for m in messages[1:])
        assert not any(k in m for m in messages for k in ("train", "token_ids", "reasoning_content"))
        assert all(joined(m["content"], texts) for m in messages[1:])


def joined(content: str, texts: set[str]) -> bool:
    """Whether `content` is one of `texts`, verbatim, or several (user texts in a row) joined by a blank line."""
    return content in texts or any(
        content.startswith(t + "\n\n") and joined(content[len(t) + 2 :], texts) for t in texts
    )


@pytest.mark.slow  # ~3 s of loading and compiling the Qwen tokenizer's template on an idle machine, 12 s on a busy one
def test_ftdata_builds_every_example_without_a_reject(tmp_path) -> None:
    b = bench()
    path = b.write_jsonl(b.build_examples(1, 30_000), tmp_path / "agent.jsonl")
    report = ftdata.prepare(path, tokenizer=tokenizer("qwen2.5-instruct"), max_length=65_536, history="one_row").report
    assert (report.records, report.rows, sum(report.rejected.values())) == (1, 1, 0)
    assert 0 < report.trained_tokens < report.tokens


def test_unique_examples_repeat_only_the_system_prompt_and_tools() -> None:
    b = bench()
    plain, unique = b.build_examples(2, 30_000), b.build_examples(2, 30_000, unique=True)
    texts = []
    for p, u in zip(plain, unique):
        assert u["messages"][0] == p["messages"][0] and u["tools"] == p["tools"]
        assert len(u["messages"]) == len(p["messages"])
        for k, (a, m) in enumerate(zip(p["messages"][1:], u["messages"][1:]), 1):
            tag = m["content"][: m["content"].index("] ") + 2]
            assert m["content"] == tag + (a.get("content") or "") and tag.endswith(f", message {k}] ")
            for x, y in zip(a.get("tool_calls") or (), m.get("tool_calls") or ()):
                assert [str(v).removeprefix(tag) for v in y["function"]["arguments"].values()] == [
                    str(v) for v in x["function"]["arguments"].values()
                ]
            texts.append(m["content"])
    assert len(set(texts)) == len(texts)  # no message text twice, in one example or across them
