"""Which layers of a decoder get LoRA adapters, found from the model.

Layer names differ between families: LLaMA's attention has `q_proj` and
`v_proj`, Phi-3 fuses them into `qkv_proj`, GPT-NeoX into `query_key_value`,
GPT-2 into `c_attn`, a transformers `Conv1D` (a linear layer stored
transposed) that peft adapts like any other. So `lora.target_modules` takes,
besides explicit names:

- null (the default): the family's default targets. peft's per-family
  defaults where peft has them (`q_proj` and `v_proj` on LLaMA, Mistral, Qwen
  and Gemma: the paper's choice; the fused attention projection on GPT-2 and
  GPT-NeoX); for other families `q_proj` and `v_proj` when the blocks have
  both, or else every linear layer of the blocks' attention (Phi-3: `qkv_proj`
  and `o_proj`);
- "all-linear": every linear layer of the decoder blocks (attention and MLP;
  never the embeddings).

The symbols are resolved when the model loads, and a pipeline saves the names
they resolved to, so its adapters load on the same layers whatever later
releases of peft choose.
"""
from dataclasses import replace
from typing import Dict, Optional, Tuple, Union

import torch
from transformers.pytorch_utils import Conv1D

from .families import decoder_layers, text_config
from .defaults import ALL_LINEAR
from .settings import LlamaSettings, SettingsError

TargetSetting = Union[None, str, Tuple[str, ...]]
PAPER_TARGETS = ("q_proj", "v_proj")


def is_adaptable(module: torch.nn.Module) -> bool:
    """A layer peft's LoRA can adapt: linear (bitsandbytes' quantized linear
    layers are subclasses) or transformers' Conv1D (GPT-2)."""
    return isinstance(module, (torch.nn.Linear, Conv1D)) or "Linear" in type(module).__name__


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _names_in_order(modules: Dict[str, torch.nn.Module]) -> Tuple[str, ...]:
    return tuple(dict.fromkeys(_leaf(name) for name, module in modules.items() if is_adaptable(module)))


def model_layer_names(model: torch.nn.Module) -> Tuple[str, ...]:
    """The leaf names of every adaptable layer of the model."""
    return _names_in_order(dict(model.named_modules()))


def block_layer_names(model: torch.nn.Module) -> Tuple[str, ...]:
    """The leaf names of the adaptable layers of the decoder blocks."""
    layers = decoder_layers(model)
    if layers is None:
        raise SettingsError(
            f"Cannot find the decoder blocks of {type(model).__name__} to resolve lora.target_modules: "
            f"list the layers to adapt instead, some of {list(model_layer_names(model))}."
        )
    return _names_in_order(dict(layers.named_modules()))


def attention_layer_names(model: torch.nn.Module) -> Tuple[str, ...]:
    """The leaf names of the adaptable layers of the first block's attention module."""
    layers = decoder_layers(model)
    if layers is None or len(layers) == 0:
        return ()
    attention = [module for module in layers[0].children() if "Attention" in type(module).__name__]
    return _names_in_order(dict(attention[0].named_modules())) if attention else ()


def peft_default_targets(model: torch.nn.Module) -> Optional[Tuple[str, ...]]:
    """peft's default LoRA targets for the model's family, if peft has them."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    config = model.config
    for model_type in (text_config(config).model_type, config.model_type):
        if model_type in DEFAULTS:
            return tuple(DEFAULTS[model_type])
    return None


def family_default_targets(model: torch.nn.Module) -> Tuple[str, ...]:
    """The targets `lora.target_modules = null` stands for (see the module docstring)."""
    in_blocks = set(block_layer_names(model))
    peft_default = peft_default_targets(model)
    if peft_default and set(peft_default) <= in_blocks:
        return peft_default
    if set(PAPER_TARGETS) <= in_blocks:
        return PAPER_TARGETS
    attention = attention_layer_names(model)
    if attention:
        return attention
    raise SettingsError(
        f"{model.config.model_type} has no known default LoRA targets: set lora.target_modules to "
        f'some of its layers {sorted(in_blocks)}, or to "{ALL_LINEAR}".'
    )


def resolve_targets(model: torch.nn.Module, setting: TargetSetting) -> Tuple[str, ...]:
    """The leaf names of the layers to adapt, for `lora.target_modules`:
    null, "all-linear", or names that must be adaptable layers of the model."""
    if setting is None:
        return family_default_targets(model)
    if setting == ALL_LINEAR:
        return block_layer_names(model)
    available = model_layer_names(model)
    missing = [target for target in setting if target not in available]
    if missing:
        raise SettingsError(
            f"lora.target_modules {missing} do not exist in {type(model).__name__}. Its linear layers are: "
            f"{sorted(available)}. Or set target_modules = null for the family's default targets, or "
            f'"{ALL_LINEAR}" for every linear layer of the blocks.'
        )
    return tuple(setting)


def targets_conv1d(model: torch.nn.Module, targets: Tuple[str, ...]) -> bool:
    """Whether the targets are transformers Conv1D layers, whose weights peft
    must read transposed (LoraConfig's fan_in_fan_out)."""
    return any(isinstance(module, Conv1D) and _leaf(name) in targets for name, module in model.named_modules())


def with_resolved_targets(settings: LlamaSettings, model: torch.nn.Module) -> LlamaSettings:
    """`settings` with their LoRA targets resolved to the model's layer names,
    as a pipeline saves them (unchanged under full finetuning)."""
    if settings.lora is None:
        return settings
    targets = resolve_targets(model, settings.lora.target_modules)
    return replace(settings, lora=replace(settings.lora, target_modules=targets))
