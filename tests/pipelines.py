"""Small pipelines on the tiny checkpoints, shared by the tests."""
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy
import pytest
import spacy
from spacy.language import Language
from spacy.training import Example

TRAIN_DATA: List[Tuple[str, Dict[str, Any]]] = [
    ("I like London a lot", {"cats": {"POS": 1.0, "NEG": 0.0}, "entities": [(7, 13, "LOC")]}),
    ("Paris is awful, really", {"cats": {"POS": 0.0, "NEG": 1.0}, "entities": [(0, 5, "LOC")]}),
    ("We loved the trip to Rome", {"cats": {"POS": 1.0, "NEG": 0.0}, "entities": [(21, 25, "LOC")]}),
    ("The food in Berlin was bad", {"cats": {"POS": 0.0, "NEG": 1.0}, "entities": [(12, 18, "LOC")]}),
]


ARCHITECTURE = "spacy-lsllama.LlamaTransformer.v3"


def transformer_config(name: Path, architecture: str = ARCHITECTURE, **settings: Any) -> Dict[str, Any]:
    return {"model": {"@architectures": architecture, "name": str(name), **settings}}


def listener(pooling: str) -> Dict[str, Any]:
    return {
        "@architectures": "spacy-transformers.TransformerListener.v1",
        "grad_factor": 1.0,
        "pooling": {"@layers": pooling},
    }


def build_pipeline(name: Path, **settings: Any) -> Language:
    """A blank English pipeline: transformer, textcat (last-token pooling, as
    LS-LLaMA) and ner, not yet initialized."""
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config=transformer_config(name, **settings))
    nlp.add_pipe(
        "lsllama_textcat",
        name="textcat",
        config={
            "model": {
                "@architectures": "spacy-lsllama.TextCatReduce.v1",
                "exclusive_classes": True,
                "use_reduce_last": True,
                "tok2vec": listener("spacy-lsllama.reduce_last.v1"),
            }
        },
    )
    nlp.add_pipe(
        "ner",
        config={
            "model": {
                "@architectures": "spacy.TransitionBasedParser.v2",
                "state_type": "ner",
                "extra_state_tokens": False,
                "hidden_width": 16,
                "maxout_pieces": 2,
                "use_upper": False,
                "tok2vec": listener("spacy-lsllama.reduce_first.v1"),
            }
        },
    )
    return nlp


def train_examples(nlp: Language) -> List[Example]:
    return [Example.from_dict(nlp.make_doc(text), annotations) for text, annotations in TRAIN_DATA]


def train_pipeline(name: Path, steps: int = 5, **settings: Any) -> Language:
    """A pipeline trained for a few steps, so its adapters are not at their initial values."""
    spacy.util.fix_random_seed(0)
    nlp = build_pipeline(name, **settings)
    examples = train_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(steps):
        nlp.update(examples, sgd=optimizer)
    return nlp


def decoder_shim(nlp: Language):
    return nlp.get_pipe("transformer").model.layers[0].shims[0]


def transformer_only(name: Path, **settings: Any) -> Language:
    """A pipeline with just the transformer, initialized."""
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config=transformer_config(name, **settings))
    nlp.initialize()
    return nlp


def token_vectors(nlp: Language, texts: List[str]) -> List[numpy.ndarray]:
    """The mean of each token's piece vectors, for texts run as one batch."""
    docs = list(nlp.pipe(texts, batch_size=len(texts)))
    vectors = []
    for doc in docs:
        data = doc._.trf_data
        hidden = data.model_output.last_hidden_state.reshape(-1, data.width)
        rows = []
        for i in range(len(doc)):
            pieces = data.align[i].dataXd
            rows.append(hidden[pieces].mean(axis=0))
        vectors.append(numpy.stack(rows))
    return vectors


def write_corpus(path: Path) -> Path:
    """TRAIN_DATA as a .spacy file, for spacy train and spacy evaluate."""
    from spacy.tokens import DocBin

    nlp = spacy.blank("en")
    docs = []
    for text, annotations in TRAIN_DATA:
        doc = nlp.make_doc(text)
        doc.cats = annotations["cats"]
        doc.ents = [doc.char_span(start, end, label) for start, end, label in annotations["entities"]]
        docs.append(doc)
    DocBin(docs=docs).to_disk(path)
    return path


def predictions(nlp: Language, texts: List[str]):
    """Each text's cats and entity offsets."""
    return [(doc.cats, [(e.start_char, e.end_char, e.label_) for e in doc.ents]) for doc in nlp.pipe(texts)]


def largest_cats_difference(before: List[Dict[str, float]], after: List[Dict[str, float]]) -> float:
    """The largest absolute difference between two runs' `doc.cats`, label by
    label; the docs and their labels must match."""
    assert len(before) == len(after), "the runs scored different numbers of docs"
    largest = 0.0
    for cats_a, cats_b in zip(before, after):
        assert cats_a.keys() == cats_b.keys(), (sorted(cats_a), sorted(cats_b))
        for label in cats_a:
            largest = max(largest, abs(cats_a[label] - cats_b[label]))
    return largest


def assert_same_predictions(before, after, tolerance: float = 1e-5) -> None:
    assert len(before) == len(after)
    for (cats_a, ents_a), (cats_b, ents_b) in zip(before, after):
        assert cats_a.keys() == cats_b.keys()
        for label in cats_a:
            assert cats_a[label] == pytest.approx(cats_b[label], abs=tolerance)
        assert ents_a == ents_b
