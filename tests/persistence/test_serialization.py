"""Saving adapters only and loading them back onto the base model."""
import json
import re
import shutil
from pathlib import Path

import numpy
import pytest
import spacy
import srsly

from spacy_lsllama.decoder.identity import BaseIdentityWarning
from spacy_lsllama.decoder.loading import BaseModelError, RemoteCodeIgnoredWarning
from spacy_lsllama.decoder.serialization import FORMAT, SavedTransformerError, tokenizer_to_files
from pipelines import assert_same_predictions, decoder_shim, predictions, train_pipeline
from tiny_models import folder_with_remote_code

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


def saved_settings(pipeline: Path) -> dict:
    saved = (pipeline / "transformer" / "model").read_bytes()
    (shim_bytes,) = [data for node in srsly.msgpack_loads(saved)["shims"] for data in node]
    return srsly.msgpack_loads(shim_bytes)["settings"]


def test_a_saved_decoder_holds_what_it_is_not_how_it_was_loaded(metaspace_model, tmp_path):
    """The adapters, the attention and the tokenizer settings are saved; the base's
    dtype, quantization, attention kernel, trust and sharing are the loading
    config's choice, so a pipeline folder never carries them."""
    nlp = train_pipeline(metaspace_model, bidirectional=True)
    nlp.to_disk(tmp_path / "pipeline")
    settings = saved_settings(tmp_path / "pipeline")
    assert set(settings) == {"name", "revision", "tokenizer_config", "lora", "bidirectional", "max_length"}
    assert settings["bidirectional"] is True and settings["lora"]["r"] == decoder_shim(nlp).settings.lora.r


def test_load_options_come_from_the_loading_config_and_the_description_from_the_pipeline(metaspace_model, tmp_path):
    nlp = train_pipeline(metaspace_model, bidirectional=True)
    nlp.to_disk(tmp_path / "pipeline")
    reloaded = spacy.load(
        tmp_path / "pipeline",
        config={
            "components.transformer.model.bidirectional": False,
            "components.transformer.model.attn_implementation": "eager",
            "components.transformer.model.share_base": False,
        },
    )
    settings = decoder_shim(reloaded).settings
    assert settings.bidirectional is True  # trained so: the pipeline's description wins
    assert (settings.attn_implementation, settings.share_base) == ("eager", False)  # this load's choice
    assert_same_predictions(predictions(nlp, TEXTS), predictions(reloaded, TEXTS))


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


# The base's identity (spacy_lsllama/decoder/identity.py) -----------------------------


def rewrite_saved_base(pipeline, change) -> None:
    """Apply `change` to the saved base reference of the pipeline's transformer."""
    path = pipeline / "transformer" / "model"
    model = srsly.msgpack_loads(path.read_bytes())
    model["shims"] = [[_rewrite_shim(data, change) for data in node] for node in model["shims"]]
    path.write_bytes(srsly.msgpack_dumps(model))


def _rewrite_shim(data: bytes, change) -> bytes:
    message = srsly.msgpack_loads(data)
    change(message["base"])
    return srsly.msgpack_dumps(message)


def saved_pipeline(base, tmp_path, **settings):
    nlp = train_pipeline(base, steps=1, **settings)
    nlp.to_disk(tmp_path / "pipeline")
    return tmp_path / "pipeline", nlp


def test_base_with_the_same_config_and_other_weights_is_refused(metaspace_model, tmp_path):
    """LLaMA-2-7b and LLaMA-2-7b-chat have the same config.json."""
    from tiny_models import save_tiny_llama

    pipeline, _ = saved_pipeline(metaspace_model, tmp_path)
    other = save_tiny_llama(tmp_path / "chat", "metaspace", seed=1)
    assert (other / "config.json").read_text() == (metaspace_model / "config.json").read_text()
    with pytest.raises(BaseModelError, match="not the one this pipeline was trained on") as error:
        spacy.load(pipeline, config={"components.transformer.model.name": str(other)})
    message = str(error.value)
    assert "weights" in message and "other values" in message
    assert "SPACY_LSLLAMA_ACCEPT_BASE=" in message and "components.transformer.model.name" in message


def test_another_base_is_accepted_when_the_caller_names_it(metaspace_model, tmp_path, monkeypatch):
    from tiny_models import save_tiny_llama

    pipeline, nlp = saved_pipeline(metaspace_model, tmp_path)
    other = save_tiny_llama(tmp_path / "chat", "metaspace", seed=1)
    override = {"components.transformer.model.name": str(other)}
    with pytest.raises(BaseModelError) as error:
        spacy.load(pipeline, config=override)
    digest = re.search(r"SPACY_LSLLAMA_ACCEPT_BASE=([0-9a-f]+)", str(error.value)).group(1)
    monkeypatch.setenv("SPACY_LSLLAMA_ACCEPT_BASE", "0123456789abcdef")  # another base: still refused
    with pytest.raises(BaseModelError):
        spacy.load(pipeline, config=override)
    monkeypatch.setenv("SPACY_LSLLAMA_ACCEPT_BASE", digest)
    with pytest.warns(BaseIdentityWarning, match="accepted"):
        accepted = spacy.load(pipeline, config=override)
    assert accepted("I like London").cats != pytest.approx(nlp("I like London").cats, abs=1e-6)
    # Saved again, the pipeline records the base it now runs on.
    accepted.to_disk(tmp_path / "resaved")
    monkeypatch.delenv("SPACY_LSLLAMA_ACCEPT_BASE")
    spacy.load(tmp_path / "resaved")


def test_a_config_mismatch_names_the_differing_fields(metaspace_model, tmp_path):
    pipeline, _ = saved_pipeline(metaspace_model, tmp_path)
    other = shutil.copytree(metaspace_model, tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    config["rms_norm_eps"] = 1e-3
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(BaseModelError, match="rms_norm_eps") as error:
        spacy.load(pipeline, config={"components.transformer.model.name": str(other)})
    assert "0.001" in str(error.value)


def test_a_pipeline_saved_under_another_transformers_release_loads(metaspace_model, tmp_path, monkeypatch):
    """A release that did not know LlamaConfig.head_dim (before 4.45) had no
    such key in config.to_dict(); the identity must not depend on it."""
    from transformers import LlamaConfig

    to_dict = LlamaConfig.to_dict
    monkeypatch.setattr(LlamaConfig, "to_dict", lambda self: {k: v for k, v in to_dict(self).items() if k != "head_dim"})
    pipeline, nlp = saved_pipeline(metaspace_model, tmp_path)
    before = predictions(nlp, TEXTS)
    monkeypatch.undo()
    assert_same_predictions(before, predictions(spacy.load(pipeline), TEXTS))


def test_a_full_finetune_does_not_need_the_base_weights(metaspace_model, tmp_path):
    """Under lora = null every weight is saved in the pipeline: only the config must match."""
    from tiny_models import save_tiny_llama

    pipeline, nlp = saved_pipeline(metaspace_model, tmp_path, lora=None)
    other = save_tiny_llama(tmp_path / "other", "metaspace", seed=1)
    reloaded = spacy.load(pipeline, config={"components.transformer.model.name": str(other)})
    assert_same_predictions(predictions(nlp, TEXTS), predictions(reloaded, TEXTS))


def test_a_pipeline_saved_before_the_weights_were_recorded_loads_with_a_warning(metaspace_model, tmp_path):
    pipeline, nlp = saved_pipeline(metaspace_model, tmp_path)

    def as_version_0_1_0(base):
        for key in list(base):
            if key not in ("name", "revision", "fingerprint"):
                del base[key]

    rewrite_saved_base(pipeline, as_version_0_1_0)
    with pytest.warns(BaseIdentityWarning, match="(?s)cannot be checked.*Save the pipeline again"):
        reloaded = spacy.load(pipeline)
    assert_same_predictions(predictions(nlp, TEXTS), predictions(reloaded, TEXTS))

    def with_another_fingerprint(base):
        base["fingerprint"] = "0" * 64

    rewrite_saved_base(pipeline, with_another_fingerprint)
    with pytest.raises(BaseModelError, match="(?s)transformers release.*SPACY_LSLLAMA_ACCEPT_BASE="):
        spacy.load(pipeline)


def test_a_base_trained_from_a_relative_folder_is_never_looked_up_on_the_hub(metaspace_model, tmp_path, monkeypatch):
    """`base` is a valid hub id too: a pipeline trained on a folder of that name,
    loaded where no such folder exists, must say so, not ask the hub."""
    import transformers.utils.hub

    shutil.copytree(metaspace_model, tmp_path / "project" / "base")
    monkeypatch.chdir(tmp_path / "project")
    train_pipeline(Path("base"), steps=1).to_disk(tmp_path / "pipeline")
    monkeypatch.chdir(tmp_path)
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError("no hub in this test")

    monkeypatch.setattr(transformers.utils.hub, "hf_hub_download", refuse)
    with pytest.raises(BaseModelError, match=r"(?s)'base' does not exist.*components\.transformer\.model\.name"):
        spacy.load(tmp_path / "pipeline")
    assert calls == []
    nlp = spacy.load(tmp_path / "pipeline", config={"components.transformer.model.name": "project/base"})
    assert nlp("I like London").cats


# What a pipeline folder can make the loader do ---------------------------------


def test_spacy_load_ignores_trust_remote_code_saved_in_the_pipeline(metaspace_model, tmp_path, monkeypatch):
    from thinc.api import Config

    marker = tmp_path / "remote-code-ran"
    base = folder_with_remote_code(metaspace_model, tmp_path / "custom", marker)
    pipeline, nlp = saved_pipeline(base, tmp_path)
    assert not marker.exists()
    config = Config().from_disk(pipeline / "config.cfg", interpolate=False)
    config["components"]["transformer"]["model"]["trust_remote_code"] = True
    config.to_disk(pipeline / "config.cfg")
    monkeypatch.delenv("SPACY_LSLLAMA_TRUST_REMOTE_CODE", raising=False)
    with pytest.warns(RemoteCodeIgnoredWarning, match="SPACY_LSLLAMA_TRUST_REMOTE_CODE"):
        reloaded = spacy.load(pipeline)
    assert not marker.exists()
    assert decoder_shim(reloaded).settings.trust_remote_code is False
    assert_same_predictions(predictions(nlp, TEXTS), predictions(reloaded, TEXTS))
    # An override in spacy.load's config is no opt-in: the saved config can say the same.
    spacy.load(pipeline, config={"components.transformer.model.trust_remote_code": True})
    assert not marker.exists()
    # The caller opts in for this base, in the environment the folder cannot write.
    monkeypatch.setenv("SPACY_LSLLAMA_TRUST_REMOTE_CODE", "some/other-model")
    spacy.load(pipeline)
    assert not marker.exists()
    monkeypatch.setenv("SPACY_LSLLAMA_TRUST_REMOTE_CODE", str(base))
    try:
        spacy.load(pipeline)
    except (OSError, ValueError):
        pass  # this config class has no model class: what matters is that its code ran
    assert marker.exists()


def test_saved_tokenizer_files_are_data_only(metaspace_model, tmp_path, monkeypatch):
    """Saved tokenizer files naming a tokenizer class in a .py file beside them:
    transformers would ask whether to run it (and run it on "y"); the loader
    never asks and never runs it."""
    from spacy_lsllama.decoder.serialization import tokenizer_from_files

    nlp = train_pipeline(metaspace_model, steps=0)
    files = tokenizer_to_files(decoder_shim(nlp).loaded_tokenizer())
    marker = tmp_path / "tokenizer-code-ran"
    files["tokenization_custom.py"] = (
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PreTrainedTokenizerFast\n"
        "class CustomTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    ).encode()
    tokenizer_config = json.loads(files["tokenizer_config.json"])
    tokenizer_config["tokenizer_class"] = "CustomTokenizer"
    tokenizer_config["auto_map"] = {"AutoTokenizer": [None, "tokenization_custom.CustomTokenizer"]}
    files["tokenizer_config.json"] = json.dumps(tokenizer_config).encode()
    monkeypatch.setattr("builtins.input", lambda *args: "y")  # whoever is asked says yes
    try:
        tokenizer_from_files(files)
    except (OSError, ValueError):
        pass  # refusing is as good as ignoring the code
    assert not marker.exists()
