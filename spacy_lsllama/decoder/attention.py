"""Attention masks: causal LLaMA (LS-LLaMA) or unmasked LLaMA (LS-unLLaMA).

LS-unLLaMA removes the causal mask in every layer so that each token sees its
right context. We do it without touching transformers' modeling code: the
decoder models accept a 4D additive float mask of shape (batch, 1, L, L) and
pass it to eager and SDPA attention untouched. Our mask is 0 wherever the key
is a real piece and the dtype's minimum wherever the key is padding, so every
token attends to every real token of its span, before and after it, and never
to padding (the reference implementation used an all-zeros mask, which lets
pads leak into the outputs and makes them depend on batch composition).
"""
import torch


def bidirectional_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Turn a (batch, length) 0/1 padding mask into a (batch, 1, length, length)
    additive mask that lets every query see every non-pad key."""
    if attention_mask.dim() != 2:
        raise ValueError(
            f"Expected a 2D (batch, length) padding mask, got shape {tuple(attention_mask.shape)}."
        )
    blocked_keys = attention_mask[:, None, None, :] == 0
    length = attention_mask.shape[1]
    mask = torch.zeros(
        (attention_mask.shape[0], 1, length, length), dtype=dtype, device=attention_mask.device
    )
    return mask.masked_fill(blocked_keys, torch.finfo(dtype).min)


def model_attention_mask(
    attention_mask: torch.Tensor, *, bidirectional: bool, dtype: torch.dtype
) -> torch.Tensor:
    """The mask to hand the decoder: the plain padding mask for causal
    attention (the model adds the causal triangle itself), the 4D unmasked one
    for bidirectional attention."""
    if bidirectional:
        return bidirectional_mask(attention_mask, dtype)
    return attention_mask
