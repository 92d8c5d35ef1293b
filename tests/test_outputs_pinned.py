"""Outputs pinned on the shared datasets: a restructuring of the library changes no row and no reject.

The SFT digests were taken with the code before the build driver and the run loop were
introduced (commit b2ba710), the pair and KTO ones with the code before the task seam (3684b6f) and must not move unless a change means to change outputs;
then say so in the commit and take them again (`python tests/test_outputs_pinned.py`).
Each case: (digest of every split's columns, digest of the rejects file, records, rows).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from support import DATASETS, TOKENIZERS

CASES: dict[str, tuple[str, str | None, dict[str, Any]]] = {
    "alpaca-packed-split": ("alpaca/llamafactory_alpaca_en_demo.json", None, dict(max_length=512, packing=True, test_size=0.1)),
    "glaive-qwen": ("sharegpt/llamafactory_glaive_toolcall_en_demo.json", "qwen2.5-instruct", dict(max_length=1024, on_error="skip")),
    "lamini-nested-qa": ("lamini/lamini_docs_nested.jsonl", None, dict(template="question-answer", max_length=256, truncation="keep_end", on_error="skip")),
    "seed-tasks-split": ("alpaca/stanford_alpaca_seed_tasks.jsonl", None, dict(max_length=128, truncation="split", shuffle=True, on_error="skip")),
    "sharegpt-last": ("sharegpt/fastchat_dummy_conversation.json", None, dict(mask="last_assistant", max_length=256, padding="max_length", on_error="skip")),
    # Preference pairs and KTO rows (the task seam: pinned with the code before it, commit 3684b6f)
    "dpo-pairs-split": ("preference/llamafactory_dpo_en_demo.json", "qwen2.5-instruct", dict(max_length=512, test_size=0.1, on_error="skip")),
    "dpo-v1-cut": ("preference/llamafactory_v1_dpo_demo.jsonl", None, dict(max_length=256, on_error="skip")),
    "kto-rows": ("preference/llamafactory_kto_en_demo.json", None, dict(task="kto", max_length=512, on_error="skip")),
}  # fmt: skip

pytestmark = pytest.mark.skipif(not DATASETS.is_dir(), reason=f"shared datasets not found at {DATASETS}")

PINNED = {
    "alpaca-packed-split": ("0ce29a8820ccc679", "ddb6c11cc4178d62", 999, 375),
    "glaive-qwen": ("c8dce5d91ca381fc", "6340e0b9ee4f6fbe", 300, 299),
    "lamini-nested-qa": ("396c9bc0607bdef7", "8f489b505b4dceaf", 1400, 1399),
    "seed-tasks-split": ("bc758755491fd06d", "8875b66134fcfd86", 175, 139),
    "sharegpt-last": ("1fe5fd5c91ceda98", "e3b0c44298fc1c14", 500, 500),
    "dpo-pairs-split": ("99113f2214e6803d", "180b5b30da75d14d", 300, 206),
    "dpo-v1-cut": ("e81b16505bf37d21", "a0f2a254bf84916d", 10, 6),
    "kto-rows": ("3c73c78f837c6c78", "b7fa1238a9c818ca", 300, 232),
}


def digest(dataset: Any) -> str:
    """SHA-256 (16 hex) of every column of every split but `record`, in row order."""
    import datasets

    h = hashlib.sha256()
    splits = dict(dataset) if isinstance(dataset, datasets.DatasetDict) else {"train": dataset}
    for name in sorted(splits):
        h.update(name.encode())
        for batch in splits[name].iter(batch_size=1024):
            # `record` (each row's source location) names the machine's path to the data: the token columns are pinned
            h.update(json.dumps({c: batch[c] for c in sorted(batch) if c != "record"}, separators=(",", ":")).encode())
    return h.hexdigest()[:16]


def outputs(key: str, tmp: Path) -> tuple[str, str, int, int]:
    import ftdata

    data, tok, options = CASES[key]
    rejects = tmp / "rejects.jsonl"
    result = ftdata.prepare(str(DATASETS / data), tokenizer=str(TOKENIZERS / tok) if tok else None, rejects_path=str(rejects), **options)
    listed = hashlib.sha256(rejects.read_text().replace(str(DATASETS), "DATA").encode()).hexdigest()[:16]
    return digest(result.dataset), listed, result.report.records, result.report.rows


@pytest.mark.parametrize("key", sorted(CASES))
def test_outputs_are_what_they_were(key: str, tmp_path: Path) -> None:
    assert outputs(key, tmp_path) == PINNED[key]


def test_the_cli_build_writes_the_rows_prepare_makes(tmp_path: Path) -> None:
    """`ftdata build -o` goes through the same driver: its parquet rows are the pinned ones."""
    from typer.testing import CliRunner

    import ftdata
    from ftdata.cli.app import app

    data, _, options = CASES["alpaca-packed-split"]
    out = tmp_path / "out"
    args = ["build", str(DATASETS / data), "-o", str(out), "--max-length", "512", "--packing", "--test-size", "0.1",
            "--output-format", "parquet", "--no-cache"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert digest(ftdata.load(out).dataset) == PINNED["alpaca-packed-split"][0]


if __name__ == "__main__":  # print the digests of the code as it is now
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    for name in CASES:
        with tempfile.TemporaryDirectory() as folder:
            print(f'    "{name}": {outputs(name, Path(folder))},')
