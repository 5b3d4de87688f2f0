"""Pipelines on the same base share one copy of its frozen weights."""
import gc
import os
import shutil

import pytest
import spacy
import torch

from spacy_lsllama.decoder import sharing
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


def test_two_folders_with_the_same_relative_name_never_share(metaspace_model, tmp_path, monkeypatch):
    """Two projects whose configs both say `name = "base"`."""
    from pathlib import Path

    from safetensors.torch import load_file
    from tiny_models import save_tiny_llama

    shutil.copytree(metaspace_model, tmp_path / "first" / "base")
    save_tiny_llama(tmp_path / "second" / "base", "metaspace", seed=1)
    monkeypatch.chdir(tmp_path / "first")
    first = train_pipeline(Path("base"), steps=0)
    monkeypatch.chdir(tmp_path / "second")
    second = train_pipeline(Path("base"), steps=0)
    assert base_weight(first).data_ptr() != base_weight(second).data_ptr()
    expected = load_file(tmp_path / "second" / "base" / "model.safetensors")["model.layers.0.mlp.up_proj.weight"]
    assert torch.equal(base_weight(second).detach(), expected)


def test_a_base_whose_weights_were_replaced_is_loaded_again(metaspace_model, tmp_path):
    from safetensors.torch import load_file
    from tiny_models import save_tiny_llama

    folder = shutil.copytree(metaspace_model, tmp_path / "base")
    first = train_pipeline(folder, steps=0)
    new_weights = save_tiny_llama(tmp_path / "new", "metaspace", seed=1) / "model.safetensors"
    shutil.copy(new_weights, folder / "model.safetensors.download")
    os.replace(folder / "model.safetensors.download", folder / "model.safetensors")
    second = train_pipeline(folder, steps=0)
    assert base_weight(first).data_ptr() != base_weight(second).data_ptr()
    expected = load_file(new_weights)["model.layers.0.mlp.up_proj.weight"]
    assert torch.equal(base_weight(second).detach(), expected)
