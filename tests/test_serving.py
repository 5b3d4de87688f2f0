"""Production use: batching, dropping hidden states, relocating the base."""
import pytest
import spacy

from pipelines import train_pipeline

TEXTS = ["I like London a lot", "Paris is awful, really", "Rome", "", "A longer text about Berlin and Rome."]


def test_batch_size_does_not_change_predictions(metaspace_model):
    nlp = train_pipeline(metaspace_model, steps=2)
    one_by_one = [doc.cats for doc in nlp.pipe(TEXTS, batch_size=1)]
    batched = [doc.cats for doc in nlp.pipe(TEXTS, batch_size=len(TEXTS))]
    for alone, together, text in zip(one_by_one, batched, TEXTS):
        if text:
            assert together == pytest.approx(alone, abs=1e-4)


def test_doc_cleaner_drops_hidden_states_and_keeps_predictions(metaspace_model, tmp_path):
    nlp = train_pipeline(metaspace_model, steps=2)
    expected = [(doc.cats, doc.ents) for doc in nlp.pipe(TEXTS)]
    assert all(doc._.trf_data is not None for doc in nlp.pipe(TEXTS))
    nlp.add_pipe("doc_cleaner", config={"attrs": {"_.trf_data": None}})
    nlp.to_disk(tmp_path / "pipeline")
    served = spacy.load(tmp_path / "pipeline")
    for doc, (cats, ents) in zip(served.pipe(TEXTS), expected):
        assert doc._.trf_data is None
        assert doc.cats == pytest.approx(cats, abs=1e-5)
        assert [(e.start, e.end, e.label_) for e in doc.ents] == [(e.start, e.end, e.label_) for e in ents]
