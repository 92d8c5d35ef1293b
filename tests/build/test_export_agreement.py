"""`ftdata.build.exports.agreement`: a stack's rows against the build's, on literal rows (the stacks themselves:
tests/build/test_exports_stacks.py)."""

from __future__ import annotations

from ftdata.build.exports.agreement import compare_records, compare_rows
from ftdata.build.exports.rows import TokenRow

P = -100
TEXT = {1: "<s>", 2: "Hi", 3: "Yo", 4: "<end>", 5: "\n", 6: "<think>"}


def decode(ids: list[int]) -> str:
    return "".join(TEXT[i] for i in ids)


def test_rows_that_agree_and_rows_that_train_more_or_other_tokens() -> None:
    ours = [TokenRow([1, 2, 3, 4, 5], [P, P, 3, 4, P]), TokenRow([1, 2, 3, 4], [P, P, 3, 4])]
    theirs = [
        {"input_ids": [1, 2, 3, 4, 5], "loss_mask": [0, 0, 1, 1, 1]},  # the newline after <end> trained too
        {"input_ids": [1, 2, 6, 3, 4], "loss_mask": [0, 0, 1, 1, 1]},  # another token in the response
    ]
    result = compare_rows("stack", ours, theirs, decode=decode)
    first, second = result.rows
    assert (first.same_ids, first.same_trained) == (True, False)
    assert first.detail == "1 tokens trained only by the stack ('\\n' x1)"
    parted = "token ids part at 2 of 4 (ftdata) / 5 (stack): ftdata '<s>HiYo<end>' vs stack '<s>Hi<think>Yo<end>'"
    assert not second.same_ids and second.detail == parted
    assert result.summary() | {"mode": "export"} == {
        "stack": "stack", "mode": "export", "rows": 2, "trained_tokens_ftdata": 4, "trained_tokens_stack": 6,
        "rows_differing": 2, "ids_differ": 1, "trained_positions_differ": 1, "refused": 0, "split_records": 0,
    }  # fmt: skip
    same = compare_rows("stack", ours[:1], [{"input_ids": [1, 2, 3, 4, 5], "loss_mask": [0, 0, 1, 1, 0]}])
    assert same.differing == [] and same.rows[0].agrees


def test_a_row_count_that_differs_is_a_disagreement() -> None:
    result = compare_rows("stack", [TokenRow([1, 3], [P, 3])] * 2, [{"input_ids": [1, 3], "loss_mask": [0, 1]}])
    assert [r.detail for r in result.differing] == ["1 rows loaded, 2 exported"]


def test_a_record_the_build_splits_is_compared_with_its_last_row_and_counts_all_its_rows() -> None:
    ours = [
        TokenRow([1, 2, 6, 3, 4], [P, P, 6, 3, 4], record="a.jsonl:1"),  # turn 1 with its think block
        TokenRow([1, 2, 3, 4, 2, 3, 4], [P, P, P, P, P, 3, 4], record="a.jsonl:1"),  # turn 2; turn 1 as history
    ]
    theirs = [{"input_ids": [1, 2, 3, 4, 2, 3, 4], "loss_mask": [0, 0, 1, 1, 0, 1, 1], "refused": None}]
    (row,) = compare_records("verl", ours, theirs, ["a.jsonl:1"], decode=decode).rows
    assert (row.split, row.ours_trained, row.theirs_trained, row.same_ids) == (2, 5, 4, True)
    assert row.detail == (
        "the build trains this record in 2 rows (its template rewrites history); verl trains every turn in one; "
        "2 tokens trained only by the stack ('Yo' x1, '<end>' x1)"
    )
    (missing,) = compare_records("verl", ours, [{"input_ids": [], "loss_mask": []}], ["b.jsonl:9"]).rows
    assert missing.detail == "not in the build" and not missing.agrees
