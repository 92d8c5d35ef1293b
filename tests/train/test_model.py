"""Model loading: folders, pad token, 4-bit/8-bit on CPU, LoRA targets, parameter counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftdata.errors import ConfigError
from ftdata.train.config import Precision, Quantization, TrainConfig
from ftdata.train.model import (
    add_lora,
    count_parameters,
    load_base_model,
    load_for_training,
    resolve_device,
    resolve_model_path,
    with_pad_token,
)

torch = pytest.importorskip("torch")
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU choices")


@cpu_only
def test_auto_precision_is_fp32_on_cpu() -> None:
    device = resolve_device(Precision.AUTO)
    assert (device.kind, device.precision, device.dtype) == ("cpu", Precision.FP32, torch.float32)
    assert device.describe() == "cpu (fp32)"
    with pytest.raises(ConfigError, match="precision=fp16 needs a CUDA GPU"):
        resolve_device(Precision.FP16)


def test_missing_model_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model '.*nope' does not exist: give a local Hugging Face model folder"):
        resolve_model_path(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="has no config.json"):
        resolve_model_path(str(tmp_path))


def test_pad_token_falls_back_to_eos(smol_tok) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_tok.name_or_path)
    tok.pad_token = None
    assert with_pad_token(tok).pad_token == tok.eos_token == "<|im_end|>"


@cpu_only
@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_bitsandbytes_quantizes_on_cpu(tiny_model_dir: Path, quantization: str) -> None:
    cfg = TrainConfig(model=str(tiny_model_dir), quantization=quantization, lora_r=4)
    loaded = load_for_training(cfg)
    kinds = {type(m).__name__ for m in loaded.model.modules()}
    assert ("Linear4bit" if quantization == "4bit" else "Linear8bitLt") in kinds
    trainable, total = count_parameters(loaded.model)
    assert 0 < trainable < total
    ids = torch.tensor([[1, 2, 3, 4]])
    loss = loaded.model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    lora_grads = [p.grad for n, p in loaded.model.named_parameters() if "lora_B" in n]
    assert lora_grads and all(g is not None for g in lora_grads)


def test_nf4_settings_are_qlora(tiny_model_dir: Path) -> None:
    device = resolve_device(Precision.AUTO)
    model = load_base_model(tiny_model_dir, quantization=Quantization.NF4, device=device, trainable=False)
    q = model.config.quantization_config
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant


def test_lora_targets_must_exist(tiny_model_dir: Path) -> None:
    device = resolve_device(Precision.AUTO)
    model = load_base_model(tiny_model_dir, quantization=Quantization.NONE, device=device, trainable=False)
    cfg = TrainConfig(quantization="none", target_modules="query,value")
    with pytest.raises(ConfigError, match=r"do not match this model .* its linear layers are: down_proj, gate_proj"):
        add_lora(model, cfg)
    with pytest.raises(ConfigError, match="must not include lm_head"):
        add_lora(model, TrainConfig(quantization="none", target_modules="q_proj,lm_head"))


def test_all_linear_skips_the_output_head(tiny_model_dir: Path) -> None:
    loaded = load_for_training(TrainConfig(model=str(tiny_model_dir), quantization="none", lora_r=2))
    adapted = {n.split(".")[-4] for n, _ in loaded.model.named_parameters() if "lora_A" in n}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert loaded.model.config.pad_token_id == loaded.tokenizer.pad_token_id


def test_full_fine_tune_trains_every_weight(tiny_model_dir: Path) -> None:
    loaded = load_for_training(TrainConfig(model=str(tiny_model_dir), quantization="none", lora=False))
    trainable, total = count_parameters(loaded.model)
    assert trainable == total and next(loaded.model.parameters()).dtype == torch.float32


@cpu_only
def test_cpu_4bit_keeps_widths_its_kernel_cannot_reshape_in_the_compute_dtype(tmp_path: Path, smol_tok) -> None:
    """bitsandbytes' CPU 4-bit eval kernel crashes on in_features=32: those layers stay unquantized, with a
    warning naming them; the 64-wide ones are quantized and an eval forward runs."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from ftdata.errors import FtdataWarning

    config = LlamaConfig(vocab_size=len(smol_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    with pytest.warns(FtdataWarning, match=r"4-bit on CPU: 6 linear layers \(gate_proj, k_proj, o_proj, q_proj, up_proj, "
                                           r"v_proj\) have input sizes that are not multiples of 64"):
        model = load_base_model(tmp_path, quantization=Quantization.NF4, device=resolve_device(Precision.AUTO), trainable=False)
    layer = model.model.layers[0]
    assert type(layer.self_attn.q_proj) is torch.nn.Linear and type(layer.mlp.down_proj).__name__ == "Linear4bit"
    with torch.no_grad():
        assert torch.isfinite(model.eval()(input_ids=torch.tensor([[1, 2, 3]])).logits).all()


@cpu_only
def test_an_eval_pass_does_not_cut_the_gradient_of_4bit_layers(tiny_model_dir: Path) -> None:
    """bitsandbytes' CPU eval path repacks 4-bit weights into a kernel without autograd; after an
    eval-loss pass the gradient through frozen layers would be zero. load_for_training prevents it."""
    loaded = load_for_training(TrainConfig(model=str(tiny_model_dir), quantization="4bit", lora_r=4, lora_dropout=0.0))
    model = loaded.model
    ids = torch.tensor([[1, 504, 3226, 314, 253, 2, 77, 88]])

    def first_layer_grad() -> torch.Tensor:
        model.train()
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        return next(p.grad.clone() for n, p in model.named_parameters() if "layers.0.self_attn.q_proj.lora_B" in n)

    before = first_layer_grad()
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)  # what Trainer.evaluate does between training steps
    after = first_layer_grad()
    assert before.abs().sum() > 0
    assert torch.allclose(before, after)
