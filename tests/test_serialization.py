"""Saving adapters only and loading them back onto the base model."""
import json
import shutil

import numpy
import pytest
import spacy
import srsly

from spacy_lsllama.loading import BaseModelError
from spacy_lsllama.serialization import FORMAT, SavedTransformerError
from pipelines import assert_same_predictions, decoder_shim, predictions, train_pipeline

TEXTS = ["I like London a lot", "Paris is awful, really", "", "A new text about Rome and Berlin"]






@pytest.mark.parametrize("bidirectional", [False, True])
def test_reloaded_pipeline_predicts_as_before_saving(tiny_model, tmp_path, bidirectional):
    nlp = train_pipeline(tiny_model, bidirectional=bidirectional)
    before = predictions(nlp, TEXTS)
    nlp.to_disk(tmp_path / "pipeline")
    reloaded = spacy.load(tmp_path / "pipeline")
    assert decoder_shim(reloaded).settings.bidirectional is bidirectional
    assert_same_predictions(before, predictions(reloaded, TEXTS))


def test_saved_transformer_holds_adapters_and_tokenizer_not_base_weights(metaspace_model, tmp_path):
    nlp = train_pipeline(metaspace_model)
    nlp.to_disk(tmp_path / "pipeline")
    saved = (tmp_path / "pipeline" / "transformer" / "model").read_bytes()
    base_size = (metaspace_model / "model.safetensors").stat().st_size
    assert len(saved) < base_size / 4
    (shim_bytes,) = [data for node in srsly.msgpack_loads(saved)["shims"] for data in node]
    shim_message = srsly.msgpack_loads(shim_bytes)
    assert shim_message["format"] == FORMAT
    assert "tokenizer.json" in shim_message["tokenizer"]
    assert shim_message["weights"][:8] != b"\x80\x02\x8a\n", "never pickle"
    from safetensors.torch import load

    weights = load(shim_message["weights"])
    assert weights and all("lora_" in name for name in weights)


def test_full_finetuning_saves_every_weight(metaspace_model, tmp_path):
    nlp = train_pipeline(metaspace_model, lora=None, steps=2)
    before = predictions(nlp, TEXTS)
    nlp.to_disk(tmp_path / "pipeline")
    reloaded = spacy.load(tmp_path / "pipeline")
    assert_same_predictions(before, predictions(reloaded, TEXTS))


def test_base_location_can_be_overridden_at_load_time(metaspace_model, tmp_path):
    nlp = train_pipeline(metaspace_model)
    before = predictions(nlp, TEXTS)
    nlp.to_disk(tmp_path / "pipeline")
    moved = shutil.copytree(metaspace_model, tmp_path / "elsewhere")
    reloaded = spacy.load(tmp_path / "pipeline", config={"components.transformer.model.name": str(moved)})
    assert decoder_shim(reloaded).settings.name == str(moved)
    assert_same_predictions(before, predictions(reloaded, TEXTS))


def test_missing_base_model_names_it_and_says_how_to_point_elsewhere(metaspace_model, tmp_path):
    nlp = train_pipeline(metaspace_model, steps=1)
    nlp.to_disk(tmp_path / "pipeline")
    with pytest.raises(BaseModelError, match=r"(?s)/nowhere/llama.*components\.transformer\.model\.name"):
        spacy.load(tmp_path / "pipeline", config={"components.transformer.model.name": "/nowhere/llama"})


def test_base_model_with_another_config_is_refused(metaspace_model, tmp_path):
    nlp = train_pipeline(metaspace_model, steps=1)
    nlp.to_disk(tmp_path / "pipeline")
    other = shutil.copytree(metaspace_model, tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    config["rms_norm_eps"] = 1e-3
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(BaseModelError, match="not the one this pipeline was trained on"):
        spacy.load(tmp_path / "pipeline", config={"components.transformer.model.name": str(other)})


def test_truncated_saved_transformer_is_reported_as_corrupt(metaspace_model, tmp_path):
    nlp = train_pipeline(metaspace_model, steps=1)
    nlp.to_disk(tmp_path / "pipeline")
    shim = decoder_shim(nlp)
    data = shim.to_bytes()
    with pytest.raises(SavedTransformerError, match="corrupt or truncated"):
        shim.from_bytes(data[: len(data) // 2])


def test_saving_before_initialization_explains_what_is_missing(metaspace_model):
    from pipelines import build_pipeline

    nlp = build_pipeline(metaspace_model)
    with pytest.raises(ValueError, match="initialize"):
        decoder_shim(nlp).to_bytes()


def test_reloading_never_changes_base_weights(metaspace_model, tmp_path):
    nlp = train_pipeline(metaspace_model)
    nlp.to_disk(tmp_path / "pipeline")
    reloaded = spacy.load(tmp_path / "pipeline")
    from safetensors.torch import load_file

    original = load_file(metaspace_model / "model.safetensors")
    base = decoder_shim(reloaded).encoder.transformer.base_model.model
    for name, tensor in base.state_dict().items():
        if "lora_" in name:
            continue
        key = "model." + name.replace(".base_layer", "")
        numpy.testing.assert_array_equal(tensor.numpy(), original[key].numpy())
