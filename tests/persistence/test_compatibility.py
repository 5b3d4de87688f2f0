"""Pipelines saved by earlier code load and predict as they did.

`tests/data/saved_by_11a8b33` holds two tiny pipelines (causal and
bidirectional, transformer + textcat + ner) saved by main at commit 11a8b33,
before the package moved into folders and before the inference form, with
the predictions that code made. Their base is the deterministic tiny
byte-level LLaMA of `tiny_models.save_tiny_llama`, rebuilt here, so its
identity is the one the pipelines recorded.
"""
import json
from pathlib import Path

import pytest
import spacy

from pipelines import assert_same_predictions, predictions
from tiny_models import save_tiny_llama

SAVED = Path(__file__).parents[1] / "data" / "saved_by_11a8b33"


@pytest.fixture(scope="module")
def saved_base(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("saved-base") / "base", "byte_level")


@pytest.mark.parametrize("kind", ["causal", "bidirectional"])
def test_a_pipeline_saved_by_earlier_code_predicts_as_it_did(kind, saved_base):
    recorded = json.loads((SAVED / "predictions.json").read_text())
    nlp = spacy.load(SAVED / kind, config={"components.transformer.model.name": str(saved_base)})
    expected = [(cats, [tuple(entity) for entity in ents]) for cats, ents in recorded["predictions"][kind]]
    assert_same_predictions(expected, predictions(nlp, recorded["texts"]), tolerance=1e-5)
