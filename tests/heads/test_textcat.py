"""`lsllama_textcat` and `lsllama_textcat_multilabel`: every doc scored by the
model, whatever batch it is in."""
import numpy
import pytest
import spacy
from spacy.training import Example
from thinc.api import Adam

from pipelines import TRAIN_DATA, transformer_config
from spacy_lsllama.decoder.settings import SettingsError
from spacy_lsllama.heads.textcat import LSLlamaMultiLabelTextCategorizer, LSLlamaTextCategorizer

MULTILABEL_DATA = [
    ("I like London a lot", {"cats": {"TRAVEL": 1.0, "FOOD": 0.0}}),
    ("The food in Berlin was bad", {"cats": {"TRAVEL": 1.0, "FOOD": 1.0}}),
    ("Soup again", {"cats": {"TRAVEL": 0.0, "FOOD": 1.0}}),
]


def trained_classifier(model_dir, factory, data, **textcat_config):
    """A transformer and a classifier made with the factory's defaults, trained a few steps."""
    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config=transformer_config(model_dir))
    nlp.add_pipe(factory, name="textcat", config=textcat_config)
    examples = [Example.from_dict(nlp.make_doc(text), annotations) for text, annotations in data]
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(3):
        nlp.update(examples, sgd=optimizer)
    return nlp


@pytest.fixture(scope="module")
def exclusive(tiny_model_dirs):
    return trained_classifier(tiny_model_dirs["byte_level"], "lsllama_textcat", TRAIN_DATA)


@pytest.fixture(scope="module")
def multilabel(tiny_model_dirs):
    return trained_classifier(tiny_model_dirs["byte_level"], "lsllama_textcat_multilabel", MULTILABEL_DATA)


def test_the_default_model_is_ls_llamas_last_token_classifier(exclusive):
    textcat = exclusive.get_pipe("textcat")
    assert isinstance(textcat, LSLlamaTextCategorizer)
    model = exclusive.config["components"]["textcat"]["model"]
    assert model["@architectures"] == "spacy-lsllama.TextCatReduce.v1"
    assert model["use_reduce_last"] and model["exclusive_classes"]
    assert model["tok2vec"]["pooling"]["@layers"] == "spacy-lsllama.reduce_last.v1"


@pytest.mark.parametrize("text", ["", "   "])
def test_a_doc_alone_gets_the_scores_it_gets_in_a_batch(exclusive, text):
    in_batch = list(exclusive.pipe([text, "Paris is lovely"]))[0].cats
    alone = exclusive(text).cats
    assert alone == pytest.approx(in_batch, abs=1e-6)
    assert sum(alone.values()) == pytest.approx(1.0, abs=1e-5)


def test_a_batch_of_only_empty_docs_gets_distributions(exclusive):
    for doc in exclusive.pipe(["", "", ""]):
        assert sum(doc.cats.values()) == pytest.approx(1.0, abs=1e-5)


def test_multilabel_scores_empty_docs_as_in_a_batch(multilabel):
    assert isinstance(multilabel.get_pipe("textcat"), LSLlamaMultiLabelTextCategorizer)
    alone = multilabel("").cats
    assert alone == pytest.approx(list(multilabel.pipe(["", "Soup"]))[0].cats, abs=1e-6)
    assert set(alone) == {"TRAVEL", "FOOD"}
    assert all(0.0 < score < 1.0 for score in alone.values())


def test_mean_pooled_bidirectional_classifier_scores_an_empty_batch(tiny_model_dirs):
    """LS-unLLaMA's classifier (init-config's bidirectional textcat) mean-pools the text."""
    mean_pooled = {
        "model": {
            "@architectures": "spacy-lsllama.TextCatReduce.v1",
            "exclusive_classes": True,
            "use_reduce_last": False,
            "use_reduce_mean": True,
            "tok2vec": {
                "@architectures": "spacy-transformers.TransformerListener.v1",
                "grad_factor": 1.0,
                "pooling": {"@layers": "reduce_mean.v1"},
            },
        }
    }
    nlp = trained_classifier(tiny_model_dirs["metaspace"], "lsllama_textcat", TRAIN_DATA, **mean_pooled)
    alone = nlp("").cats
    assert alone == pytest.approx(list(nlp.pipe(["", "Paris"]))[0].cats, abs=1e-6)
    assert sum(alone.values()) == pytest.approx(1.0, abs=1e-5)


def test_a_training_batch_of_only_empty_docs_gives_no_gradient(exclusive):
    textcat = exclusive.get_pipe("textcat")
    before = textcat.model.get_ref("output_layer").get_param("W").copy()
    empty = [Example.from_dict(exclusive.make_doc(""), {"cats": {"POS": 1.0, "NEG": 0.0}})] * 2
    without_weight_decay = Adam(0.001, L2=0.0)
    losses = exclusive.update(empty, sgd=without_weight_decay)
    assert all(numpy.isfinite(loss) for loss in losses.values())
    numpy.testing.assert_array_equal(textcat.model.get_ref("output_layer").get_param("W"), before)


def test_a_saved_classifier_loads_and_scores_the_same(exclusive, tmp_path):
    exclusive.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert isinstance(loaded.get_pipe("textcat"), LSLlamaTextCategorizer)
    for text in ("", "Paris is lovely"):
        assert loaded(text).cats == pytest.approx(exclusive(text).cats, abs=1e-6)


@pytest.mark.parametrize("factory", ["lsllama_textcat", "lsllama_textcat_multilabel"])
def test_a_model_that_cannot_score_an_empty_batch_is_refused_when_the_pipeline_is_built(factory):
    """spaCy's own models crash on a batch of only empty docs, which these components give them."""
    bag_of_words = {
        "@architectures": "spacy.TextCatBOW.v3",
        "exclusive_classes": factory == "lsllama_textcat",
        "ngram_size": 1,
        "no_output_layer": False,
    }
    nlp = spacy.blank("en")
    with pytest.raises(SettingsError, match="spacy-lsllama.TextCatReduce.v1"):
        nlp.add_pipe(factory, config={"model": bag_of_words})
