"""End to end through spaCy's CLI: spacy train, spacy.load, spacy package."""
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from safetensors.torch import load_file

from pipelines import decoder_shim, predictions, write_corpus

CONFIGS = Path(__file__).parents[2] / "configs"
pytestmark = pytest.mark.slow




def spacy_cli(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "spacy", *args], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "train.spacy")


def train(config: str, model: Path, corpus: Path, output: Path) -> Path:
    spacy_cli(
        "train", str(CONFIGS / config),
        "--output", str(output),
        "--gpu-id", "-1",
        "--paths.train", str(corpus),
        "--paths.dev", str(corpus),
        "--paths.model", str(model),
        "--training.max_steps", "4",
        "--training.eval_frequency", "2",
        "--training.optimizer.learn_rate.warmup_steps", "1",
    )
    return output / "model-last"


@pytest.mark.parametrize(
    "config,component",
    [("textcat-causal.cfg", "textcat"), ("ner-bidirectional.cfg", "ner"), ("ner-bidirectional-linear.cfg", "ner")],
)
def test_spacy_train_trains_adapters_only_and_the_result_loads(
    config, component, tiny_model_dirs, corpus, tmp_path
):
    model = tiny_model_dirs["byte_level" if component == "textcat" else "metaspace"]
    pipeline = train(config, model, corpus, tmp_path / "output")
    nlp = spacy.load(pipeline)
    assert nlp.pipe_names == ["transformer", component, "doc_cleaner"]
    doc = nlp("I like London a lot")
    if component == "textcat":
        assert set(doc.cats) == {"POS", "NEG"}
        assert sum(doc.cats.values()) == pytest.approx(1.0, abs=1e-5)
    else:
        assert nlp.get_pipe("ner").labels == ("LOC",)
        assert decoder_shim(nlp).settings.bidirectional

    shim = decoder_shim(nlp)
    original = load_file(model / "model.safetensors")
    base_state = shim.encoder.transformer.base_model.model.state_dict()
    for name, tensor in base_state.items():
        if "lora_" not in name:
            assert (tensor == original["model." + name.replace(".base_layer", "")]).all(), name
    lora_b = [tensor for name, tensor in base_state.items() if "lora_B" in name]
    assert lora_b and any(tensor.abs().sum() > 0 for tensor in lora_b), "adapters were trained"

    saved_size = (pipeline / "transformer" / "model").stat().st_size
    adapter_bytes = sum(t.numel() * t.element_size() for name, t in base_state.items() if "lora_" in name)
    assert saved_size - adapter_bytes < (model / "model.safetensors").stat().st_size / 4, "no base weights saved"

    result = spacy_cli("evaluate", str(pipeline), str(corpus))
    assert ("TEXTCAT" if component == "textcat" else "NER") in result.stdout


@pytest.mark.parametrize("config,tokenizer", [("textcat-causal.cfg", "byte_level"), ("ner-bidirectional-linear.cfg", "metaspace")])
def test_spacy_package_records_spacy_lsllama_as_a_requirement(config, tokenizer, tiny_model_dirs, corpus, tmp_path):
    pipeline = train(config, tiny_model_dirs[tokenizer], corpus, tmp_path / "output")
    packages = tmp_path / "packages"
    packages.mkdir()
    spacy_cli("package", str(pipeline), str(packages), "--name", "lsllama_test", "--version", "0.0.1", "--force")
    (package_dir,) = packages.iterdir()
    meta = spacy.util.load_meta(package_dir / "meta.json")
    requirements = meta["requirements"]
    assert any(requirement.startswith("spacy-lsllama") for requirement in requirements), requirements
    assert any(requirement.startswith("spacy-transformers") for requirement in requirements)
    packaged = spacy.load(package_dir / "en_lsllama_test" / "en_lsllama_test-0.0.1")
    texts = ["I like London a lot", "", "Paris is awful, really"]
    assert predictions(packaged, texts) == predictions(spacy.load(pipeline), texts)
