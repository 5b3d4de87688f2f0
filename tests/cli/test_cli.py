"""The command-line interface: init-config, merge and info (spacy_lsllama/cli)."""
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from thinc.api import Config, Optimizer
from typer.testing import CliRunner

from pipelines import assert_same_predictions, decoder_shim, predictions, train_pipeline, write_corpus
from spacy_lsllama.cli import app
from spacy_lsllama.cli.info import info
from spacy_lsllama.cli.init_config import build_config, fill_config
from spacy_lsllama.persistence.merged import FACTORY

CONFIGS = Path(__file__).parents[2] / "configs"
TEXTS = ["I like London a lot", "Paris is awful, really", "", "A new text about Rome and Berlin"]
runner = CliRunner()


class Invoked:
    def __init__(self, result):
        self.exit_code = result.exit_code
        # wasabi wraps messages to the terminal width
        self.output = " ".join(result.output.split())


def invoke(*args: str) -> Invoked:
    return Invoked(runner.invoke(app, [str(arg) for arg in args]))


def run(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result






@pytest.mark.parametrize("command", [None, "init-config", "merge", "info"])
def test_every_command_has_help(command):
    result = invoke(*([command] if command else []), "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


# init-config -----------------------------------------------------------------


def test_init_config_explains_its_choices_in_comments_that_spacy_ignores(tmp_path):
    output = tmp_path / "config.cfg"
    assert invoke("init-config", output, "--tasks", "ner,textcat", "--model", "m").exit_code == 0
    text = output.read_text(encoding="utf8")
    for section, note in [
        ("[components.doc_cleaner]", "# Drops the decoder's hidden states"),
        ("[components.ner]", "# LS-unLLaMA's own head"),
        ("[training.optimizer.learn_rate]", "# total_steps equals [training] max_steps"),
        ("[components.ner.model.tok2vec.pooling]", "# thinc's reduce_first"),
    ]:
        assert f"{section}\n{note}" in text
    assert Config().from_disk(output, interpolate=False) == fill_config(build_config(["ner", "textcat"], "m"))


@pytest.mark.parametrize(
    "tasks,options,targets",
    [
        (["ner"], {}, "all-linear"),
        (["textcat"], {}, None),
        (["ner"], {"gpu": True}, None),
    ],
)
def test_init_config_widens_lora_only_for_small_scale_ner(tasks, options, targets):
    """The paper's q_proj/v_proj is too small for a 135M model's NER (benchmarks/RESULTS.md).
    The targets are written by role, for any family: null (the family's default:
    q_proj and v_proj on LLaMA) and "all-linear" resolve when the model loads."""
    config = fill_config(build_config(tasks, "m", **options))
    model = config["components"]["transformer"]["model"]
    assert model["lora"]["target_modules"] == targets
    assert model["attn_implementation"] is None  # sdpa, or eager where the model needs it


@pytest.mark.parametrize("bidirectional,pooling", [(True, "reduce_first"), (False, "reduce_last")])
def test_init_config_can_give_the_ner_a_linear_head(bidirectional, pooling):
    """--ner-head linear: LS-unLLaMA's lsllama_ner, with the same decoder,
    LoRA, schedule and pooling as the transition-based head."""
    transition = fill_config(build_config(["ner", "textcat"], "m", bidirectional=bidirectional, ner_head="transition"))
    linear = fill_config(build_config(["ner", "textcat"], "m", bidirectional=bidirectional, ner_head="linear"))
    ner = linear["components"]["ner"]
    assert (ner["factory"], ner["scheme"], ner["model"]["@architectures"]) == ("lsllama_ner", "BIO", "spacy-lsllama.TokenTagger.v1")
    assert ner["model"]["tok2vec"]["pooling"]["@layers"] == f"spacy-lsllama.{pooling}.v1"
    assert ner["model"]["tok2vec"] == transition["components"]["ner"]["model"]["tok2vec"]
    for section in ("transformer", "textcat"):
        assert linear["components"][section] == transition["components"][section]
    assert linear["training"] == transition["training"]
    assert transition["components"]["ner"]["factory"] == "ner"


def test_init_config_picks_the_head_that_won_on_dev():
    """benchmarks/bench_ner_heads.py: on the CPU the linear head; on a GPU spaCy's, not compared there."""
    assert fill_config(build_config(["ner"], "m"))["components"]["ner"]["factory"] == "lsllama_ner"
    assert fill_config(build_config(["ner"], "m", gpu=True))["components"]["ner"]["factory"] == "ner"


def test_init_config_shares_one_transformer_between_tasks():
    config = fill_config(build_config(["ner", "textcat", "textcat_multilabel"], "m"))
    assert config["nlp"]["pipeline"] == ["transformer", "ner", "textcat", "textcat_multilabel", "doc_cleaner"]
    components = config["components"]
    assert components["transformer"]["model"]["get_spans"]["@span_getters"] == "spacy-transformers.doc_spans.v1"
    assert components["doc_cleaner"]["attrs"]["_.trf_data"] is None
    assert components["transformer"]["model"]["bidirectional"] is True  # LS-unLLaMA with a ner
    for name in ("ner", "textcat", "textcat_multilabel"):
        assert components[name]["model"]["tok2vec"]["@architectures"] == "spacy-transformers.TransformerListener.v1"
    assert components["ner"]["model"]["tok2vec"]["pooling"]["@layers"] == "spacy-lsllama.reduce_first.v1"
    assert components["textcat"]["model"]["use_reduce_mean"] is True
    assert components["textcat_multilabel"]["model"]["exclusive_classes"] is False
    assert components["textcat"]["factory"] == "lsllama_textcat"
    assert components["textcat_multilabel"]["factory"] == "lsllama_textcat_multilabel"
    ner_only = fill_config(build_config(["ner"], "m"))["components"]["transformer"]["model"]
    assert ner_only["get_spans"] == {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 128, "stride": 96}
    causal = fill_config(build_config(["ner", "textcat"], "m", bidirectional=False))["components"]
    assert causal["textcat"]["model"]["tok2vec"]["pooling"]["@layers"] == "spacy-lsllama.reduce_last.v1"
    assert causal["ner"]["model"]["tok2vec"]["pooling"]["@layers"] == "spacy-lsllama.reduce_last.v1"
    assert causal["transformer"]["model"]["bidirectional"] is False
    gpu = fill_config(build_config(["textcat"], "m", gpu=True, quantization="8bit"))["components"]["transformer"]["model"]
    assert (gpu["dtype"], gpu["gradient_checkpointing"], gpu["quantization"]) == ("bfloat16", True, "8bit")


@pytest.mark.parametrize("options", [{}, {"gpu": True, "quantization": "4bit"}])
def test_init_config_gives_an_optimizer_without_interpolation(tmp_path, metaspace_model, options):
    """spaCy's create_optimizer, resume_training and debug data read the
    uninterpolated config: the schedule's total_steps must be a literal, equal
    to max_steps."""
    result = invoke("init-config", tmp_path / "config.cfg", "--tasks", "ner,textcat", "--model", metaspace_model,
                    *(["--gpu", "--quantization", "4bit"] if options else []))  # fmt: skip
    assert result.exit_code == 0, result.output
    config = Config().from_disk(tmp_path / "config.cfg", interpolate=False)
    assert config["training"]["optimizer"]["learn_rate"]["total_steps"] == config["training"]["max_steps"]
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    assert isinstance(nlp.create_optimizer(), Optimizer)
    assert isinstance(nlp.resume_training(), Optimizer)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--tasks", "ner,pos"], "Unknown task(s) pos"),
        (["--tasks", "textcat", "--quantization", "3bit"], "Unknown quantization"),
        (["--tasks", "ner", "--ner-head", "crf"], "Unknown NER head 'crf'"),
        (["--tasks", "textcat", "--ner-head", "linear"], "needs ner among the tasks"),
    ],
)
def test_init_config_rejects_bad_arguments(tmp_path, args, message):
    result = invoke("init-config", tmp_path / "config.cfg", "--model", "m", *args)
    assert result.exit_code == 1
    assert message in result.output
    assert not (tmp_path / "config.cfg").exists()




@pytest.mark.slow
def test_generated_config_passes_debug_config_and_trains_through_spacy(tiny_model_dirs, tmp_path):
    config = tmp_path / "config.cfg"
    corpus = write_corpus(tmp_path / "train.spacy")
    model = tiny_model_dirs["byte_level"]
    run("spacy_lsllama", "init-config", str(config), "--tasks", "ner,textcat,textcat_multilabel", "--model", str(model))
    paths = ["--paths.train", str(corpus), "--paths.dev", str(corpus)]
    run("spacy", "debug", "config", str(config), *paths)
    run(
        "spacy", "train", str(config), "--output", str(tmp_path / "output"), *paths,
        "--training.max_steps", "2", "--training.eval_frequency", "2",
    )
    nlp = spacy.load(tmp_path / "output" / "model-last")
    assert nlp.pipe_names == ["transformer", "ner", "textcat", "textcat_multilabel", "doc_cleaner"]
    assert decoder_shim(nlp).settings.bidirectional
    assert set(nlp("I like London a lot").cats) == {"POS", "NEG"}


def test_spacy_cli_has_the_commands_through_its_plugin_entry_point():
    from spacy.cli._util import app as spacy_app
    from spacy.util import registry

    registry.cli.get_all()  # what `python -m spacy` does first: loads the spacy_cli entry points
    result = runner.invoke(spacy_app, ["lsllama", "--help"])
    assert result.exit_code == 0, result.output
    assert all(command in result.output for command in ("init-config", "merge", "info"))


# merge -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_model_dirs, tmp_path_factory):
    """An adapter pipeline on a private copy of the tiny base, saved to disk."""
    root = tmp_path_factory.mktemp("trained")
    base = shutil.copytree(tiny_model_dirs["metaspace"], root / "base")
    nlp = train_pipeline(base, bidirectional=True)
    nlp.to_disk(root / "pipeline")
    return root / "pipeline", base, predictions(nlp, TEXTS)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_merged_pipeline_predicts_like_the_adapter_pipeline(tiny_model, tmp_path, bidirectional):
    nlp = train_pipeline(tiny_model, bidirectional=bidirectional)
    nlp.to_disk(tmp_path / "pipeline")
    before = predictions(nlp, TEXTS)
    result = invoke("merge", tmp_path / "pipeline", tmp_path / "merged")
    assert result.exit_code == 0, result.output
    merged = spacy.load(tmp_path / "merged")
    assert merged.get_pipe_meta("transformer").factory == FACTORY
    assert decoder_shim(merged).settings.lora is None
    assert not any("lora_" in name for name, _ in decoder_shim(merged).encoder.named_parameters())
    assert_same_predictions(before, predictions(merged, TEXTS), tolerance=1e-4)
    # Merging never changes the in-process pipeline (whose base may be shared).
    assert_same_predictions(before, predictions(nlp, TEXTS), tolerance=1e-4)


def test_merged_pipeline_is_self_contained_and_can_be_saved_again(trained, tmp_path, monkeypatch):
    pipeline, base, before = trained
    base_hash = hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest()
    assert invoke("merge", pipeline, tmp_path / "merged").exit_code == 0
    assert hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest() == base_hash
    component = tmp_path / "merged" / "transformer"
    assert sorted(path.name for path in component.iterdir()) == ["base", "cfg"]  # no msgpack of weights
    assert (component / "base" / "model.safetensors").is_file()
    # Moved, from another working directory, with the original base gone.
    shutil.move(str(tmp_path / "merged"), str(tmp_path / "elsewhere" / "merged"))
    hidden_base = shutil.move(str(base), str(tmp_path / "hidden"))
    try:
        monkeypatch.chdir(tmp_path / "elsewhere")
        merged = spacy.load("merged")
        assert_same_predictions(before, predictions(merged, TEXTS), tolerance=1e-4)
        merged.to_disk(tmp_path / "resaved")
    finally:
        shutil.move(hidden_base, str(base))
    assert_same_predictions(before, predictions(spacy.load(tmp_path / "resaved"), TEXTS), tolerance=1e-4)


def test_merge_to_a_hugging_face_folder(trained, tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    pipeline, _, _ = trained
    result = invoke("merge", pipeline, tmp_path / "hf", "--format", "hf")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    hf_model = AutoModel.from_pretrained(tmp_path / "hf")
    assert AutoTokenizer.from_pretrained(tmp_path / "hf").pad_token is not None
    unshared = {"components.transformer.model.share_base": False}  # merging changes weights in place
    merged = decoder_shim(spacy.load(pipeline, config=unshared)).encoder.transformer.merge_and_unload()
    for name, tensor in merged.state_dict().items():
        assert torch.equal(tensor, hf_model.state_dict()[name]), name


def save_llama_with_a_full_vocabulary(path: Path) -> Path:
    """A tiny base whose tokenizer fills its embedding table, as LLaMA-2's,
    Llama-3's and SmolLM2's do: spacy-lsllama's own pad token gets an id past it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tiny_models import TINY_CONFIG, build_tokenizer

    tokenizer = build_tokenizer("metaspace")
    config = LlamaConfig(**{**TINY_CONFIG, "vocab_size": len(tokenizer)}, tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def test_a_merged_hugging_face_folder_batches_with_padding_in_plain_transformers(tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    base = save_llama_with_a_full_vocabulary(tmp_path / "base")
    nlp = train_pipeline(base, steps=1)
    nlp.to_disk(tmp_path / "pipeline")
    assert decoder_shim(nlp).loaded_tokenizer().pad_token_id >= 500  # past the base's embeddings
    assert invoke("merge", tmp_path / "pipeline", tmp_path / "hf", "--format", "hf").exit_code == 0
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    model = AutoModel.from_pretrained(tmp_path / "hf")
    assert tokenizer.pad_token_id < model.get_input_embeddings().num_embeddings
    assert len(tokenizer) <= model.get_input_embeddings().num_embeddings
    texts = ["I like London a lot, really a lot", "Paris"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    assert batch["attention_mask"].sum() < batch["attention_mask"].numel()  # padded
    with torch.no_grad():
        batched = model(**batch).last_hidden_state
        alone = model(**tokenizer(texts[1:], return_tensors="pt")).last_hidden_state
    n = alone.shape[1]
    assert torch.allclose(batched[1, :n], alone[0], atol=1e-5)


def test_merge_refuses_a_quantized_base_unless_asked_to_dequantize(trained, tmp_path):
    pipeline, _, before = trained
    quantized = shutil.copytree(pipeline, tmp_path / "quantized")
    config = Config().from_disk(quantized / "config.cfg", interpolate=False)
    config["components"]["transformer"]["model"]["quantization"] = "4bit"
    config.to_disk(quantized / "config.cfg")
    result = invoke("merge", quantized, tmp_path / "merged")
    assert result.exit_code == 1
    assert "quantized" in result.output and "--dequantize" in result.output
    assert not (tmp_path / "merged").exists()
    assert invoke("merge", quantized, tmp_path / "merged", "--dequantize").exit_code == 0
    assert_same_predictions(before, predictions(spacy.load(tmp_path / "merged"), TEXTS), tolerance=1e-4)


def test_merge_explains_bad_pipelines_and_arguments(trained, tmp_path):
    pipeline, _, _ = trained
    spacy.blank("en").to_disk(tmp_path / "blank")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("x")
    cases = [
        ((tmp_path / "missing", tmp_path / "out"), "Pipeline not found"),
        ((tmp_path, tmp_path / "out"), "not a spaCy pipeline directory"),
        ((tmp_path / "blank", tmp_path / "out"), "not a spacy-lsllama pipeline"),
        ((pipeline, tmp_path / "full"), "not an empty directory"),
        ((pipeline, tmp_path / "out", "--format", "onnx"), "Unknown format"),
        ((pipeline, tmp_path / "out", "--component", "ner"), "no LlamaTransformer component 'ner'"),
    ]
    for args, message in cases:
        result = invoke("merge", *args)
        assert result.exit_code == 1, args
        assert message in result.output, result.output


# info ------------------------------------------------------------------------

# The tiny LLaMA (tests/tiny_models.py): vocab 512, hidden 32, MLP 64, 2 layers,
# 4 heads of 8, 2 key/value heads (width 16).
TINY_PER_LAYER = 32 * 32 + 32 * 16 + 32 * 16 + 32 * 32 + 3 * 32 * 64 + 2 * 32
TINY_TOTAL = 512 * 32 + 2 * TINY_PER_LAYER + 32
TINY_LORA = 2 * (12 * (32 + 32) + 12 * (32 + 16))  # r=12 on q_proj (32->32), v_proj (32->16)


def test_info_counts_parameters_exactly(metaspace_model):
    counts = info(str(metaspace_model))["parameters"]
    assert (counts["total"], counts["trainable"], counts["all"]) == (34976, 2688, 34976 + 2688)
    assert (TINY_TOTAL, TINY_LORA) == (34976, 2688)
    # The same as a pipeline built on the model.
    nlp = train_pipeline(metaspace_model, steps=0)
    shim = decoder_shim(nlp)
    assert sum(tensor.numel() for tensor in shim.trainable_weights().values()) == counts["trainable"]
    assert sum(p.numel() for p in shim.encoder.transformer.base_model.model.parameters()) == counts["all"]
    assert info(str(metaspace_model), lora_r=4, lora_targets=["q_proj"])["parameters"]["trainable"] == 2 * 4 * 64
    assert info(str(metaspace_model), lora_r=0)["parameters"]["trainable"] == TINY_TOTAL


def test_info_memory_estimate_is_positive_and_ordered(metaspace_model):
    estimates = {q: info(str(metaspace_model), quantization=q, batch_size=8, seq_len=64) for q in ("4bit", "8bit", None)}
    memory = {q: result["memory"] for q, result in estimates.items()}
    assert all(value > 0 for result in memory.values() for value in result.values())
    assert memory["4bit"]["weights"] < memory["8bit"]["weights"] < memory[None]["weights"]
    full = estimates[None]
    assert full["memory"]["activations_checkpointed"] < full["memory"]["activations"]
    assert full["inference"] < full["training_checkpointed"] < full["training"]
    longer = info(str(metaspace_model), batch_size=8, seq_len=128)
    assert longer["memory"]["activations"] > full["memory"]["activations"]


def test_info_prints_a_report_and_explains_errors(metaspace_model, tmp_path):
    result = invoke("info", "--model", metaspace_model, "--batch-size", "4", "--seq-len", "32")
    assert result.exit_code == 0, result.output
    assert "trainable params: 2,688 || all params: 37,664" in result.output
    assert "with gradient checkpointing" in result.output
    result = invoke("info", "--model", metaspace_model, "--lora-targets", "q_proj,w_proj")
    assert result.exit_code == 1 and "w_proj" in result.output and "q_proj" in result.output
    result = invoke("info", "--model", tmp_path / "nowhere")
    assert result.exit_code == 1 and "does not exist" in result.output and "local path" in result.output


@pytest.mark.parametrize("family", ["gpt2", "qwen2", "gemma3_text", "gemma3"])
def test_info_counts_every_family_the_library_loads_as_a_pipeline_would(family, tmp_path):
    """GPT-2's Conv1D layers, Qwen2's biases, a Gemma-3 text checkpoint saved
    as a causal LM: the counts are those of the adapters the library adds."""
    from tiny_families import save_tiny_family

    folder = save_tiny_family(tmp_path / family, family)
    result = info(str(folder))
    nlp = train_pipeline(folder, steps=0)
    shim = decoder_shim(nlp)
    assert tuple(result["lora_targets"]) == shim.settings.lora.target_modules
    assert sum(tensor.numel() for tensor in shim.trainable_weights().values()) == result["parameters"]["trainable"]
    assert sum(p.numel() for p in shim.encoder.transformer.base_model.model.parameters()) == result["parameters"]["all"]
    assert info(str(folder), lora_targets="all-linear")["parameters"]["trainable"] > result["parameters"]["trainable"]


def test_info_treats_a_path_as_a_path(tmp_path, monkeypatch):
    """A missing folder is reported as a folder, never looked up on the hub."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    result = invoke("info", "--model", "models/llama")
    assert result.exit_code == 1
    assert "models/llama" in result.output and "hub" in result.output.lower()
