"""Pipelines on the same base share one copy of its frozen weights."""
import gc

import pytest
import spacy

from spacy_lsllama import sharing
from pipelines import decoder_shim, train_pipeline


def base_weight(nlp):
    return decoder_shim(nlp).encoder.transformer.base_model.model.layers[0].mlp.up_proj.weight


@pytest.fixture(autouse=True)
def empty_registry():
    gc.collect()
    sharing._REGISTRY.clear()
    yield
    sharing._REGISTRY.clear()


def test_two_pipelines_on_one_base_share_its_weights(metaspace_model):
    causal = train_pipeline(metaspace_model, steps=1)
    bidirectional = train_pipeline(metaspace_model, steps=1, bidirectional=True)
    assert base_weight(causal).data_ptr() == base_weight(bidirectional).data_ptr()
    assert decoder_shim(bidirectional).encoder.bidirectional and not decoder_shim(causal).encoder.bidirectional


def test_sharing_changes_no_prediction(metaspace_model, tmp_path):
    textcat = train_pipeline(metaspace_model, steps=2)
    textcat.to_disk(tmp_path / "first")
    expected = textcat("I like London").cats
    del textcat
    gc.collect()
    alone = spacy.load(tmp_path / "first")
    assert alone("I like London").cats == pytest.approx(expected, abs=1e-6)
    other = train_pipeline(metaspace_model, steps=3, bidirectional=True)
    shared = spacy.load(tmp_path / "first")
    assert base_weight(shared).data_ptr() == base_weight(other).data_ptr()
    assert shared("I like London").cats == pytest.approx(expected, abs=1e-6)


def test_training_one_pipeline_leaves_the_other_unchanged(metaspace_model):
    first = train_pipeline(metaspace_model, steps=1)
    expected = first("Paris is awful").cats
    train_pipeline(metaspace_model, steps=5)
    assert first("Paris is awful").cats == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "settings",
    [{"share_base": False}, {"dtype": "bfloat16"}, {"lora": None}, {"attn_implementation": "eager"}],
)
def test_bases_that_may_differ_are_not_shared(metaspace_model, settings):
    first = train_pipeline(metaspace_model, steps=0)
    second = train_pipeline(metaspace_model, steps=0, **settings)
    weight = decoder_shim(second).encoder.transformer.get_input_embeddings().weight
    assert base_weight(first).data_ptr() != weight.data_ptr()
    assert decoder_shim(first).encoder.transformer.get_input_embeddings().weight.data_ptr() != weight.data_ptr()


def test_a_base_is_freed_with_its_last_pipeline(metaspace_model):
    first = train_pipeline(metaspace_model, steps=0)
    assert len(sharing._REGISTRY) == 1
    del first
    gc.collect()
    assert len(sharing._REGISTRY) == 0
