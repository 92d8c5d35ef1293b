"""The training tests' small hand-made data, and the rows and builds made of it (the rows with the tokenizer's own
chat template). A module of its own, not conftest.py: `from conftest import ...` finds whichever conftest pytest
imported first (tests/media has one too), so a run of several folders could not import these."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftdata.types import IGNORE_INDEX

# Short, distinct question/answer pairs: a tiny model can learn them in a few dozen steps.
QA = [
    ("What colour is the sky?", "The sky is blue."),
    ("How many legs has a cat?", "A cat has four legs."),
    ("What is two plus two?", "Two plus two is four."),
    ("Name a fruit.", "An apple is a fruit."),
    ("What do bees make?", "Bees make honey."),
    ("Where do fish live?", "Fish live in water."),
    ("What is frozen water?", "Frozen water is ice."),
    ("Which animal barks?", "A dog barks."),
]



def chat_row(tok, question: str, answer: str) -> dict[str, list[int]]:
    """One unpacked row: prompt (chat template + generation prompt) masked, answer + EOS trained."""
    messages = [{"role": "system", "content": "Answer."}, {"role": "user", "content": question}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = prompt_ids + answer_ids
    return {
        "input_ids": ids,
        "attention_mask": [1] * len(ids),
        "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids,
    }


def rows_dataset(tok, pairs=QA, *, repeat: int = 1):
    from datasets import Dataset

    rows = [chat_row(tok, q, a) for q, a in pairs] * repeat
    return Dataset.from_list(rows)


# --- preference data ---------------------------------------------------------------------------
# Pairs whose sides are about as long: the chosen reply right, the rejected one wrong.
PAIRS = [
    ("What colour is the sky?", "Blue.", "Green."),
    ("How many legs has a cat?", "Four.", "Nine."),
    ("What is two plus two?", "Four.", "Five."),
    ("Name a fruit.", "An apple.", "A brick."),
    ("What do bees make?", "Honey.", "Steel."),
    ("Where do fish live?", "In water.", "In sand."),
    ("What is frozen water?", "Ice.", "Soup."),
    ("Which animal barks?", "A dog.", "A fish."),
]


def preference_records(task: str, pairs=PAIRS) -> list[dict]:
    """TRL's conversational preference records (`prompt` messages, `chosen`/`rejected` assistant turns),
    or for KTO its unpaired ones (`prompt`/`completion`/`label`: each pair as a desirable and an
    undesirable row). A short system prompt keeps SmolLM2's default one (20 tokens) out of the rows."""

    def prompt(question: str) -> list[dict]:
        return [{"role": "system", "content": "Answer."}, {"role": "user", "content": question}]

    def reply(text: str) -> list[dict]:
        return [{"role": "assistant", "content": text}]

    if task == "kto":
        return [{"prompt": prompt(q), "completion": reply(text), "label": label}
                for q, good, bad in pairs for text, label in ((good, True), (bad, False))]  # fmt: skip
    return [{"prompt": prompt(q), "chosen": reply(good), "rejected": reply(bad)} for q, good, bad in pairs]


def rule_ids(tok, prompt: list[dict], reply: str) -> tuple[list[int], list[int]]:
    """(prompt_ids, completion_ids) under the rule of DESIGN.md "Preference data", for a ChatML template
    (SmolLM2): the inference prompt tokenized alone; the completion = the reply and `<|im_end|>`,
    tokenized after that prompt (benchmarks/preference_compare.py `exact`, checked on 300/300 pairs)."""
    inference = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    encoded = tok(inference + reply + "<|im_end|>", add_special_tokens=False, return_offsets_mapping=True)
    cut = next(i for i, (start, _) in enumerate(encoded["offset_mapping"]) if start >= len(inference))
    prompt_ids = tok(inference, add_special_tokens=False)["input_ids"]
    assert encoded["input_ids"][:cut] == prompt_ids
    return prompt_ids, encoded["input_ids"][cut:]


def preference_rows(tok, records: list[dict], task: str) -> list[dict]:
    """ftdata's preference rows of `records` (read by ftdata's own preference readers)."""
    from ftdata.errors import Location
    from ftdata.records.preference import to_pairs, to_unpaired

    rows = []
    for i, record in enumerate(records):
        where = Location("records.jsonl", line=i + 1)
        if task == "kto":
            (unpaired,) = to_unpaired(record, where)
            prompt_ids, completion = rule_ids(tok, unpaired.prompt.chat_messages(), unpaired.completion.content)
            rows.append({"prompt_ids": prompt_ids, "completion_ids": completion, "label": unpaired.label})
        else:
            (pair,) = to_pairs(record, where)
            prompt_ids, chosen = rule_ids(tok, pair.prompt.chat_messages(), pair.chosen.content)
            _, rejected = rule_ids(tok, pair.prompt.chat_messages(), pair.rejected.content)
            rows.append({"prompt_ids": prompt_ids, "chosen_ids": chosen, "rejected_ids": rejected})
    return rows


def preference_build(folder: Path, tok, *, task: str, train: list[dict], test: list[dict] | None = None) -> Path:
    """`ftdata build` of preference records into `folder` (`task`: preference or kto): `train` and `test`
    written to one file, the held-out split made by the build (`test_size=len(test)`); the rows are
    checked against the rule (`preference_rows`) before the folder is handed out."""
    import ftdata

    source = folder.parent / f"{folder.name}.jsonl"
    records = train + (test or [])
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    result = ftdata.build(str(source), folder, tokenizer=tok, task=task, test_size=len(test) if test else None)
    expected = {json.dumps(row, sort_keys=True) for row in preference_rows(tok, records, task)}
    splits = result.dataset.values() if hasattr(result.dataset, "values") else [result.dataset]
    built = [{k: row[k] for k in row if k in ("prompt_ids", "chosen_ids", "rejected_ids", "completion_ids", "label")} for ds in splits for row in ds]
    assert {json.dumps(row, sort_keys=True) for row in built} <= expected, "a built row is not the rule's"
    return folder


# --- prompt sets (GRPO) --------------------------------------------------------------------------
# GSM8K-shaped records: a question, and an answer whose last line is "#### <number>".
GSM8K = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", "Tom has 3 + 4 = 7 apples.\n#### 7"),
    ("A box holds 6 eggs. How many eggs are in 2 boxes?", "2 boxes hold 2 * 6 = 12 eggs.\n#### 12"),
    ("Sara reads 5 pages a day. How many pages does she read in 3 days?", "She reads 5 * 3 = 15 pages.\n#### 15"),
    ("A pen costs 2 dollars. How much do 8 pens cost?", "8 pens cost 8 * 2 = 16 dollars.\n#### 16"),
]


def prompt_rows(tok, records=GSM8K, *, system: str = "Answer.") -> list[dict]:
    """Prompt-set rows as a `task: prompts` build writes them: the conversational `prompt` (TRL's format),
    its `prompt_ids` (`apply_chat_template(prompt, add_generation_prompt=True)`), and the record's other
    columns (here GSM8K's `answer`)."""
    rows = []
    for question, answer in records:
        prompt = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        ids = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        rows.append({"prompt": prompt, "prompt_ids": ids, "answer": answer})
    return rows


def prompt_set_build(folder: Path, records=GSM8K, *, system: str = "Answer.", **options: Any) -> Path:
    """A prompt set built by `ftdata.build(..., task="prompts")` from GSM8K-shaped records (the bundled tokenizer,
    `system` as the build's system prompt), into `folder`."""
    import ftdata

    rows = [{"question": question, "answer": answer} for question, answer in records]
    ftdata.build(rows, folder, task="prompts", system_prompt=system, **options)
    return folder
