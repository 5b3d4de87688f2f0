"""Specification of spacy_lsllama.tokenizers.alignment: spaCy tokens are aligned to
exactly the decoder pieces whose text (trimmed of whitespace) they share.

Piece p (raw character offsets (rs, re) in its span's text, trimmed to (s, e))
and token t (characters [a, b) of the same text):

* a non-whitespace token gets p iff (s, e) is non-empty and overlaps [a, b);
  the only other piece it may get is an all-whitespace piece lying inside it
  (possible only for tokens with inner whitespace);
* a whitespace token gets p iff (rs, re) overlaps [a, b);
* so every non-whitespace token gets at least one piece, and a Metaspace or
  byte-level piece "▁w"/"Ġw" never goes to the token before "w".

Alignment indices point into the flattened (n_spans, row_length) piece array.
"""
import functools
from typing import List, Sequence

import numpy
import pytest
import spacy
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spacy.tokens import Doc, Span
from spacy_transformers.align import get_alignment_via_offset_mapping, get_token_positions
from spacy_transformers.data_classes import FullTransformerBatch
from spacy_transformers.span_getters import configure_strided_spans
from transformers.modeling_outputs import BaseModelOutput

from spacy_lsllama.tokenizers.alignment import align_span, align_spans, trim_whitespace
from spacy_lsllama.tokenizers.tokenization import PAD_TOKEN, encode_spans, prepare_tokenizer
from tiny_models import build_tokenizer

KINDS = ("metaspace", "metaspace_pretokenizer", "byte_level")
NLP = spacy.blank("en")


@functools.lru_cache(maxsize=None)
def tokenizer(kind: str):
    return prepare_tokenizer(build_tokenizer(kind), 256)


def align_batch(kind: str, nested_spans: Sequence[Sequence[Span]]):
    flat = [span for spans in nested_spans for span in spans]
    encoded = encode_spans(tokenizer(kind), [span.text for span in flat])
    row_length = encoded.wordpieces.input_ids.shape[1]
    return flat, encoded, row_length, align_spans(flat, encoded.offsets, row_length)


def pieces_of(align, positions, token) -> List[int]:
    return align[positions[token]].data.ravel().tolist()


def check_exact(kind: str, nested_spans: Sequence[Sequence[Span]]) -> None:
    """Assert the specification in the module docstring for a whole batch."""
    flat, encoded, row_length, align = align_batch(kind, nested_spans)
    positions = get_token_positions(flat)
    assert align.lengths.shape[0] == len(positions)
    assert align.data.shape[0] == int(align.lengths.sum())
    wp = encoded.wordpieces
    for row, span in enumerate(flat):
        text, base = span.text, span.start_char
        for token in span:
            a = token.idx - base
            b = a + len(token)
            got = {idx - row * row_length for idx in pieces_of(align, positions, token)}
            got = {col for col in got if 0 <= col < row_length}  # this row only
            expected = set()
            for col, (rs, re) in enumerate(encoded.offsets[row]):
                s, e = trim_whitespace(text, rs, re)
                if token.is_space:
                    ok = rs < re and rs < b and re > a
                    must = ok
                else:
                    must = s < e and s < b and e > a
                    # all-whitespace piece inside a token with inner whitespace
                    ok = must or (s == e and rs < re and a <= rs and re <= b)
                if must:
                    expected.add(col)
                if col in got:
                    assert ok, (
                        f"{kind}: piece {wp.strings[row][col]!r} {rs, re} aligned to "
                        f"token {token.text!r} {a, b} in {text!r}"
                    )
            assert expected <= got, (
                f"{kind}: token {token.text!r} {a, b} in {text!r} misses pieces "
                f"{[wp.strings[row][c] for c in sorted(expected - got)]}"
            )
            assert all(col < wp.lengths[row] for col in got), "padding is never aligned"
            if not token.is_space:
                assert got, f"{kind}: token {token.text!r} in {text!r} has no pieces in row {row}"
    # every index is in the row of a span that contains the token
    for token, position in positions.items():
        for idx in align[position].data.ravel().tolist():
            row, col = divmod(idx, row_length)
            span = flat[row]
            assert span.doc is token.doc and span.start <= token.i < span.end


# --------------------------------------------------------------------------
# Concrete cases
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_leading_space_piece_belongs_to_the_next_word_only(kind):
    doc = NLP("Hello world")
    _, encoded, row_length, align = align_batch(kind, [[doc[:]]])
    positions = get_token_positions([doc[:]])
    strings = encoded.wordpieces.strings[0]
    hello = [strings[i] for i in pieces_of(align, positions, doc[0])]
    world = [strings[i] for i in pieces_of(align, positions, doc[1])]
    space_piece = "Ġw" if kind == "byte_level" else "▁w"
    assert space_piece in strings, strings
    assert space_piece in world and space_piece not in hello
    # spacy-transformers' own offset alignment (by text_with_ws) gets this wrong
    offsets = numpy.array([encoded.offsets[0] + [(0, 0)] * (row_length - len(encoded.offsets[0]))])
    naive = get_alignment_via_offset_mapping([doc[:]], offsets)
    assert space_piece in [strings[i] for i in naive[0].data.ravel()]
    assert "".join(hello) in ("▁Hello", "Hello")
    assert "".join(world) in ("▁world", "Ġworld")
    if kind != "byte_level":
        assert "<s>" not in hello, "BOS (empty offsets) aligns to nothing"


@pytest.mark.parametrize("kind", KINDS)
def test_multibyte_characters_get_all_their_byte_pieces(kind):
    doc = NLP("😀 中文 ok")
    _, encoded, _, align = align_batch(kind, [[doc[:]]])
    positions = get_token_positions([doc[:]])
    offsets = encoded.offsets[0]
    for token in doc:
        a, b = token.idx, token.idx + len(token)
        got = pieces_of(align, positions, token)
        # all pieces carrying a byte of the token's characters, though they repeat offsets
        trimmed = [trim_whitespace(doc.text, s, e) for s, e in offsets]
        expected = [i for i, (s, e) in enumerate(trimmed) if s < e and s < b and e > a]
        assert got == expected, (token.text, [encoded.wordpieces.strings[0][i] for i in got])
    emoji_pieces = pieces_of(align, positions, doc[0])
    assert len(emoji_pieces) >= 4  # one per UTF-8 byte
    assert len({offsets[i] for i in emoji_pieces}) == 1, "byte pieces repeat the char's offsets"


@pytest.mark.parametrize("kind", KINDS)
def test_whitespace_tokens_take_the_pieces_they_overlap(kind):
    doc = NLP("a   b\n\nc")
    assert [t.is_space for t in doc] == [False, True, False, True, False]
    check_exact(kind, [[doc[:]]])
    _, _, _, align = align_batch(kind, [[doc[:]]])
    assert align.lengths[1] > 0, "the run of extra spaces is aligned"


@pytest.mark.parametrize("kind", KINDS)
def test_custom_token_boundaries(kind):
    vocab = NLP.vocab
    docs = [
        Doc(vocab, words=["Hel", "lo", "wor", "ld"], spaces=[False, True, False, False]),
        Doc(vocab, words=["New York", "is", "big"], spaces=[True, True, False]),
        Doc(vocab, words=["a  b", " ", "c"], spaces=[False, False, False]),
        Doc(vocab, words=["a", "</s>", PAD_TOKEN, "<|im_end|>"], spaces=[True, True, True, False]),
    ]
    check_exact(kind, [[doc[:]] for doc in docs])


@pytest.mark.parametrize("kind", KINDS)
def test_token_with_trailing_whitespace_does_not_take_the_next_words_first_piece(kind):
    # Here the raw offsets of "▁w"/"Ġw" (5, 7) do overlap the token "Hello " (0, 6).
    doc = Doc(NLP.vocab, words=["Hello ", "world"], spaces=[False, False])
    _, encoded, _, align = align_batch(kind, [[doc[:]]])
    positions = get_token_positions([doc[:]])
    strings = encoded.wordpieces.strings[0]
    space_piece = "Ġw" if kind == "byte_level" else "▁w"
    assert encoded.offsets[0][strings.index(space_piece)] == (5, 7)
    assert space_piece not in [strings[i] for i in pieces_of(align, positions, doc[0])]
    assert space_piece in [strings[i] for i in pieces_of(align, positions, doc[1])]


@pytest.mark.parametrize("kind", KINDS)
def test_align_span_reports_positions_within_the_span(kind):
    doc = NLP("One two three four five")
    span = doc[2:4]  # "three four": offsets are relative to span.text
    encoded = encode_spans(tokenizer(kind), [span.text])
    aligned = align_span(span, encoded.offsets[0])
    strings = encoded.wordpieces.strings[0]
    assert "".join(strings[i] for i in aligned[0]).lstrip("▁Ġ") == "three"
    assert "".join(strings[i] for i in aligned[1]).lstrip("▁Ġ") == "four"


def test_mismatched_offsets_are_refused():
    doc = NLP("a b")
    with pytest.raises(ValueError):
        align_spans([doc[:], doc[:1]], [[(0, 1)]], 4)


# --------------------------------------------------------------------------
# Overlapping strided spans
# --------------------------------------------------------------------------

LONG = "The quick brown fox jumps over the lazy dog while Zoë watches from São Paulo 😀 again."


@pytest.mark.parametrize("kind", KINDS)
def test_tokens_in_two_strided_spans_get_pieces_from_both_rows(kind):
    doc = NLP(LONG)
    nested = configure_strided_spans(4, 3)([doc])
    flat, encoded, row_length, align = align_batch(kind, nested)
    assert len(flat) > 3
    check_exact(kind, nested)
    positions = get_token_positions(flat)
    shared = 0
    for token in doc:
        rows = [r for r, span in enumerate(flat) if span.start <= token.i < span.end]
        got = pieces_of(align, positions, token)
        got_rows = sorted({idx // row_length for idx in got})
        assert got_rows == rows, (token.text, got_rows, rows)
        for r in rows:  # within a row, exactly what align_span gives for that span
            span = flat[r]
            local = align_span(span, encoded.offsets[r])[token.i - span.start]
            assert [i - r * row_length for i in got if i // row_length == r] == local
        shared += len(rows) == 2
    assert shared >= 3


@pytest.mark.parametrize("kind", KINDS)
def test_indices_match_full_transformer_batch_split_by_doc(kind):
    docs = [NLP(LONG), NLP("Short one."), NLP(""), NLP("Another doc, with 中文 too.")]
    nested = configure_strided_spans(4, 3)(docs)
    flat, encoded, row_length, align = align_batch(kind, nested)
    n_rows = len(flat)
    # hidden state whose value at [row, col] is the flat index row * row_length + col
    flat_index = numpy.arange(n_rows * row_length, dtype="float32").reshape(n_rows, row_length, 1)
    batch = FullTransformerBatch(
        spans=nested,
        wordpieces=encoded.wordpieces,
        model_output=BaseModelOutput(last_hidden_state=torch.from_numpy(flat_index)),
        align=align,
    )
    positions = get_token_positions(flat)
    per_doc = batch.split_by_doc()
    assert len(per_doc) == len(docs)
    for doc, data in zip(docs, per_doc):
        assert data.align.lengths.shape[0] == len(doc)
        if len(doc) == 0:
            continue
        hidden = data.model_output.last_hidden_state
        assert hidden.shape[1] == row_length
        values = hidden.reshape(-1)
        doc_strings = [piece for row in data.wordpieces.strings for piece in
                       row + [None] * (row_length - len(row))]
        for token in doc:
            local = data.align[token.i].data.ravel()
            glob = pieces_of(align, positions, token)
            assert values[local].tolist() == [float(i) for i in glob]
            expected_strings = [encoded.wordpieces.strings[i // row_length][i % row_length] for i in glob]
            assert [doc_strings[i] for i in local.tolist()] == expected_strings


# --------------------------------------------------------------------------
# Property tests on arbitrary text and token boundaries
# --------------------------------------------------------------------------

TRICKY_CHARS = (
    "😀👍🏽👨‍👩‍👧🇩🇪"  # emoji, skin tone modifier, ZWJ sequence, flag
    "中文日本語한국어"  # CJK, Hangul
    "שלוםمرحبا\u200f\u200e"  # RTL scripts and direction marks
    "e\u0301a\u0308\u0327\u20dd"  # combining marks
    "\u200b\u200c\u200d\u2060\ufeff"  # zero-width chars
    "\x00\x01\x07\x1b\x7f\x85\x1c"  # control chars
    " \t\n\r\x0b\x0c\u00a0\u2028\u3000\u2009"  # whitespace
    "<>/|_▁Ġ"  # characters of special-token spellings, metaspace, byte-level marks
)
FRAGMENTS = ["</s>", "<s>", "<unk>", "<|im_end|>", "<|im_start|>", "<|endoftext|>", PAD_TOKEN,
             "   ", "\n\n", " \t ", "Hello", "world", "café", "don't", "U.S.", "$15.99"]

chars = st.one_of(
    st.sampled_from(TRICKY_CHARS),
    st.characters(exclude_categories=("Cs",)),
    st.sampled_from("abc xyz .,!?-'"),
)
fragment = st.one_of(st.text(chars, min_size=1, max_size=6), st.sampled_from(FRAGMENTS))
texts = st.lists(fragment, max_size=12).map("".join)
words = st.lists(st.tuples(fragment, st.booleans()), min_size=1, max_size=12)
strides = st.tuples(st.integers(1, 5), st.integers(0, 3)).map(lambda sw: (sw[0] + sw[1], sw[0]))

PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def spans_for(doc: Doc, window_stride) -> List[List[Span]]:
    if window_stride is None:
        return [[doc[:]]]
    return configure_strided_spans(*window_stride)([doc])


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY_SETTINGS
@given(text=texts, window_stride=st.one_of(st.none(), strides))
def test_alignment_is_exact_for_any_text(kind, text, window_stride):
    doc = NLP(text)
    check_exact(kind, spans_for(doc, window_stride))


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY_SETTINGS
@given(words_spaces=words, window_stride=st.one_of(st.none(), strides))
def test_alignment_is_exact_for_any_token_boundaries(kind, words_spaces, window_stride):
    doc = Doc(NLP.vocab, words=[w for w, _ in words_spaces], spaces=[s for _, s in words_spaces])
    check_exact(kind, spans_for(doc, window_stride))


@PROPERTY_SETTINGS
@given(text=texts, cuts=st.lists(st.integers(0, 200), max_size=10))
def test_alignment_is_exact_when_cutting_text_anywhere(text, cuts):
    """Token boundaries inside graphemes, whitespace runs and special-token spellings."""
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    pieces = [text[s:e] for s, e in zip(bounds, bounds[1:]) if e > s]
    if not pieces:
        return
    doc = Doc(NLP.vocab, words=pieces, spaces=[False] * len(pieces))
    assert doc.text == text
    for kind in KINDS:
        check_exact(kind, [[doc[:]]])
