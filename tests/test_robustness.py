"""Any text in, a valid Doc out; failures that lose nothing."""

import numpy
import pytest
import spacy
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spacy.training import Example

from pipelines import build_pipeline, decoder_shim, train_examples, train_pipeline
from tiny_models import folder_with_remote_code

AWKWARD_TEXTS = [
    "",
    "   ",
    "\n\n\t",
    "x",
    "😀🎉👍🏽",
    "中文字符和日本語のテキスト",
    "שלום עולם مرحبا بالعالم",
    "e\u0301 a\u0308 n\u0303",
    "zero\u200bwidth\u200djoin",
    "control\x00\x07\x1b chars",
    "</s> <s> <unk> <|im_end|> <|lsllama_pad|>",
]


@pytest.fixture(scope="module")
def trained(tiny_model_dirs):
    return train_pipeline(tiny_model_dirs["byte_level"], steps=2)


def assert_valid(doc):
    assert sum(doc.cats.values()) == pytest.approx(1.0, abs=1e-5)
    for ent in doc.ents:
        assert ent.label_ == "LOC"
        assert 0 <= ent.start < ent.end <= len(doc)


@pytest.mark.parametrize("text", AWKWARD_TEXTS)
def test_awkward_text_gives_a_valid_doc(trained, text):
    assert_valid(trained(text))


def test_a_batch_of_awkward_texts_gives_valid_docs(trained):
    docs = list(trained.pipe(AWKWARD_TEXTS + ["Paris is lovely"], batch_size=len(AWKWARD_TEXTS) + 1))
    for doc, text in zip(docs, AWKWARD_TEXTS):
        assert doc.text == text
        assert_valid(doc)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_any_unicode_text_gives_a_valid_doc(trained, text):
    doc = trained(text)
    assert doc.text == text
    assert_valid(doc)


def test_training_on_awkward_texts_does_not_crash(trained):
    nlp = trained
    examples = [Example.from_dict(nlp.make_doc(text), {"cats": {"POS": 1.0, "NEG": 0.0}}) for text in AWKWARD_TEXTS]
    losses = nlp.update(examples, sgd=nlp.create_optimizer())
    assert all(numpy.isfinite(loss) for loss in losses.values())


def test_examples_without_entity_annotation_still_train(metaspace_model):
    nlp = train_pipeline(metaspace_model, steps=1)
    unannotated = [Example.from_dict(nlp.make_doc("Nobody marked the places here"), {"cats": {"POS": 1.0, "NEG": 0.0}})]
    losses = nlp.update(unannotated, sgd=nlp.create_optimizer())
    assert all(numpy.isfinite(loss) for loss in losses.values())


def test_labels_that_never_occur_in_training_train_and_predict(metaspace_model):
    spacy.util.fix_random_seed(0)
    nlp = build_pipeline(metaspace_model)
    nlp.get_pipe("textcat").add_label("NEUTRAL")
    nlp.get_pipe("ner").add_label("ORG")
    examples = train_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(3):
        losses = nlp.update(examples, sgd=optimizer)
        assert all(numpy.isfinite(loss) for loss in losses.values())
    adapters = [p for p in decoder_shim(nlp).encoder.parameters() if p.requires_grad]
    assert all(torch.isfinite(p).all() for p in adapters)
    doc = nlp("I like London a lot")
    assert set(doc.cats) == {"POS", "NEG", "NEUTRAL"}
    assert sum(doc.cats.values()) == pytest.approx(1.0, abs=1e-5)
    assert {ent.label_ for ent in doc.ents} <= {"LOC", "ORG"}


def test_a_nan_gradient_skips_the_update_and_keeps_the_adapters(metaspace_model):
    nlp = train_pipeline(metaspace_model, steps=1)
    shim = decoder_shim(nlp)
    adapters = {name: p for name, p in shim.encoder.named_parameters() if p.requires_grad}
    before = {name: p.detach().clone() for name, p in adapters.items()}
    for parameter in adapters.values():
        parameter.grad = torch.full_like(parameter, float("nan"))
    shim.finish_update(nlp.create_optimizer())
    for name, parameter in adapters.items():
        assert torch.equal(parameter, before[name])
        assert parameter.grad is None


def test_a_failed_save_leaves_the_previous_pipeline_intact(metaspace_model, tmp_path, monkeypatch):
    nlp = train_pipeline(metaspace_model, steps=1)
    nlp.to_disk(tmp_path / "pipeline")
    saved = (tmp_path / "pipeline" / "transformer" / "model").read_bytes()
    expected = nlp("I like London").cats

    def failing_to_bytes():
        raise OSError("disk full")

    monkeypatch.setattr(decoder_shim(nlp), "to_bytes", failing_to_bytes)
    with pytest.raises(OSError, match="disk full"):
        nlp.to_disk(tmp_path / "pipeline")
    assert (tmp_path / "pipeline" / "transformer" / "model").read_bytes() == saved
    assert not list((tmp_path / "pipeline" / "transformer").glob("*.partial"))
    reloaded = spacy.load(tmp_path / "pipeline")
    assert reloaded("I like London").cats == pytest.approx(expected, abs=1e-5)


def test_code_in_a_model_folder_is_not_run_unless_asked(metaspace_model, tmp_path):
    marker = tmp_path / "remote-code-ran"
    folder = folder_with_remote_code(metaspace_model, tmp_path / "with-remote-code", marker)
    try:
        train_pipeline(folder, steps=0)
    except (OSError, ValueError):
        pass  # refusing is as good as ignoring the code
    assert not marker.exists()
