"""Load the model to fine-tune: resolve the folder, pick the dtype, quantize, attach LoRA.

The bundled SmolLM2-135M-Instruct ships as a GGUF file. `transformers` can read it
(`from_pretrained(folder, gguf_file=...)` dequantizes to float32) but takes ~20 s, and the
loaded model carries a GGUF quantization config that blocks `save_pretrained` and
bitsandbytes. So the first use copies the weights into a fresh model built from the same
config and saves that, with the tokenizer, as a plain Hugging Face folder in the ftdata cache
(`bundled_dir()/model`); later loads take about a second.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ftdata.errors import ConfigError
from ftdata.chat.chat_template import load_chat_template
from ftdata.chat.chat_tokens import with_chat_tokens
from ftdata.io.resources import (
    bundled_dir,
    bundled_gguf,
    bundled_tokenizer_dir,
    is_bundled,
    load_tokenizer,
    materialised,
)
from ftdata.train.config import Precision, Quantization, TrainConfig
from ftdata.train.targets import lora_targets

if TYPE_CHECKING:
    from transformers import BitsAndBytesConfig, PreTrainedModel, PreTrainedTokenizerBase

# bitsandbytes warns on import that the optional `kernels` package (a hub download) is missing;
# its built-in CPU kernels are used instead, so the warning is noise for an offline tool.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


@dataclass(frozen=True)
class Device:
    """Where training runs and in which dtype."""

    kind: str  # "cuda" or "cpu"
    index: int  # local process index (the GPU of this process under accelerate launch)
    precision: Precision  # resolved: never AUTO

    @property
    def dtype(self) -> torch.dtype:
        return {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}.get(self.precision, torch.float32)

    def describe(self) -> str:
        """e.g. 'cuda:0 (NVIDIA H100, bf16)' or 'cpu (fp32)'."""
        if self.kind == "cuda":
            return f"cuda:{self.index} ({torch.cuda.get_device_name(self.index)}, {self.precision.value})"
        return f"cpu ({self.precision.value})"


def resolve_device(requested: Precision) -> Device:
    """Pick the device (CUDA when present) and resolve `precision=auto` for it.

    Raises:
        ConfigError: fp16 without a GPU, or bf16 on a GPU that lacks it.
    """
    from ftdata.train.dist import process_state

    index = process_state().local_process_index
    if not torch.cuda.is_available():
        if requested is Precision.FP16:
            raise ConfigError("precision=fp16 needs a CUDA GPU; on CPU use fp32 (or bf16)")
        return Device("cpu", 0, Precision.FP32 if requested is Precision.AUTO else requested)
    bf16_ok = torch.cuda.is_bf16_supported()
    if requested is Precision.BF16 and not bf16_ok:
        raise ConfigError(f"precision=bf16 is not supported by {torch.cuda.get_device_name(index)}; use fp16 or fp32")
    if requested is Precision.AUTO:
        requested = Precision.BF16 if bf16_ok else Precision.FP16
    return Device("cuda", index, requested)


# --- the bundled model -----------------------------------------------------------------------


def bundled_model_dir() -> Path:
    """Materialise the bundled SmolLM2-135M-Instruct once (atomically) and return its folder."""

    def make(folder: Path) -> None:
        from transformers import AutoModelForCausalLM

        gguf = bundled_gguf()
        source = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
        )
        settings = {k: v for k, v in source.config.to_dict().items() if k != "quantization_config"}
        config = type(source.config).from_dict(settings)
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        fresh.load_state_dict(source.state_dict())
        fresh.generation_config = source.generation_config
        fresh.save_pretrained(folder)
        for file in bundled_tokenizer_dir().iterdir():
            shutil.copy2(file, folder / file.name)

    return materialised(bundled_dir() / "model", "config.json", make)


def resolve_model_path(spec: str | None) -> Path:
    """The local folder of `spec`: the bundled model for None/"smollm2", else the given folder.

    Raises:
        ConfigError: the folder does not exist or has no config.json (ftdata never downloads).
    """
    if is_bundled(spec):
        return bundled_model_dir()
    path = Path(str(spec)).expanduser()
    if not (path / "config.json").is_file():
        what = "does not exist" if not path.exists() else "has no config.json"
        raise ConfigError(
            f"model {spec!r} {what}: give a local Hugging Face model folder, or omit --model for the "
            "bundled SmolLM2-135M-Instruct (ftdata never downloads from the hub)"
        )
    return path


# --- loading -----------------------------------------------------------------------------------


def quantization_config(quantization: Quantization, compute_dtype: torch.dtype) -> BitsAndBytesConfig | None:
    """bitsandbytes settings: NF4 + double quantization (QLoRA) for 4bit, LLM.int8() for 8bit.

    Raises:
        ConfigError: bitsandbytes is not installed.
    """
    if quantization is Quantization.NONE:
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"quantization={quantization.value} needs bitsandbytes: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    if quantization is Quantization.INT8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def load_base_model(path: Path, *, quantization: Quantization, device: Device, trainable: bool) -> PreTrainedModel:
    """Load the causal LM at `path`, quantized as asked, on `device`.

    Weights are loaded in the compute dtype, except for a full fine-tune (`trainable=True`),
    which keeps float32 master weights and relies on autocast.

    Raises:
        ConfigError: the folder is not a causal LM, or bitsandbytes cannot quantize here.
    """
    from transformers import AutoModelForCausalLM

    quant = quantization_config(quantization, device.dtype)
    if quant is not None and quantization is Quantization.NF4 and device.kind == "cpu":
        keep = cpu_4bit_unfit(path)
        if keep:
            quant.llm_int8_skip_modules = keep
    dtype = torch.float32 if trainable else device.dtype
    device_map: Any = None
    if device.kind == "cuda":
        device_map = {"": device.index}  # one full copy per process: what accelerate/DDP expects
    elif quant is not None:
        device_map = {"": "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path),
            dtype=dtype,
            quantization_config=quant,
            device_map=device_map,
            local_files_only=True,
            trust_remote_code=False,  # a model folder's own Python code never runs
        )
    except (ImportError, RuntimeError, NotImplementedError) as exc:
        if quant is None:
            raise
        import bitsandbytes

        raise ConfigError(
            f"bitsandbytes {bitsandbytes.__version__} cannot load {path.name} in {quantization.value} on "
            f"{device.kind}: {str(exc).splitlines()[0]}; use --quantization none"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"cannot load {path} as a causal language model: {str(exc).splitlines()[0]}") from None
    if quantization is Quantization.NF4 and device.kind == "cpu":
        check_cpu_4bit_shapes(model)
    return model


def cpu_4bit_unfit(path: Path, block: int = 64) -> list[str]:
    """The linear layers bitsandbytes' CPU 4-bit kernel cannot run (`in_features` not a multiple of `block`; see
    `check_cpu_4bit_shapes`), plus the output head: the layers to keep in the compute dtype. Read from the model
    built on the meta device (no weights). Warns (`FtdataWarning`) naming them; [] when every layer fits.

    Tiny models and a few real projections (Jamba's `dt_proj`, 1/16 of the width) have such widths.
    """
    import warnings

    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from ftdata.errors import FtdataWarning

    try:
        with init_empty_weights():
            meta = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(path), local_files_only=True))
    except (ValueError, OSError, RuntimeError):  # loading reports it in one line
        return []
    head = meta.get_output_embeddings()  # never quantized: not counted, but kept in the skip list
    unfit = [
        n for n, m in meta.named_modules() if isinstance(m, torch.nn.Linear) and m.in_features % block and m is not head
    ]
    if not unfit:
        return []
    kinds = sorted({n.rsplit(".", 1)[-1] for n in unfit})
    warnings.warn(
        f"4-bit on CPU: {len(unfit)} linear layers ({', '.join(kinds)}) have input sizes that are not "
        f"multiples of {block}, which bitsandbytes' CPU kernel needs; they stay in the compute dtype",
        FtdataWarning,
        stacklevel=3,
    )
    return unfit + [n for n, m in meta.named_modules() if head is not None and m is head]


def keep_cpu_4bit_trainable(model: torch.nn.Module) -> int:
    """Switch off bitsandbytes' CPU inference repacking of 4-bit weights; returns the layers changed.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a `Linear4bit` weight in place the
    first time it runs in eval mode without grad (an eval-loss pass) and from then on uses a
    kernel without autograd support: gradients stop flowing through the frozen layers, so
    every LoRA layer below the last ones silently gets a zero gradient. Measured here: the
    layer-0 LoRA gradient is 0.477 (L1) before one eval forward and exactly 0.0 after it.
    """
    changed = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            setattr(module, "support_avx512bf16_for_cpu", False)  # noqa: B010  # not an attribute of nn.Module's type
            changed += 1
    return changed


def check_cpu_4bit_shapes(model: torch.nn.Module, block: int = 64) -> None:
    """bitsandbytes' CPU 4-bit inference kernel (generation, and eval when it is enabled)
    reshapes each layer's quantization scales per 64-wide block of inputs and crashes on
    other widths.

    Raises:
        ConfigError: a 4-bit layer's `in_features` is not a multiple of `block`.
    """
    for name, module in model.named_modules():
        width = getattr(module, "in_features", None)
        if type(module).__name__ == "Linear4bit" and width is not None and width % block:
            import bitsandbytes

            raise ConfigError(
                f"bitsandbytes {bitsandbytes.__version__} 4-bit on CPU needs layer input sizes that are multiples "
                f"of {block}; {name} has in_features={width}: use --quantization 8bit or none (or a GPU)"
            )


def load_model_tokenizer(cfg: TrainConfig, model_path: Path) -> PreTrainedTokenizerBase:
    """The tokenizer named by `cfg.tokenizer`, else the one saved with the model (the run's chat template
    and pad token set)."""
    if cfg.tokenizer is not None:
        tokenizer = load_tokenizer(cfg.tokenizer)
    elif is_bundled(cfg.model):
        tokenizer = load_tokenizer(None)
    else:
        tokenizer = load_tokenizer(str(model_path))
    return with_pad_token(with_run_template(tokenizer, cfg))


def with_run_template(tokenizer: PreTrainedTokenizerBase, cfg: TrainConfig) -> PreTrainedTokenizerBase:
    """`tokenizer` rendering with the run's `chat_template` data option (a copy), else as it is.

    The data is built with that template, and the trainer saves the tokenizer with the adapter (and the
    merged model) as `chat_template.jinja`: `ftdata eval` and inference render what training saw.

    Raises:
        ConfigError: the template file or name cannot be read (`load_chat_template`).
    """
    spec = cfg.data_options.data.chat_template
    return load_chat_template(spec).applied(tokenizer) if spec is not None else tokenizer


def with_pad_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Set `pad_token` to the EOS (else UNK) token when the tokenizer has none.

    Padding positions never carry loss (labels are -100 there), so reusing EOS is safe.

    Raises:
        ConfigError: the tokenizer has neither a pad, an EOS nor an UNK token.
    """
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ConfigError(
                f"tokenizer {tokenizer.name_or_path!r} has no pad, eos or unk token to pad with; add a pad token"
            )
        tokenizer.pad_token = fallback
    return tokenizer


def sync_pad_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Make the model configs agree with the tokenizer's pad token (generation pads with it)."""
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def fit_embeddings(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, first_new: int | None = None
) -> list[int]:
    """Give the model an embedding row for every token of `tokenizer` (`add_chat_tokens` adds some).

    Resizes the input (and untied output) embeddings when the tokenizer outgrew them, and sets
    the rows of the new tokens, ids `first_new..len(tokenizer)-1`, to the mean of the rows before
    them: deterministic, so `ftdata eval` rebuilds the same base before loading the adapter (peft's
    trainable tokens replace those rows with the trained ones). Returns the new token ids.
    `first_new` defaults to the embedding rows before resizing.
    """
    embeddings: Any = model.get_input_embeddings()  # an nn.Embedding (transformers types it as a Module)
    rows = embeddings.weight.shape[0]
    first = rows if first_new is None else first_new
    if len(tokenizer) <= first:
        return []
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        layers: list[Any] = [
            m for m in (embeddings, model.get_output_embeddings()) if m is not None
        ]  # nn.Embedding, nn.Linear
        for layer in {id(m): m for m in layers}.values():
            layer.weight[first : len(tokenizer)] = layer.weight[:first].float().mean(0).to(layer.weight.dtype)
    return list(range(first, len(tokenizer)))


def _embedding_names(model: PreTrainedModel) -> list[str]:
    """Module names of the input embeddings and, when not tied to them, the output head."""
    wanted = [model.get_input_embeddings(), model.get_output_embeddings()]
    if wanted[1] is not None and wanted[1].weight is wanted[0].weight:
        wanted = wanted[:1]
    return [name.rsplit(".", 1)[-1] for w in wanted if w is not None for name, m in model.named_modules() if m is w][
        : len(wanted)
    ]


def add_lora(
    model: PreTrainedModel,
    cfg: TrainConfig,
    *,
    new_tokens: list[int] | None = None,
    targets: list[str] | None = None,
    dropout: float | None = None,
) -> Any:
    """Wrap `model` in a peft LoRA model (after `prepare_model_for_kbit_training` when quantized).

    `targets`: the module names to adapt (`targets.lora_targets`), default `cfg.target_modules`; `dropout`:
    the LoRA dropout (`LoraTargets.dropout`), default `cfg.lora_dropout`.

    `new_tokens` (ids `add_chat_tokens` added): their embedding rows (and output rows of an
    untied head) train too, with peft's `trainable_token_indices` where the installed peft has
    it, else the whole embedding and head modules (`modules_to_save`).

    Raises:
        ConfigError: a target module does not exist, or targets the output head.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    chosen: str | list[str] = cfg.target_modules if targets is None else targets
    if isinstance(chosen, list) and "lm_head" in chosen:
        raise ConfigError(
            "target_modules must not include lm_head: TRL computes the loss from lm_head.weight "
            "directly, so an adapter there would never train"
        )
    if cfg.quantization is not Quantization.NONE:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    extra: dict[str, Any] = {}
    if new_tokens:
        names = _embedding_names(model)
        if "trainable_token_indices" in LoraConfig.__dataclass_fields__:
            extra["trainable_token_indices"] = {name: list(new_tokens) for name in names}
        else:
            extra["modules_to_save"] = names
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout if dropout is None else dropout,
        target_modules=chosen,
        bias="none",
        task_type="CAUSAL_LM",
        **extra,
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if _is_linear(m)} - {"lm_head"})
        raise ConfigError(
            f"target_modules={chosen!r} do not match this model ({str(exc).splitlines()[0]}); "
            f"its linear layers are: {', '.join(names)}"
        ) from None


def _is_linear(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) or type(module).__name__ in {"Linear4bit", "Linear8bitLt"}


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit weights count as their unpacked size."""
    if (counts := getattr(model, "get_nb_trainable_parameters", None)) is not None:  # peft's
        trainable, total = counts()
        return int(trainable), int(total)
    trainable = total = 0
    for param in model.parameters():
        n = param.numel() * (2 if type(param).__name__ == "Params4bit" else 1)
        total += n
        trainable += n if param.requires_grad else 0
    return trainable, total


@dataclass
class LoadedModel:
    """What training needs from the model side."""

    model: Any  # PreTrainedModel or PeftModel
    tokenizer: PreTrainedTokenizerBase
    path: Path
    device: Device
    # Models that read media: the processor, the collator and the trainer's changes (`media_model.MediaTraining`).
    media: Any = None
    new_tokens: list[int] = field(default_factory=list)  # ids `add_chat_tokens` added (their rows train)
    # Packed rows: the model's layer kinds, the route they take and its probe (`packing_probe.check_packed_rows`).
    packing: Any = None
    targets: Any = None  # LoRA: the modules adapted (`targets.LoraTargets`)


def load_for_training(cfg: TrainConfig) -> LoadedModel:
    """Resolve, load, quantize and (unless `lora=False`) LoRA-wrap the causal LM of `cfg`
    (a model that reads media is loaded by `media_model.load_media_for_training`: `run.load_model` chooses)."""
    device = resolve_device(cfg.precision)
    path = resolve_model_path(cfg.model)
    tokenizer = load_model_tokenizer(cfg, path)
    base_tokens = len(tokenizer)
    if cfg.data_options.data.add_chat_tokens:  # the template's markers as tokens: the data is built with them
        tokenizer = with_chat_tokens(tokenizer)
    model = load_base_model(path, quantization=cfg.quantization, device=device, trainable=not cfg.lora)
    new_tokens = fit_embeddings(model, tokenizer, first_new=base_tokens)
    if device.kind == "cpu" and cfg.quantization is Quantization.NF4:
        keep_cpu_4bit_trainable(model)
    sync_pad_token(model, tokenizer)
    if cfg.lora:
        from transformers import set_seed

        # LoRA A matrices are drawn at random: seed first, or two runs with the same config
        # (or a run and its resumed half) start from different adapters.
        set_seed(cfg.seed)
        targets = lora_targets(model, cfg.target_modules)
        model = add_lora(
            model, cfg, new_tokens=new_tokens, targets=list(targets.modules), dropout=targets.dropout(cfg.lora_dropout)
        )
    fit_trl_config(model)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        path=path,
        device=device,
        new_tokens=new_tokens,
        targets=targets if cfg.lora else None,
    )


def fit_trl_config(model: Any) -> None:
    """Give the config the names TRL's fused LM head reads for an MoE's load-balancing loss.

    TRL (`trainer/utils.py` `_fused_forward`, transformers 5) reads `num_experts` from the text config when
    the model returns router logits (SFTTrainer asks for them whenever the config has `output_router_logits`,
    even False); Granite-4-H's config (granitemoehybrid) names the count `num_local_experts`
    only, and TRL stops with an AttributeError. The same number under TRL's name changes nothing else.
    """
    config = getattr(model, "config", None)
    text = getattr(config, "get_text_config", lambda: config)()
    if text is None or not hasattr(text, "output_router_logits") or hasattr(text, "num_experts"):
        return
    if hasattr(text, "num_local_experts"):
        text.num_experts = text.num_local_experts
