"""One copy of a frozen base model's weights for every pipeline in a process.

With LoRA the base weights never change (only adapter parameters get
gradients), so an NER pipeline and a textcat pipeline on the same base can use
the very same weight tensors. Each pipeline still gets its own module tree, so
its adapters, attention mode and gradient checkpointing stay its own: the
second tree is built on the meta device, which allocates nothing, and then
adopts the first tree's parameters and buffers.

Bases are shared only when nothing about them can differ: the same resolved
location (absolute folder path, or hub id and revision), the same identity
(config fields and weights, read from the files each time a pipeline loads,
see identity.py), dtype, attention implementation and device, LoRA training
and no quantization; `share_base = false` opts out. So two folders that the
same relative name points to from two working directories never share, and a
folder whose weight files were replaced is loaded again. The registry
holds weak references, so a base is freed when the last pipeline using it goes
away.
"""
import weakref
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from transformers import PretrainedConfig, PreTrainedModel

from .families import decoder_on_meta
from .identity import IdentifiedBase
from .settings import LlamaSettings

SharingKey = Tuple[str, str, Optional[str], str, str, str, str]


class SharedBase:
    """The weight tensors of a loaded base, kept alive by the pipelines using it."""

    def __init__(self, model: PreTrainedModel):
        # The class the first load gave (a Gemma-3 text checkpoint's decoder
        # comes out of its causal LM): every tree on these tensors has it.
        self.model_class = type(model)
        self.parameters: Dict[str, torch.nn.Parameter] = dict(model.named_parameters(remove_duplicate=False))
        self.buffers: Dict[str, torch.Tensor] = dict(model.named_buffers(remove_duplicate=False))


_REGISTRY: "weakref.WeakValueDictionary[SharingKey, SharedBase]" = weakref.WeakValueDictionary()


def sharing_key(
    settings: LlamaSettings, base: IdentifiedBase, device: torch.device
) -> Optional[SharingKey]:
    """The identity of a shareable base, or None when it must not be shared."""
    if not settings.share_base or settings.lora is None or settings.quantization is not None:
        return None
    location = base.location
    return (
        location.kind,
        location.where,
        location.revision,
        base.identity.digest,
        settings.dtype,
        settings.attn_implementation,
        str(device),
    )


@dataclass
class BaseModel:
    model: PreTrainedModel
    shared: SharedBase


def find_shared_base(key: SharingKey, settings: LlamaSettings, config: PretrainedConfig) -> Optional[BaseModel]:
    """A new module tree on the weights of an already loaded base, if any."""
    shared = _REGISTRY.get(key)
    if shared is None:
        return None
    model = decoder_on_meta(
        config,
        shared.model_class,
        torch_dtype=settings.torch_dtype,
        attn_implementation=settings.attn_implementation,
        trust_remote_code=settings.trust_remote_code,
    )
    if model is None:
        return None
    for name, parameter in shared.parameters.items():
        adopt(model, name, parameter, "_parameters")
    for name, buffer in shared.buffers.items():
        adopt(model, name, buffer, "_buffers")
    if any(tensor.is_meta for tensor in [*model.parameters(), *model.buffers()]):
        return None
    model.eval()
    return BaseModel(model, shared)


def register_base(key: SharingKey, model: PreTrainedModel) -> SharedBase:
    shared = SharedBase(model)
    _REGISTRY[key] = shared
    return shared


def adopt(model: torch.nn.Module, qualified_name: str, tensor: torch.Tensor, kind: str) -> None:
    """Make `tensor` the parameter or buffer (`kind`: "_parameters" or
    "_buffers") `qualified_name` of `model`, without a copy."""
    module_name, _, leaf = qualified_name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    getattr(module, kind)[leaf] = tensor


def unshare(model: torch.nn.Module, shared: SharedBase) -> None:
    """Give `model` parameter and buffer objects of its own where it holds
    those of `shared` (still viewing the same memory until moved), so that an
    in-place change of device or dtype (`.to()`) stays in this model instead of
    moving the other pipelines' base away from their adapters."""
    shared_ids = {id(tensor) for tensor in shared.parameters.values()}
    shared_ids |= {id(tensor) for tensor in shared.buffers.values()}
    for module in model.modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is not None and id(parameter) in shared_ids:
                module._parameters[name] = torch.nn.Parameter(parameter.data, requires_grad=parameter.requires_grad)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and id(buffer) in shared_ids:
                module._buffers[name] = buffer.clone()
