"""Causal (LS-LLaMA) and bidirectional (LS-unLLaMA) attention."""
import numpy
import pytest
import torch

from spacy_lsllama.decoder.attention import bidirectional_mask
from pipelines import token_vectors, transformer_only


def test_bidirectional_mask_opens_every_real_key_and_blocks_padding():
    padding = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    mask = bidirectional_mask(padding, torch.float32)
    assert mask.shape == (2, 1, 4, 4)
    blocked = torch.finfo(torch.float32).min
    assert (mask[0, 0, :, :3] == 0).all(), "queries see keys before and after them"
    assert (mask[0, 0, :, 3] == blocked).all(), "no query sees a pad key"
    assert (mask[1] == 0).all()


def test_bidirectional_mask_is_a_float_mask_in_the_compute_dtype():
    mask = bidirectional_mask(torch.ones(1, 3, dtype=torch.long), torch.bfloat16)
    assert mask.dtype == torch.bfloat16


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_first_token_sees_the_last_word_only_when_bidirectional(
    tiny_model, attn_implementation, bidirectional
):
    nlp = transformer_only(tiny_model, attn_implementation=attn_implementation, bidirectional=bidirectional)
    first, changed = token_vectors(nlp, ["The cat sat on the mat", "The cat sat on the rug"])
    first_token_moved = not numpy.allclose(first[0], changed[0], atol=1e-5)
    assert first_token_moved == bidirectional
    assert not numpy.allclose(first[-1], changed[-1], atol=1e-5), "the changed word itself moves"


def test_flash_attention_cannot_be_bidirectional(metaspace_model):
    with pytest.raises(ValueError, match="flash_attention_2"):
        transformer_only(metaspace_model, attn_implementation="flash_attention_2", bidirectional=True)
