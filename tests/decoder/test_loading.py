"""Loading the base (spacy_lsllama/decoder/loading.py): settings meant for a GPU that
start on the CPU, and hints that fit how the base was being loaded."""
from pathlib import Path

import pytest
import spacy
import torch
from thinc.api import Config
from spacy.util import registry

from spacy_lsllama.decoder.loading import BaseModelError, GpuSettingsOnCpuWarning, gpu_settings_on_cpu
from pipelines import decoder_shim, transformer_config

CONFIGS = Path(__file__).parents[2] / "configs"
CPU = torch.device("cpu")


def shipped_settings(config_name: str):
    config = Config().from_disk(CONFIGS / config_name)
    model = registry.resolve({"model": config["components"]["transformer"]["model"]})["model"]
    return model.layers[0].shims[0].settings


@pytest.mark.parametrize("config_name", ["llama2-7b-qlora-textcat.cfg", "llama2-7b-qlora-ner.cfg"])
def test_the_qlora_configs_are_named_gpu_settings_on_the_cpu(config_name):
    settings = shipped_settings(config_name)
    named = " ".join(gpu_settings_on_cpu(settings, CPU, training=True))
    assert "quantization.compute_dtype" in named and "gradient_checkpointing" in named
    assert gpu_settings_on_cpu(settings, torch.device("cuda", 0), training=True) == []


@pytest.mark.parametrize("config_name", ["textcat-causal.cfg", "ner-bidirectional.cfg"])
def test_the_cpu_configs_raise_no_gpu_warning(config_name):
    assert gpu_settings_on_cpu(shipped_settings(config_name), CPU, training=True) == []


def test_initializing_gpu_settings_on_the_cpu_warns_and_names_them(metaspace_model):
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config=transformer_config(metaspace_model, gradient_checkpointing=True, dtype="float16"))
    with pytest.warns(GpuSettingsOnCpuWarning, match=r'(?s)runs on the CPU.*gradient_checkpointing = true.*dtype = "float16".*--gpu-id'):
        nlp.initialize()
    assert decoder_shim(nlp).is_loaded


def test_a_missing_base_while_training_points_to_paths_model(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config=transformer_config(tmp_path / "nowhere"))
    with pytest.raises(BaseModelError, match=r"(?s)nowhere.*--paths\.model") as error:
        nlp.initialize()
    assert "spacy.load" not in str(error.value)


def test_a_load_locates_and_identifies_its_base_once(metaspace_model, tmp_path, monkeypatch):
    """Training (nlp.initialize) and loading (spacy.load) build the decoder one
    way: the base is located and its identity read from its files once."""
    import spacy

    from pipelines import train_pipeline
    from spacy_lsllama.decoder import loading

    calls = {"locate": 0, "identity": 0}
    locate_base, read_base_identity = loading.locate_base, loading.read_base_identity

    def counting_locate(*args, **kwargs):
        calls["locate"] += 1
        return locate_base(*args, **kwargs)

    def counting_identity(*args, **kwargs):
        calls["identity"] += 1
        return read_base_identity(*args, **kwargs)

    monkeypatch.setattr(loading, "locate_base", counting_locate)
    monkeypatch.setattr(loading, "read_base_identity", counting_identity)
    train_pipeline(metaspace_model, steps=0, share_base=False).to_disk(tmp_path / "pipeline")
    assert calls == {"locate": 1, "identity": 1}
    calls.update(locate=0, identity=0)
    spacy.load(tmp_path / "pipeline")
    assert calls == {"locate": 1, "identity": 1}
