"""build_sft_dataset end to end: literal labels, real files, splits, packing, padding, rejects, cache."""

from __future__ import annotations

import json
import warnings

import pytest
from support import DATASETS, SHARED, tokenizer, trained_text
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ftdata import ConfigError, FtdataError, RecordError, build_sft_dataset, prepare
from ftdata.errors import Location
from ftdata.records.formats import to_examples
from ftdata.options import DataOptions
from ftdata.run.stage import Stage
from ftdata.chat.prompt_templates import builtin_names

P = -100
ALPACA = DATASETS / "alpaca" / "llamafactory_alpaca_en_demo.json"


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_literal_labels_prompt_template(char_tok):
    ds = build_sft_dataset([{"instruction": "Hi", "output": "Yo"}], tokenizer=char_tok, template="question-answer")
    row = ds[0]
    prompt = "### Question:\nHi\n\n### Answer:\n"
    assert row["input_ids"] == [char_tok.bos_token_id, *ids(char_tok, prompt), *ids(char_tok, "Yo"), char_tok.eos_token_id]
    assert row["labels"] == [P] * (1 + len(prompt)) + [*ids(char_tok, "Yo"), char_tok.eos_token_id]
    assert row["attention_mask"] == [1] * len(row["input_ids"])


def test_literal_labels_chat_template(char_tok):
    ds = build_sft_dataset([{"instruction": "hi", "output": "yo"}], tokenizer=char_tok)
    row = ds[0]
    text = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
    assert char_tok.decode(row["input_ids"]) == "<s>" + text
    assert trained_text(char_tok, row) == "yo<|im_end|>"
    assert row["labels"][-3:] == [*ids(char_tok, "o"), char_tok.convert_tokens_to_ids("<|im_end|>"), P]


@pytest.mark.parametrize("template", [None, "alpaca"])
def test_real_alpaca_file_trains_exactly_each_response(smol, template):
    records = json.loads(ALPACA.read_text())[:60]
    ds = build_sft_dataset(ALPACA, tokenizer=smol, template=template, max_length=4096, limit=60)
    assert len(ds) == 60
    eot = "<|im_end|>"  # SmolLM2's EOS and its chat template's end-of-turn marker
    for record, row in zip(records, ds):
        assert trained_text(smol, row) == record["output"] + eot
        first = row["labels"].index(next(label for label in row["labels"] if label != P))
        assert all(label == P for label in row["labels"][:first])


def test_no_double_bos_and_exactly_one_for_prompt_templates():
    llama = tokenizer("llama-3-8b-instruct")
    bos = llama.bos_token_id
    chat = build_sft_dataset([{"instruction": "hi", "output": "yo"}], tokenizer=llama)[0]["input_ids"]
    prompt = build_sft_dataset([{"instruction": "hi", "output": "yo"}], tokenizer=llama, template="alpaca")[0]["input_ids"]
    assert chat.count(bos) == 1 and chat[0] == bos
    assert prompt.count(bos) == 1 and prompt[0] == bos


def test_split_pack_and_report(smol):
    result = prepare(ALPACA, tokenizer=smol, template="alpaca", max_length=1024, packing=True, test_size=0.2, limit=200)
    dd, report = result.dataset, result.report
    assert set(dd) == {"train", "test"}
    assert report.splits == {"train": len(dd["train"]), "test": len(dd["test"])}
    assert sum(sum(r) for r in dd["test"]["seq_lengths"]) + sum(sum(r) for r in dd["train"]["seq_lengths"]) == report.tokens
    for row in dd["train"]:
        assert len(row["input_ids"]) <= 1024 == 1024
        assert sum(row["seq_lengths"]) == len(row["input_ids"]) == len(row["position_ids"])
    assert report.packing["train"].fill_ratio > 0.9
    assert report.sequences == 200 and report.records == 200


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_to_max_length(char_tok, side):
    ds = build_sft_dataset([{"instruction": "a", "output": "b"}], tokenizer=char_tok, template="question-answer",
                           max_length=40, padding="max_length", padding_side=side)  # fmt: skip
    row = ds[0]
    assert len(row["input_ids"]) == len(row["labels"]) == len(row["attention_mask"]) == 40
    n = sum(row["attention_mask"])
    mask = row["attention_mask"]
    assert mask == ([1] * n + [0] * (40 - n) if side == "right" else [0] * (40 - n) + [1] * n)
    assert all(label == P for label, m in zip(row["labels"], mask) if not m)


def test_rejects_are_counted_written_and_warned(tmp_path, smol):
    path = tmp_path / "rejects.jsonl"
    with pytest.warns(UserWarning, match=r"1400 records -> 1399 sequences, 1 rejected \(1 empty_response\)"):
        ds = build_sft_dataset(DATASETS / "lamini" / "lamini_docs_nested.jsonl", tokenizer=smol,
                               template="question-answer", rejects_path=str(path))  # fmt: skip
    assert len(ds) == 1399
    (reject,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert reject["location"].endswith("lamini_docs_nested.jsonl:951")
    assert (reject["stage"], reject["code"]) == ("format", "empty_response") and "empty response" in reject["reason"]


def test_truncation_rejects_and_cuts_are_reported(char_tok):
    data = [{"instruction": "q" * 5, "output": "a" * 100}, {"instruction": "q" * 100, "output": "a" * 5}]
    result = prepare(data, tokenizer=char_tok, template="question-answer", max_length=60)
    assert result.report.rejected == {"response_too_long": 1}
    assert result.report.cut == {"prompt_shortened": 1}
    assert len(result.dataset) == 1 and len(result.dataset[0]["input_ids"]) == 60


def test_malformed_records_raise_by_default_and_skip_on_request(char_tok):
    data = [{"instruction": "a", "output": "b"}, {"instruction": "a", "output": None}]
    with pytest.raises(RecordError, match=r"<records>\[1\]: field 'output': is null"):
        build_sft_dataset(data, tokenizer=char_tok)
    result = prepare(data, tokenizer=char_tok, on_error="skip")
    assert len(result.dataset) == 1 and result.report.n_rejected == 1


def test_all_rejected_is_an_error(char_tok):
    with pytest.raises(FtdataError, match=r"every record was rejected \(1 of 1\); first: <records>\[0\]: .*empty response"):
        build_sft_dataset([{"instruction": "a", "output": ""}], tokenizer=char_tok)


def test_unknown_option_lists_valid_ones(char_tok):
    with pytest.raises(FtdataError, match="unknown option\\(s\\) max_len; valid options: .*max_length"):
        build_sft_dataset([{"instruction": "a", "output": "b"}], tokenizer=char_tok, max_len=5)


def test_the_removed_num_proc_option_says_what_replaced_it(char_tok):
    with pytest.raises(FtdataError, match="num_proc was replaced by engine and num_workers: use engine='processes'"):
        build_sft_dataset([{"instruction": "a", "output": "b"}], tokenizer=char_tok, num_proc=2)


def test_cache_reuses_a_build(tmp_path, smol):
    kw = dict(tokenizer=smol, template="alpaca", limit=20, cache_dir=str(tmp_path))
    first = prepare(ALPACA, **kw)
    second = prepare(ALPACA, **kw)
    assert not first.report.cached and second.report.cached
    assert second.dataset["input_ids"] == first.dataset["input_ids"]
    assert prepare(ALPACA, **{**kw, "max_length": 100}).report.cached is False


def test_the_library_decides_what_a_build_to_a_folder_caches(tmp_path, monkeypatch, smol):
    """`ftdata.build(DATA, OUT)` caches as `ftdata build` does (the choice is the library's, not the CLI's):
    an unchanged re-run is a hit from the default cache; cache=False builds and stores nothing."""
    import ftdata

    monkeypatch.setenv("FTDATA_CACHE", str(tmp_path / "cache"))
    kw = dict(tokenizer=smol, template="alpaca", limit=5)
    first, second = (ftdata.build(ALPACA, tmp_path / name, **kw) for name in ("a", "b"))
    assert not first.report.cached and second.report.cached
    assert [p.name for p in (tmp_path / "cache" / "builds").iterdir() if not p.name.startswith(".")] == [first.manifest["fingerprint"]]
    third = ftdata.build(ALPACA, tmp_path / "c", cache=False, **kw)
    assert not third.report.cached and third.dataset["input_ids"] == second.dataset["input_ids"]
    assert len([p for p in (tmp_path / "cache" / "builds").iterdir() if not p.name.startswith(".")]) == 1
    assert not prepare(ALPACA, **kw).report.cached  # in memory: cached only with a cache_dir
    with pytest.raises(ConfigError, match="cache=False and cache_dir='x' conflict: drop one"):
        ftdata.build(ALPACA, tmp_path / "d", cache=False, cache_dir="x", **kw)


def test_the_tokenizer_is_the_one_given_else_the_recipes_else_the_processors(tmp_path):
    from ftdata.build.api import tokenizer_spec
    from ftdata.mix import load_recipe
    from ftdata.options import BuildOptions

    qwen = str(SHARED / "tokenizers" / "qwen2.5-instruct")
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"tokenizer: {qwen}\nsources:\n  - data: {ALPACA}\n")
    recipe = load_recipe(recipe_file)
    processor = tmp_path / "proc"
    processor.mkdir()
    with_processor = BuildOptions(processor=str(processor))
    assert tokenizer_spec("given", with_processor, recipe=recipe) == "given"
    assert tokenizer_spec(None, with_processor, recipe=recipe) == qwen
    assert str(tokenizer_spec(None, with_processor)) == str(processor)
    assert tokenizer_spec(None, BuildOptions()) is None  # the bundled SmolLM2


def test_a_recipe_with_a_code_reader_needs_allow_code(tmp_path):
    import ftdata

    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"sources:\n  - data: {ALPACA}\n    reader: json:loads\n")
    with pytest.raises(ConfigError, match="names Python code .* only with --allow-code"):
        ftdata.build(recipe_file, tokenizer=None)


def test_filter_drops_and_counts(smol):
    result = prepare(DATASETS / "codealpaca" / "code_alpaca_2k.json", tokenizer=smol, template="alpaca",
                     filter="not input", limit=100)  # fmt: skip
    kept_inputs = [r for r in json.loads((DATASETS / "codealpaca" / "code_alpaca_2k.json").read_text())[:100] if not r["input"]]
    assert result.report.filtered == 100 - len(kept_inputs)
    assert len(result.dataset) == len([r for r in kept_inputs if r["output"].strip()])


def test_dataset_is_accepted_by_sft_trainer_as_processed(char_tok, tmp_path):
    pytest.importorskip("trl")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    ds = build_sft_dataset([{"instruction": f"q{i}", "output": f"a{i}"} for i in range(8)], tokenizer=char_tok)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(char_tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))  # fmt: skip
    args = SFTConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to=[],
                     dataset_kwargs={"skip_prepare_dataset": True}, use_cpu=True, logging_steps=1)  # fmt: skip
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=char_tok)
    batch = trainer.data_collator([ds[0], ds[1]])
    assert batch["labels"][0, : len(ds[0]["labels"])].tolist() == ds[0]["labels"]
    assert trainer.train().training_loss > 0


# -- the masking invariant for prompt templates, on real byte-level tokenizers -------------------

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
response = text.filter(lambda s: s.strip())
TOKENIZERS = [None, "llama-3-8b-instruct", "qwen2.5-instruct", "char"]


def _tok(name):
    if name == "char":
        from support import make_char_tokenizer

        return make_char_tokenizer()
    return tokenizer(name)


@settings(max_examples=60, deadline=None)
@given(instruction=text, context=text, output=response, template=st.sampled_from(builtin_names()),
       name=st.sampled_from(TOKENIZERS))  # fmt: skip
def test_trained_tokens_are_exactly_output_plus_eos(instruction, context, output, template, name):
    tok = _tok(name)
    # Some vocabularies cannot represent every codepoint (lossy bytes): that is the tokenizer's limit, not masking's.
    assume(tok.decode(tok(output, add_special_tokens=False)["input_ids"]) == output)
    stage = Stage(tok, DataOptions(template=template))
    (example,) = to_examples({"instruction": instruction, "input": context, "output": output}, Location("h", index=0))
    row = stage.tokenize(example)
    trained = [i for i, label in zip(row.input_ids, row.labels) if label != P]
    assert tok.decode(trained) == output + tok.eos_token
    first = next(i for i, label in enumerate(row.labels) if label != P)
    assert all(label != P for label in row.labels[first:])  # one contiguous response, nothing of the prompt
    assert tok.decode(row.input_ids[row.prefix : first]) + output + tok.eos_token == tok.decode(row.input_ids[row.prefix :])


def test_warnings_off_when_nothing_rejected(char_tok):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_sft_dataset([{"instruction": "a", "output": "b"}], tokenizer=char_tok)


def test_keep_response_cuts_at_the_next_turn_header(char_tok):
    turn = [{"role": "user", "content": "q" * 30}, {"role": "assistant", "content": "a" * 5}]
    convo = {"messages": turn + [{"role": "user", "content": "u"}, {"role": "assistant", "content": "b"}]}
    result = prepare([convo], tokenizer=char_tok, max_length=40)
    text = char_tok.decode(result.dataset[0]["input_ids"])
    assert text == "<s><|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n"
    assert result.report.cut == {"turns_dropped": 1}


def rows_file(dataset, path):
    """The rows of a dataset written to `path` as the Arrow stream file that packing reads."""
    import pyarrow as pa

    from ftdata.run.rows import RowsFile

    with pa.ipc.new_stream(str(path), dataset.data.table.schema) as sink:
        sink.write_table(dataset.data.table)
    return RowsFile(path)


def test_streamed_column_packing_equals_pack_rows(char_tok, tmp_path):
    import datasets

    from ftdata.run.rows import write_packed
    from ftdata.tokens.packing import plan_bins
    from packing_reference import pack_rows

    data = [{"instruction": "q" * i, "output": "a" * (i % 7 + 1)} for i in range(1, 60)]
    plain = build_sft_dataset(data, tokenizer=char_tok, template="question-answer", max_length=64)
    bins = plan_bins([len(x) for x in plain["input_ids"]], max_length=64, seed=7)
    expected = [pack_rows([plain[i] for i in b]) for b in bins]
    stats = write_packed(rows_file(plain, tmp_path / "rows.arrow"), tmp_path / "p.arrow", max_length=64, seed=7, batch_rows=4)  # many batches
    packed = datasets.Dataset.from_file(str(tmp_path / "p.arrow"))
    assert [{k: row[k] for k in expected[0]} for row in packed] == [dict(e) for e in expected]
    assert stats.rows == len(bins) and stats.sequences == len(plain)
    via_api = build_sft_dataset(data, tokenizer=char_tok, template="question-answer", max_length=64, packing=True, seed=7)
    assert via_api["input_ids"] == packed["input_ids"]


def test_packing_through_a_split_matches_packing_the_selected_rows(char_tok, tmp_path):
    import datasets
    import numpy as np

    from ftdata.run.rows import write_packed

    data = [{"instruction": "q" * i, "output": "a" * (i % 5 + 1)} for i in range(1, 30)]
    plain = build_sft_dataset(data, tokenizer=char_tok, template="question-answer", max_length=64)
    rows = np.array([5, 0, 17, 3, 9, 22])
    write_packed(rows_file(plain, tmp_path / "rows.arrow"), tmp_path / "a.arrow", max_length=64, seed=1, rows=rows)
    plain.select(rows.tolist()).to_parquet(tmp_path / "sel.parquet")
    selected = datasets.Dataset.from_parquet(str(tmp_path / "sel.parquet"))
    write_packed(rows_file(selected, tmp_path / "sel.arrow"), tmp_path / "b.arrow", max_length=64, seed=1)
    a, b = (datasets.Dataset.from_file(str(tmp_path / f)) for f in ("a.arrow", "b.arrow"))
    assert a["input_ids"] == b["input_ids"] and a["seq_lengths"] == b["seq_lengths"]
