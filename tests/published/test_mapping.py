"""`--columns FIELD=COLUMN` on data as other projects publish it: applied before detection, on every field, a mapped
column read once, dotted paths into nested fields. Builds on Qwen2.5's tokenizer; the text is checked against
transformers' own `apply_chat_template` of the messages the data means."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import tokenizer, trained_text

import ftdata
from ftdata.errors import ConfigError, FtdataError

DATA = Path(__file__).parent / "data"
QWEN = "qwen2.5-instruct"


def _rows(path: Path, **options) -> list[dict]:
    return ftdata.build(str(path), tokenizer=tokenizer(QWEN), **options).dataset.to_list()


def _oracle(messages: list[dict]) -> str:
    """The template's own rendering of the conversation the data means."""
    return tokenizer(QWEN).apply_chat_template(messages, tokenize=False)


FRANCE = [{"role": "user", "content": "Name the capital of France."}, {"role": "assistant", "content": "The capital of France is Paris."}]


@pytest.mark.parametrize("name, column", [("dialog_openai.jsonl", "dialog"), ("dialog_sharegpt.jsonl", "chat")])
def test_a_chat_column_of_any_name_is_read_through_the_map(name: str, column: str) -> None:
    """`--columns messages=dialog`: detection reads the map (OpenAI or ShareGPT inside); before, 'no instruction field'."""
    (row,) = _rows(DATA / name, columns={"messages": column})
    tok = tokenizer(QWEN)
    assert tok.decode(row["input_ids"]) == _oracle(FRANCE)
    assert trained_text(tok, row) == "The capital of France is Paris.<|im_end|>"


def test_a_mapped_instruction_is_not_read_again_as_the_context() -> None:
    """OpenRLHF's `input_key=input`: `--columns instruction=input` must not also read `input` as the context
    (before: every prompt held the question twice)."""
    rows = _rows(DATA / "openrlhf_sft.jsonl", columns={"instruction": "input"})
    tok = tokenizer(QWEN)
    for row, record in zip(rows, map(json.loads, (DATA / "openrlhf_sft.jsonl").read_text().splitlines())):
        text = tok.decode(row["input_ids"])
        assert text.count(record["input"]) == 1
        assert text == _oracle([{"role": "user", "content": record["input"]}, {"role": "assistant", "content": record["output"]}])


def test_a_mapped_prompt_is_read_once_in_a_prompt_set_and_its_label_is_a_reward_column() -> None:
    rows = _rows(DATA / "openrlhf_prompts.jsonl", columns={"instruction": "input"})
    records = [json.loads(line) for line in (DATA / "openrlhf_prompts.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [[{"role": "user", "content": r["input"]}] for r in records]
    assert [r["label"] for r in rows] == ["72", "10"]
    assert "input" not in rows[0]  # the prompt's column is the prompt, not also a reward column


def test_openrlhf_context_messages_as_the_prompt() -> None:
    """`--columns instruction=context_messages` (OpenRLHF's `--input_key context_messages`): a conversation prompt."""
    (row,) = _rows(DATA / "openrlhf_context_messages.jsonl", columns={"instruction": "context_messages"})
    tok = tokenizer(QWEN)
    messages = json.loads((DATA / "openrlhf_context_messages.jsonl").read_text())["context_messages"]
    assert row["prompt"] == messages and row["label"] == "42"
    assert tok.decode(row["prompt_ids"]) == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_nemotron_input_messages_and_output_text_through_the_map() -> None:
    """Llama-Nemotron post-training: `input` (the conversation before the reply) + `output` (the reply's text) and
    `system_prompt`, mapped: `--columns instruction=input,system=system_prompt`."""
    (row,) = _rows(DATA / "nemotron_post_training.jsonl", columns={"instruction": "input", "system": "system_prompt"})
    tok = tokenizer(QWEN)
    assert tok.decode(row["input_ids"]) == _oracle([{"role": "system", "content": "detailed thinking off"}, *FRANCE])
    assert trained_text(tok, row) == "The capital of France is Paris.<|im_end|>"


def test_a_dotted_path_names_a_nested_field_and_the_struct_stays() -> None:
    rows = _rows(DATA / "verl_gsm8k.jsonl", columns={"answer": "reward_model.ground_truth"})
    assert [r["answer"] for r in rows] == ["72", "10"]
    assert rows[0]["reward_model"] == {"style": "rule", "ground_truth": "72"}


def test_a_mapped_column_that_is_missing_is_a_located_error(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"dialog": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}) + "\n")
    with pytest.raises(FtdataError, match=r"d.jsonl:1.*mapped column 'chat' is missing; columns are dialog"):
        _rows(data, columns={"messages": "chat"})
    with pytest.raises(ConfigError, match=r"column map: instruction is mapped twice \('q' and 'question'\)"):
        _rows(data, columns={"instruction": "q", "question": "question"})


# --- a mapped column is read once -------------------------------------------------------------------------------

# Source names that are other fields' aliases: a map to one of them must leave it to that field alone.
NAMES = ["input", "context", "system", "query", "question", "response", "answer", "solution", "prompt", "completion", "text_a"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.sampled_from(NAMES), min_size=2, max_size=2, unique=True), decoy=st.sampled_from([*NAMES, None]))
def test_a_mapped_column_is_read_once(char_tok, names: list[str], decoy: str | None) -> None:
    """For any two columns mapped to instruction and output (whatever other field their names are an alias of), and
    any other column beside them, the built row holds each mapped value exactly once."""
    source, target = names
    row = {source: "QUESTION-TEXT", target: "ANSWER-TEXT"}
    if decoy is not None and decoy not in row:
        row[decoy] = "DECOY"
    try:
        (built,) = ftdata.build([row], tokenizer=char_tok, columns={"instruction": source, "output": target}, task="sft").dataset.to_list()
    except FtdataError as exc:  # only a decoy that is itself a field the data must not hold (a system beside none) may refuse
        pytest.fail(f"{row}: {exc}")
    text = char_tok.decode(built["input_ids"])
    assert text.count("QUESTION-TEXT") == 1 and text.count("ANSWER-TEXT") == 1, (row, text)
    assert trained_text(char_tok, built) == "ANSWER-TEXT<|im_end|>"


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=st.sampled_from(NAMES), decoy=st.sampled_from([*NAMES, None]))
def test_a_mapped_prompt_is_read_once_and_is_no_reward_column(char_tok, source: str, decoy: str | None) -> None:
    row = {source: "QUESTION-TEXT", "reference": "7"}
    if decoy is not None and decoy not in row:
        row[decoy] = "DECOY"
    if decoy == "prompt" and source != "prompt":  # a column named like the row's own `prompt` that is not the prompt
        with pytest.raises(FtdataError, match=r"field 'prompt'|is a column named like one a prompt set's row holds"):
            ftdata.build([row], tokenizer=char_tok, columns={"instruction": source}, task="prompts")
        return
    (built,) = ftdata.build([row], tokenizer=char_tok, columns={"instruction": source}, task="prompts").dataset.to_list()
    assert char_tok.decode(built["prompt_ids"]).count("QUESTION-TEXT") == 1, (row, built)
    rewards = {k: v for k, v in built.items() if k not in ("prompt", "prompt_ids", "tools")}
    assert source not in rewards and "QUESTION-TEXT" not in json.dumps(rewards), (row, built)
