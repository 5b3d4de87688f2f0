"""Exact alignment of spaCy tokens to the pieces of decoder tokenizers.

spacy-transformers aligns by raw offsets. SentencePiece/Metaspace tokenizers
(LLaMA-2, Mistral) report offsets that include the leading space of a word, so
the first piece of every word is also aligned to the token before it. Here a
piece is aligned to a token only if the piece's characters, with surrounding
whitespace trimmed, overlap the token's characters. Whitespace tokens (runs of
extra spaces) take the pieces whose untrimmed characters overlap them.

The result is the ragged array spacy-transformers expects: for every unique
token of the batch, the indices of its pieces in the flattened
(n_spans, padded_length) piece array.
"""
from bisect import bisect_left, bisect_right
from typing import Dict, List, Sequence, Tuple

import numpy
from spacy.tokens import Span, Token
from spacy_transformers.align import get_token_positions
from thinc.types import Ragged

Offsets = Sequence[Tuple[int, int]]


def trim_whitespace(text: str, start: int, end: int) -> Tuple[int, int]:
    """Shrink a character range of `text` until it neither starts nor ends
    with whitespace; a range of only whitespace becomes empty."""
    start, end = max(start, 0), min(end, len(text))
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def align_span(span: Span, offsets: Offsets) -> List[List[int]]:
    """For each token of the span, the positions of the pieces aligned to it.

    `offsets` are the (start, end) characters of each piece in `span.text`;
    special pieces such as BOS have empty offsets and align to nothing."""
    text = span.text
    base = span.start_char
    starts = [token.idx - base for token in span]
    ends = [start + len(token) for start, token in zip(starts, span)]
    is_space = [token.is_space for token in span]
    aligned: List[List[int]] = [[] for _ in range(len(span))]
    for piece, (raw_start, raw_end) in enumerate(offsets):
        if raw_end <= raw_start:
            continue
        start, end = trim_whitespace(text, raw_start, raw_end)
        # Tokens overlapping the raw range: their start < raw_end and end > raw_start.
        first = bisect_right(ends, raw_start)
        last = bisect_left(starts, raw_end)
        for i in range(first, last):
            if is_space[i] or (starts[i] < end and ends[i] > start):
                aligned[i].append(piece)
    return aligned


def align_spans(spans: Sequence[Span], offsets: Sequence[Offsets], row_length: int) -> Ragged:
    """Align every unique token of the batch to its pieces in the flattened
    piece array whose rows are `row_length` long."""
    if len(spans) != len(offsets):
        raise ValueError(f"Got {len(spans)} spans but offsets for {len(offsets)}.")
    positions: Dict[Token, int] = get_token_positions(list(spans))
    alignment: List[List[int]] = [[] for _ in range(len(positions))]
    for row, (span, span_offsets) in enumerate(zip(spans, offsets)):
        row_start = row * row_length
        for token, pieces in zip(span, align_span(span, span_offsets)):
            alignment[positions[token]].extend(row_start + piece for piece in pieces)
    lengths = numpy.array([len(pieces) for pieces in alignment], dtype="int32")
    flat = numpy.array([index for pieces in alignment for index in pieces], dtype="int32")
    return Ragged(flat, lengths)
