"""The thinc shim that owns the decoder, its tokenizer and their saved form."""
import logging
from typing import Dict, Optional, cast

import torch
from thinc.api import get_torch_default_device, torch2xp, xp2torch
from thinc.shims import PyTorchGradScaler, PyTorchShim
from thinc.types import FloatsXd
from transformers import PreTrainedTokenizerBase

from .encoder import SpanEncoder
from .loading import (
    BaseModelError,
    add_adapters,
    config_fingerprint,
    finish_tokenizer,
    load_base_config,
    load_base_model,
    load_tokenizer,
    where_to_point,
)
from .serialization import (
    BaseReference,
    SavedTransformer,
    dump_saved_transformer,
    load_saved_transformer,
    tokenizer_from_files,
    tokenizer_to_files,
)
from .settings import LlamaSettings, SettingsError
from .sharing import SharedBase, find_shared_base, register_base, sharing_key

logger = logging.getLogger("spacy_lsllama")


class LlamaShim(PyTorchShim):
    """A PyTorchShim whose model is built lazily from `settings`.

    Nothing is loaded when a config is resolved: `load_pretrained` builds the
    base and fresh adapters for training, `from_bytes` builds the base from its
    reference and attaches saved adapters. Either way the base is placed on
    its device while loading, never moved with `.to()` afterwards.
    """

    def __init__(
        self,
        settings: LlamaSettings,
        *,
        mixed_precision: bool = False,
        grad_scaler: Optional[PyTorchGradScaler] = None,
    ):
        super().__init__(torch.nn.Module(), mixed_precision=mixed_precision, grad_scaler=grad_scaler)
        self.settings = settings
        self.tokenizer: Optional[PreTrainedTokenizerBase] = None
        self.base_reference: Optional[BaseReference] = None
        self._shared_base: Optional[SharedBase] = None

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
        return self.encoder.transformer.config.hidden_size

    def load_pretrained(self) -> None:
        """Load the base and add fresh adapters, for training."""
        if self._mixed_precision and get_torch_default_device().type != "cuda":
            raise SettingsError(
                "mixed_precision = true is thinc's fp16 autocast with gradient scaling, "
                "which needs a CUDA GPU: set it to false on the CPU (dtype = \"bfloat16\" "
                "also lowers memory there)."
            )
        config = load_base_config(self.settings)
        tokenizer = load_tokenizer(self.settings, config)
        self._build(config, tokenizer)

    def _build(self, config, tokenizer: PreTrainedTokenizerBase) -> None:
        device = get_torch_default_device()
        fingerprint = config_fingerprint(config)
        base = self._load_or_share_base(config, fingerprint, device)
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
        )
        self._grad_scaler.to_(device)
        self.tokenizer = tokenizer
        self.base_reference = BaseReference(self.settings.name, self.settings.revision, fingerprint)

    def _load_or_share_base(self, config, fingerprint: str, device: torch.device):
        """Reuse the weights of an identical base another pipeline has loaded
        (see sharing.py); otherwise load it and offer it for sharing."""
        key = sharing_key(self.settings, fingerprint, device)
        if key is None:
            return load_base_model(self.settings, config, device)
        found = find_shared_base(key, self.settings, config)
        if found is not None:
            self._shared_base = found.shared
            return found.model
        base = load_base_model(self.settings, config, device)
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
                settings=self.settings.to_dict(),
                base=self.base_reference,
                tokenizer_files=tokenizer_to_files(tokenizer),
                weights=self.trainable_weights(),
            )
        )

    def from_bytes(self, bytes_data: bytes) -> "LlamaShim":
        saved = load_saved_transformer(bytes_data)
        self.settings = self.settings_for_loading(LlamaSettings.from_dict(saved.settings))
        config = load_base_config(self.settings)
        fingerprint = config_fingerprint(config)
        if fingerprint != saved.base.fingerprint:
            raise BaseModelError(
                f"The base model at {self.settings.name!r} is not the one this pipeline was "
                f"trained on ({saved.base.name!r}, revision {saved.base.revision!r}): their "
                f"configs differ (fingerprint {fingerprint[:12]} != {saved.base.fingerprint[:12]}).\n"
                + where_to_point(saved.base.name)
            )
        tokenizer = finish_tokenizer(tokenizer_from_files(saved.tokenizer_files), self.settings, config)
        self._build(config, tokenizer)
        self._load_trainable_weights(saved.weights)
        return self

    def settings_for_loading(self, saved: LlamaSettings) -> LlamaSettings:
        """The saved settings define the adapters and the attention; where the
        base lives and how it is loaded (dtype, quantization, attention kernel)
        come from the current config, so they can be changed at load time."""
        current = self.settings
        return LlamaSettings(
            name=current.name,
            revision=current.revision,
            tokenizer_config=saved.tokenizer_config,
            lora=saved.lora,
            dtype=current.dtype,
            quantization=current.quantization,
            bidirectional=saved.bidirectional,
            attn_implementation=current.attn_implementation,
            max_length=saved.max_length,
            gradient_checkpointing=current.gradient_checkpointing,
            trust_remote_code=current.trust_remote_code,
            share_base=current.share_base,
        )

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

    def finish_update(self, optimizer) -> None:
        """Update the parameters that received gradients (LoRA adapters, or
        everything under full finetuning).

        A step whose gradients hold NaN or inf (an fp16 overflow, a bad batch)
        is skipped as a whole, so the adapters are never corrupted. thinc's
        optimizers work on NumPy or CuPy arrays, which have no bfloat16, so
        low-precision parameters are updated in float32 and cast back."""
        with_grad = [(name, p) for name, p in self._model.named_parameters() if p.grad is not None]
        finite = all(bool(torch.isfinite(p.grad).all()) for _, p in with_grad)
        if not finite and not self._grad_scaler.found_inf:
            logger.warning("Skipped a LlamaTransformer update: a gradient was NaN or inf.")
        if finite and not self._grad_scaler.found_inf:
            for name, parameter in with_grad:
                data, grad = parameter.data, parameter.grad
                if data.dtype != torch.float32:
                    data, grad = data.float(), grad.float()
                new_data, _ = optimizer(
                    (self.id, name),
                    cast(FloatsXd, torch2xp(data)),
                    cast(FloatsXd, torch2xp(grad)),
                )
                parameter.data = xp2torch(new_data, device=parameter.device).to(parameter.dtype)
        for _, parameter in with_grad:
            parameter.grad = None
        self._grad_scaler.update()

    def to_device(self, device_type: str, device_id: int) -> None:
        if self.settings.quantization is not None and self.is_loaded:
            raise ValueError(
                "A quantized base is placed on its device while loading and cannot be "
                "moved: select the GPU before loading the pipeline (spacy.require_gpu())."
            )
        super().to_device(device_type, device_id)
