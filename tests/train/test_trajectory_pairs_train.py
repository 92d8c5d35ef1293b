"""Multi-turn agent preference pairs train one DPO step and one KTO step (a tiny Qwen2 built from a config, with
Qwen2.5's tokenizer, whose template writes tool calls; CPU, LoRA), the rows' masks reaching TRL's loss: TRL's own
collator would score every completion token, tool results included; `MaskedCompletions` keeps only the assistant
turns. The step-1 `logps/chosen` TRL logs equals the log-probability the model gives the masked tokens, summed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from agent_pairs import terminus
from support import tokenizer

import ftdata
from ftdata.train import TrainConfig, train
from ftdata.train.config import Method

torch = pytest.importorskip("torch")
QWEN = "qwen2.5-instruct"
LOG2 = math.log(2)


def _swapped(record: dict) -> dict:
    return {**record, "chosen": record["rejected"], "rejected": record["chosen"]}


def _pair() -> dict:
    """The Terminus pair with its task statement cut to its first line (700 tokens to 17): a step's cost is its
    tokens times Qwen's 151k-word vocabulary, and what is tested is the turns after the shared prompt."""
    record = terminus()
    first = record["prompt"][0]
    record["prompt"][0] = {**first, "content": first["content"].split("\n")[0]}
    return record


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = tokenizer(QWEN)
    folder = tmp_path_factory.mktemp("tiny-qwen")
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _build(folder: Path, records: list[dict], task: str) -> Path:
    source = folder / "pairs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    ftdata.build(str(source), folder / "built", tokenizer=tokenizer(QWEN), task=task)
    return folder / "built"


def _config(model: Path, data: Path, out: Path, name: str) -> TrainConfig:
    return TrainConfig(
        model=str(model), data=str(data), quantization="none", lora_r=8, lora_alpha=16, max_steps=1,
        learning_rate=5e-3, lr_scheduler_type="constant", warmup_steps=0, per_device_train_batch_size=2,
        logging_steps=1, eval_strategy="no", save_strategy="no", output_dir=str(out), run_name=name,
    )  # fmt: skip


def test_the_collator_scores_the_assistant_turns_only(tmp_path: Path) -> None:
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from ftdata.train.preference import MaskedCompletions

    rows = ftdata.load(_build(tmp_path, [terminus(), _swapped(terminus())], "preference")).dataset.to_list()
    trl = DataCollatorForPreference(pad_token_id=0)
    theirs = trl([dict(r) for r in rows])["completion_mask"]
    ours = MaskedCompletions(trl, Method.DPO)([dict(r) for r in rows])["completion_mask"]
    for half, side in ((0, "chosen"), (1, "rejected")):
        for i, row in enumerate(rows):
            p, mask = len(row["prompt_ids"]), row[f"{side}_mask"]
            got = ours[half * len(rows) + i].tolist()
            assert got == [0] * p + mask + [0] * (len(got) - p - len(mask))
            assert theirs[half * len(rows) + i].sum() == len(mask) > sum(mask)  # TRL alone: the tool results too


def test_a_trajectory_pair_trains_one_dpo_step_on_its_assistant_turns(tmp_path: Path, tiny_qwen: Path) -> None:
    from transformers import AutoModelForCausalLM

    built = _build(tmp_path, [_pair(), _swapped(_pair())], "preference")
    result = train(_config(tiny_qwen, built, tmp_path / "runs", "dpo"))
    m = result.metrics
    assert m["global_step"] == 1 and m["first_loss"] == pytest.approx(LOG2, abs=1e-6)  # policy = reference at step 1
    (step,) = [e for e in json.loads((result.run_dir / "run.json").read_text())["log_history"] if "loss" in e]
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen).eval()
    sums = []
    for row in ftdata.load(built).dataset:  # one batch holds both rows: the logged mean is order-free
        ids = torch.tensor([row["prompt_ids"] + row["chosen_ids"]])
        with torch.no_grad():
            logps = torch.log_softmax(model(ids).logits[0, :-1].float(), -1).gather(1, ids[0, 1:, None])[:, 0]
        trained = torch.tensor([0] * (len(row["prompt_ids"]) - 1) + row["chosen_mask"], dtype=torch.bool)
        sums.append(logps[trained].sum().item())
    assert step["logps/chosen"] == pytest.approx(sum(sums) / len(sums), rel=1e-4)


def test_a_trajectory_pair_unpaired_trains_one_kto_step(tmp_path: Path, tiny_qwen: Path) -> None:
    built = _build(tmp_path, [_pair()], "kto")
    assert ftdata.load(built).dataset["label"] == [True, False]
    result = train(_config(tiny_qwen, built, tmp_path / "runs", "kto"))
    assert result.metrics["global_step"] == 1 and result.metrics["first_loss"] == pytest.approx(0.5, abs=1e-6)
