"""The thinc shim that owns the decoder, its tokenizer and their saved form."""
import threading
from dataclasses import replace
from typing import Any, Callable, Dict, Optional, Tuple, cast

import torch
from thinc.api import ArgsKwargs, Model, get_torch_default_device
from thinc.shims import PyTorchGradScaler, PyTorchShim
from transformers import PreTrainedTokenizerBase

from .defaults import MAX_BATCH_PIECES
from .encoder import SpanEncoder
from .inference import InferenceForm, ServingSettings, check_serving
from .families import attention_implementation
from .identity import IdentifiedBase
from .loading import (
    BaseModelError,
    add_adapters,
    base_reference,
    finish_tokenizer,
    identify_base,
    load_base_config,
    load_base_model,
    load_saved_base_config,
    load_tokenizer,
    trust_at_load_time,
)
from .serialization import (
    BaseReference,
    SavedTransformer,
    dump_saved_transformer,
    load_saved_transformer,
    tokenizer_from_files,
    tokenizer_to_files,
)
from .lora_targets import with_resolved_targets
from .settings import LlamaSettings, SettingsError
from .sharing import SharedBase, find_shared_base, register_base, sharing_key, unshare
from .updates import step_parameters_with_gradients
from .attention_probe import verify_attention

# transformers builds models inside process-wide contexts (patched init
# functions, the meta device for shared bases): two threads building models at
# once corrupt each other's weights and leave the process unable to load any
# model. Every base, shared tree and adapter set is built under this lock.
_BUILDING = threading.RLock()


class LlamaShim(PyTorchShim):
    """A PyTorchShim whose model is built lazily from `settings`.

    Nothing is loaded when a config is resolved: `load_pretrained` builds the
    base and fresh adapters for training, `from_bytes` builds the base from its
    reference and attaches saved adapters. Either way the base is placed on
    its device while loading, never moved with `.to()` afterwards.

    The module stays in eval mode except inside a training step (from
    `begin_update` until its backprop has run), so inference never switches
    modes and threads can share a pipeline. Predictions run the decoder's
    inference form (inference.py: LoRA deltas merged, in the serving
    precision, no autograd), rebuilt whenever the adapters have changed;
    training steps run the peft model itself. Pickling saves the shim as
    `to_bytes` does and rebuilds it on unpickling (worker processes).
    """

    def __init__(
        self,
        settings: LlamaSettings,
        *,
        mixed_precision: bool = False,
        grad_scaler: Optional[PyTorchGradScaler] = None,
        max_batch_pieces: int = MAX_BATCH_PIECES,
        serving: ServingSettings = ServingSettings(),
    ):
        super().__init__(torch.nn.Module(), mixed_precision=mixed_precision, grad_scaler=grad_scaler)
        self.settings = settings
        self.serving = serving
        self._inference = InferenceForm()
        # Changes made to the adapters (optimizer steps, saved weights loaded):
        # an optimizer step replaces a tensor's storage, which the allocator
        # may give back at the same address, so storage alone cannot tell.
        self._adapter_updates = 0
        self.max_batch_pieces = max_batch_pieces
        self.tokenizer: Optional[PreTrainedTokenizerBase] = None
        self.base_reference: Optional[BaseReference] = None
        self._shared_base: Optional[SharedBase] = None
        self._width: Optional[int] = None

    @property
    def is_loaded(self) -> bool:
        return self.tokenizer is not None

    def loaded_tokenizer(self) -> PreTrainedTokenizerBase:
        if self.tokenizer is None:
            raise ValueError(
                "The LlamaTransformer has no model yet: initialize the pipeline "
                "(nlp.initialize() or spacy train) or load a trained one with spacy.load."
            )
        return self.tokenizer

    @property
    def encoder(self) -> SpanEncoder:
        self.loaded_tokenizer()
        return cast(SpanEncoder, self._model)

    @property
    def hidden_size(self) -> int:
        """The width of the vectors the decoder outputs, measured when it was
        loaded: OPT-350m's is narrower than its hidden_size, and multimodal
        configs (Gemma-3 4B) keep hidden_size in their text_config."""
        self.loaded_tokenizer()
        assert self._width is not None
        return self._width

    def load_pretrained(self) -> None:
        """Load the base and add fresh adapters, for training."""
        if self._mixed_precision and get_torch_default_device().type != "cuda":
            raise SettingsError(
                "mixed_precision = true is thinc's fp16 autocast with gradient scaling, "
                "which needs a CUDA GPU: set it to false on the CPU (dtype = \"bfloat16\" "
                "also lowers memory there)."
            )
        if self.settings.lora is None and self.settings.dtype != "float32":
            raise SettingsError(
                f"Full finetuning (lora = null) needs dtype = \"float32\", not {self.settings.dtype!r}: "
                "thinc's optimizer updates the weights in float32 and they would be rounded back "
                f"into {self.settings.dtype}, where small updates vanish (there is no float32 master "
                "copy). Train LoRA adapters (a lora section), which stay float32 on a low-precision "
                "base, or set dtype = \"float32\"."
            )
        found = identify_base(self.settings)
        config = load_base_config(self.settings, found.location)
        tokenizer = load_tokenizer(self.settings, config, found.location)
        self._build(found, config, tokenizer)

    def _build(self, found: IdentifiedBase, config, tokenizer: PreTrainedTokenizerBase) -> None:
        """The one way a decoder is built, for training (`load_pretrained`) and
        for loading (`from_bytes`, which unpickling and `spacy.load` reach):
        from a base located and identified once, its config and tokenizer."""
        with _BUILDING:
            self._build_unlocked(found, config, tokenizer)

    def _build_unlocked(self, found: IdentifiedBase, config, tokenizer: PreTrainedTokenizerBase) -> None:
        device = get_torch_default_device()
        check_serving(self.serving, device, quantized=self.settings.quantization is not None)
        implementation = attention_implementation(self.settings.attn_implementation, config)
        self.settings = replace(self.settings, attn_implementation=implementation)
        self._shared_base = None
        base = self._load_or_share_base(config, found, device)
        # The probe runs on the base through the path every batch takes.
        probe = SpanEncoder(
            base,
            bidirectional=self.settings.bidirectional,
            max_length=tokenizer.model_max_length,
            max_batch_pieces=self.max_batch_pieces,
        )
        self._width = verify_attention(
            base, probe._encode, bidirectional=self.settings.bidirectional, cache_key=self._shared_base
        )
        self.settings = with_resolved_targets(self.settings, base)
        transformer = add_adapters(
            base,
            self.settings.lora,
            quantized=self.settings.quantization is not None,
            gradient_checkpointing=self.settings.gradient_checkpointing,
        )
        self._model = SpanEncoder(
            transformer,
            bidirectional=self.settings.bidirectional,
            max_length=tokenizer.model_max_length,
            max_batch_pieces=self.max_batch_pieces,
        )
        self._model.eval()
        self._inference.drop()
        self._grad_scaler.to_(device)
        self.tokenizer = tokenizer
        self.base_reference = base_reference(self.settings, found, config)

    def _load_or_share_base(self, config, identified: IdentifiedBase, device: torch.device):
        """Reuse the weights of an identical base another pipeline has loaded
        (see sharing.py); otherwise load it and offer it for sharing."""
        key = sharing_key(self.settings, identified, device)
        if key is None:
            return load_base_model(self.settings, config, device, identified.location)
        found = find_shared_base(key, self.settings, config)
        if found is not None:
            self._shared_base = found.shared
            return found.model
        base = load_base_model(self.settings, config, device, identified.location)
        self._shared_base = register_base(key, base)
        return base

    def trainable_weights(self) -> Dict[str, torch.Tensor]:
        return {
            name: parameter
            for name, parameter in self.encoder.transformer.named_parameters()
            if parameter.requires_grad
        }

    def to_bytes(self) -> bytes:
        tokenizer = self.loaded_tokenizer()
        assert self.base_reference is not None
        return dump_saved_transformer(
            SavedTransformer(
                settings=self.settings.saved_form(),
                base=self.base_reference,
                tokenizer_files=tokenizer_to_files(tokenizer),
                weights=self.trainable_weights(),
            )
        )

    def from_bytes(self, bytes_data: bytes) -> "LlamaShim":
        saved = load_saved_transformer(bytes_data)
        # The saved description, loaded as the current config says; remote code
        # runs only where the caller, not the folder, opted in.
        loading = replace(self.settings, trust_remote_code=trust_at_load_time(self.settings))
        self.settings = loading.loaded_as(LlamaSettings.from_dict(saved.settings))
        found, config = load_saved_base_config(self.settings, saved.base)
        tokenizer = finish_tokenizer(tokenizer_from_files(saved.tokenizer_files), self.settings, config)
        self._build(found, config, tokenizer)
        self._load_trainable_weights(saved.weights)
        return self

    def _load_trainable_weights(self, weights: Dict[str, torch.Tensor]) -> None:
        expected = self.trainable_weights()
        missing = sorted(set(expected) - set(weights))
        unexpected = sorted(set(weights) - set(expected))
        if missing or unexpected:
            raise BaseModelError(
                "The saved weights do not fit the model built from the config: "
                f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}. "
                "Were the lora settings changed after training?"
            )
        with torch.no_grad():
            for name, parameter in expected.items():
                saved = weights[name]
                if saved.shape != parameter.shape:
                    raise BaseModelError(
                        f"Saved weight {name} has shape {tuple(saved.shape)}, the model "
                        f"expects {tuple(parameter.shape)}."
                    )
                parameter.copy_(saved.to(device=parameter.device, dtype=parameter.dtype))
        self._adapter_updates += 1

    def inference_encoder(self) -> SpanEncoder:
        """The module predictions run: the inference form of the decoder as
        its adapters are now; the peft model itself on a quantized base."""
        if self.settings.quantization is not None:
            return self.encoder
        return self._inference.encoder(
            self.encoder,
            updates=self._adapter_updates,
            serving=self.serving,
            attn_implementation=self.settings.attn_implementation,
            trust_remote_code=self.settings.trust_remote_code,
        )

    def predict(self, inputs: ArgsKwargs) -> Any:
        """The forward pass of the inference form, without autograd. Unlike
        thinc's PyTorchShim, it does not switch the module to eval and back
        to train around the call: a thread finishing its batch would turn
        dropout on under another thread's forward pass."""
        if self._model.training:  # a training step whose backprop never ran
            self._model.eval()
        encoder = self.inference_encoder()
        no_autograd = torch.no_grad() if encoder is self._model else torch.inference_mode()
        with no_autograd, torch.autocast(device_type="cuda", enabled=self._mixed_precision):
            return encoder(*inputs.args, **inputs.kwargs)

    def begin_update(self, inputs: ArgsKwargs) -> Tuple[Any, Callable]:
        """A training forward pass (dropout on); the module returns to eval
        mode once its backprop has run. The inference form is dropped: the
        step changes the adapters, and training holds one form at a time."""
        self._inference.drop()
        output, backprop = super().begin_update(inputs)

        def backprop_then_eval(d_output: Any) -> Any:
            try:
                return backprop(d_output)
            finally:
                self._model.eval()

        return output, backprop_then_eval

    def finish_update(self, optimizer) -> None:
        """Update the parameters that received gradients (see updates.py)."""
        step_parameters_with_gradients(self._model, optimizer, self.id, self._grad_scaler)
        self._adapter_updates += 1

    def to_device(self, device_type: str, device_id: int) -> None:
        """Move the decoder. A base shared with other pipelines is first
        given tensors of its own: moving shared parameters in place would move
        the other pipelines' base away from their adapters."""
        if self.settings.quantization is not None and self.is_loaded:
            raise ValueError(
                "A quantized base is placed on its device while loading and cannot be "
                "moved: select the GPU before loading the pipeline (spacy.require_gpu())."
            )
        if self._shared_base is not None:
            unshare(self._model, self._shared_base)
            self._shared_base = None
        self._inference.drop()
        super().to_device(device_type, device_id)

    def __getstate__(self) -> Dict[str, Any]:
        """The picklable state: settings and options as they are, the decoder
        in its saved form (adapters, tokenizer, base reference)."""
        state = dict(self.__dict__)
        state["_saved_decoder"] = self.to_bytes() if self.is_loaded else None
        state.update(_model=None, tokenizer=None, base_reference=None, _shared_base=None, _inference=None)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        saved_decoder = state.pop("_saved_decoder")
        self.__dict__.update(state)
        self._model = torch.nn.Module()
        self._inference = InferenceForm()
        if saved_decoder is not None:
            self.from_bytes(saved_decoder)


def find_decoder_shim(model: Model) -> LlamaShim:
    """The LlamaShim inside `model`: a LlamaTransformer, or any model that
    holds one (a component's model after replace_listeners, a merged
    transformer's). Fails, naming the model, when there is none."""
    for node in model.walk():
        for shim in node.shims:
            if isinstance(shim, LlamaShim):
                return shim
    raise SettingsError(
        f"The model {model.name!r} holds no spacy-lsllama decoder: use a "
        "spacy-lsllama.LlamaTransformer model (any version)."
    )
