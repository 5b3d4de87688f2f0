"""The tag counts of the training data: loss weights that even them out, and
the starting bias at their prior."""
import numpy
import pytest

from spacy_lsllama.heads.tag_frequencies import balance_weights, check_bias_init, count_tags, prior_bias

COUNTS = numpy.array([90, 6, 3, 1, 0])


def test_counts_skip_tokens_whose_annotation_is_missing():
    golds = [numpy.array([0, 0, 1, -1, 2]), numpy.array([-1, 0])]
    assert count_tags(golds, 4).tolist() == [3, 1, 1, 0]


def test_a_tag_index_out_of_range_is_refused():
    with pytest.raises(ValueError, match="out of range for 3 tags"):
        count_tags([numpy.array([0, 3])], 3)


def test_no_balance_weighs_every_tag_alike():
    assert balance_weights(COUNTS, 0.0).tolist() == [1.0] * 5


def test_full_balance_gives_every_seen_tag_the_same_total_weight():
    weights = balance_weights(COUNTS, 1.0)
    totals = (weights * COUNTS)[COUNTS > 0]
    assert totals == pytest.approx([90.0] * 4)
    assert weights[-1] == weights.max(), "an unseen tag weighs as a tag seen once"


def test_half_balance_lies_between():
    weights = balance_weights(COUNTS, 0.5)
    assert weights[0] == 1.0 and weights[1] == pytest.approx(numpy.sqrt(15))


@pytest.mark.parametrize("value", [-0.1, 1.5, "1", True, None])
def test_a_balance_outside_0_to_1_is_refused(value):
    with pytest.raises(ValueError, match="class_balance must be a number from 0"):
        balance_weights(COUNTS, value)


def test_weights_need_some_annotated_token():
    with pytest.raises(ValueError, match="no annotated token"):
        balance_weights(numpy.zeros(3), 0.5)


def test_the_prior_bias_predicts_the_smoothed_frequencies():
    bias = prior_bias(COUNTS)
    probabilities = numpy.exp(bias)
    assert probabilities.sum() == pytest.approx(1.0)
    assert probabilities == pytest.approx((COUNTS + 1) / (COUNTS + 1).sum())
    assert numpy.isfinite(bias).all()


def test_with_weights_the_prior_is_that_of_the_weighted_counts():
    weights = balance_weights(COUNTS, 1.0)
    probabilities = numpy.exp(prior_bias(COUNTS, weights))
    expected = (COUNTS + 1) * weights
    assert probabilities == pytest.approx(expected / expected.sum())


def test_an_unknown_bias_init_is_refused():
    assert check_bias_init("prior") == "prior"
    with pytest.raises(ValueError, match="'zero', 'prior'"):
        check_bias_init("log-prior")
