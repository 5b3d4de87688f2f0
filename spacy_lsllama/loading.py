"""Loading the base decoder, its tokenizer and its LoRA adapters.

spacy-transformers only forwards `transformer_config` to `AutoConfig`, so it
cannot set dtype, quantization or device placement, and it calls `.to(device)`,
which bitsandbytes' 8-bit models refuse. Here the base is built in its final
dtype, quantized by bitsandbytes while loading and placed on its device at
load time; LoRA adapters are then added with peft.
"""
import hashlib
import json
import logging
from typing import Any, Dict, Optional

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers import PreTrainedTokenizerBase

from .settings import DTYPES, LlamaSettings, LoraSettings, QuantizationSettings, SettingsError
from .tokenization import bounded_max_length, prepare_tokenizer


class BaseModelError(OSError):
    """The base model of a pipeline cannot be found or is not the one it was trained on."""


def where_to_point(name: str) -> str:
    return (
        "Point the pipeline to a local copy of the base model, e.g. "
        f'spacy.load(path, config={{"components.transformer.model.name": "/models/{name.split("/")[-1]}"}}), '
        "or set HF_HOME to a Hugging Face cache that holds it."
    )


def load_base_config(settings: LlamaSettings) -> PretrainedConfig:
    """The base model's config, or an error that says where to point instead."""
    try:
        config = AutoConfig.from_pretrained(
            settings.name, revision=settings.revision, trust_remote_code=settings.trust_remote_code
        )
    except (OSError, ValueError) as error:
        raise BaseModelError(
            f"Cannot load the base model {settings.name!r}"
            f"{'' if settings.revision is None else f' (revision {settings.revision!r})'}: {error}\n"
            + where_to_point(settings.name)
        ) from error
    if getattr(config, "is_encoder_decoder", False):
        raise BaseModelError(
            f"{settings.name!r} is an encoder-decoder model ({config.model_type}); "
            "spacy-lsllama wraps decoder-only models such as LLaMA, Mistral, Qwen or SmolLM."
        )
    return config


def config_fingerprint(config: PretrainedConfig) -> str:
    """A hash of the architecture-defining fields of a model config.

    It ignores fields that change with how a model is loaded or saved (path,
    dtype, transformers version, quantization, attention implementation)."""
    volatile = {
        "transformers_version",
        "torch_dtype",
        "quantization_config",
        "attn_implementation",
        "use_cache",
        "architectures",
    }
    fields = {
        key: value
        for key, value in config.to_dict().items()
        if key not in volatile and not key.startswith("_")
    }
    canonical = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode("utf8")).hexdigest()


def load_tokenizer(settings: LlamaSettings, config: PretrainedConfig) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(
        settings.name,
        revision=settings.revision,
        trust_remote_code=settings.trust_remote_code,
        **settings.tokenizer_config,
    )
    return finish_tokenizer(tokenizer, settings, config)


def finish_tokenizer(
    tokenizer: PreTrainedTokenizerBase, settings: LlamaSettings, config: PretrainedConfig
) -> PreTrainedTokenizerBase:
    max_positions = getattr(config, "max_position_embeddings", None) or 2048
    max_length = settings.max_length or bounded_max_length(tokenizer, max_positions)
    return prepare_tokenizer(tokenizer, max_length)


def compute_dtype(settings: LlamaSettings, device: torch.device) -> torch.dtype:
    """The dtype activations are computed in."""
    quantization = settings.quantization
    if quantization is None:
        return settings.torch_dtype
    if quantization.compute_dtype is not None:
        return DTYPES[quantization.compute_dtype]
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def check_bitsandbytes(quantization: QuantizationSettings, device: torch.device) -> None:
    """Fail before any weight is read, with an error that names the
    `quantization` setting, when bitsandbytes cannot quantize on `device`;
    otherwise transformers fails deep inside `from_pretrained` with a message
    that does not say which setting asked for bitsandbytes."""
    setting = f'quantization = "{quantization.bits}bit"'
    try:
        import bitsandbytes
    except Exception as error:  # ImportError, or a RuntimeError from a broken backend
        raise SettingsError(
            f"{setting} needs bitsandbytes, which cannot be imported ({type(error).__name__}: "
            f"{error}). Install it (pip install bitsandbytes) or set quantization = null."
        ) from error
    supported = getattr(bitsandbytes, "supported_torch_devices", {"cuda"})
    if device.type not in supported:
        raise SettingsError(
            f"{setting} cannot run on {device.type}: bitsandbytes "
            f"{getattr(bitsandbytes, '__version__', '')} supports {sorted(supported)}. "
            "Set quantization = null (and a dtype) or use a supported device."
        )
    if device.type == "cuda":
        from bitsandbytes.cextension import ErrorHandlerMockBNBNativeLibrary, lib

        if isinstance(lib, ErrorHandlerMockBNBNativeLibrary):
            raise SettingsError(
                f"{setting} needs bitsandbytes' CUDA library, which failed to load for this "
                "CUDA version (see bitsandbytes' log above). Reinstall bitsandbytes for your "
                "CUDA, or set quantization = null."
            )


def bitsandbytes_config(quantization: QuantizationSettings, dtype: torch.dtype):
    from transformers import BitsAndBytesConfig

    if quantization.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization.quant_type,
        bnb_4bit_use_double_quant=quantization.double_quant,
        bnb_4bit_compute_dtype=dtype,
    )


def load_base_model(
    settings: LlamaSettings, config: PretrainedConfig, device: torch.device
) -> PreTrainedModel:
    """The base decoder (no LM head) in its final dtype, on its device."""
    dtype = compute_dtype(settings, device)
    kwargs: Dict[str, Any] = {
        "config": config,
        "revision": settings.revision,
        "trust_remote_code": settings.trust_remote_code,
        "attn_implementation": settings.attn_implementation,
        "torch_dtype": dtype if settings.quantization else settings.torch_dtype,
    }
    if settings.quantization is not None:
        check_bitsandbytes(settings.quantization, device)
        kwargs["quantization_config"] = bitsandbytes_config(settings.quantization, dtype)
        kwargs["device_map"] = {"": device}
    try:
        model = AutoModel.from_pretrained(settings.name, **kwargs)
    except (OSError, ValueError) as error:
        raise BaseModelError(
            f"Cannot load the weights of the base model {settings.name!r}: {error}\n"
            + where_to_point(settings.name)
        ) from error
    if settings.quantization is None:
        model.to(device)
    else:
        keep_4bit_layers_differentiable(model)
        quiet_8bit_inference_warning()
    return model


def keep_4bit_layers_differentiable(model: torch.nn.Module) -> None:
    """Keep bitsandbytes' 4-bit layers in their training layout on the CPU.

    On CPUs with AVX512-BF16, the first forward pass in eval mode (every
    `nlp(...)`, and every evaluation during `spacy train`) repacks a 4-bit
    weight in place for a fast inference kernel. That kernel has no autograd:
    after it, training silently drops the gradient through every base layer,
    so the adapters below it get wrong gradients. It also rounds the scales to
    bfloat16 (predictions differ from what was trained) and fails on layers
    whose sizes are not multiples of its block sizes. The flag only acts on
    CPU inputs; GPUs are unaffected."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


class _Int8CastNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("MatMul8bitLt: inputs will be cast from")


def quiet_8bit_inference_warning() -> None:
    """Drop bitsandbytes' per-call warning that 8-bit inference casts its
    inputs to float16. After `prepare_model_for_kbit_training` the hidden
    states are float32, so it fires for every 8-bit layer in every batch;
    the cast is how LLM.int8 quantizes activations, not a problem to report."""
    bnb_logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(existing, _Int8CastNotice) for existing in bnb_logger.filters):
        bnb_logger.addFilter(_Int8CastNotice())


def add_adapters(
    model: PreTrainedModel, lora: Optional[LoraSettings], *, quantized: bool, gradient_checkpointing: bool
) -> torch.nn.Module:
    """Freeze the base and add LoRA adapters, or leave everything trainable
    when `lora` is None (full finetuning)."""
    if gradient_checkpointing and not quantized:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora is None:
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    check_target_modules(model, lora)
    if quantized:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
    )
    return get_peft_model(model, peft_config)


def check_target_modules(model: torch.nn.Module, lora: LoraSettings) -> None:
    linear_names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) or "Linear" in type(module).__name__
    }
    missing = [target for target in lora.target_modules if target not in linear_names]
    if missing:
        raise ValueError(
            f"lora.target_modules {missing} do not exist in {type(model).__name__}. "
            f"Its linear layers are: {sorted(linear_names)}."
        )
