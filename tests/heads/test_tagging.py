"""Tag schemes, constrained Viterbi decoding and spans <-> tags (spacy_lsllama/heads/tagging.py)."""
import itertools

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from spacy_lsllama.heads.tagging import (
    SCHEMES,
    decode,
    from_biluo,
    log_softmax,
    outside_only,
    spans_to_tags,
    tag_names,
    tags_to_spans,
    transition_masks,
    viterbi,
)

schemes = st.sampled_from(sorted(SCHEMES))
# Labels may contain "-" and look like tags: only the first "-" of a tag splits it.
labels = st.text(alphabet="ABOX-_", min_size=1, max_size=3)
label_sets = st.lists(labels, min_size=1, max_size=4, unique=True)
score_values = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), st.just(-numpy.inf), st.just(0.0)
)


@st.composite
def scored_sequences(draw, max_tokens=12, max_labels=4):
    scheme = draw(schemes)
    names = tag_names(draw(st.lists(labels, min_size=1, max_size=max_labels, unique=True)), scheme)
    n_tokens = draw(st.integers(min_value=0, max_value=max_tokens))
    scores = draw(arrays("float64", (n_tokens, len(names)), elements=score_values))
    return scheme, names, scores


@st.composite
def span_sets(draw, max_tokens=15):
    """A sequence length and non-overlapping spans over it, labels included."""
    length = draw(st.integers(min_value=0, max_value=max_tokens))
    labels = draw(label_sets)
    cuts = sorted(draw(st.sets(st.integers(min_value=0, max_value=length), max_size=2 * length)))
    spans = []
    for start, end in zip(cuts[::2], cuts[1::2]):
        if start < end:
            spans.append((start, end, draw(st.sampled_from(labels))))
    return length, spans


@settings(max_examples=300, deadline=None)
@given(scored_sequences())
def test_decoding_only_ever_yields_valid_sequences(case):
    scheme, names, scores = case
    tags = decode(scores, names, scheme)
    assert len(tags) == len(scores)
    spans = tags_to_spans(tags, scheme)  # raises on an invalid sequence
    assert spans_to_tags(len(tags), spans, scheme) == tags


def sequence_score(scores, path):
    return sum(scores[i, tag] for i, tag in enumerate(path))


@settings(max_examples=100, deadline=None)
@given(scored_sequences(max_tokens=4, max_labels=2))
def test_viterbi_finds_the_best_valid_sequence(case):
    """Against brute force over every tag sequence the scheme allows."""
    scheme, names, scores = case
    scores = numpy.maximum(scores, -1e6)  # compare finite sums
    path = viterbi(scores, *transition_masks(names, scheme))
    best = max(
        sequence_score(scores, candidate)
        for candidate in itertools.product(range(len(names)), repeat=len(scores))
        if _is_valid([names[i] for i in candidate], scheme)
    ) if len(scores) else 0.0
    assert sequence_score(scores, path) == pytest.approx(best, rel=1e-9, abs=1e-6)


def _is_valid(tags, scheme) -> bool:
    try:
        tags_to_spans(tags, scheme)
    except ValueError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(span_sets(), schemes)
def test_gold_spans_round_trip_through_tags(case, scheme):
    length, spans = case
    tags = spans_to_tags(length, spans, scheme)
    assert tags_to_spans(tags, scheme) == sorted(spans)
    assert spans_to_tags(length, tags_to_spans(tags, scheme), scheme) == tags


@settings(max_examples=200, deadline=None)
@given(span_sets())
def test_spacys_biluo_tags_convert_to_the_same_tags_as_the_spans(case):
    """`Example.get_aligned_ner()` gives BILUO; BIO is derived from it."""
    length, spans = case
    biluo = spans_to_tags(length, spans, "BILUO")
    for scheme in SCHEMES:
        assert from_biluo(biluo, scheme) == spans_to_tags(length, spans, scheme)


def test_missing_annotation_stays_unknown():
    tags = spans_to_tags(6, [(1, 3, "PER"), (4, 5, "LOC")], "BILUO", missing=[0, 5])
    assert tags == [None, "B-PER", "L-PER", "O", "U-LOC", None]
    assert from_biluo(["-", "U-LOC", None, "O", "B-PER", "L-PER"], "BIO") == [None, "B-LOC", None, "O", "B-PER", "I-PER"]
    with pytest.raises(ValueError, match="missing"):
        spans_to_tags(4, [(1, 3, "PER")], "BIO", missing=[2])
    with pytest.raises(ValueError, match="missing"):
        tags_to_spans(["O", None], "BIO")


@pytest.mark.parametrize(
    "scheme,tags",
    [
        ("BIO", ["I-PER"]),
        ("BIO", ["O", "I-PER"]),
        ("BIO", ["B-PER", "I-LOC"]),
        ("BIO", ["U-PER"]),
        ("BILUO", ["B-PER"]),
        ("BILUO", ["B-PER", "O"]),
        ("BILUO", ["B-PER", "L-LOC"]),
        ("BILUO", ["U-PER", "I-PER", "L-PER"]),
        ("BILUO", ["L-PER"]),
    ],
)
def test_invalid_sequences_are_refused(scheme, tags):
    with pytest.raises(ValueError):
        tags_to_spans(tags, scheme)


def test_tags_of_each_scheme():
    assert tag_names(["PER", "LOC"], "BIO") == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    assert tag_names(["PER"], "BILUO") == ["O", "B-PER", "I-PER", "L-PER", "U-PER"]
    assert tags_to_spans(["B-PER", "I-PER", "B-PER", "O", "B-LOC"], "BIO") == [(0, 2, "PER"), (2, 3, "PER"), (4, 5, "LOC")]
    assert tags_to_spans(["U-B-X", "B-O", "L-O"], "BILUO") == [(0, 1, "B-X"), (1, 3, "O")]
    with pytest.raises(ValueError, match="Unknown tag scheme"):
        tag_names(["PER"], "IOBES")


def test_the_locally_best_tags_are_repaired_into_a_valid_sequence():
    names = tag_names(["PER", "LOC"], "BIO")  # O B-PER I-PER B-LOC I-LOC
    # Token-wise argmax: O I-PER I-LOC, which encodes no spans.
    probabilities = numpy.array([[0.6, 0.3, 0.0, 0.1, 0.0], [0.1, 0.1, 0.5, 0.0, 0.3], [0.1, 0.0, 0.4, 0.0, 0.5]]) + 1e-9
    tags = decode(numpy.log(probabilities), names, "BIO")
    assert tags == ["B-PER", "I-PER", "I-PER"]


@settings(max_examples=200, deadline=None)
@given(scored_sequences(), st.data())
def test_fixed_tokens_decode_as_outside_and_nothing_continues_them(case, data):
    scheme, names, scores = case
    fixed = data.draw(st.sets(st.integers(min_value=0, max_value=max(len(scores) - 1, 0)), max_size=len(scores)))
    tags = decode(scores, names, scheme, outside_only(len(scores), names, fixed))
    spans = tags_to_spans(tags, scheme)
    assert all(tags[i] == "O" for i in fixed)
    assert not any(start <= i < end for i in fixed for start, end, _ in spans)


def test_scores_that_are_not_numbers_are_refused():
    names = tag_names(["PER"], "BIO")
    with pytest.raises(ValueError, match="NaN"):
        decode(numpy.array([[0.0, numpy.nan, 0.0]]), names, "BIO")
    all_impossible = numpy.full((3, len(names)), -numpy.inf)
    assert _is_valid(decode(all_impossible, names, "BIO"), "BIO")


def test_log_softmax_is_stable():
    logits = numpy.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
    log_probs = log_softmax(logits)
    assert numpy.isfinite(log_probs[:, :2]).all()
    assert numpy.exp(log_probs).sum(axis=1) == pytest.approx([1.0, 1.0])
