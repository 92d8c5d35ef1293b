"""How each row layout trains (`ftdata.train.layouts.training`): the `TRAINING` of the train/ module named for it
where it has training code of its own, else TRL's collator as the layout declares it. A layout TRL's collator takes
as it is is one line in `LAYOUTS`: told by its marker, written into a schema, cut into sequences and collated, with
nothing else added; one with a collator of its own adds its module and nothing else."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import pyarrow as pa
import pytest
from support import modules_assigning
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from ftdata.tokens import layouts
from ftdata.tokens.layouts import LAYOUTS, PACKED, PLAIN, POSITIONS, TREE, Layout, layout_of
from ftdata.train.layout_training import LayoutTraining
from ftdata.train.layouts import module_of, training
from ftdata.train.tree import TreeCollator


def test_every_layout_trains_and_only_those_with_code_have_a_module() -> None:
    assert modules_assigning("train", "TRAINING") == {"ftdata.train.tree", "ftdata.train.documents"}
    assert all(training(name).layout is LAYOUTS[name] for name in LAYOUTS)  # each module's TRAINING is its layout's
    assert {module_of(LAYOUTS[name]) for name in LAYOUTS if training(name).collator or training(name).wrap} == modules_assigning("train", "TRAINING")
    assert {name: (training(name).padding_free, training(name).probed) for name in LAYOUTS} == {
        "plain": (False, False),
        "packed": (True, True),
        "tree": (False, False),
        "documents": (False, False),
    }
    assert training(TREE).collator is TreeCollator and training(TREE).no_media == "build with --history inference"
    assert training(PLAIN).collator is None and training(PACKED).no_media is None
    assert training("documents").wrap is not None  # packed rows cut per document, then TRL's collator


def _unmixed(layers: object) -> str | None:
    return None


CHUNKS = Layout("chunks", "chunk_lengths", (POSITIONS, "chunk_lengths"), "chunk_lengths", "chunk", _unmixed)


@pytest.fixture
def one_more_layout(monkeypatch: pytest.MonkeyPatch) -> Layout:
    monkeypatch.setitem(layouts.LAYOUTS, CHUNKS.name, CHUNKS)  # the one line a layout adds to the table
    return CHUNKS


def test_a_layout_added_by_one_line_is_read_from_schema_to_collator(one_more_layout: Layout) -> None:
    row = {"input_ids": [5, 6, 7, 8, 9], "labels": [-100, 6, 7, -100, 9], POSITIONS: [0, 1, 2, 0, 1]}
    row["chunk_lengths"] = [3, 2]
    assert layout_of(row) is one_more_layout
    base = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))])
    assert one_more_layout.schema(base).names == ["input_ids", "labels", POSITIONS, "chunk_lengths"]
    assert list(one_more_layout.sequences(row)) == [([5, 6, 7], [-100, 6, 7]), ([8, 9], [-100, 9])]
    how = training(one_more_layout)
    assert (how.layout, how.padding_free, how.collator, how.wrap) == (one_more_layout, False, None, None)
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=how.padding_free)(
        [{"input_ids": row["input_ids"]}, {"input_ids": [1, 2]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [1, 2, 0, 0, 0]]  # padded rows, as it declares
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]


def test_a_layout_with_a_collator_of_its_own_is_its_line_and_its_module(
    one_more_layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The module `ftdata.train.chunks` (put in place as an import would find it) holds the layout's `TRAINING`:
    nothing else names it, and `training` finds it."""

    def collator(pad_id: int) -> str:
        return f"chunks collator, pad {pad_id}"

    module = types.ModuleType("ftdata.train.chunks")
    module.__spec__ = importlib.machinery.ModuleSpec("ftdata.train.chunks", None)
    module.TRAINING = LayoutTraining(one_more_layout, collator=collator)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ftdata.train.chunks", module)
    how = training("chunks")
    assert how is module.TRAINING and how.collator is not None and how.collator(7) == "chunks collator, pad 7"
    monkeypatch.delitem(sys.modules, "ftdata.train.chunks")
    assert training("chunks").collator is None  # without its module: TRL's collator, as the layout declares
