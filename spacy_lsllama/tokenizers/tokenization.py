"""Tokenizing spaCy spans for a decoder model.

Decoder tokenizers ship without the properties spacy-transformers relies on:
many have no pad token (or pad with eos, which collides with text), LLaMA's pad
on the left, and `model_max_length` is often a huge sentinel. `prepare_tokenizer`
fixes all three once, and `encode_spans` does its own right padding, so a
doc's pieces always start at position 0 and padding is known by length, never
by comparing piece strings.
"""
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy
from spacy_transformers.data_classes import WordpieceBatch
from transformers import PreTrainedTokenizerBase

PAD_TOKEN = "<|lsllama_pad|>"
# Tokenizers without a real limit report int(1e30) or similar sentinels.
_UNBOUNDED_MAX_LENGTH = 1_000_000


class TokenizerError(ValueError):
    """The tokenizer cannot be used to encode spans for this model."""


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, max_length: int) -> PreTrainedTokenizerBase:
    """Give the tokenizer a dedicated pad token, right padding and a bounded
    `model_max_length`. Only fast tokenizers report the character offsets that
    exact alignment needs."""
    if not tokenizer.is_fast:
        raise TokenizerError(
            f"{type(tokenizer).__name__} is a slow tokenizer: spacy-lsllama needs a fast "
            "(Rust) tokenizer for character offsets. Save the model with a tokenizer.json "
            "or remove use_fast = false from tokenizer_config."
        )
    if _needs_own_pad_token(tokenizer):
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "right"
    tokenizer.model_max_length = max_length
    return tokenizer


def bounded_max_length(tokenizer: PreTrainedTokenizerBase, max_position_embeddings: int) -> int:
    """The longest piece sequence the model is run on in one pass."""
    limits = [max_position_embeddings]
    if 0 < tokenizer.model_max_length < _UNBOUNDED_MAX_LENGTH:
        limits.append(tokenizer.model_max_length)
    return min(limits)


def _needs_own_pad_token(tokenizer: PreTrainedTokenizerBase) -> bool:
    pad = tokenizer.pad_token
    if pad is None:
        return True
    # A pad that doubles as eos, bos or unk is indistinguishable from real text.
    return pad in {tokenizer.eos_token, tokenizer.bos_token, tokenizer.unk_token}


@dataclass
class EncodedSpans:
    """The pieces of a batch of spans, right padded, with character offsets
    relative to each span's text."""

    wordpieces: WordpieceBatch
    offsets: List[List[Tuple[int, int]]]


def encode_spans(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> EncodedSpans:
    """Tokenize span texts without truncation and pad them on the right.

    `split_special_tokens` makes text that spells a special token (say a
    literal "</s>" in a document) come out as ordinary pieces, so no text can
    produce the pad, bos or eos ids."""
    if len(texts) == 0:
        return EncodedSpans(WordpieceBatch.empty(), [])
    encoding = tokenizer(
        list(texts),
        add_special_tokens=True,
        return_offsets_mapping=True,
        return_attention_mask=False,
        padding=False,
        truncation=False,
        split_special_tokens=True,
        verbose=False,
    )
    rows: List[List[int]] = encoding["input_ids"]
    offsets = [[(int(s), int(e)) for s, e in row] for row in encoding["offset_mapping"]]
    lengths = [len(row) for row in rows]
    width = max([1, *lengths])  # a row of only padding still needs one position
    input_ids = numpy.full((len(rows), width), tokenizer.pad_token_id, dtype="int32")
    attention_mask = numpy.zeros((len(rows), width), dtype="float32")
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = row
        attention_mask[i, : len(row)] = 1.0
    wordpieces = WordpieceBatch(
        strings=[tokenizer.convert_ids_to_tokens(row) for row in rows],
        input_ids=input_ids,
        attention_mask=attention_mask,
        lengths=lengths,
        token_type_ids=None,
    )
    return EncodedSpans(wordpieces, offsets)
