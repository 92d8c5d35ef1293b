"""Prompt/reference recovery from built rows: unpacked, packed, padded, trained-from-start."""

from __future__ import annotations

from ftdata.train.samples import end_marker_ids, extract_samples, sequences, split_prompt, strip_end_markers

M = -100


def test_prompt_is_everything_before_the_first_trained_token() -> None:
    assert split_prompt([5, 6, 7, 8, 9], [M, M, 7, 8, M]) == ([5, 6], [7, 8])


def test_reference_is_the_first_trained_run_only() -> None:
    # two assistant turns: the first reply is the reference, the second turn is ignored
    ids = [1, 2, 3, 4, 5, 6, 7, 8]
    labels = [M, M, 3, 4, M, M, 7, 8]
    assert split_prompt(ids, labels) == ([1, 2], [3, 4])


def test_no_prompt_or_nothing_trained_gives_none() -> None:
    assert split_prompt([1, 2, 3], [1, 2, 3]) is None  # train_on_prompt
    assert split_prompt([1, 2, 3], [M, M, M]) is None


def test_right_padding_is_not_part_of_the_reference() -> None:
    assert split_prompt([1, 2, 3, 0, 0], [M, 2, 3, M, M]) == ([1], [2, 3])


def test_packed_rows_split_back_into_sequences() -> None:
    row = {"input_ids": [1, 2, 3, 4, 5], "labels": [M, M, 3, M, 5], "seq_lengths": [3, 2]}
    assert list(sequences(row)) == [([1, 2, 3], [M, M, 3]), ([4, 5], [M, 5])]
    samples, skipped = extract_samples([row])
    assert [(s.row, s.sequence, s.prompt_ids, s.reference_ids) for s in samples] == [
        (0, 0, (1, 2), (3,)),
        (0, 1, (4,), (5,)),
    ]
    assert skipped == 0


def test_limit_and_skipped_count() -> None:
    rows = [
        {"input_ids": [1, 2], "labels": [1, 2]},  # no prompt: skipped
        {"input_ids": [1, 2, 3], "labels": [M, 2, 3]},
        {"input_ids": [4, 5, 6], "labels": [M, 5, 6]},
    ]
    samples, skipped = extract_samples(rows, limit=1)
    assert len(samples) == 1 and samples[0].row == 1 and skipped == 1


def test_end_markers_are_stripped_and_collected() -> None:
    special = {0, 2}
    assert strip_end_markers([7, 8, 2], special) == [7, 8]
    assert strip_end_markers([7, 8], special) == [7, 8]
    samples, _ = extract_samples([{"input_ids": [1, 7, 2], "labels": [M, 7, 2]}])
    assert end_marker_ids(samples, special) == {2}


def test_real_tokenizer_reference_text(smol_tok, make_row) -> None:
    row = make_row("What do bees make?", "Bees make honey.")
    (sample,), _ = extract_samples([row])
    text = smol_tok.decode(strip_end_markers(sample.reference_ids, set(smol_tok.all_special_ids)))
    assert text == "Bees make honey."
    assert smol_tok.decode(sample.prompt_ids).endswith("<|im_start|>assistant\n")
