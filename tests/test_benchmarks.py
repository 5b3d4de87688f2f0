"""Smoke tests of the overhead benchmarks in benchmarks/: each script runs on
the tiny model and a few texts and writes its JSON result. No timing is
asserted; the real measurements are run on demand (benchmarks/RESULTS.md)."""
import json
import sys
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin

from pipelines import TRAIN_DATA

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_inference  # noqa: E402
import bench_memory  # noqa: E402
import bench_training  # noqa: E402


@pytest.fixture(scope="module")
def textcat_data(tmp_path_factory) -> Path:
    nlp = spacy.blank("en")
    docs = []
    for text, annotations in TRAIN_DATA[:3]:
        doc = nlp.make_doc(text)
        doc.cats = dict(annotations["cats"])
        docs.append(doc)
    path = tmp_path_factory.mktemp("benchmark-data") / "train.spacy"
    DocBin(docs=docs).to_disk(path)
    return path


@pytest.fixture
def tiny_args(tiny_model_dirs, textcat_data):
    return ["--model", str(tiny_model_dirs["byte_level"]), "--data", str(textcat_data)]


def read(path: Path) -> dict:
    assert path.exists()
    return json.loads(path.read_text(encoding="utf8"))


def test_inference_benchmark(tiny_args, tmp_path):
    output = tmp_path / "inference.json"
    bench_inference.main(
        tiny_args + ["--n-texts", "3", "--batch-sizes", "2", "--repeats", "1", "--output", str(output)]
    )
    result = read(output)
    entry = result["batch_sizes"]["2"]
    assert entry["ratio_plugin_over_plain_throughput"]["median"] > 0
    assert entry["same_padding"]
    assert result["hidden_state_max_abs_diff"] < 1e-4
    assert result["machine"]["packages"]["torch"]


def test_training_benchmark(tiny_args, tmp_path):
    output = tmp_path / "training.json"
    bench_training.main(
        tiny_args + ["--n-texts", "3", "--batch-sizes", "2", "--steps", "1", "--output", str(output)]
    )
    entry = read(output)["batch_sizes"]["2"]
    assert entry["ratio_plain_over_plugin_step_time"]["n"] == 1
    assert entry["plugin_seconds_per_step"]["median"] > 0


def test_memory_benchmark(tiny_args, tmp_path):
    """One subprocess (float32, plugin), which also saves the pipeline."""
    output = tmp_path / "memory.json"
    bench_memory.main(
        tiny_args
        + ["--precisions", "float32", "--systems", "plugin", "--steps", "1", "--batch-size", "2"]
        + ["--output", str(output)]
    )
    result = read(output)
    assert result["table"]["float32"]["plugin_training_peak_rss_mb"] > 0
    assert result["disk"]["saved_pipeline_bytes"] > 0
    assert result["disk"]["base_weights_bytes"] > 0
