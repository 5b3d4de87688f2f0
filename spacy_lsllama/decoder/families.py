"""What differs between decoder families, read from the model itself.

transformers loads every decoder family through the same API, but families
differ where the plugin depends on them, and the differences fail silently:

- where the weights are: `AutoModel` on a Gemma-3 text checkpoint (saved as
  `Gemma3ForCausalLM`, whose decoder class has an empty `base_model_prefix`)
  matches none of its weights and returns a randomly initialised model with
  only a logged warning. `load_decoder` checks that every weight was found,
  takes the decoder out of the `*ForCausalLM` class where that is how the
  checkpoint was saved, and otherwise refuses, naming the missing weights;
- which config describes the decoder: multimodal configs (Gemma-3 4B and up)
  keep it in `text_config` (`text_config`);
- where the decoder layers are (`decoder_layers`), for the attention probe of
  verification.py and the LoRA targets of lora_targets.py;
- which attention implementation honours the model's attention: SDPA drops
  Gemma-2's logit soft-capping, which only eager attention applies
  (`attention_implementation`).

No modeling code is copied or patched: everything here goes through
transformers' public loading API and inspects the modules it builds.
"""
import logging
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Sequence

import torch
from transformers import AutoModel, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from .identity import BaseModelError

SHOWN_MISSING = 5


class AttentionFeatureWarning(UserWarning):
    """The chosen attention implementation drops a feature of the model's attention."""


def text_config(config: PretrainedConfig) -> PretrainedConfig:
    """The config of the text decoder: the config itself, or the `text_config`
    of a multimodal model (Gemma-3 4B and up)."""
    return config.get_text_config(decoder=True)


# Which attention implementation ---------------------------------------------------


def soft_capping(config: PretrainedConfig) -> Optional[float]:
    """The attention logit soft-capping the model was trained with (Gemma-2), if any."""
    return getattr(text_config(config), "attn_logit_softcapping", None)


def attention_implementation(setting: Optional[str], config: PretrainedConfig) -> str:
    """The attention implementation to load the model with.

    None (the default) picks SDPA, or eager attention when the model's
    attention uses logit soft-capping, which transformers' SDPA path drops
    (Gemma-2): its hidden states would differ from the model's own. An explicit
    "sdpa" on such a model is kept, with an AttentionFeatureWarning."""
    cap = soft_capping(config)
    if setting is None:
        return "sdpa" if cap is None else "eager"
    if setting == "sdpa" and cap is not None:
        warnings.warn(
            f'attn_implementation = "sdpa" drops the attention logit soft-capping of this '
            f"{config.model_type} model (attn_logit_softcapping = {cap}): only eager attention "
            "applies it, so the hidden states differ from the model's own. Set "
            'attn_implementation = "eager", or leave it unset (null) to get eager here.',
            AttentionFeatureWarning,
            stacklevel=3,
        )
    return setting


# Loading the decoder and checking every weight was found ---------------------------


def decoder_of(causal_lm: PreTrainedModel) -> Optional[PreTrainedModel]:
    """The decoder inside a `*ForCausalLM` model (without its LM head)."""
    get_decoder = getattr(causal_lm, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    if decoder is None:
        decoder = getattr(causal_lm, causal_lm.base_model_prefix, None)
    return decoder if isinstance(decoder, PreTrainedModel) and decoder is not causal_lm else None


def _prefix_of(parent: torch.nn.Module, child: torch.nn.Module) -> Optional[str]:
    return next((name for name, module in parent.named_modules() if module is child and name), None)


def load_decoder(where: str, **kwargs: Any) -> PreTrainedModel:
    """The decoder of the checkpoint at `where`, every weight of it read from
    the checkpoint (kwargs go to `from_pretrained`).

    `AutoModel` first; when it misses weights, the checkpoint's causal LM
    (`AutoModelForCausalLM`) and the decoder inside it. Weights missing from
    both stop loading with a BaseModelError that names them: transformers
    would start them from random values and only log a warning."""
    with _loading_reported_here():
        model, info = AutoModel.from_pretrained(where, output_loading_info=True, **kwargs)
    missing = list(info["missing_keys"])
    if not missing:
        return model
    expected = len(model.state_dict())
    model_class = type(model).__name__
    del model
    decoder = _decoder_of_causal_lm(where, **kwargs)
    if decoder is not None:
        return decoder
    raise BaseModelError(missing_weights_message(where, model_class, missing, expected))


def _decoder_of_causal_lm(where: str, **kwargs: Any) -> Optional[PreTrainedModel]:
    """The decoder of the checkpoint's causal LM, if none of its weights is missing."""
    try:
        with _loading_reported_here():
            causal_lm, info = AutoModelForCausalLM.from_pretrained(where, output_loading_info=True, **kwargs)
    except ValueError:  # the family has no causal LM class
        return None
    decoder = decoder_of(causal_lm)
    if decoder is None:
        return None
    prefix = _prefix_of(causal_lm, decoder)
    missing = [key for key in info["missing_keys"] if prefix is None or key.startswith(prefix + ".")]
    return None if missing else decoder


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextmanager
def _loading_reported_here() -> Iterator[None]:
    """Keep transformers from logging which weights it did not find or use:
    `load_decoder` checks them itself, and a first attempt that misses every
    weight (then loaded through the causal LM) is no problem to report. A
    filter, not the logger's level: transformers runs extra checks (and logs
    their warnings) when that level is raised."""
    logger = logging.getLogger("transformers.modeling_utils")
    errors_only = _ErrorsOnly()
    logger.addFilter(errors_only)
    try:
        yield
    finally:
        logger.removeFilter(errors_only)


def missing_weights_message(where: str, model_class: str, missing: Sequence[str], expected: int) -> str:
    names = sorted(missing)
    more = len(names) - SHOWN_MISSING
    shown = ", ".join(names[:SHOWN_MISSING]) + (f" and {more} more" if more > 0 else "")
    return (
        f"{len(names)} of the {expected} weights of {model_class} were not found in the checkpoint at "
        f"{where}: {shown}. transformers would start them from random values, and the adapters "
        "would train on noise. The folder's config.json and its weight files must be those of one "
        "model: fetch the base model again, or point to the folder of the model the config describes."
    )


def decoder_on_meta(config: PretrainedConfig, model_class: type, **kwargs: Any) -> Optional[PreTrainedModel]:
    """A module tree of `model_class` built from `config` on the meta device
    (no memory), the way `load_decoder` built it: through `AutoModel`, or as
    the decoder of `AutoModelForCausalLM`. None if neither gives that class."""
    with torch.device("meta"):
        model = AutoModel.from_config(config, **kwargs)
        if type(model) is not model_class:
            model = decoder_of(AutoModelForCausalLM.from_config(config, **kwargs))
    return model if type(model) is model_class else None


# The decoder's layers --------------------------------------------------------------


def decoder_layers(model: torch.nn.Module) -> Optional[torch.nn.ModuleList]:
    """The decoder's blocks: the first ModuleList of the text decoder that
    holds one module per hidden layer (`layers`, `h`, `decoder.layers`...),
    or None when there is no such list."""
    config = getattr(model, "config", None)
    count = getattr(text_config(config), "num_hidden_layers", None) if isinstance(config, PretrainedConfig) else None
    get_decoder = getattr(model, "get_decoder", None)
    root = get_decoder() if callable(get_decoder) else None
    candidates: List[torch.nn.ModuleList] = [
        module
        for module in (root if isinstance(root, torch.nn.Module) else model).modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) == count
    ]
    return candidates[0] if candidates else None
