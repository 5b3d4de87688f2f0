"""`spacy-lsllama.atomic_to_disk.v1`: a pipeline is saved whole or not at all."""
import pickle

import pytest
import spacy

from pipelines import TRAIN_DATA, build_pipeline, train_examples

ATOMIC = {"nlp": {"after_pipeline_creation": {"@callbacks": "spacy-lsllama.atomic_to_disk.v1"}}}
TEXTS = [text for text, _ in TRAIN_DATA]


def atomic_pipeline(model_dir):
    nlp = build_pipeline(model_dir)
    return spacy.util.load_model_from_config(nlp.config.merge(ATOMIC), auto_fill=True)


def trained(nlp, steps):
    spacy.util.fix_random_seed(0)
    examples = train_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(steps):
        nlp.update(examples, sgd=optimizer)
    return nlp


def cats(nlp):
    return [doc.cats for doc in nlp.pipe(TEXTS)]


def leftovers(folder):
    return sorted(path.name for path in folder.parent.iterdir() if path.name.startswith(f".{folder.name}."))


def test_an_interrupted_save_leaves_the_old_pipeline_whole(metaspace_model, tmp_path, monkeypatch):
    """The transformer is written, then the textcat fails: without the callback
    the folder would hold new adapters beside the old head."""
    target = tmp_path / "pipeline"
    old = trained(atomic_pipeline(metaspace_model), steps=1)
    old.to_disk(target)
    old_cats = cats(old)
    new = trained(atomic_pipeline(metaspace_model), steps=6)
    assert cats(new) != pytest.approx(old_cats, abs=1e-4)

    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(new.get_pipe("textcat"), "to_disk", disk_full)
    with pytest.raises(OSError, match="disk full"):
        new.to_disk(target)
    assert cats(spacy.load(target)) == pytest.approx(old_cats, abs=1e-5)
    assert leftovers(target) == []


def test_a_completed_save_replaces_the_pipeline(metaspace_model, tmp_path):
    target = tmp_path / "pipeline"
    trained(atomic_pipeline(metaspace_model), steps=1).to_disk(target)
    (target / "README.txt").write_text("kept, as spaCy keeps files it does not write")
    new = trained(atomic_pipeline(metaspace_model), steps=6)
    new.to_disk(target)
    assert cats(spacy.load(target)) == pytest.approx(cats(new), abs=1e-5)
    assert (target / "README.txt").exists()
    assert leftovers(target) == []


def test_pipelines_loaded_from_disk_still_save_atomically(metaspace_model, tmp_path):
    trained(atomic_pipeline(metaspace_model), steps=1).to_disk(tmp_path / "pipeline")
    reloaded = spacy.load(tmp_path / "pipeline")
    assert reloaded.to_disk.func.__name__ == "save_atomically"


def test_the_atomic_save_survives_pickling(tmp_path):
    nlp = spacy.blank("en", config=ATOMIC)
    restored = pickle.loads(pickle.dumps(nlp))
    assert restored.to_disk.func.__name__ == "save_atomically"
    assert restored.to_disk.args[0] is restored
    restored.to_disk(tmp_path / "blank")
    assert spacy.load(tmp_path / "blank").pipe_names == []


def test_saving_onto_a_file_is_refused(tmp_path):
    nlp = spacy.blank("en", config=ATOMIC)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="Choose a folder path"):
        nlp.to_disk(tmp_path / "file")
