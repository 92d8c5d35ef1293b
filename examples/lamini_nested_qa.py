"""Seed workflow 3: the nested Lamini Q&A JSONL (pandas `{"question": {"0": text}}` cells).

The nested cells are unwrapped per record; the `### Question/### Answer` template renders
the prompt; the one empty answer in the file is rejected and written to a rejects file.

    python examples/lamini_nested_qa.py [path/to/lamini_docs_nested.jsonl]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from ftdata import load_tokenizer, prepare

DATA = Path(__file__).resolve().parents[2] / "shared/datasets/lamini/lamini_docs_nested.jsonl"


def main(path: Path) -> None:
    tok = load_tokenizer(None)
    rejects = Path(tempfile.mkdtemp()) / "rejects.jsonl"
    result = prepare(path, tokenizer=tok, template="question-answer", max_length=1024, test_size=0.1,
                     rejects_path=str(rejects))  # fmt: skip
    print(result.report.summary())
    for line in rejects.read_text().splitlines():
        print("rejected:", json.loads(line))
    row = result.dataset["train"][0]
    print(tok.decode(row["input_ids"]))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA)
