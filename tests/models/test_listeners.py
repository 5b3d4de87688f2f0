"""spaCy's replace_listeners on pipelines that listen to a LlamaTransformer
(spacy_lsllama/models/listeners.py, spacy_lsllama/models/tok2vec.py): the component gets
its own copy of the decoder, trains, saves, and loads with the same predictions."""
import inspect
import pickle
from importlib.metadata import entry_points

import spacy
import torch
from spacy.util import registry

from pipelines import assert_same_predictions, predictions, train_examples, train_pipeline
from spacy_lsllama.models.architectures import LlamaTransformer
from spacy_lsllama.decoder.shim import LlamaShim
from spacy_lsllama.models.tok2vec import Tok2VecLlamaTransformer

TEXTS = ["I like London a lot", "Paris is awful, really", "", "A new text about Rome and Berlin"]
TOK2VEC = "spacy-lsllama.Tok2VecLlamaTransformer.v2"


def own_transformer_configs(nlp):
    return {name: nlp.config["components"][name]["model"]["tok2vec"] for name in ("textcat", "ner")}


def own_shim(nlp, name):
    (shim,) = [shim for node in nlp.get_pipe(name).model.walk() for shim in node.shims if isinstance(shim, LlamaShim)]
    return shim


def lora_weights(shim):
    return {k: w.detach().clone() for k, w in shim.encoder.transformer.named_parameters() if "lora_" in k}


def test_replaced_listeners_train_save_and_load(tiny_model, tmp_path):
    nlp = train_pipeline(tiny_model, steps=2)
    listening = predictions(nlp, TEXTS)
    for name in ("textcat", "ner"):
        nlp.replace_listeners("transformer", name, ["model.tok2vec"])
    assert nlp.get_pipe("transformer").listening_components == []
    for name, tok2vec in own_transformer_configs(nlp).items():
        assert tok2vec["@architectures"] == TOK2VEC, name
        assert tok2vec["name"] == str(tiny_model)
    assert own_transformer_configs(nlp)["textcat"]["pooling"] == {"@layers": "spacy-lsllama.reduce_last.v1"}
    assert own_transformer_configs(nlp)["ner"]["pooling"] == {"@layers": "spacy-lsllama.reduce_first.v1"}
    # Same weights, now owned by each component: same predictions.
    assert_same_predictions(listening, predictions(nlp, TEXTS), tolerance=1e-4)

    shims = {name: own_shim(nlp, name) for name in ("transformer", "textcat", "ner")}
    assert len({id(shim) for shim in shims.values()}) == 3
    adapters = {name: lora_weights(shim) for name, shim in shims.items()}
    optimizer = nlp.resume_training()
    for _ in range(2):
        nlp.update(train_examples(nlp), sgd=optimizer)
    for name in ("textcat", "ner"):  # each component trains its own adapters
        assert any(not torch.equal(w, adapters[name][k]) for k, w in lora_weights(shims[name]).items()), name
    before = predictions(nlp, TEXTS)
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert own_transformer_configs(loaded) == own_transformer_configs(nlp)
    assert_same_predictions(before, predictions(loaded, TEXTS))


def test_sourced_components_with_replace_listeners(metaspace_model, tmp_path):
    """The config pattern: `source = ...` and `replace_listeners = ["model.tok2vec"]`."""
    source = train_pipeline(metaspace_model, steps=2)
    source.to_disk(tmp_path / "source")
    expected = predictions(source, TEXTS)
    config = {
        "nlp": {"lang": "en", "pipeline": ["textcat", "ner"]},
        "components": {
            name: {"source": str(tmp_path / "source"), "replace_listeners": ["model.tok2vec"]}
            for name in ("textcat", "ner")
        },
    }
    nlp = spacy.util.load_model_from_config(spacy.util.Config(config), auto_fill=True)
    assert nlp.pipe_names == ["textcat", "ner"]
    assert all(tok2vec["@architectures"] == TOK2VEC for tok2vec in own_transformer_configs(nlp).values())
    assert_same_predictions(expected, predictions(nlp, TEXTS), tolerance=1e-4)
    nlp.to_disk(tmp_path / "sourced")
    assert_same_predictions(expected, predictions(spacy.load(tmp_path / "sourced"), TEXTS), tolerance=1e-4)


def test_the_tok2vec_architecture_takes_every_llama_transformer_setting():
    """replace_listener_cfg copies the transformer's whole config: every
    LlamaTransformer argument must be accepted, with the same default."""
    own = inspect.signature(Tok2VecLlamaTransformer).parameters
    shared = inspect.signature(LlamaTransformer).parameters
    assert set(own) == set(shared) | {"pooling", "grad_factor"}
    for name, parameter in shared.items():
        assert own[name].default == parameter.default, name
    assert registry.architectures.get(TOK2VEC) is Tok2VecLlamaTransformer
    # Registered through an entry point: configs resolve it without an import,
    # and spacy package records spacy-lsllama as a requirement.
    points = {point.name: point.value for point in entry_points(group="spacy_architectures")}
    assert points[TOK2VEC] == "spacy_lsllama.models.tok2vec:Tok2VecLlamaTransformer"


def test_the_replace_functions_pickle(metaspace_model):
    model = LlamaTransformer(name=str(metaspace_model))
    for attr in ("replace_listener", "replace_listener_cfg"):
        function = model.attrs[attr]
        assert pickle.loads(pickle.dumps(function)) is function
        assert function.__module__ == "spacy_lsllama.models.listeners"


def test_a_config_with_the_tok2vec_architecture_trains_from_scratch(metaspace_model, tmp_path):
    """The config replace_listeners writes also works on its own: initialize,
    train, save, load."""
    source = train_pipeline(metaspace_model, steps=0)
    source.replace_listeners("transformer", "textcat", ["model.tok2vec"])
    spacy.util.fix_random_seed(0)
    nlp = spacy.util.load_model_from_config(source.config, auto_fill=True)
    examples = train_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    assert nlp.get_pipe("textcat").model.get_ref("tok2vec").get_dim("nO") == own_shim(nlp, "textcat").hidden_size
    for _ in range(2):
        nlp.update(examples, sgd=optimizer)
    before = predictions(nlp, TEXTS)
    nlp.to_disk(tmp_path / "pipeline")
    assert_same_predictions(before, predictions(spacy.load(tmp_path / "pipeline"), TEXTS))


def test_a_v1_transformer_keeps_its_default_windows_in_the_component_that_copies_it():
    from spacy_lsllama.models.listeners import replace_listener_cfg

    v1 = {"@architectures": "spacy-lsllama.LlamaTransformer.v1", "name": "m", "get_spans": None}
    listener = {"@architectures": "spacy-transformers.TransformerListener.v1", "grad_factor": 1.0, "pooling": {"@layers": "reduce_mean.v1"}}
    own = replace_listener_cfg(v1, listener)
    assert own["@architectures"] == TOK2VEC
    assert own["get_spans"] == {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 128, "stride": 96}
