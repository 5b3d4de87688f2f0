"""The shipped configs (configs/*.cfg) work with every spaCy API that reads
them, including those that read the config without interpolating it:
`nlp.create_optimizer()`, `nlp.resume_training()` and `spacy debug data`."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
import srsly
from thinc.api import Config, Optimizer

from pipelines import train_examples, write_corpus

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.cfg"))


def pipeline_from(config_path: Path, model: Path):
    """The pipeline a config builds, on the tiny model; nothing is loaded yet."""
    config = Config().from_disk(config_path, interpolate=False, overrides={"paths.model": str(model)})
    return spacy.util.load_model_from_config(config, auto_fill=True)


sys.path.insert(0, str(ROOT / "scripts"))
import write_configs  # noqa: E402


@pytest.mark.parametrize("shipped", write_configs.SHIPPED, ids=lambda shipped: shipped.file)
def test_every_shipped_config_is_what_init_config_writes(shipped):
    """configs/ holds no default of its own: each file is init-config's output
    for the arguments its header names (scripts/write_configs.py writes them)."""
    text = (ROOT / "configs" / shipped.file).read_text(encoding="utf8")
    assert text == write_configs.render(shipped), "run python scripts/write_configs.py"
    assert shipped.command() in text


def test_every_config_in_configs_is_written_by_the_script():
    assert sorted(p.name for p in CONFIGS) == sorted(s.file for s in write_configs.SHIPPED)


def test_the_project_trains_shipped_configs():
    variables = srsly.read_yaml(ROOT / "project.yml")["vars"]
    shipped = {f"configs/{s.file}" for s in write_configs.SHIPPED}
    assert {variables["textcat_config"], variables["ner_config"]} <= shipped


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda path: path.name)
def test_shipped_configs_give_an_optimizer_without_interpolation(config_path, metaspace_model):
    """spaCy resolves [training.optimizer] from the uninterpolated config, where
    a ${training.max_steps} reference is a string, not an int."""
    nlp = pipeline_from(config_path, metaspace_model)
    assert isinstance(nlp.create_optimizer(), Optimizer)
    assert isinstance(nlp.resume_training(), Optimizer)


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda path: path.name)
def test_shipped_schedules_end_with_training(config_path):
    config = Config().from_disk(config_path, interpolate=False)
    assert config["training"]["optimizer"]["learn_rate"]["total_steps"] == config["training"]["max_steps"]


def test_every_max_steps_override_in_the_project_also_sets_the_schedule():
    """With literal total_steps, `--training.max_steps N` alone would end the
    learning-rate schedule at the config's step count, not at N."""
    project = srsly.read_yaml(ROOT / "project.yml")
    lines = [line for command in project["commands"] for line in command.get("script", [])]
    with_max_steps = [line for line in lines if "--training.max_steps" in line]
    assert with_max_steps
    for line in with_max_steps:
        max_steps = re.search(r"--training\.max_steps[ =](\S+)", line).group(1)
        total_steps = re.search(r"--training\.optimizer\.learn_rate\.total_steps[ =](\S+)", line)
        assert total_steps is not None and total_steps.group(1) == max_steps, line


def test_a_trained_pipeline_from_a_shipped_config_resumes_training(tiny_model_dirs, tmp_path):
    """Continued training, as in a notebook: load, resume_training, update."""
    nlp = pipeline_from(ROOT / "configs" / "textcat-causal.cfg", tiny_model_dirs["byte_level"])
    examples = train_examples(nlp)
    nlp.update(examples, sgd=nlp.initialize(lambda: examples))
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    optimizer = loaded.resume_training()
    before = [doc.cats for doc in loaded.pipe([eg.reference.text for eg in examples])]
    for _ in range(3):
        losses = loaded.update(train_examples(loaded), sgd=optimizer)
        optimizer.step_schedules()  # as spacy train does: the warmup starts at rate 0
    assert all(loss == loss for loss in losses.values())  # not NaN
    after = [doc.cats for doc in loaded.pipe([eg.reference.text for eg in examples])]
    assert after != before


@pytest.mark.slow
def test_spacy_debug_data_reads_a_shipped_config(metaspace_model, tmp_path):
    corpus = write_corpus(tmp_path / "train.spacy")
    result = subprocess.run(
        [
            sys.executable, "-m", "spacy", "debug", "data", str(ROOT / "configs" / "ner-bidirectional.cfg"),
            "--paths.train", str(corpus), "--paths.dev", str(corpus), "--paths.model", str(metaspace_model),
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = result.stdout + result.stderr
    # Four docs are too few for spaCy (its one error, exit code 1); every
    # section after the config was read must have run.
    assert "Low number of examples to train a new pipeline" in output, output[-3000:]
    assert "Named Entity Recognition" in output and "1 error" in output, output[-3000:]
    assert "ConfigValidationError" not in output


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda path: path.name)
def test_shipped_pipelines_drop_hidden_states_unless_asked_to_keep_them(config_path, metaspace_model, tmp_path):
    """A doc's hidden states take hidden_size floats per piece (1.3 GB for a
    20,000-word doc on a 7B model): gone after the last component by default,
    kept with the one documented switch."""
    nlp = pipeline_from(config_path, metaspace_model)
    examples = train_examples(nlp)
    nlp.initialize(lambda: examples)
    nlp.to_disk(tmp_path / "pipeline")
    served = spacy.load(tmp_path / "pipeline")
    assert served.pipe_names[-1] == "doc_cleaner"
    assert served("I like London a lot")._.trf_data is None
    kept = spacy.load(tmp_path / "pipeline", exclude=["doc_cleaner"])
    assert kept("I like London a lot")._.trf_data.model_output.last_hidden_state.size > 0


def test_the_shipped_text_classifiers_read_whole_docs_and_ner_reads_windows():
    for config_path in CONFIGS:
        model = Config().from_disk(config_path, interpolate=False)["components"]["transformer"]["model"]
        assert model["@architectures"] == "spacy-lsllama.LlamaTransformer.v3"
        expected = "doc_spans.v1" if "textcat" in config_path.name else "strided_spans.v1"
        assert model["get_spans"]["@span_getters"].endswith(expected), config_path.name
