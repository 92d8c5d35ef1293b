"""Packed rows on every architecture: layer kinds read from the model, the route, the probe, LoRA targets.

Tiny random-weight models built from transformers' own configs (`families.py`). The default suite runs a
representative set (Gated DeltaNet, Mamba-2, short conv, lightning attention, attention only); the sweep over
every family (`HYBRIDS`) through `ftdata train` is marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from families import ATTENTION, HYBRIDS, save_tiny, tiny_config

from ftdata.errors import ConfigError

torch = pytest.importorskip("torch")


def _model(model_type: str):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config(model_type)).eval()


@pytest.mark.parametrize(
    ("model_type", "state", "kernels"),
    [
        ("qwen3_5_text", {"Qwen3_5GatedDeltaNet": 2}, ("causal-conv1d", "flash-linear-attention")),
        ("nemotron_h", {"NemotronHMamba2Mixer": 1}, ("causal-conv1d", "mamba-ssm")),
        ("lfm2", {"Lfm2ShortConv": 2}, ("causal-conv1d",)),
        ("minimax", {"MiniMaxLightningAttention": 2}, ()),  # declared linear in layer_types: no Conv1d, no seq_idx
        ("llama", {}, ()),
    ],
)
def test_layer_kinds_come_from_the_model(model_type: str, state: dict[str, int], kernels: tuple[str, ...]) -> None:
    from ftdata.train.architecture import Route, inspect_model

    arch = inspect_model(_model(model_type), device="cpu")
    assert {k.name: k.layers for k in arch.state_kinds} == state
    assert arch.kernels == kernels
    assert arch.route is (Route.DOCUMENTS if state else Route.PACKED)
    attention = [k for k in arch.kinds if not k.carries_state]
    assert attention and all("Attention" in k.name for k in attention)


def test_cuda_with_the_kernels_takes_the_packed_route() -> None:
    from ftdata.train.architecture import Architecture, LayerKind, Route

    gdn = LayerKind("Qwen3_5GatedDeltaNet", 3, True, ("causal-conv1d", "flash-linear-attention"))
    both = ("causal-conv1d", "flash-linear-attention")
    assert Architecture("qwen3_5_text", (gdn,), "cuda", both).route is Route.PACKED
    assert Architecture("qwen3_5_text", (gdn,), "cuda", both[:1]).route is Route.DOCUMENTS
    assert Architecture("qwen3_5_text", (gdn,), "cpu", both).route is Route.DOCUMENTS
    # a state layer whose module names no kernel never takes the packed route
    assert Architecture("x", (LayerKind("Lightning", 2, True, ()),), "cuda", both).route is Route.DOCUMENTS


def test_split_documents_cuts_every_per_token_column() -> None:
    from ftdata.train.documents import DocumentsCollator, split_documents

    row = {"input_ids": [1, 2, 3, 4, 5], "labels": [-100, 2, 3, 4, 5], "loss_weights": [0, 1, 1, 1, 0.5],
           "position_ids": [0, 1, 2, 0, 1], "seq_lengths": [3, 2]}  # fmt: skip
    assert split_documents(row) == [
        {"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "loss_weights": [0, 1, 1]},
        {"input_ids": [4, 5], "labels": [-100, 5], "loss_weights": [1, 0.5]},
    ]
    seen = []
    DocumentsCollator(seen.extend)([row, {"input_ids": [7], "labels": [7]}])
    assert [d["input_ids"] for d in seen] == [[1, 2, 3], [4, 5], [7]]


def test_probe_documents_take_at_least_two() -> None:
    from ftdata.train.packing_probe import probe_documents

    assert probe_documents([{"input_ids": [1, 2, 3]}]) == [[1, 2, 3], [1, 2, 3]]
    assert probe_documents([{"input_ids": list(range(10)), "seq_lengths": [4, 6]}], budget=6) == [[0, 1, 2], [4, 5, 6]]


@pytest.mark.parametrize("model_type", ["qwen3_5_text", "nemotron_h", "lfm2", "llama"])
def test_the_probe_passes_on_the_route_taken(model_type: str) -> None:
    from ftdata.train.packing_probe import check_packed_rows

    rows = [{"input_ids": list(range(100, 160)), "seq_lengths": [25, 35]}, {"input_ids": list(range(200, 240))}]
    check = check_packed_rows(_model(model_type), rows, device="cpu", pad_token_id=0)
    probe = check.probe
    assert probe.passed and probe.max_abs_dlogit <= 1e-5 and probe.documents == 3 and probe.tokens == 100
    if model_type == "llama":
        assert probe.packed_leak < 1e-5  # restarting position_ids are enough for attention
    else:
        assert isinstance(probe.packed_leak, float) and probe.packed_leak > 1e-4  # and not for the state layers


def test_the_probe_catches_a_planted_leak() -> None:
    """A layer that mixes state along the row and ignores seq_idx, on a model the layer scan sees as attention only."""
    from ftdata.train.packing_probe import check_packed_rows

    model = _model("llama")

    def leak(module, args, kwargs):  # each position also sees the running mean of the row before it
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        running = hidden.cumsum(1) / torch.arange(1, hidden.shape[1] + 1)[None, :, None]
        kwargs["hidden_states"] = hidden + 1e-3 * running
        return (), kwargs

    model.model.layers[1].register_forward_pre_hook(lambda m, a, k: leak(m, a, k), with_kwargs=True)
    rows = [{"input_ids": list(range(100, 160)), "seq_lengths": [25, 35]}]
    with pytest.raises(ConfigError, match=r"packed rows leak between documents on this model "
                       r"\(llama: LlamaAttention x4\): "
                       r"max \|delta logit\| \S+ > 2e-05 over 2 documents \(60 tokens\), route packed, float32; "
                       r"train on rows built without --packing"):  # fmt: skip
        check_packed_rows(model, rows, device="cpu", pad_token_id=0)


def test_media_models_with_state_layers_refuse_packed_rows() -> None:
    from ftdata.train.packing_probe import check_packed_rows

    with pytest.raises(ConfigError, match=r"packed rows with media cannot be kept apart on qwen3_5_text "
                       r"\(Qwen3_5GatedDeltaNet x2 carry state along the row\): build without --packing"):  # fmt: skip
        check_packed_rows(_model("qwen3_5_text"), [], device="cpu", pad_token_id=0, media=True)


@pytest.mark.parametrize(
    ("model_type", "targets", "left_out"),
    [
        ("nemotron_h", ["down_proj", "in_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
         {"lm_head", "out_proj"}),
        ("qwen3_next", ["down_proj", "gate_proj", "in_proj_ba", "in_proj_qkvz", "k_proj", "o_proj", "out_proj",
                        "q_proj", "shared_expert_gate", "up_proj", "v_proj"], {"lm_head"}),
    ],
)
def test_lora_targets_are_what_peft_accepts(model_type: str, targets: list[str], left_out: set[str]) -> None:
    from peft import LoraConfig, get_peft_model

    from ftdata.train.targets import lora_targets

    model = _model(model_type)
    chosen = lora_targets(model, "all-linear")
    assert list(chosen.modules) == targets and set(chosen.left_out) == left_out and chosen.chosen
    # qwen3_next's fused experts train through lora.ParamWrapper, which needs lora_dropout 0
    assert chosen.parameters == ((("down_proj", "gate_up_proj")) if model_type == "qwen3_next" else ())
    assert chosen.dropout(0.05) == (0.0 if chosen.parameters else 0.05)
    # PEFT takes them (all-linear itself fails on both: out_proj / ParamWrapper with the default dropout)
    get_peft_model(model, LoraConfig(target_modules=targets, lora_dropout=chosen.dropout(0.05), task_type="CAUSAL_LM"))
    assert lora_targets(model, ["q_proj"]).modules == ("q_proj",)


# --- through `ftdata train` -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from train_records import QA

    path = tmp_path_factory.mktemp("qa") / "qa.json"
    path.write_text(json.dumps([{"instruction": q, "input": "", "output": a} for q, a in QA[:6]]), encoding="utf-8")
    return path


def first_step(folder: Path, data: Path, out: Path, *, packing: bool, quantization: str = "none") -> dict:
    """One step over every row in one batch: the run.json of it."""
    from ftdata.train import TrainConfig, train

    cfg = TrainConfig(model=str(folder), data=str(data), max_steps=1, per_device_train_batch_size=16, logging_steps=1,
                      quantization=quantization, output_dir=str(out),
                      data_options={"template": "alpaca", "packing": packing, "max_length": 128})  # fmt: skip
    return json.loads((train(cfg).run_dir / "run.json").read_text(encoding="utf-8"))


def _loss(run: dict) -> float:
    return next(e["loss"] for e in run["log_history"] if "loss" in e)


def _packed_equals_unpacked(model_type: str, root: Path, data: Path) -> dict:
    from ftdata.io.resources import bundled_tokenizer_dir

    folder = save_tiny(model_type, root / model_type, tokenizer_dir=bundled_tokenizer_dir())
    alone = first_step(folder, data, root / "runs", packing=False)
    packed = first_step(folder, data, root / "runs", packing=True)
    assert abs(_loss(packed) - _loss(alone)) <= 1e-6 * _loss(alone)
    assert packed["packing"]["probe"]["passed"] and "packing" not in alone
    assert packed["model"]["lora_targets"]["chosen_from_model"]
    return packed


def test_packed_equals_unpacked_on_a_hybrid_through_train(tmp_path: Path, qa_file: Path) -> None:
    packed = _packed_equals_unpacked("qwen3_5_text", tmp_path, qa_file)
    assert packed["packing"]["route"] == "documents"
    assert [k["name"] for k in packed["packing"]["layer_kinds"]] == ["Qwen3_5GatedDeltaNet", "Qwen3_5Attention"]


@pytest.mark.slow
@pytest.mark.parametrize("model_type", HYBRIDS + ATTENTION)
def test_every_family_packed_equals_unpacked_through_train(model_type: str, tmp_path: Path, qa_file: Path) -> None:
    packed = _packed_equals_unpacked(model_type, tmp_path, qa_file)
    assert packed["packing"]["route"] == ("packed" if model_type in ATTENTION else "documents")


def test_check_packing_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ftdata.cli.app import app
    from ftdata.io.resources import bundled_tokenizer_dir

    folder = save_tiny("lfm2", tmp_path / "lfm2", tokenizer_dir=bundled_tokenizer_dir())
    result = CliRunner().invoke(app, ["check-packing", "--model", str(folder)])
    assert result.exit_code == 1, result.output
    assert "  Lfm2ShortConv x2: carries state along the row; kernels: causal-conv1d\n" in result.stdout
    assert "ftdata train: route documents" in result.stdout and "isolated: no" in result.stdout
    assert "error: packed rows leak between documents on" in result.stderr and len(result.stderr.splitlines()) == 1
