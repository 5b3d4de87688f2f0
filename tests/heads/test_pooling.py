"""Pooling that accepts empty docs and tokens without pieces."""
import numpy
import pytest
from thinc.api import reduce_first as thinc_reduce_first, reduce_last as thinc_reduce_last
from thinc.types import Ragged

from spacy_lsllama.heads.pooling import reduce_first, reduce_last
from pipelines import build_pipeline, train_examples



def ragged(lengths):
    data = numpy.arange(sum(lengths) * 2, dtype="f").reshape(-1, 2)
    return Ragged(data, numpy.array(lengths, dtype="i"))


@pytest.mark.parametrize("ours,theirs", [(reduce_first, thinc_reduce_first), (reduce_last, thinc_reduce_last)])
def test_reductions_match_thinc_on_non_empty_sequences(ours, theirs):
    X = ragged([2, 1, 3])
    Y, backprop = ours()(X, is_train=True)
    Y_thinc, backprop_thinc = theirs()(X, is_train=True)
    numpy.testing.assert_array_equal(Y, Y_thinc)
    dY = numpy.ones_like(Y)
    numpy.testing.assert_array_equal(backprop(dY).dataXd, backprop_thinc(dY).dataXd)


@pytest.mark.parametrize("layer", [reduce_first, reduce_last])
def test_empty_sequences_get_zeros_and_no_gradient(layer):
    X = ragged([0, 2, 0, 1])
    Y, backprop = layer()(X, is_train=True)
    assert Y.shape == (4, 2)
    assert (Y[[0, 2]] == 0).all()
    dX = backprop(numpy.ones_like(Y)).dataXd
    assert dX.shape == X.dataXd.shape
    assert dX.sum() == 2 * 2, "each non-empty sequence passes its gradient to one row"


def test_textcat_and_ner_accept_batches_mixing_empty_and_non_empty_docs(metaspace_model):
    nlp = build_pipeline(metaspace_model)
    examples = train_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    docs = list(nlp.pipe(["", "hello", "   ", "Paris is awful"], batch_size=4))
    for doc in docs:
        assert sum(doc.cats.values()) == pytest.approx(1.0, abs=1e-5)
        assert all(ent.label_ == "LOC" for ent in doc.ents)
    from spacy.training import Example

    with_empty = examples + [Example.from_dict(nlp.make_doc(""), {"cats": {"POS": 1.0, "NEG": 0.0}})]
    losses = nlp.update(with_empty, sgd=optimizer)
    assert all(numpy.isfinite(loss) for loss in losses.values())
