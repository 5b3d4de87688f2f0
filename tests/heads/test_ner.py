"""`lsllama_ner`, LS-unLLaMA's linear NER head (spacy_lsllama/heads/ner.py,
spacy_lsllama/heads/token_head.py): training, missing annotation, decoding into
doc.ents, scoring, serialization."""
import pickle
from pathlib import Path

import numpy
import pytest
import spacy
from spacy.tokens import Doc, Span
from spacy.training import Example

from pipelines import TRAIN_DATA, transformer_config
from spacy_lsllama.heads.ner import MISSING, LinearEntityRecognizer, gold_tag_ids, masked_cross_entropy
from spacy_lsllama.heads.tag_frequencies import balance_weights, count_tags, prior_bias
from spacy_lsllama.heads.tagging import tags_to_spans

TEXTS = ["I like London a lot", "", "Paris is awful, really", "We loved the trip to Rome and Berlin"]
LONG_TEXT = " ".join(text for text, _ in TRAIN_DATA) + " and then London again"
STRIDED = {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 4, "stride": 3}


def linear_pipeline(model_dir: Path, scheme: str = "BIO", head=None, **settings) -> spacy.Language:
    """transformer (bidirectional unless set) + lsllama_ner with its defaults
    (and the settings in `head`)."""
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config=transformer_config(model_dir, **{"bidirectional": True, **settings}))
    nlp.add_pipe("lsllama_ner", name="ner", config={"scheme": scheme, **(head or {})})
    return nlp


def ner_examples(nlp, data=TRAIN_DATA):
    return [Example.from_dict(nlp.make_doc(text), {"entities": a["entities"]}) for text, a in data]


def trained(nlp, steps: int = 80, learn_rate: float = 0.01):
    spacy.util.fix_random_seed(0)
    examples = ner_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    optimizer.learn_rate = learn_rate
    for _ in range(steps):
        nlp.update(examples, sgd=optimizer)
    return nlp


def entities(nlp, texts=TEXTS):
    return [[(e.start, e.end, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]


@pytest.fixture(scope="module")
def toy(tiny_model_dirs):
    return trained(linear_pipeline(tiny_model_dirs["metaspace"]))


# Training ---------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["BIO", "BILUO"])
def test_training_learns_the_toy_corpus(tiny_model, scheme):
    nlp = trained(linear_pipeline(tiny_model, scheme))
    scores = nlp.evaluate(ner_examples(nlp))
    assert scores["ents_f"] >= 0.99, scores
    assert scores["ents_per_type"]["LOC"]["f"] >= 0.99
    assert nlp.get_pipe("ner").labels == ("LOC",)


def test_by_default_the_bias_starts_at_the_tags_prior_and_the_loss_is_unweighted(toy):
    config = toy.config["components"]["ner"]
    assert config["bias_init"] == "prior" and config["class_balance"] == 0.0


def test_the_defaults_are_the_papers_head(toy):
    ner = toy.get_pipe("ner")
    assert isinstance(ner, LinearEntityRecognizer)
    config = toy.config["components"]["ner"]
    assert config["scheme"] == "BIO"
    assert config["model"]["@architectures"] == "spacy-lsllama.TokenTagger.v1"
    assert config["model"]["tok2vec"]["pooling"]["@layers"] == "spacy-lsllama.reduce_first.v1"
    assert ner.tag_names == ["O", "B-LOC", "I-LOC"]
    assert toy.config["training"]["score_weights"]["ents_f"] == 1.0


def test_labels_come_from_the_data_or_are_given(metaspace_model):
    data = [("Anna met Bob in Rome", {"entities": [(0, 4, "PER"), (9, 12, "PER"), (16, 20, "LOC")]})]
    nlp = linear_pipeline(metaspace_model)
    examples = ner_examples(nlp, data)
    nlp.initialize(lambda: examples)
    assert nlp.get_pipe("ner").labels == ("LOC", "PER")
    assert nlp.get_pipe("ner").label_data == ("LOC", "PER")
    given = linear_pipeline(metaspace_model)  # as from `spacy init labels`
    given.config["initialize"]["components"]["ner"] = {"labels": ["PER", "LOC", "ORG"]}
    given.initialize(lambda: examples)
    assert given.get_pipe("ner").labels == ("PER", "LOC", "ORG")
    empty = linear_pipeline(metaspace_model)
    with pytest.raises(ValueError, match="not initialized"):
        empty.get_pipe("ner").initialize(lambda: ner_examples(empty, [("No entities here", {"entities": []})]))


def test_a_label_added_after_training_keeps_the_trained_weights(metaspace_model):
    nlp = trained(linear_pipeline(metaspace_model), steps=3)
    ner = nlp.get_pipe("ner")
    output = ner.model.get_ref("output_layer")
    weights, bias = output.get_param("W").copy(), output.get_param("b").copy()
    assert ner.add_label("PER") == 1 and ner.add_label("PER") == 0
    resized = ner.model.get_ref("output_layer")
    assert resized.get_dim("nO") == len(ner.tag_names) == 5
    assert numpy.array_equal(resized.get_param("W")[:3], weights)
    assert numpy.array_equal(resized.get_param("b")[:3], bias)
    assert not resized.get_param("W")[3:].any()
    examples = ner_examples(nlp, [("Anna likes Rome", {"entities": [(0, 4, "PER"), (11, 15, "LOC")]})])
    losses = nlp.update(examples, sgd=nlp.resume_training())
    assert numpy.isfinite(losses["ner"])


def test_an_unknown_gold_label_is_explained(toy):
    examples = ner_examples(toy, [("Anna likes Rome", {"entities": [(0, 4, "PER")]})])
    with pytest.raises(ValueError, match="'PER' .* not one of the labels"):
        toy.update(examples)


def test_an_unknown_scheme_is_refused(metaspace_model):
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config=transformer_config(metaspace_model))
    with pytest.raises(ValueError, match="unknown scheme 'IOBES'"):
        nlp.add_pipe("lsllama_ner", config={"scheme": "IOBES"})


# Missing annotation -------------------------------------------------------------


def partial_examples(nlp):
    """The same sentence, annotated in full, with "-" tags, and with doc.ents
    whose other tokens are missing (spaCy's two ways to leave tokens out)."""
    doc = nlp.make_doc("I like London a lot")
    full = Example.from_dict(doc, {"entities": ["O", "O", "U-LOC", "O", "O"]})
    dashes = Example.from_dict(doc, {"entities": ["-", "O", "U-LOC", "-", "-"]})
    reference = Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])
    reference.set_ents([Span(reference, 2, 3, "LOC")], default="missing")
    unset = Example(doc, reference)
    return full, dashes, unset


def test_missing_annotation_is_not_supervised_as_outside(toy):
    """The gradient of a token whose gold tag is missing is exactly zero, and
    its scores do not change the loss. Were missing tokens taught "O", the
    partial examples would give the gradient of the full one."""
    ner = toy.get_pipe("ner")
    full, dashes, unset = partial_examples(toy)
    index = {name: i for i, name in enumerate(ner.tag_names)}
    assert gold_tag_ids(dashes, index, "BIO").tolist() == [MISSING, 0, 1, MISSING, MISSING]
    assert gold_tag_ids(unset, index, "BIO").tolist() == [MISSING, MISSING, 1, MISSING, MISSING]
    scores = [ner.model.ops.asarray2f(numpy.random.default_rng(0).normal(size=(5, 3)).astype("float32"))]
    _, d_full = ner.get_loss([full], scores)
    assert numpy.abs(d_full[0]).sum(axis=1).min() > 0
    for example, missing in ((dashes, [0, 3, 4]), (unset, [0, 1, 3, 4])):
        loss, d_scores = ner.get_loss([example], scores)
        assert not d_scores[0][missing].any()
        known = [i for i in range(5) if i not in missing]
        assert d_scores[0][known].any()
        changed = scores[0].copy()
        changed[missing] += 100.0
        assert ner.get_loss([example], [changed])[0] == pytest.approx(loss)


def test_the_loss_gradient_is_the_derivative_of_the_loss():
    from thinc.api import NumpyOps

    rng = numpy.random.default_rng(0)
    scores = [rng.normal(size=(4, 3)), rng.normal(size=(2, 3))]
    golds = [numpy.array([0, MISSING, 2, 1]), numpy.array([1, MISSING])]
    _, gradients = masked_cross_entropy(NumpyOps(), scores, golds)
    step = 1e-6
    for doc, row, column in [(0, 0, 0), (0, 2, 1), (1, 0, 1), (1, 1, 2), (0, 1, 0)]:
        shifted = [s.copy() for s in scores]
        shifted[doc][row, column] += step
        numeric = (masked_cross_entropy(NumpyOps(), shifted, golds)[0] - masked_cross_entropy(NumpyOps(), scores, golds)[0]) / step
        assert gradients[doc][row, column] == pytest.approx(numeric, abs=1e-4)


def test_the_weighted_loss_gradient_is_the_derivative_of_the_weighted_loss():
    from thinc.api import NumpyOps

    rng = numpy.random.default_rng(1)
    scores = [rng.normal(size=(4, 3)), rng.normal(size=(2, 3))]
    golds = [numpy.array([0, MISSING, 2, 1]), numpy.array([1, 0])]
    weights = numpy.array([1.0, 4.0, 9.0])
    loss, gradients = masked_cross_entropy(NumpyOps(), scores, golds, weights)
    log_probs = [s - numpy.log(numpy.exp(s).sum(axis=1, keepdims=True)) for s in scores]
    terms = [(weights[g], -lp[i, g]) for lp, gold in zip(log_probs, golds) for i, g in enumerate(gold) if g >= 0]
    assert loss == pytest.approx(sum(w * ce for w, ce in terms) / sum(w for w, _ in terms))
    step = 1e-6
    for doc, row, column in [(0, 0, 0), (0, 2, 1), (1, 0, 1), (1, 1, 2), (0, 1, 0)]:
        shifted = [s.copy() for s in scores]
        shifted[doc][row, column] += step
        numeric = (masked_cross_entropy(NumpyOps(), shifted, golds, weights)[0] - loss) / step
        assert gradients[doc][row, column] == pytest.approx(numeric, abs=1e-4)
    assert masked_cross_entropy(NumpyOps(), scores, golds, numpy.ones(3))[0] == pytest.approx(
        masked_cross_entropy(NumpyOps(), scores, golds)[0]
    )


def test_a_batch_without_any_known_tag_gives_no_gradient():
    from thinc.api import NumpyOps

    loss, (gradient,) = masked_cross_entropy(NumpyOps(), [numpy.ones((4, 3), dtype="float32")], [numpy.full(4, MISSING)])
    assert loss == 0.0 and not gradient.any()


def test_training_on_partial_annotation_runs_through_nlp_update(toy):
    _, dashes, unset = partial_examples(toy)
    losses = toy.update([dashes, unset], sgd=toy.resume_training())
    assert numpy.isfinite(losses["ner"])


# Prediction ---------------------------------------------------------------------


def test_empty_docs(toy):
    alone = [entities(toy, [text])[0] for text in TEXTS]
    assert entities(toy) == alone
    assert entities(toy, ["", "", ""]) == [[], [], []]
    assert toy("").ents == ()
    empty = ner_examples(toy, [("", {"entities": []})])
    assert toy.update(empty)["ner"] == 0.0
    assert "ents_f" in toy.evaluate(empty + ner_examples(toy))


def test_decoded_entities_are_valid_spans_for_any_model_output(toy):
    """A head with random weights gives arbitrary scores; doc.ents is still
    well formed."""
    nlp = linear_pipeline(Path(toy.config["components"]["transformer"]["model"]["name"]), scheme="BILUO")
    nlp.initialize(lambda: ner_examples(nlp))
    ner = nlp.get_pipe("ner")
    output = ner.model.get_ref("output_layer")
    rng = numpy.random.default_rng(0)
    output.set_param("W", rng.normal(scale=3.0, size=output.get_param("W").shape).astype("float32"))
    output.set_param("b", rng.normal(scale=3.0, size=output.get_param("b").shape).astype("float32"))
    docs = list(nlp.get_pipe("transformer").pipe(nlp.make_doc(text) for text in TEXTS + [LONG_TEXT]))
    batch_tag_ids = ner.predict(docs)
    ner.set_annotations(docs, batch_tag_ids)
    assert any(doc.ents for doc in docs)
    for doc, tag_ids in zip(docs, batch_tag_ids):
        spans = tags_to_spans([ner.tag_names[i] for i in tag_ids], "BILUO")
        assert [(e.start, e.end, e.label_) for e in doc.ents] == spans


def test_preset_entities_and_blocked_tokens_are_kept(toy):
    """As spaCy's ner: entities set before it (an entity_ruler) stay, new ones
    are found around them, blocked tokens stay outside every entity."""
    doc = toy.make_doc("I like London a lot")
    doc.set_ents([Span(doc, 0, 1, "PERSON")], blocked=[doc[2:3]], default="missing")
    doc = toy(doc)
    assert [(e.start, e.end, e.label_) for e in doc.ents] == [(0, 1, "PERSON")]
    assert doc[2].ent_iob_ == "B" and doc[2].ent_type_ == ""  # still blocked
    preset = toy.make_doc("We loved the trip to Rome")
    preset.ents = [Span(preset, 2, 4, "EVENT")]
    preset = toy(preset)
    assert (2, 4, "EVENT") in [(e.start, e.end, e.label_) for e in preset.ents]
    assert [(e.start, e.end, e.label_) for e in preset.ents] == sorted((e.start, e.end, e.label_) for e in preset.ents)
    found = toy("We loved the trip to Rome")
    assert [(e.start, e.end, e.label_) for e in found.ents] == [(5, 6, "LOC")]
    assert all(token.ent_iob_ in ("B", "I", "O") for token in found)


@pytest.mark.parametrize("settings", [{"get_spans": STRIDED}, {"max_length": 8}], ids=["strided-spans", "max-length"])
def test_a_doc_longer_than_one_window(metaspace_model, settings):
    """Overlapping strided windows and max_length windows: every token gets
    a tag, the same alone as in a batch, run after run."""
    nlp = trained(linear_pipeline(metaspace_model, **settings))
    long_doc = nlp(LONG_TEXT)
    assert len(nlp.get_pipe("ner").predict([long_doc])[0]) == len(long_doc)
    alone = entities(nlp, [LONG_TEXT])
    assert entities(nlp, [TEXTS[0], LONG_TEXT, ""])[1] == alone[0] == entities(nlp, [LONG_TEXT])[0]
    assert nlp.evaluate(ner_examples(nlp))["ents_f"] >= 0.99


def test_overlapping_windows_give_a_token_its_first_windows_first_piece(metaspace_model):
    """With first-piece pooling, a token in two strided windows is labelled
    from its first piece in the earlier window (spacy-transformers lists a
    token's pieces window by window): deterministic, not an average."""
    nlp = trained(linear_pipeline(metaspace_model, get_spans=STRIDED), steps=1)
    doc = nlp(LONG_TEXT)
    data = doc._.trf_data
    hidden = numpy.asarray(data.model_output.last_hidden_state).reshape(-1, data.width)
    row_length = data.model_output.last_hidden_state.shape[1]
    vectors = nlp.get_pipe("ner").model.get_ref("tok2vec").predict([doc])[0]
    in_two_windows = 0
    for i in range(len(doc)):
        pieces = data.align[i].dataXd.ravel()
        in_two_windows += len({int(p) // row_length for p in pieces}) > 1
        assert numpy.allclose(vectors[i], hidden[int(pieces[0])], atol=1e-6)
    assert in_two_windows > 0


# Rare tags: the starting bias and the loss weights ---------------------------------

RARE_DATA = [
    ("Anna met Bob in Rome", {"entities": [(0, 4, "PER"), (9, 12, "PER"), (16, 20, "LOC")]}),
    ("Bob likes Paris", {"entities": [(0, 3, "PER"), (10, 15, "LOC")]}),
    ("We saw Anna today", {"entities": [(7, 11, "PER")]}),
]


def initialized(model_dir, head):
    nlp = linear_pipeline(model_dir, head=head)
    examples = ner_examples(nlp, RARE_DATA)
    nlp.initialize(lambda: examples)
    return nlp, examples


def training_counts(nlp, examples):
    ner = nlp.get_pipe("ner")
    index = {name: i for i, name in enumerate(ner.tag_names)}
    return count_tags([gold_tag_ids(eg, index, ner.scheme) for eg in examples], len(index))


def tag_probabilities(nlp, texts):
    logits = numpy.concatenate(nlp.get_pipe("ner").model.predict([nlp.make_doc(text) for text in texts]))
    return numpy.exp(logits) / numpy.exp(logits).sum(axis=1, keepdims=True)


def test_the_tag_counts_of_the_training_data_are_kept(metaspace_model):
    nlp, examples = initialized(metaspace_model, {})
    ner = nlp.get_pipe("ner")
    assert ner.tag_names == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert ner.cfg["tag_counts"] == training_counts(nlp, examples).tolist() == [6, 2, 0, 4, 0]


def test_a_prior_bias_makes_the_untrained_head_predict_the_training_frequencies(metaspace_model):
    nlp, examples = initialized(metaspace_model, {"bias_init": "prior"})
    expected = numpy.exp(prior_bias(training_counts(nlp, examples)))
    probabilities = tag_probabilities(nlp, ["Nobody went anywhere", "Rome"])
    assert probabilities == pytest.approx(numpy.tile(expected, (len(probabilities), 1)), abs=1e-6)


def test_a_zero_bias_starts_every_tag_equally_likely(metaspace_model):
    nlp, _ = initialized(metaspace_model, {"bias_init": "zero"})
    assert tag_probabilities(nlp, ["Nobody went anywhere"]) == pytest.approx(numpy.full((3, 5), 0.2))


def test_class_balance_weighs_each_token_by_the_rarity_of_its_tag(metaspace_model):
    nlp, examples = initialized(metaspace_model, {"class_balance": 1.0, "bias_init": "zero"})
    ner = nlp.get_pipe("ner")
    weights = balance_weights(training_counts(nlp, examples), 1.0)
    scores = ner.model.predict([eg.predicted for eg in examples])
    index = {name: i for i, name in enumerate(ner.tag_names)}
    golds = [gold_tag_ids(eg, index, ner.scheme) for eg in examples]
    assert ner.get_loss(examples, scores)[0] == pytest.approx(masked_cross_entropy(ner.model.ops, scores, golds, weights)[0])
    plain, _ = initialized(metaspace_model, {"class_balance": 0.0, "bias_init": "zero"})
    assert plain.get_pipe("ner").get_loss(examples, scores)[0] == pytest.approx(numpy.log(5))
    assert ner.get_loss(examples, scores)[0] == pytest.approx(numpy.log(5)), "uniform scores: the same loss, any weights"


def test_with_class_balance_the_prior_bias_is_the_weighted_prior(metaspace_model):
    nlp, examples = initialized(metaspace_model, {"class_balance": 0.5, "bias_init": "prior"})
    counts = training_counts(nlp, examples)
    expected = numpy.exp(prior_bias(counts, balance_weights(counts, 0.5)))
    assert tag_probabilities(nlp, ["Rome"])[0] == pytest.approx(expected, abs=1e-6)


def test_a_label_added_later_gets_a_count_of_zero(metaspace_model):
    nlp, _ = initialized(metaspace_model, {"class_balance": 0.5})
    ner = nlp.get_pipe("ner")
    ner.add_label("ORG")
    assert ner.cfg["tag_counts"] == [6, 2, 0, 4, 0, 0, 0]
    examples = ner_examples(nlp, [("Anna joined Acme", {"entities": [(0, 4, "PER"), (12, 16, "ORG")]})])
    assert numpy.isfinite(nlp.update(examples, sgd=nlp.resume_training())["ner"])


def test_a_label_added_later_starts_as_unlikely_as_the_least_likely_tag(metaspace_model):
    nlp, _ = initialized(metaspace_model, {"bias_init": "prior"})
    ner = nlp.get_pipe("ner")
    ner.add_label("ORG")
    assert ner.tag_names[2] == "I-LOC" and ner.cfg["tag_counts"][2] == 0  # never seen in training
    probabilities = tag_probabilities(nlp, ["Anna joined Acme"])
    assert probabilities[:, -2:] == pytest.approx(numpy.repeat(probabilities[:, 2:3], 2, axis=1), rel=1e-5)
    assert (probabilities[:, -2:].max(axis=1) < probabilities[:, 0]).all(), "the new tags do not outrank O"


def test_class_balance_without_tag_counts_says_to_initialize(metaspace_model):
    nlp, examples = initialized(metaspace_model, {"class_balance": 0.5})
    del nlp.get_pipe("ner").cfg["tag_counts"]  # as in a pipeline saved before the counts were kept
    with pytest.raises(ValueError, match="class_balance needs the tag counts .* initialize"):
        nlp.update(examples)


@pytest.mark.parametrize("head, message", [({"class_balance": 2}, "class_balance must be"), ({"bias_init": "log"}, "bias_init must be")])
def test_bad_rare_tag_settings_are_refused(metaspace_model, head, message):
    with pytest.raises(ValueError, match=message):
        linear_pipeline(metaspace_model, head=head)


# Serialization ------------------------------------------------------------------


def test_save_load_and_pickle_give_the_same_entities(toy, tmp_path):
    expected = entities(toy, TEXTS + [LONG_TEXT])
    toy.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.get_pipe("ner").cfg == toy.get_pipe("ner").cfg
    assert loaded.get_pipe("ner").cfg["labels"] == ["LOC"] and len(loaded.get_pipe("ner").cfg["tag_counts"]) == 3
    assert entities(loaded, TEXTS + [LONG_TEXT]) == expected
    restored = pickle.loads(pickle.dumps(loaded))
    assert entities(restored, TEXTS + [LONG_TEXT]) == expected
    from_bytes = spacy.blank("en", config=loaded.config).from_bytes(loaded.to_bytes())
    assert entities(from_bytes, TEXTS) == expected[: len(TEXTS)]


def test_replace_listeners_gives_the_component_its_own_decoder(toy, tmp_path):
    expected = entities(toy)
    toy.to_disk(tmp_path / "shared")
    nlp = spacy.load(tmp_path / "shared")
    nlp.replace_listeners("transformer", "ner", ["model.tok2vec"])
    assert entities(nlp) == expected
    nlp.to_disk(tmp_path / "own")
    assert entities(spacy.load(tmp_path / "own")) == expected
