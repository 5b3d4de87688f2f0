"""What identifies a base model: where it is, its config.json fields and its
weights (spacy_lsllama/decoder/identity.py)."""
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from spacy_lsllama.decoder.identity import (
    BaseModelError,
    config_differences,
    config_fields,
    locate_base,
    read_base_identity,
    weights_differences,
)
from tiny_models import save_tiny_llama


def raw_config(folder):
    return json.loads((folder / "config.json").read_text())


def identity_of(folder):
    return read_base_identity(locate_base(str(folder)))


# config ----------------------------------------------------------------------


def test_config_fields_are_the_saved_fields_without_the_volatile_ones(metaspace_model):
    raw = raw_config(metaspace_model)
    fields = config_fields({**raw, "_name_or_path": "/somewhere", "use_cache": False})
    assert fields["hidden_size"] == raw["hidden_size"] == 32
    for volatile in ("transformers_version", "torch_dtype", "_name_or_path", "use_cache", "architectures"):
        assert volatile not in fields


def test_fields_another_transformers_release_writes_with_their_default_are_no_difference(metaspace_model):
    """transformers 4.45 added LlamaConfig.head_dim; 4.56 renamed torch_dtype to dtype."""
    raw = raw_config(metaspace_model)
    older = {key: value for key, value in raw.items() if key != "head_dim"}
    older["transformers_version"] = "4.44.2"
    newer = {key: value for key, value in raw.items() if key != "torch_dtype"}
    newer.update(dtype="float32", transformers_version="4.56.0")
    for a, b in [(older, raw), (raw, older), (older, newer)]:
        assert config_differences(config_fields(a), config_fields(b)) == []


def test_config_differences_name_each_differing_field(metaspace_model):
    raw = {**raw_config(metaspace_model), "rope_theta": 500000.0}
    other = {**raw, "rms_norm_eps": 1e-3, "head_dim": 16}
    del other["rope_theta"]  # falls back to LlamaConfig's 10000.0
    differences = config_differences(config_fields(raw), config_fields(other))
    assert len(differences) == 3, differences
    text = "\n".join(differences)
    assert "rms_norm_eps" in text and "head_dim" in text and "rope_theta" in text
    assert "0.001" in text


# weights ---------------------------------------------------------------------


def test_other_weights_under_the_same_config_are_another_base(metaspace_model, tmp_path):
    other = save_tiny_llama(tmp_path / "other", "metaspace", seed=1)
    trained_on, found = identity_of(metaspace_model), identity_of(other)
    assert trained_on.config == found.config
    assert trained_on.digest != found.digest
    (difference,) = weights_differences(trained_on.weights, found.weights)
    assert "other values" in difference and "embed_tokens.weight" in difference


def test_one_changed_tensor_is_named(metaspace_model, tmp_path):
    folder = shutil.copytree(metaspace_model, tmp_path / "changed")
    tensors = load_file(folder / "model.safetensors")
    name = "model.layers.1.mlp.down_proj.weight"
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    (difference,) = weights_differences(identity_of(metaspace_model).weights, identity_of(folder).weights)
    assert "1 of" in difference and name in difference


def test_a_changed_shape_or_a_missing_tensor_is_named(metaspace_model, tmp_path):
    folder = shutil.copytree(metaspace_model, tmp_path / "changed")
    tensors = load_file(folder / "model.safetensors")
    del tensors["lm_head.weight"]
    tensors["model.norm.weight"] = torch.ones(16)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    text = "\n".join(weights_differences(identity_of(metaspace_model).weights, identity_of(folder).weights))
    assert "lm_head.weight" in text and "model.norm.weight" in text and "(16,)" in text


def test_the_identity_does_not_depend_on_how_the_weights_are_sharded(metaspace_model, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(metaspace_model)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="60KB", safe_serialization=True)
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert identity_of(tmp_path / "sharded").digest == identity_of(metaspace_model).digest


def test_the_identity_survives_a_round_trip_through_its_saved_form(metaspace_model):
    import srsly

    from spacy_lsllama.decoder.identity import BaseIdentity

    identity = identity_of(metaspace_model)
    again = BaseIdentity.from_dict(srsly.msgpack_loads(srsly.msgpack_dumps(identity.to_dict())))
    assert again == identity and again.digest == identity.digest


def test_a_folder_without_weights_is_explained(metaspace_model, tmp_path):
    folder = shutil.copytree(metaspace_model, tmp_path / "no-weights")
    (folder / "model.safetensors").unlink()
    with pytest.raises(BaseModelError, match="model.safetensors"):
        identity_of(folder)


def test_a_corrupt_weights_file_is_explained(metaspace_model, tmp_path):
    folder = shutil.copytree(metaspace_model, tmp_path / "corrupt")
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(BaseModelError, match="not a valid safetensors file"):
        identity_of(folder)


# location --------------------------------------------------------------------


@pytest.fixture
def in_a_project(tmp_path, monkeypatch):
    """A working directory with an `assets` folder, as a spaCy project has."""
    (tmp_path / "assets").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def no_hub(monkeypatch):
    """Record (and refuse) every attempt to reach the Hugging Face hub."""
    import huggingface_hub
    import transformers.utils.hub

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError("hub lookups are not allowed in this test")

    for module in (huggingface_hub, transformers.utils.hub):
        for function in ("hf_hub_download", "snapshot_download"):
            if hasattr(module, function):
                monkeypatch.setattr(module, function, refuse)
    return calls


@pytest.mark.parametrize(
    "name",
    [
        "./missing-model",
        "../missing-model",
        "/definitely/not/here/model",
        "~/definitely-not-a-lsllama-model",
        "models/llama/7b",
        "models\\llama",
        "C:\\models\\llama",
        "assets/smollm2-135m",  # the project default, run from a project whose assets are not fetched
        "models/",
    ],
)
def test_a_name_that_looks_like_a_path_is_a_path_never_a_hub_id(in_a_project, no_hub, name):
    with pytest.raises(BaseModelError, match="does not exist") as error:
        locate_base(name)
    assert "read as a local path" in str(error.value)
    assert no_hub == []


@pytest.mark.parametrize("name", ["meta-llama/Llama-2-7b-hf", "gpt2", "HuggingFaceTB/SmolLM2-135M-Instruct"])
def test_a_hub_id_stays_a_hub_id(in_a_project, name):
    location = locate_base(name, "main")
    assert (location.kind, location.where, location.revision) == ("hub", name, "main")


def test_an_existing_folder_is_a_folder_whatever_its_name_looks_like(in_a_project):
    (in_a_project / "org" / "name").mkdir(parents=True)
    location = locate_base("org/name")
    assert location.kind == "folder"
    assert location.where == str(in_a_project / "org" / "name")
    assert os.path.isabs(location.where)


def test_a_file_is_not_a_base_folder(in_a_project):
    (in_a_project / "model.safetensors").write_bytes(b"")
    with pytest.raises(BaseModelError, match="is a file"):
        locate_base("model.safetensors")


def test_a_pipeline_trained_on_a_folder_never_looks_its_base_up_on_the_hub(in_a_project, no_hub):
    with pytest.raises(BaseModelError, match="trained on a local folder"):
        locate_base("base", saved_kind="folder")
    assert no_hub == []
