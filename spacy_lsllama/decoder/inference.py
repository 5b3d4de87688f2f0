"""The inference form of a decoder: what `nlp(...)` and `nlp.pipe` run.

Training runs the peft model: the frozen base with LoRA layers beside its
linear layers, so every adapted layer does two more matmuls, and autograd
keeps state. Serving needs neither. The inference form is a plain module tree
of the base's own class in which each adapted weight is a new tensor holding
W + scale·B·A (peft's `get_delta_weight`, added in float32), and every other
tensor is the base's own, adopted without a copy. The base is never written
to, so a base shared with other pipelines (sharing.py) never carries this
pipeline's deltas, and training resumes from exactly the adapters it left.

The form is keyed on the shim's count of adapter updates (optimizer steps,
saved adapters loaded) and on the identity, storage and in-place version of
every trainable tensor (edits made outside the shim): any change makes the
next prediction build it again. A
training step drops it, so a training process holds the merged weights only
while it evaluates. It runs under `torch.inference_mode`.

Serving precision (`ServingSettings.precision`), chosen at load time:
- None: the dtype the base was loaded in (`dtype`): the trained weights,
  with answers equal to the training form's within float rounding;
- "float32" or "bfloat16": a copy of the tree in that dtype, merged in
  float32 first. bfloat16 is refused where the device has no native
  bfloat16 arithmetic, where it would be slower than float32.
(int8 weights are not offered: torchao's dynamic int8 layers ran several
times slower than float32 in eager mode on the CPUs measured, and fast only
under torch.compile; see docs/serving.md.)
A bitsandbytes 4- or 8-bit base cannot take the deltas into its quantized
weights: it serves unmerged, as it trains, and takes no serving precision.
"""
import threading
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import torch

from .encoder import SpanEncoder
from .families import decoder_on_meta
from .settings import SettingsError
from .sharing import adopt

PRECISIONS = ("float32", "bfloat16")
ADAPTER = "default"  # the name peft gives the one adapter of a LoRA model


class ServingError(SettingsError):
    """A serving precision that cannot run, or would run slower, here."""


@dataclass(frozen=True)
class ServingSettings:
    """How this process runs a loaded decoder outside training steps. A
    load-time option, never saved with the pipeline.

    precision: None (the base's dtype), "float32" or "bfloat16"."""

    precision: Optional[str] = None

    def __post_init__(self):
        if self.precision is not None and self.precision not in PRECISIONS:
            raise SettingsError(
                f"Unknown serving_precision {self.precision!r}: use null (the base's dtype), "
                f"or one of {PRECISIONS}."
            )


def bfloat16_is_native(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively: a CUDA GPU that says so,
    or a CPU with AVX512-BF16 or AMX (oneDNN's own check)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def check_serving(serving: ServingSettings, device: torch.device, *, quantized: bool) -> None:
    """Refuse, with the fix, a serving precision that cannot run or would be
    slow on `device`; called when the decoder loads."""
    precision = serving.precision
    if precision is None:
        return
    if quantized:
        raise ServingError(
            f'serving_precision = "{precision}" cannot apply to a bitsandbytes-quantized base: its 4- or '
            "8-bit weights cannot take the LoRA deltas, so it serves unmerged in its compute dtype, as it "
            "trains. Set serving_precision = null, or load the adapters on an unquantized base "
            "(quantization = null) to serve them merged in bfloat16."
        )
    if precision == "bfloat16" and not bfloat16_is_native(device):
        raise ServingError(
            f'serving_precision = "bfloat16" would be slower than float32 on this {device.type}, which '
            "has no native bfloat16 arithmetic (a CPU needs AVX512-BF16 or AMX; a GPU, compute "
            "capability 8.0 or newer). Set serving_precision = null there."
        )


def adapter_state(parameters: Tuple[torch.nn.Parameter, ...]) -> Tuple[Tuple[int, int, int], ...]:
    """What an inference form depends on: the identity, storage and in-place
    version of each trainable tensor."""
    return tuple((id(parameter), parameter.data_ptr(), parameter._version) for parameter in parameters)


def _training_tensor(base: torch.nn.Module, qualified_name: str, kind: str) -> torch.Tensor:
    """The tensor behind the inference tree's `qualified_name` in the training
    tree: the base's own, or, for the weight of a LoRA layer, a new tensor
    with the adapter's delta added in float32."""
    module_name, _, leaf = qualified_name.rpartition(".")
    module = base.get_submodule(module_name) if module_name else base
    base_layer = getattr(module, "base_layer", None)
    if base_layer is None:
        return getattr(module, kind)[leaf]
    tensor = getattr(base_layer, kind)[leaf]
    if kind != "_parameters" or leaf != "weight" or ADAPTER not in getattr(module, "lora_A", {}):
        return tensor
    merged = tensor.float() + module.get_delta_weight(ADAPTER).float()
    return torch.nn.Parameter(merged.to(tensor.dtype), requires_grad=False)


def build_inference_tree(
    transformer: torch.nn.Module,
    *,
    precision: Optional[str],
    attn_implementation: Optional[str],
    trust_remote_code: bool,
) -> torch.nn.Module:
    """A plain decoder tree with the LoRA deltas of `transformer` (a peft
    model, or a plain one under full finetuning) merged in."""
    get_base_model = getattr(transformer, "get_base_model", None)
    base = get_base_model() if callable(get_base_model) else transformer
    trained_dtype = base.get_input_embeddings().weight.dtype
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(precision or "", trained_dtype)
    tree = decoder_on_meta(
        base.config,
        type(base),
        torch_dtype=dtype,
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
    )
    if tree is None:
        raise ServingError(f"No inference copy of {type(base).__name__} can be built from its config.")
    with torch.no_grad():
        for name, _ in list(tree.named_parameters(remove_duplicate=False)):
            tensor = _training_tensor(base, name, "_parameters")
            if tensor.is_floating_point() and tensor.dtype != dtype:
                tensor = tensor.to(dtype)
            if tensor.requires_grad or not isinstance(tensor, torch.nn.Parameter):
                # A parameter of its own on the same memory: the training
                # tree's (full finetuning) keeps requires_grad.
                tensor = torch.nn.Parameter(tensor.detach(), requires_grad=False)
            adopt(tree, name, tensor, "_parameters")
        for name, _ in list(tree.named_buffers(remove_duplicate=False)):
            adopt(tree, name, _training_tensor(base, name, "_buffers"), "_buffers")
    tree.eval()
    return tree


class InferenceForm:
    """The inference form of one shim's decoder, built on first use after its
    adapters changed. Threads may predict at once: a form is built under a
    lock and replaced whole, and a thread still holding the previous one
    finishes its batch with it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Optional[Tuple[Any, SpanEncoder]] = None
        # The trainable parameters of the training tree, found once per tree:
        # walking the module tree on every call cost 4 ms a doc on SmolLM2-135M.
        self._watched: Optional[Tuple[torch.nn.Module, Tuple[torch.nn.Parameter, ...]]] = None

    def drop(self) -> None:
        """Forget the form and the tensors it watched (a training step or a
        rebuilt decoder follows): nothing keeps an old tree alive."""
        self._current = None
        self._watched = None

    def encoder(
        self,
        training: SpanEncoder,
        *,
        updates: int,
        serving: ServingSettings,
        attn_implementation: Optional[str],
        trust_remote_code: bool,
    ) -> SpanEncoder:
        """The SpanEncoder to predict with, for the training encoder as it is
        now, after `updates` changes to its adapters."""
        watched = self._watched
        if watched is None or watched[0] is not training.transformer:
            trainable = tuple(parameter for parameter in training.transformer.parameters() if parameter.requires_grad)
            watched = self._watched = (training.transformer, trainable)
        key = (
            updates,
            serving,
            adapter_state(watched[1]),
            training.bidirectional,
            training.max_length,
            training.max_batch_pieces,
        )
        current = self._current
        if current is not None and current[0] == key:
            return current[1]
        with self._lock:
            current = self._current
            if current is not None and current[0] == key:
                return current[1]
            self._current = None  # free the old form before building the new one
            tree = build_inference_tree(
                training.transformer,
                precision=serving.precision,
                attn_implementation=attn_implementation,
                trust_remote_code=trust_remote_code,
            )
            encoder = SpanEncoder(
                tree,
                bidirectional=training.bidirectional,
                max_length=training.max_length,
                max_batch_pieces=training.max_batch_pieces,
            )
            encoder.eval()
            self._current = (key, encoder)
            return encoder
