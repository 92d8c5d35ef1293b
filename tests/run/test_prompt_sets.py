"""Prompt sets (task=prompts): real shapes built, each prompt_ids checked against transformers' own inference
rendering (an oracle outside ftdata's renderer), reward columns typed, length rejects and cuts, the split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ftdata
from ftdata.errors import ConfigError, RecordError
from ftdata.io.resources import load_tokenizer
from ftdata.options import DataOptions
from ftdata.run.stage import Stage
from ftdata.run.task import check_options, data_task

from support import DATASETS, TOKENIZERS
from support import tokenizer as cached_tokenizer

DATA = Path(__file__).parents[2] / "examples" / "data"
GSM8K = DATA / "gsm8k_test_20.jsonl"
MATH = DATA / "math500_test_16.jsonl"


def _rows(result: object) -> list[dict]:
    dataset = result.dataset  # type: ignore[attr-defined]
    return list(dataset) if not hasattr(dataset, "keys") else [r for name in sorted(dataset) for r in dataset[name]]


def _inference_ids(tok: object, row: dict, **kwargs: object) -> list[int]:
    """What TRL's GRPO trainer (and vLLM's chat) tokenizes for the stored prompt."""
    return tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False, **kwargs)  # type: ignore[attr-defined]


@pytest.mark.parametrize("tokenizer", [None, "qwen2.5-instruct", "llama-3.2-instruct", "deepseek-v3"])
def test_gsm8k_prompt_ids_are_what_inference_tokenizes(tokenizer: str | None) -> None:
    path = str(TOKENIZERS / tokenizer) if tokenizer else None
    result = ftdata.prepare(str(GSM8K), tokenizer=path, task="prompts", max_length=1024)
    rows = _rows(result)
    tok = load_tokenizer(path)
    assert len(rows) == 20 and result.report.task == "prompts"
    assert rows[0]["prompt"][-1] == {"role": "user", "content": json.loads(GSM8K.read_text().splitlines()[0])["question"]}
    for row in rows:
        assert row["prompt_ids"] == _inference_ids(tok, row)
    assert rows[0]["answer"].endswith("#### 18")  # the reward column, as the data has it
    assert result.dataset.features["answer"].dtype == "string"


def test_engine_processes_builds_the_prompt_set_of_engine_local(monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers splice from skeletons of their own (`ftdata.chat.splice`): the rows and counts are local's, and
    every prompt is what inference tokenizes."""
    from ftdata.run import executors

    def built(**options: object) -> tuple[list[dict], dict]:
        result = ftdata.prepare(str(GSM8K), task="prompts", max_length=1024, batch_size=4, **options)
        report = result.report.to_dict()
        for volatile in ("seconds", "rejects_path", "cached", "fingerprint"):
            report.pop(volatile)
        return _rows(result), report

    local = built()
    monkeypatch.setattr(executors, "IN_PROCESS_BELOW", 0)  # a pool even for 20 records
    assert built(engine="processes", num_workers=2) == local
    tok = load_tokenizer(None)
    assert len(local[0]) == 20 and all(row["prompt_ids"] == _inference_ids(tok, row) for row in local[0])


def test_math_is_detected_as_a_prompt_set_and_its_columns_typed() -> None:
    assert data_task(str(MATH), DataOptions()) is ftdata.types.Task.PROMPTS
    result = ftdata.prepare(str(MATH), chat_template="qwen3", max_length=2048)
    rows = _rows(result)
    assert len(rows) == 16 and rows[0]["level"] == 2 and rows[0]["answer"] == r"\left( 3, \frac{\pi}{2} \right)"
    assert {k: str(v.dtype) for k, v in result.dataset.features.items() if k not in ("prompt", "prompt_ids")} == {
        "tools": "string", "solution": "string", "answer": "string", "subject": "string", "level": "int64", "unique_id": "string"}  # fmt: skip
    tok = Stage(load_tokenizer(None), DataOptions(chat_template="qwen3")).tokenizer
    assert all(row["prompt_ids"] == _inference_ids(tok, row) for row in rows)


def test_what_the_generation_prompt_opens_is_reported_once() -> None:
    result = ftdata.prepare(str(MATH), chat_template="qwen3", chat_template_kwargs={"enable_thinking": False}, max_length=2048)
    assert dict(result.report.prompt_opens) == {"<think>\n\n</think>\n\n": 16}
    assert ftdata.prepare(str(MATH), chat_template="qwen3", max_length=2048).report.prompt_opens == {}


def test_trl_conversational_prompts_with_tools_render_the_tools() -> None:
    tool = {"type": "function", "function": {"name": "add", "description": "Add two numbers",
            "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}}}  # fmt: skip
    records = [
        {"prompt": [{"role": "system", "content": "Use tools."}, {"role": "user", "content": "What is 2+3?"}], "tools": [tool], "answer": "5"},
        {"prompt": [{"role": "user", "content": "And 4+4?"}], "tools": [tool], "answer": "8"},
    ]
    path = str(TOKENIZERS / "qwen2.5-instruct")
    rows = _rows(ftdata.prepare(records, tokenizer=path, max_length=1024))
    tok = load_tokenizer(path)
    for row in rows:
        assert row["prompt_ids"] == tok.apply_chat_template(row["prompt"], tools=[tool], add_generation_prompt=True, tokenize=True, return_dict=False)
    assert json.loads(rows[0]["tools"]) == [tool] and [r["answer"] for r in rows] == ["5", "8"]


@pytest.mark.skipif(not DATASETS.is_dir(), reason="shared datasets not found")
def test_real_chats_cut_before_their_first_reply_are_prompt_sets() -> None:
    chats = json.loads((DATASETS / "messages" / "openai_cookbook_toy_chat_fine_tuning.jsonl").read_text().splitlines()[0])
    first = next(i for i, m in enumerate(chats["messages"]) if m["role"] == "assistant")
    records = [{"messages": chats["messages"][:first], "reference": chats["messages"][first]["content"]}]
    # messages with no reply and no tools are SFT data missing its reply, never a prompt set in silence
    with pytest.raises(ftdata.FtdataError, match=r"<records>\[0\]: no assistant turn.*--task prompts"):
        ftdata.prepare(records, max_length=1024)
    (row,) = _rows(ftdata.prepare(records, max_length=1024, task="prompts"))
    assert row["prompt"] == [{"role": m["role"], "content": m["content"]} for m in chats["messages"][:first]]
    assert row["reference"] == chats["messages"][first]["content"]


@pytest.mark.parametrize(
    "bad, code, message",
    [
        ({"question": "Q?"}, "malformed", r"field 'answer': is missing or null; every record of the prompt set carries the reward column answer \(string\)"),
        ({"question": "Q?", "answer": 7}, "malformed", r"field 'answer': is int \(7\), the column holds string"),
        ({"question": "Q?", "answer": "7", "extra": 1}, "malformed", r"field 'extra': is not one of the prompt set's columns \(answer: string; typed from its first record"),
        ({"question": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}], "answer": "7"}, "malformed",
         r"ends on a assistant turn; a prompt ends before the model's turn"),
    ],
)  # fmt: skip
def test_a_bad_record_is_a_located_reject_and_the_rest_is_built(bad: dict, code: str, message: str, tmp_path: Path) -> None:
    rejects = tmp_path / "rejects.jsonl"
    records = [{"question": "2+2?", "answer": "4"}, bad, {"question": "3+3?", "answer": "6"}]
    result = ftdata.prepare(records, task="prompts", on_error="skip", rejects_path=str(rejects))
    assert len(_rows(result)) == 2
    (reject,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert reject["code"] == code and reject["location"] == "<records>[1]"
    assert __import__("re").search(message, reject["reason"] if "field" not in reject else f"field '{reject['field']}': {reject['reason']}") or \
        __import__("re").search(message, json.dumps(reject)), reject  # fmt: skip


def test_a_bad_record_stops_a_raising_build_with_one_line() -> None:
    with pytest.raises(RecordError, match=r"<records>\[1\].*answer.*is int \(7\), the column holds string"):
        ftdata.prepare([{"question": "2+2?", "answer": "4"}, {"question": "Q", "answer": 7}], task="prompts", on_error="raise")


def test_long_prompts_are_rejected_or_cut_when_asked(tmp_path: Path) -> None:
    rejects = tmp_path / "rejects.jsonl"
    long = {"question": "word " * 400 + "What is 2+2?", "answer": "4"}
    records = [{"question": "2+2?", "answer": "4"}, long]
    kept = _rows(ftdata.prepare(records, task="prompts", max_prompt_length=64, rejects_path=str(rejects)))
    assert len(kept) == 1
    (reject,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert reject["code"] == "too_long" and "max_prompt_length 64" in reject["reason"]
    cut = _rows(ftdata.prepare(records, task="prompts", max_prompt_length=64, cut_prompts=True, prompt_cut="start", rejects_path=str(rejects)))
    assert len(cut) == 2 and len(cut[1]["prompt_ids"]) <= 64 and cut[1]["prompt"][-1]["content"].endswith("What is 2+2?")
    (note,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert note["code"] == "start_cut" and note["kept"] is True
    tok = load_tokenizer(None)
    assert cut[1]["prompt_ids"] == _inference_ids(tok, cut[1])
    with pytest.raises(RecordError, match=r"the prompt is \d+ tokens > max_prompt_length 64"):
        ftdata.prepare(records, task="prompts", max_prompt_length=64, truncation="error")


def test_a_middle_cut_prompt_keeps_both_ends_with_the_marker_every_task_writes() -> None:
    from ftdata.tokens.shorten import MARKER

    long = {"question": "Begin here. " + "word " * 400 + "What is 2+2?", "answer": "4"}
    (row,) = _rows(ftdata.prepare([long], task="prompts", max_prompt_length=64, cut_prompts=True, prompt_cut="middle"))
    content = row["prompt"][-1]["content"]
    assert content.startswith("Begin") and content.endswith("2+2?") and content.count(MARKER.strip()) == 1
    assert MARKER in content and len(row["prompt_ids"]) <= 64


def test_the_split_is_by_record_with_no_overlap() -> None:
    result = ftdata.prepare(str(GSM8K), task="prompts", test_size=0.25, seed=3)
    train = {tuple(r["prompt_ids"]) for r in result.dataset["train"]}
    test = {tuple(r["prompt_ids"]) for r in result.dataset["test"]}
    assert len(train) == 15 and len(test) == 5 and not train & test


def test_options_that_mean_nothing_for_prompts_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"packing=True does not apply to task=prompts"):
        check_options(DataOptions(task="prompts", packing=True))
    with pytest.raises(ConfigError, match=r"max_prompt_length applies to prompt sets \(task=prompts\), got task=sft"):
        check_options(DataOptions(task="sft", max_prompt_length=10))
    with pytest.raises(ConfigError, match=r"reward_columns: answer='text' is no type"):
        ftdata.prepare([{"question": "Q", "answer": "A"}], task="prompts", reward_columns={"answer": "text"})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=30), st.integers(0, 40))
def test_editing_a_reward_column_never_changes_the_prompt_ids(answer: str, at: int) -> None:
    """Metamorphic: the reward columns are carried, never rendered. One loaded bundled tokenizer for every
    example (loading it for each build was most of this test's time)."""
    tok = cached_tokenizer(None)
    question = json.loads(GSM8K.read_text().splitlines()[at % 20])["question"]
    base = _rows(ftdata.prepare([{"question": question, "answer": "0"}], task="prompts", tokenizer=tok))[0]
    edited = _rows(ftdata.prepare([{"question": question, "answer": answer}], task="prompts", tokenizer=tok))[0]
    assert edited["prompt_ids"] == base["prompt_ids"] and edited["answer"] == answer


def _recipe(tmp_path: Path, **top: object) -> Path:
    import yaml

    sources = [{"data": str(GSM8K)}, {"data": str(MATH)}]
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump({"task": "prompts", "sources": sources, **top}))
    return path


def test_a_recipe_mixes_prompt_sets_by_tokens_with_the_union_of_their_reward_columns(tmp_path: Path) -> None:
    result = ftdata.build(str(_recipe(tmp_path, mix_by="tokens", total=2000)), tokenizer=None)
    rows = _rows(result)
    gsm = [r for r in rows if r["level"] is None]
    math = [r for r in rows if r["level"] is not None]
    assert gsm and math and all(r["solution"] is None for r in gsm) and all(r["answer"] for r in rows)
    assert sum(len(r["prompt_ids"]) for r in rows) >= 2000 * 0.9
    tok = load_tokenizer(None)
    assert all(r["prompt_ids"] == _inference_ids(tok, r) for r in rows)


def test_dedup_and_decontamination_read_the_prompts(tmp_path: Path) -> None:
    doubled = tmp_path / "doubled.jsonl"
    doubled.write_text(GSM8K.read_text() + GSM8K.read_text())
    import yaml

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"task": "prompts", "dedup": "exact", "sources": [{"data": str(doubled)}]}))
    assert len(_rows(ftdata.build(str(recipe)))) == 20
    held_out = tmp_path / "eval.jsonl"
    held_out.write_text("".join(GSM8K.read_text().splitlines(keepends=True)[:5]))
    recipe.write_text(yaml.safe_dump({"task": "prompts", "decontaminate": [str(held_out)], "sources": [{"data": str(GSM8K)}, {"data": str(MATH)}]}))
    rows = _rows(ftdata.build(str(recipe)))
    questions = {json.loads(line)["question"] for line in held_out.read_text().splitlines()}
    assert len(rows) == 30 and not questions & {r["prompt"][-1]["content"] for r in rows}  # the 5 evaluation prompts are out; equal shares: 15 + 15


def test_a_system_prompt_option_is_in_the_stored_prompt_and_verified() -> None:
    path = str(TOKENIZERS / "qwen2.5-instruct")
    rows = _rows(ftdata.prepare([{"question": "2+2?", "answer": "4"}], tokenizer=path, task="prompts", system_prompt="Answer briefly."))
    assert rows[0]["prompt"] == [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "2+2?"}]
    assert rows[0]["prompt_ids"] == _inference_ids(load_tokenizer(path), rows[0])


def test_control_token_text_in_a_prompt_is_rejected_not_retokenized(tmp_path: Path) -> None:
    rejects = tmp_path / "rejects.jsonl"
    records = [{"question": "2+2?", "answer": "4"}, {"question": "hi <|im_end|> there", "answer": "x"}]
    assert len(_rows(ftdata.prepare(records, task="prompts", on_error="skip", rejects_path=str(rejects)))) == 1
    (reject,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert reject["code"] == "control_token"


@pytest.mark.skipif(not DATASETS.is_dir(), reason="shared datasets not found")
def test_glaive_tool_chats_cut_before_their_first_reply_render_their_tools() -> None:
    """Real ShareGPT tool chats (LLaMA-Factory's glaive demo): each cut before its first reply is a prompt that
    ends on a user turn, with the record's tool schemas rendered into prompt_ids; the reply is the reward column."""
    chats = json.loads((DATASETS / "sharegpt" / "llamafactory_glaive_toolcall_en_demo.json").read_text())[:40]
    records = []
    for chat in chats:
        first = next(i for i, turn in enumerate(chat["conversations"]) if turn["from"] != "human")
        tools = json.loads(chat["tools"]) if chat["tools"] else []
        records.append({"conversations": chat["conversations"][:first], "tools": tools, "reference": chat["conversations"][first]["value"]})
    path = str(TOKENIZERS / "qwen2.5-instruct")
    rows = _rows(ftdata.prepare(records, tokenizer=path, max_length=4096))
    tok = load_tokenizer(path)
    assert len(rows) == len(records)
    for row, record in zip(rows, records):
        assert row["prompt"][-1]["role"] == "user" and row["reference"] == record["reference"]
        tools = json.loads(row["tools"]) if row["tools"] else None  # the schemas as rendered: in OpenAI's {type, function} form
        assert [t["function"] for t in tools or []] == record["tools"]
        expected = tok.apply_chat_template(row["prompt"], tools=tools, add_generation_prompt=True, tokenize=True, return_dict=False)
        assert row["prompt_ids"] == expected
    assert any(record["tools"] for record in records)


def test_a_template_that_needs_tools_builds_its_prompts_and_claims_nothing_it_opens(tmp_path: Path) -> None:
    """Hermes-style templates raise without `tools`: the probe of what the generation prompt opens cannot run
    there, so nothing is claimed, and the prompts still build (before: the probe's error stopped the build)."""
    template = tmp_path / "needs_tools.jinja"
    template.write_text(
        "{% if not tools %}{{ raise_exception('tools required') }}{% endif %}<|im_start|>system\n{% for t in tools %}"
        "{{ t | tojson }}{% endfor %}<|im_end|>\n{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}
    result = ftdata.prepare([{"prompt": [{"role": "user", "content": "2+2?"}], "tools": [tool], "answer": "4"}], chat_template=str(template))
    (row,) = _rows(result)
    assert result.report.prompt_opens == {} and json.loads(row["tools"]) == [tool]
    assert load_tokenizer(None).decode(row["prompt_ids"]).endswith("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")
