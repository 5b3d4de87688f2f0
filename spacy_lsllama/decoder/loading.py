"""Loading the base decoder, its tokenizer and its LoRA adapters.

spacy-transformers only forwards `transformer_config` to `AutoConfig`, so it
cannot set dtype, quantization or device placement, and it calls `.to(device)`,
which bitsandbytes' 8-bit models refuse. Here the base is built in its final
dtype, quantized by bitsandbytes while loading and placed on its device at
load time; LoRA adapters are then added with peft.

Where the base is and whether it is the one a saved pipeline was trained on
come from identity.py, checked from the files before transformers reads them
(`load_saved_base_config`). A saved pipeline never makes the loader run code
from the base's repository unless the process opted in (`trust_at_load_time`).
Errors about the base end with the fix for the way it was being loaded: the
training config's `--paths.model`, or `spacy.load`'s config override.
"""
import hashlib
import json
import logging
import os
import warnings
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers import PreTrainedTokenizerBase

from .families import load_decoder, text_config
from .identity import (
    ACCEPT_BASE_ENV,
    BaseIdentityWarning,
    BaseLocation,
    BaseModelError,
    IdentifiedBase,
    accepted_by_caller,
    identity_differences,
    locate_base,
    read_base_identity,
    short_digest,
)
from .lora_targets import resolve_targets, targets_conv1d
from .serialization import BaseReference
from .settings import DTYPES, LlamaSettings, LoraSettings, QuantizationSettings, SettingsError
from ..tokenizers.tokenization import bounded_max_length, prepare_tokenizer

__all__ = ["BaseModelError"]  # defined in identity.py, imported from here by other modules too

TRUST_REMOTE_CODE_ENV = "SPACY_LSLLAMA_TRUST_REMOTE_CODE"


class RemoteCodeIgnoredWarning(UserWarning):
    """A saved pipeline asked for trust_remote_code, and the caller did not opt in."""


class GpuSettingsOnCpuWarning(UserWarning):
    """Settings meant for a GPU (QLoRA compute dtype, fp16, gradient checkpointing) run on the CPU."""


# Hints: how to point at the base, for the way it is being loaded ----------------


def where_to_point(name: str) -> str:
    """The fix for a saved pipeline, loaded with spacy.load."""
    return (
        "Point the pipeline to a local copy of the base model it was trained on, e.g. "
        f'spacy.load(path, config={{"components.transformer.model.name": "/models/{name.split("/")[-1]}"}}), '
        "or set HF_HOME to a Hugging Face cache that holds it."
    )


def where_to_point_for_training(name: str) -> str:
    """The fix for a training config, loaded by nlp.initialize or spacy train."""
    return (
        "Point the training config to a local copy of the base model: the shipped configs read "
        "[components.transformer.model] name from ${paths.model}, so pass e.g. "
        f"`python -m spacy train config.cfg --paths.model /models/{name.split('/')[-1]}` "
        "(in other configs, set [components.transformer.model] name), "
        "or set HF_HOME to a Hugging Face cache that holds it."
    )


def _hint(settings: LlamaSettings, saved: Optional[BaseReference]) -> str:
    return where_to_point_for_training(settings.name) if saved is None else where_to_point(saved.name)


@contextmanager
def _pointing(hint: str) -> Iterator[None]:
    """Add `hint` to a BaseModelError raised inside."""
    try:
        yield
    except BaseModelError as error:
        raise BaseModelError(f"{error}\n{hint}") from error


# Where the base is and what it is ------------------------------------------------


def locate(settings: LlamaSettings, *, saved: Optional[BaseReference] = None) -> BaseLocation:
    """The base's location (see identity.locate_base). A pipeline saved from a
    local folder keeps looking for a folder unless its name is overridden."""
    saved_kind = saved.source if saved is not None and saved.name == settings.name else None
    with _pointing(_hint(settings, saved)):
        return locate_base(settings.name, settings.revision, saved_kind=saved_kind)


def identify_base(settings: LlamaSettings, *, saved: Optional[BaseReference] = None) -> IdentifiedBase:
    """Where the base is and its identity, read from its files (no model code runs)."""
    location = locate(settings, saved=saved)
    with _pointing(_hint(settings, saved)):
        return IdentifiedBase(location, read_base_identity(location))


def base_reference(settings: LlamaSettings, base: IdentifiedBase, config: PretrainedConfig) -> BaseReference:
    """What a saved pipeline records about its base."""
    return BaseReference(
        name=settings.name,
        revision=settings.revision,
        fingerprint=legacy_config_fingerprint(config),
        identity=base.identity,
        source=base.location.kind,
    )


def load_base_config(
    settings: LlamaSettings, location: BaseLocation, *, saved: Optional[BaseReference] = None
) -> PretrainedConfig:
    """The config of the base at `location`, or an error that says where to
    point instead (in a training config, or at spacy.load when `saved` is given)."""
    warn_if_gpu_settings_on_cpu(settings, saved is None)
    try:
        config = AutoConfig.from_pretrained(
            location.where, revision=settings.revision, trust_remote_code=settings.trust_remote_code
        )
    except (OSError, ValueError) as error:
        raise BaseModelError(
            f"Cannot load the base model {settings.name!r}"
            f"{'' if settings.revision is None else f' (revision {settings.revision!r})'}: {error}\n"
            + _hint(settings, saved)
        ) from error
    if getattr(config, "is_encoder_decoder", False):
        raise BaseModelError(
            f"{settings.name!r} is an encoder-decoder model ({config.model_type}); "
            "spacy-lsllama wraps decoder-only models such as LLaMA, Mistral, Qwen or SmolLM."
        )
    return config


def load_saved_base_config(settings: LlamaSettings, saved: BaseReference) -> Tuple[IdentifiedBase, PretrainedConfig]:
    """The base of a saved pipeline, located and identified once, and its
    config, once the base found is known to be the one the pipeline was
    trained on.

    The identity is read from the files before transformers reads the config.
    Under LoRA the weights must match too; under full finetuning (lora = null)
    every weight is in the pipeline, so only the config must."""
    found = identify_base(settings, saved=saved)
    if saved.identity is not None:
        differences = identity_differences(saved.identity, found.identity, weights=settings.lora is not None)
        if differences:
            _accept_or_refuse(found, saved, _not_the_trained_base(found, saved, differences))
    config = load_base_config(settings, found.location, saved=saved)
    if saved.identity is None:
        _check_legacy_fingerprint(settings, found, saved, config)
    return found, config


def _not_the_trained_base(found: IdentifiedBase, saved: BaseReference, differences: List[str]) -> str:
    lines = "\n".join(f"  - {line}" for line in differences)
    return (
        f"The base model at {found.location} is not the one this pipeline was trained on "
        f"({saved.name!r}, revision {saved.revision!r}):\n{lines}"
    )


def _how_to_accept(found: IdentifiedBase) -> str:
    return (
        "To run the adapters on this base deliberately (a copy converted to another dtype, or a "
        f"base you know to be compatible), set the environment variable "
        f"{ACCEPT_BASE_ENV}={short_digest(found.identity)} before loading; saved again, the "
        "pipeline then records this base as its own."
    )


def _accept_or_refuse(found: IdentifiedBase, saved: BaseReference, problem: str) -> None:
    if accepted_by_caller(found.identity):
        warnings.warn(
            f"{problem}\n{ACCEPT_BASE_ENV} accepted it: the adapters run on this base as asked.",
            BaseIdentityWarning,
            stacklevel=4,
        )
        return
    raise BaseModelError(f"{problem}\n{where_to_point(saved.name)}\n{_how_to_accept(found)}")


def _check_legacy_fingerprint(
    settings: LlamaSettings, found: IdentifiedBase, saved: BaseReference, config: PretrainedConfig
) -> None:
    """Pipelines saved by spacy-lsllama 0.1.0 recorded only a hash of
    `config.to_dict()`, which depends on the installed transformers release."""
    if saved.fingerprint == legacy_config_fingerprint(config):
        if settings.lora is not None:
            warnings.warn(
                "This pipeline was saved by an earlier spacy-lsllama, which recorded only a hash of "
                f"its base's config: the weights of the base at {found.location} cannot be checked "
                "against the ones the adapters were trained on. Save the pipeline again "
                "(nlp.to_disk) to record the base's identity.",
                BaseIdentityWarning,
                stacklevel=4,
            )
        return
    problem = (
        f"The base model at {found.location} does not match the config hash that an earlier "
        f"spacy-lsllama recorded for this pipeline ({saved.name!r}, revision {saved.revision!r}). "
        "That hash also depends on the transformers release that saved the pipeline, so a "
        "transformers upgrade alone can cause this."
    )
    _accept_or_refuse(found, saved, problem)


def legacy_config_fingerprint(config: PretrainedConfig) -> str:
    """The config hash spacy-lsllama 0.1.0 saved and checked: every field of
    `config.to_dict()`, defaults of the installed transformers included, minus
    a few volatile ones. Still written, so that 0.1.0 can load newer
    pipelines; checked only for pipelines that have no identity."""
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


# What a pipeline folder can make the loader do ------------------------------------


def remote_code_opted_in(settings: LlamaSettings, environ=os.environ) -> bool:
    """Whether the process opted in to running this base's repository code:
    SPACY_LSLLAMA_TRUST_REMOTE_CODE lists the base's name as configured
    (comma-separated), or is "*"."""
    allowed = {value.strip() for value in environ.get(TRUST_REMOTE_CODE_ENV, "").split(",")}
    return "*" in allowed or settings.name in allowed


def trust_at_load_time(settings: LlamaSettings) -> bool:
    """The trust_remote_code a saved pipeline is loaded with.

    `spacy.load` builds the model from the folder's own config.cfg, so a
    `trust_remote_code = true` there (or in a load-time override, which the
    architecture cannot tell apart from it) is the folder's word, not the
    caller's. Code runs only when the environment, which a folder cannot
    write, also names the base."""
    if not settings.trust_remote_code:
        return False
    if remote_code_opted_in(settings):
        return True
    warnings.warn(
        f"The pipeline's config sets trust_remote_code = true for its base {settings.name!r}; "
        "it is ignored, so no code from the model's repository runs while loading. If you "
        f"trust that code, set the environment variable {TRUST_REMOTE_CODE_ENV}={settings.name} "
        "before loading.",
        RemoteCodeIgnoredWarning,
        stacklevel=3,
    )
    return False


# Settings meant for a GPU ------------------------------------------------------------


def gpu_settings_on_cpu(settings: LlamaSettings, device: torch.device, *, training: bool) -> List[str]:
    """The settings, as written in a config, that only make sense on a GPU,
    when the model is about to run on the CPU."""
    if device.type != "cpu":
        return []
    named = []
    quantization = settings.quantization
    if quantization is not None and quantization.compute_dtype in ("bfloat16", "float16"):
        named.append(f'quantization.compute_dtype = "{quantization.compute_dtype}" ({quantization.bits}-bit base)')
    if training and settings.gradient_checkpointing:
        named.append("gradient_checkpointing = true")
    if settings.dtype == "float16":
        named.append('dtype = "float16"')
    return named


def warn_if_gpu_settings_on_cpu(settings: LlamaSettings, training: bool) -> None:
    from thinc.api import get_torch_default_device

    named = gpu_settings_on_cpu(settings, get_torch_default_device(), training=training)
    if not named:
        return
    if training:
        fix = (
            "Train on a GPU (`python -m spacy train CONFIG --gpu-id 0`), or use a CPU config "
            "(configs/textcat-causal.cfg, configs/ner-bidirectional.cfg, or init-config without --gpu)."
        )
    else:
        fix = "Call spacy.require_gpu() before spacy.load to run it on a GPU."
    warnings.warn(
        f"This LlamaTransformer is configured for a GPU but runs on the CPU: {', '.join(named)}. "
        f"On a CPU that is many times slower (the 7B QLoRA configs would train for days) or "
        f"unsupported. {fix}",
        GpuSettingsOnCpuWarning,
        stacklevel=3,
    )


def load_tokenizer(settings: LlamaSettings, config: PretrainedConfig, location: BaseLocation) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(
        location.where,
        revision=settings.revision,
        trust_remote_code=settings.trust_remote_code,
        **settings.tokenizer_config,
    )
    return finish_tokenizer(tokenizer, settings, config)


def finish_tokenizer(
    tokenizer: PreTrainedTokenizerBase, settings: LlamaSettings, config: PretrainedConfig
) -> PreTrainedTokenizerBase:
    max_positions = getattr(text_config(config), "max_position_embeddings", None) or 2048
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
    settings: LlamaSettings, config: PretrainedConfig, device: torch.device, location: BaseLocation
) -> PreTrainedModel:
    """The base decoder (no LM head) in its final dtype, on its device, every
    weight of it found in the checkpoint (families.load_decoder)."""
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
        model = load_decoder(location.where, **kwargs)
    except BaseModelError:
        raise
    except (OSError, ValueError) as error:
        raise BaseModelError(
            f"Cannot load the weights of the base model {settings.name!r} ({location}): {error}\n"
            "The files may be incomplete: fetch the base model again."
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
        fan_in_fan_out=targets_conv1d(model, tuple(lora.target_modules)),
        bias="none",
    )
    return get_peft_model(model, peft_config)


def check_target_modules(model: torch.nn.Module, lora: LoraSettings) -> None:
    """Fail, naming the model's layers, when a LoRA target is not one of its
    linear (or Conv1D) layers; symbolic targets must be resolved first
    (lora_targets.with_resolved_targets)."""
    resolve_targets(model, lora.target_modules)
