"""`spacy-lsllama.atomic_to_disk.v1`: a pipeline is saved whole or not at all."""
import pickle

import pytest
import spacy

from spacy_lsllama.persistence.saving import AtomicSaving
from pipelines import TRAIN_DATA, build_pipeline, largest_cats_difference, train_examples

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
    assert largest_cats_difference(cats(new), old_cats) > 1e-3, "the test needs two different pipelines"

    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(new.get_pipe("textcat"), "to_disk", disk_full)
    with pytest.raises(OSError, match="disk full"):
        new.to_disk(target)
    assert largest_cats_difference(cats(spacy.load(target)), old_cats) <= 1e-5
    assert leftovers(target) == []


def test_a_completed_save_replaces_the_pipeline(metaspace_model, tmp_path):
    target = tmp_path / "pipeline"
    old = trained(atomic_pipeline(metaspace_model), steps=1)
    old.to_disk(target)
    (target / "README.txt").write_text("kept, as spaCy keeps files it does not write")
    new = trained(atomic_pipeline(metaspace_model), steps=6)
    assert largest_cats_difference(cats(new), cats(old)) > 1e-3, "the test needs two different pipelines"
    new.to_disk(target)
    assert largest_cats_difference(cats(spacy.load(target)), cats(new)) <= 1e-5
    assert (target / "README.txt").exists()
    assert leftovers(target) == []


def test_pipelines_loaded_from_disk_still_save_atomically(metaspace_model, tmp_path):
    trained(atomic_pipeline(metaspace_model), steps=1).to_disk(tmp_path / "pipeline")
    reloaded = spacy.load(tmp_path / "pipeline")
    assert isinstance(reloaded, AtomicSaving) and reloaded.lang == "en"


def test_the_atomic_save_survives_pickling(tmp_path):
    nlp = spacy.blank("en", config=ATOMIC)
    restored = pickle.loads(pickle.dumps(nlp))
    assert isinstance(restored, AtomicSaving)
    restored.to_disk(tmp_path / "blank")
    assert spacy.load(tmp_path / "blank").pipe_names == []


def test_saving_onto_a_file_is_refused(tmp_path):
    nlp = spacy.blank("en", config=ATOMIC)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="Choose a folder path"):
        nlp.to_disk(tmp_path / "file")


@pytest.mark.parametrize("first_save", ["target", "dangling link"])
def test_saving_through_a_symlink_replaces_the_linked_folder(metaspace_model, tmp_path, first_save):
    """Deployments point a stable path at a versioned folder: the save must land
    in the link's target and leave the link a link, with nothing left over."""
    releases = tmp_path / "releases"
    releases.mkdir()
    target = releases / "pipeline-v1"
    link = tmp_path / "current"
    link.symlink_to(target, target_is_directory=True)
    old = trained(atomic_pipeline(metaspace_model), steps=1)
    old.to_disk(target if first_save == "target" else link)
    assert link.is_symlink() and target.is_dir()
    new = trained(atomic_pipeline(metaspace_model), steps=6)
    assert largest_cats_difference(cats(new), cats(old)) > 1e-3, "the test needs two different pipelines"
    new.to_disk(link)
    assert link.is_symlink() and link.readlink() == target
    assert largest_cats_difference(cats(spacy.load(target)), cats(new)) <= 1e-5
    assert leftovers(target) == [] and leftovers(link) == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["current", "releases"]
    assert sorted(path.name for path in releases.iterdir()) == ["pipeline-v1"]
