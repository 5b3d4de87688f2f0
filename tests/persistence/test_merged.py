"""`lsllama_merged_transformer` (spacy_lsllama/persistence/merged.py): a merged pipeline
round-trips through bytes as it does through a folder."""
import gc
import shutil
from pathlib import Path

import pytest
import spacy

from pipelines import assert_same_predictions, decoder_shim, predictions, train_pipeline
from spacy_lsllama.cli.merge import merge
from spacy_lsllama.persistence.merged import FACTORY

TEXTS = ["I like London a lot", "Paris is awful, really", "", "A new text about Rome and Berlin"]


@pytest.fixture(scope="module")
def merged_folder(tiny_model_dirs, tmp_path_factory):
    """A merged pipeline on a private copy of the tiny base, which is then
    deleted: the merged pipeline must need no base."""
    root = tmp_path_factory.mktemp("merged")
    base = shutil.copytree(tiny_model_dirs["metaspace"], root / "base-model")
    nlp = train_pipeline(base, bidirectional=True)
    nlp.to_disk(root / "pipeline")
    merge(root / "pipeline", root / "merged")
    shutil.rmtree(base)
    return root / "merged"


def test_a_merged_pipeline_round_trips_through_bytes(merged_folder, tmp_path, monkeypatch):
    """nlp.to_bytes / from_bytes into a pipeline built from the config, in a
    working directory without any `base` folder and with the saved folder gone."""
    loaded = spacy.load(merged_folder)
    before = predictions(loaded, TEXTS)
    config, data = loaded.config, loaded.to_bytes()
    moved = shutil.move(str(merged_folder), str(tmp_path / "moved"))
    try:
        monkeypatch.chdir(tmp_path)
        restored = spacy.util.get_lang_class(config["nlp"]["lang"]).from_config(config)
        restored.from_bytes(data)
        assert_same_predictions(before, predictions(restored, TEXTS), tolerance=1e-5)
        # The restored pipeline saves and loads like the original.
        restored.to_disk(tmp_path / "resaved")
        assert_same_predictions(before, predictions(spacy.load(tmp_path / "resaved"), TEXTS), tolerance=1e-5)
        # And round-trips through bytes again.
        again = spacy.util.get_lang_class(config["nlp"]["lang"]).from_config(config)
        again.from_bytes(restored.to_bytes())
        assert_same_predictions(before, predictions(again, TEXTS), tolerance=1e-5)
    finally:
        shutil.move(moved, str(merged_folder))


def test_the_decoder_folder_of_restored_bytes_lives_as_long_as_its_component(merged_folder):
    """Like a pipeline loaded from disk, the decoder's name points at a folder
    holding it (copies and re-initialization load from there); the temporary
    folder goes with the component, or when it loads another decoder."""
    data = spacy.load(merged_folder).to_bytes()
    restored = spacy.load(merged_folder)
    restored.from_bytes(data)
    first = Path(decoder_shim(restored).settings.name)
    assert (first / "config.json").is_file() and merged_folder not in first.parents
    restored.from_bytes(data)
    second = Path(decoder_shim(restored).settings.name)
    assert (second / "config.json").is_file() and not first.parent.exists()
    restored.from_disk(merged_folder)
    assert not second.parent.exists()
    restored.from_bytes(data)
    third = Path(decoder_shim(restored).settings.name)
    del restored
    gc.collect()
    assert not third.parent.exists()



@pytest.mark.parametrize("name", ["../outside.json", "/tmp/absolute.json", "sub/../../outside.json"])
def test_bytes_cannot_write_outside_the_base_folder(tmp_path, name):
    from spacy_lsllama.persistence.merged import write_files
    from spacy_lsllama.decoder.settings import SettingsError

    with pytest.raises(SettingsError, match="outside its base folder"):
        write_files(tmp_path / "base", {name: b"{}"})
    assert not (tmp_path / "outside.json").exists()


def test_a_merged_folder_cannot_opt_in_to_running_its_own_code(tmp_path, monkeypatch):
    """A saved trust_remote_code = true is the folder's word, not the caller's."""
    import spacy_lsllama.decoder.shim
    from spacy_lsllama.decoder.loading import RemoteCodeIgnoredWarning
    from spacy_lsllama.persistence.merged import MergedTransformer

    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    seen = []
    monkeypatch.setattr(spacy_lsllama.decoder.shim.LlamaShim, "load_pretrained", lambda shim: seen.append(shim.settings.trust_remote_code))
    monkeypatch.setattr(spacy_lsllama.decoder.shim.LlamaShim, "hidden_size", property(lambda shim: 8))
    nlp = spacy.blank("en")
    component = nlp.add_pipe(FACTORY, config={"model": {"@architectures": "spacy-lsllama.LlamaTransformer.v2", "name": "base", "lora": None, "trust_remote_code": True}})
    monkeypatch.delenv("SPACY_LSLLAMA_TRUST_REMOTE_CODE", raising=False)
    with pytest.warns(RemoteCodeIgnoredWarning):
        MergedTransformer._load_base(component, folder)
    assert seen == [False]
