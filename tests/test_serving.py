"""Production use: batching, dropping hidden states, worker processes."""
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from thinc.api import Config

from pipelines import assert_same_predictions, predictions, train_examples, train_pipeline

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


# Worker processes and pickling ------------------------------------------------

SHIPPED_CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.cfg"))


def shipped_pipeline(config_path: Path, model: Path):
    """A shipped config on the tiny model, initialized on the tiny corpus."""
    config = Config().from_disk(config_path, interpolate=False)
    config["paths"]["model"] = str(model)
    nlp = spacy.util.load_model_from_config(config, auto_fill=True, validate=True)
    examples = train_examples(nlp)
    spacy.util.fix_random_seed(0)
    nlp.initialize(lambda: examples)
    return nlp


@pytest.mark.parametrize("config_path", SHIPPED_CONFIGS, ids=lambda path: path.stem)
def test_every_shipped_pipeline_survives_pickling(config_path, metaspace_model, tmp_path):
    """joblib, Ray, Spark and nlp.pipe(n_process=...) under spawn pickle the
    pipeline. (A pipeline fresh from nlp.initialize() also holds spaCy's
    optimizer, whose thinc 8.3 schedules are generators and cannot be pickled,
    with any spaCy model: the pipeline is pickled as it is served, loaded.)"""
    shipped_pipeline(config_path, metaspace_model).to_disk(tmp_path / "pipeline")
    nlp = spacy.load(tmp_path / "pipeline")
    expected = predictions(nlp, TEXTS)
    restored = pickle.loads(pickle.dumps(nlp))
    assert_same_predictions(expected, predictions(restored, TEXTS))


WORKER_SCRIPT = """
import multiprocessing, pickle, sys
import spacy

if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    nlp = spacy.load(sys.argv[2])
    texts = {texts!r}
    one = [(doc.cats, [(e.start_char, e.end_char, e.label_) for e in doc.ents]) for doc in nlp.pipe(texts, n_process=1)]
    two = [(doc.cats, [(e.start_char, e.end_char, e.label_) for e in doc.ents]) for doc in nlp.pipe(texts, n_process=2, batch_size=2)]
    with open(sys.argv[3], "wb") as file_:
        pickle.dump((one, two), file_)
"""


@pytest.mark.slow
@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_worker_processes_give_the_single_process_docs(start_method, metaspace_model, tmp_path):
    """macOS, Windows and Python 3.14 start workers with spawn or forkserver,
    which pickle the pipeline."""
    nlp = train_pipeline(metaspace_model, steps=2)
    nlp.to_disk(tmp_path / "pipeline")
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT.format(texts=TEXTS * 2))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(script), start_method, str(tmp_path / "pipeline"), str(tmp_path / "out.pkl")],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = pickle.loads((tmp_path / "out.pkl").read_bytes())
    assert_same_predictions(one, two)
