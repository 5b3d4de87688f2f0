"""Specification of spacy_lsllama.tokenizers.tokenization: a prepared decoder tokenizer
has a dedicated pad token, pads on the right, has a bounded length, and
encodes span texts without truncation, right padded, and without ever turning
document text into special pieces."""
import numpy
import pytest
from transformers import BertTokenizer
from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

from spacy_lsllama.tokenizers.tokenization import (
    PAD_TOKEN,
    TokenizerError,
    bounded_max_length,
    encode_spans,
    prepare_tokenizer,
)
from tiny_models import TINY_CONFIG, build_tokenizer

KINDS = ("metaspace", "metaspace_pretokenizer", "byte_level")
MAX_POSITIONS = TINY_CONFIG["max_position_embeddings"]


def prepared(kind: str, max_length: int = MAX_POSITIONS):
    return prepare_tokenizer(build_tokenizer(kind), max_length)


def reserved_ids(tokenizer):
    return {tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id}


# --------------------------------------------------------------------------
# prepare_tokenizer
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_tokenizer_without_pad_gets_a_dedicated_pad_token(kind):
    tokenizer = build_tokenizer(kind)
    assert tokenizer.pad_token is None
    n_before = len(tokenizer)
    prepare_tokenizer(tokenizer, MAX_POSITIONS)
    assert tokenizer.pad_token == PAD_TOKEN
    assert tokenizer.pad_token_id == n_before, "the pad is a new token at the end of the vocab"
    assert tokenizer.pad_token_id not in reserved_ids(tokenizer)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("borrowed", ["eos_token", "bos_token", "unk_token"])
def test_pad_borrowed_from_eos_bos_or_unk_is_replaced(kind, borrowed):
    tokenizer = build_tokenizer(kind)
    tokenizer.pad_token = getattr(tokenizer, borrowed)
    prepare_tokenizer(tokenizer, MAX_POSITIONS)
    assert tokenizer.pad_token == PAD_TOKEN
    assert tokenizer.pad_token_id not in reserved_ids(tokenizer)
    # the borrowed token itself is untouched
    assert getattr(tokenizer, borrowed) != PAD_TOKEN


@pytest.mark.parametrize("kind", KINDS)
def test_a_proper_dedicated_pad_token_is_kept(kind):
    tokenizer = build_tokenizer(kind)
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    pad_id, n_tokens = tokenizer.pad_token_id, len(tokenizer)
    prepare_tokenizer(tokenizer, MAX_POSITIONS)
    assert tokenizer.pad_token == "<pad>"
    assert tokenizer.pad_token_id == pad_id
    assert len(tokenizer) == n_tokens


@pytest.mark.parametrize("kind", KINDS)
def test_prepare_is_idempotent(kind):
    tokenizer = prepared(kind)
    n_tokens, pad_id = len(tokenizer), tokenizer.pad_token_id
    prepare_tokenizer(tokenizer, MAX_POSITIONS)
    assert (len(tokenizer), tokenizer.pad_token_id) == (n_tokens, pad_id)


@pytest.mark.parametrize("kind", KINDS)
def test_padding_side_is_right_even_for_left_padding_tokenizers(kind):
    tokenizer = build_tokenizer(kind)
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    prepare_tokenizer(tokenizer, MAX_POSITIONS)
    assert tokenizer.padding_side == "right"
    assert tokenizer.truncation_side == "right"


@pytest.mark.parametrize("kind", KINDS)
def test_unbounded_model_max_length_is_bounded_by_max_position_embeddings(kind):
    tokenizer = build_tokenizer(kind)
    tokenizer.model_max_length = VERY_LARGE_INTEGER  # int(1e30), HF's "no limit"
    max_length = bounded_max_length(tokenizer, MAX_POSITIONS)
    assert max_length == MAX_POSITIONS
    prepare_tokenizer(tokenizer, max_length)
    assert tokenizer.model_max_length == MAX_POSITIONS


@pytest.mark.parametrize(
    "model_max_length, expected",
    [(128, 128), (MAX_POSITIONS, MAX_POSITIONS), (4096, MAX_POSITIONS), (0, MAX_POSITIONS)],
)
def test_bounded_max_length_is_the_smaller_real_limit(model_max_length, expected):
    tokenizer = build_tokenizer("metaspace")
    tokenizer.model_max_length = model_max_length
    assert bounded_max_length(tokenizer, MAX_POSITIONS) == expected


def test_slow_tokenizers_are_refused_with_a_clear_error(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]))
    slow = BertTokenizer(str(vocab))
    assert not slow.is_fast
    with pytest.raises(TokenizerError, match=r"(?i)slow.*fast"):
        prepare_tokenizer(slow, MAX_POSITIONS)
    assert issubclass(TokenizerError, ValueError)


# --------------------------------------------------------------------------
# encode_spans
# --------------------------------------------------------------------------

TEXTS = [
    "Hello world",
    "",
    "A much longer sentence, with many more words than the others have in them.",
    "  x \n y ",
    "Zoë paid €20 😀 中文",
]


@pytest.mark.parametrize("kind", KINDS)
def test_rows_are_right_padded_and_start_at_column_zero(kind):
    tokenizer = prepared(kind)
    encoded = encode_spans(tokenizer, TEXTS)
    wp = encoded.wordpieces
    assert wp.input_ids.shape == (len(TEXTS), max(wp.lengths))
    assert wp.attention_mask.shape == wp.input_ids.shape
    assert wp.token_type_ids is None
    for i, text in enumerate(TEXTS):
        n = wp.lengths[i]
        alone = tokenizer(text, add_special_tokens=True, split_special_tokens=True)["input_ids"]
        assert n == len(alone) == len(wp.strings[i]) == len(encoded.offsets[i])
        assert wp.input_ids[i, :n].tolist() == alone, "pieces start at column 0"
        assert (wp.input_ids[i, n:] == tokenizer.pad_token_id).all()
        assert (wp.attention_mask[i, :n] == 1).all() and (wp.attention_mask[i, n:] == 0).all()
        assert wp.strings[i] == tokenizer.convert_ids_to_tokens(alone)
    numpy.testing.assert_array_equal(wp.attention_mask.sum(axis=1), wp.lengths)
    if tokenizer.bos_token_id is not None and tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id:
        assert (wp.input_ids[:, 0] == tokenizer.bos_token_id).all()


@pytest.mark.parametrize("kind", KINDS)
def test_long_texts_are_not_truncated(kind):
    tokenizer = prepared(kind, max_length=8)
    text = " ".join(f"word{i} naïve 😀" for i in range(150))
    encoded = encode_spans(tokenizer, [text, "short"])
    n = encoded.wordpieces.lengths[0]
    assert n > MAX_POSITIONS > 8
    assert encoded.wordpieces.input_ids.shape[1] == n
    assert max(end for _, end in encoded.offsets[0]) == len(text), "the last characters are encoded"
    assert tokenizer.model_max_length == 8, "encoding does not change the prepared limit"


SPECIAL_TEXTS = [
    "a </s> b",
    "a <s> b <unk>",
    "</s>",
    "a <|im_end|> b",
    "<|im_start|>user<|im_end|><|endoftext|>",
    f"x {PAD_TOKEN} y",
    PAD_TOKEN,
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("borrowed", [None, "eos_token"])
def test_literal_special_token_text_never_yields_special_ids(kind, borrowed):
    tokenizer = build_tokenizer(kind)
    if borrowed:
        tokenizer.pad_token = getattr(tokenizer, borrowed)
    prepare_tokenizer(tokenizer, MAX_POSITIONS)
    adds_bos = tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id
    encoded = encode_spans(tokenizer, SPECIAL_TEXTS)
    specials = set(tokenizer.all_special_ids)
    assert tokenizer.pad_token_id in specials and tokenizer.eos_token_id in specials
    for i, text in enumerate(SPECIAL_TEXTS):
        row = encoded.wordpieces.input_ids[i, : encoded.wordpieces.lengths[i]].tolist()
        text_pieces = row[1:] if adds_bos else row
        assert not specials & set(text_pieces), (text, encoded.wordpieces.strings[i])
        assert tokenizer.pad_token_id not in row and tokenizer.eos_token_id not in row
        # the literal text is still fully encoded as ordinary pieces
        assert max(end for _, end in encoded.offsets[i]) == len(text)


@pytest.mark.parametrize("kind", KINDS)
def test_empty_text_encodes(kind):
    tokenizer = prepared(kind)
    encoded = encode_spans(tokenizer, [""])
    wp = encoded.wordpieces
    adds_bos = tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id
    if adds_bos:
        assert wp.lengths == [1] and wp.input_ids[0].tolist() == [tokenizer.bos_token_id]
        assert encoded.offsets == [[(0, 0)]]
    else:  # byte-level: no pieces at all, a row of padding
        assert kind == "byte_level"
        assert wp.lengths == [0] and wp.strings == [[]] and encoded.offsets == [[]]
        assert wp.input_ids.shape == (1, 1)
        assert wp.input_ids[0, 0] == tokenizer.pad_token_id
        assert wp.attention_mask.sum() == 0


@pytest.mark.parametrize("kind", KINDS)
def test_empty_batch_encodes_to_nothing(kind):
    encoded = encode_spans(prepared(kind), [])
    assert encoded.offsets == []
    assert encoded.wordpieces.input_ids.size == 0
