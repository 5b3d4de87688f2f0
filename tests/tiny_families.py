"""Tiny random checkpoints of decoder families other than LLaMA, offline.

Each family is built from its own transformers Config class (hidden 32, 2
layers, the byte-level tokenizer's vocabulary of 512) and saved the way its
real checkpoints are: as the family's `*ForCausalLM` (GPT-2: `GPT2LMHeadModel`)
with the byte-level BPE tokenizer of tiny_models.py. Gemma-3 text is saved as
`Gemma3ForCausalLM`, whose weights `AutoModel` alone does not find.

save_tiny_family(path, family, seed=0) -> Path
FAMILIES: the families the plugin is tested on in every mode.
REFUSED_FAMILIES: families whose attention cannot be made bidirectional.
Also "opt" (an output narrower than hidden_size, as OPT-350m) and "gemma3"
(multimodal: the decoder's settings are in text_config).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Tuple, Union

from tiny_models import TINY_CONFIG, build_byte_level_tokenizer

WIDTH = 32
LAYERS = 2
HEADS = 4
# Shorter than every test text, so that windowed layers are exercised.
SLIDING_WINDOW = 4


def _common(tokenizer) -> Dict[str, Any]:
    return dict(
        vocab_size=TINY_CONFIG["vocab_size"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
        torch_dtype="float32",
    )


def _llama_like(**extra: Any) -> Callable[[Any], Dict[str, Any]]:
    def settings(tokenizer) -> Dict[str, Any]:
        return dict(
            hidden_size=WIDTH,
            intermediate_size=2 * WIDTH,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            max_position_embeddings=TINY_CONFIG["max_position_embeddings"],
            **_common(tokenizer),
            **extra,
        )

    return settings


def _gpt2_like(tokenizer) -> Dict[str, Any]:
    return dict(n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS, n_positions=TINY_CONFIG["max_position_embeddings"], **_common(tokenizer))


# family -> (Config class name, causal LM class name, config settings)
FAMILY_SPECS: Dict[str, Tuple[str, str, Callable[[Any], Dict[str, Any]]]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", _llama_like(num_key_value_heads=2, tie_word_embeddings=False)),
    "mistral": ("MistralConfig", "MistralForCausalLM", _llama_like(num_key_value_heads=2, sliding_window=SLIDING_WINDOW)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", _llama_like(num_key_value_heads=2)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", _llama_like(num_key_value_heads=2, head_dim=8)),
    "gemma2": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        _llama_like(num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8, sliding_window=SLIDING_WINDOW),
    ),
    "gemma3_text": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        _llama_like(num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8, sliding_window=SLIDING_WINDOW),
    ),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", _llama_like(num_key_value_heads=2)),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", _llama_like()),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", _gpt2_like),
    # Output width (word_embed_proj_dim) narrower than hidden_size, as OPT-350m.
    "opt": (
        "OPTConfig",
        "OPTForCausalLM",
        lambda tokenizer: dict(
            hidden_size=WIDTH,
            ffn_dim=2 * WIDTH,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            word_embed_proj_dim=WIDTH // 2,
            max_position_embeddings=TINY_CONFIG["max_position_embeddings"],
            **{**_common(tokenizer), "pad_token_id": 1},
        ),
    ),
    "gpt_neo": (
        "GPTNeoConfig",
        "GPTNeoForCausalLM",
        lambda tokenizer: dict(
            hidden_size=WIDTH,
            num_layers=LAYERS,
            num_heads=HEADS,
            attention_types=[[["global", "local"], 1]],
            window_size=SLIDING_WINDOW,
            max_position_embeddings=TINY_CONFIG["max_position_embeddings"],
            **_common(tokenizer),
        ),
    ),
    # Multimodal Gemma-3 (4B and up): the decoder's settings are in text_config.
    "gemma3": (
        "Gemma3Config",
        "Gemma3ForConditionalGeneration",
        lambda tokenizer: dict(
            text_config={"model_type": "gemma3_text", **FAMILY_SPECS["gemma3_text"][2](tokenizer)},
            vision_config=dict(
                model_type="siglip_vision_model",
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=28,
                patch_size=14,
            ),
            mm_tokens_per_image=4,
            boi_token_index=TINY_CONFIG["vocab_size"] - 3,
            eoi_token_index=TINY_CONFIG["vocab_size"] - 2,
            image_token_index=TINY_CONFIG["vocab_size"] - 1,
        ),
    ),
    "bloom": ("BloomConfig", "BloomForCausalLM", lambda tokenizer: dict(hidden_size=WIDTH, n_layer=LAYERS, n_head=HEADS, **_common(tokenizer))),
    "gpt_bigcode": ("GPTBigCodeConfig", "GPTBigCodeForCausalLM", _gpt2_like),
}

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "gpt_neox", "gpt2")
REFUSED_FAMILIES = ("gpt_neo", "bloom", "gpt_bigcode")


def build_tiny_family(family: str, seed: int = 0):
    """A random tiny `*ForCausalLM` of `family` and its tokenizer."""
    import torch
    import transformers

    config_class, model_class, settings = FAMILY_SPECS[family]
    tokenizer = build_byte_level_tokenizer()
    config = getattr(transformers, config_class)(**settings(tokenizer))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, model_class)(config)
    return model.eval(), tokenizer


def save_tiny_family(path: Union[str, Path], family: str, seed: int = 0) -> Path:
    """Write a checkpoint folder of `family` (its causal LM and tokenizer)."""
    path = Path(path)
    model, tokenizer = build_tiny_family(family, seed)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
