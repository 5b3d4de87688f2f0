"""`init-config`: a complete training config with one shared LlamaTransformer.

The config is built as a confection `Config`, filled with spaCy's defaults
and validated by building the pipeline and resolving [training]; building
does not load any weights: the model loads when it is initialized. This
module is the one source of the defaults: the shipped configs/*.cfg are its
output (scripts/write_configs.py writes them), with the notes of NOTES as
comments.
"""
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import typer
from wasabi import msg

from ..decoder import defaults
from ._util import ARCHITECTURE, CommandError, reports_errors, split_list

TASKS = ("ner", "textcat", "textcat_multilabel")
QUANTIZATIONS = ("4bit", "8bit")
# The NER head on the shared decoder: spaCy's transition-based `ner`, or
# LS-unLLaMA's linear token tagger (`lsllama_ner`). The CPU default is the head
# that won on dev at equal steps, the GPU (7B) default spaCy's, which no run has
# compared there (benchmarks/RESULTS.md, "NER heads").
NER_HEADS = ("transition", "linear")
DEFAULT_NER_HEADS = {"cpu": "linear", "gpu": "transition"}

# `nlp_batch_size` is [nlp] batch_size: the docs `nlp.pipe` and evaluation hand the
# transformer at once, 128 as in spacy-transformers' configs, so that rows can be
# grouped by length (docs/serving.md); training batches are [training.batcher]'s.
# The training schedules: on the CPU one small-scale schedule for both tasks; on
# a GPU, the paper-scale schedule of each task (NER's when the pipeline has a ner).
CPU_SCHEDULE = {"nlp_batch_size": defaults.PIPE_BATCH_SIZE, "max_steps": 150, "eval_frequency": 50, "patience": 0, "warmup_steps": 15}
GPU_SCHEDULES = {
    "textcat": {"nlp_batch_size": defaults.PIPE_BATCH_SIZE, "words_per_batch": 300, "max_steps": 20000, "eval_frequency": 1000, "patience": 5000, "warmup_steps": 500},
    "ner": {"nlp_batch_size": defaults.PIPE_BATCH_SIZE, "words_per_batch": 400, "max_steps": 5000, "eval_frequency": 500, "patience": 2000, "warmup_steps": 250},
}
# The paper trains with lr 1e-4, and 5e-5 for the causal sequence classifier
# (LS-LLaMA), with LoRA on q_proj and v_proj. The CPU configs train small models
# for a few hundred steps at higher rates. A small model's NER needs LoRA on
# every linear layer, at the learning rate that was best on dev
# (benchmarks/RESULTS.md); its causal textcat learns best at 1e-3, the best
# mean dev score over three training seeds (docs/benchmarks.md).
# The targets are written by role, so that a config fits any decoder family; they
# resolve when the model loads (spacy_lsllama/lora_targets.py): null is the
# family's default (the paper's q_proj and v_proj on LLaMA), "all-linear" every
# linear layer of the blocks (on LLaMA the seven of ALL_LINEAR_LORA_TARGETS,
# which the shipped LLaMA configs name).
PAPER_LORA_TARGETS = None
ALL_LINEAR_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LEARN_RATES = {
    ("gpu", "causal_textcat"): 0.00005,
    ("gpu", "ner"): 0.0001,
    ("gpu", "other"): 0.0001,
    ("cpu", "causal_textcat"): 0.001,
    ("cpu", "ner"): 0.001,
    ("cpu", "other"): 0.002,
}
LORA_TARGETS = {("cpu", "ner"): "all-linear"}


def parse_tasks(tasks: str) -> List[str]:
    names = split_list(tasks)
    if not names:
        raise CommandError(f"No tasks given: pass --tasks with one or more of {', '.join(TASKS)}.")
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        raise CommandError(
            f"Unknown task(s) {', '.join(unknown)}: --tasks takes a comma-separated list of "
            f"{', '.join(TASKS)}."
        )
    if len(set(names)) != len(names):
        raise CommandError(f"--tasks lists a task twice: {tasks}.")
    return names


def build_config(
    tasks: Sequence[str],
    model: str,
    *,
    bidirectional: Optional[bool] = None,
    quantization: Optional[str] = None,
    gpu: bool = False,
    ner_head: Optional[str] = None,
):
    """A training config for `tasks` sharing one LlamaTransformer, not yet filled.

    bidirectional: None picks LS-unLLaMA (bidirectional) when there is a ner,
        LS-LLaMA (causal) otherwise.
    ner_head: "transition" (spaCy's `ner`) or "linear" (`lsllama_ner`); None
        picks DEFAULT_NER_HEADS for the device. Only a pipeline with a ner takes one.
    """
    from thinc.api import Config

    tasks = parse_tasks(",".join(tasks))
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise CommandError(f"Unknown quantization {quantization!r}: use {' or '.join(QUANTIZATIONS)}, or leave it out.")
    if not model:
        raise CommandError("--model is empty: pass a hub id or a local folder of a decoder model.")
    if ner_head is not None and ner_head not in NER_HEADS:
        raise CommandError(f"Unknown NER head {ner_head!r}: use {' or '.join(NER_HEADS)}.")
    if ner_head is not None and "ner" not in tasks:
        raise CommandError(f"--ner-head {ner_head} needs ner among the tasks (--tasks ner,...).")
    if bidirectional is None:
        bidirectional = "ner" in tasks
    device = "gpu" if gpu else "cpu"
    if "ner" in tasks:
        kind = "ner"
    elif not bidirectional:
        kind = "causal_textcat"
    else:
        kind = "other"
    learn_rate = LEARN_RATES[(device, kind)]
    lora_targets = LORA_TARGETS.get((device, kind), PAPER_LORA_TARGETS)
    schedule = GPU_SCHEDULES["ner" if "ner" in tasks else "textcat"] if gpu else CPU_SCHEDULE

    whole_docs = any(task != "ner" for task in tasks)
    components: Dict[str, Any] = {
        "transformer": transformer_component(bidirectional, quantization, gpu, lora_targets, whole_docs)
    }
    for task in tasks:
        components[task] = (
            ner_component(bidirectional, ner_head or DEFAULT_NER_HEADS[device])
            if task == "ner"
            else text_classifier(task, bidirectional)
        )
    components["doc_cleaner"] = dict(DOC_CLEANER)

    if gpu:
        batcher = {
            "@batchers": "spacy.batch_by_words.v1",
            "size": schedule["words_per_batch"],
            "discard_oversize": False,
            "tolerance": 0.2,
            "get_length": None,
        }
    else:
        batcher = {"@batchers": "spacy.batch_by_sequence.v1", "size": 8, "get_length": None}

    corpus = {"@readers": "spacy.Corpus.v1", "max_length": 0, "gold_preproc": False, "limit": 0, "augmenter": None}
    data = {
        "paths": {"train": None, "dev": None, "model": model, "vectors": None, "init_tok2vec": None},
        "system": {"gpu_allocator": "pytorch", "seed": 0},
        "nlp": {
            "lang": "en",
            "pipeline": ["transformer", *tasks, "doc_cleaner"],
            "batch_size": schedule["nlp_batch_size"],
            "disabled": [],
            "before_creation": None,
            "after_creation": None,
            "after_pipeline_creation": {"@callbacks": "spacy-lsllama.atomic_to_disk.v1"},
            "tokenizer": {"@tokenizers": "spacy.Tokenizer.v1"},
        },
        "components": components,
        "corpora": {
            "train": {**corpus, "path": "${paths.train}"},
            "dev": {**corpus, "path": "${paths.dev}"},
        },
        "training": {
            "seed": "${system.seed}",
            "gpu_allocator": "${system.gpu_allocator}",
            "dropout": 0.1,
            "accumulate_gradient": 1,
            "patience": schedule["patience"],
            "max_epochs": 0,
            "max_steps": schedule["max_steps"],
            "eval_frequency": schedule["eval_frequency"],
            "frozen_components": [],
            "annotating_components": [],
            "dev_corpus": "corpora.dev",
            "train_corpus": "corpora.train",
            "before_to_disk": None,
            "before_update": None,
            "batcher": batcher,
            "logger": {"@loggers": "spacy.ConsoleLogger.v1", "progress_bar": False},
            "optimizer": {
                "@optimizers": "Adam.v1",
                "beta1": 0.9,
                "beta2": 0.999,
                "L2_is_weight_decay": True,
                "L2": 0.01,
                "grad_clip": 1.0,
                "use_averages": False,
                "eps": 1e-8,
                "learn_rate": {
                    "@schedules": "warmup_linear.v1",
                    "warmup_steps": schedule["warmup_steps"],
                    # A literal, not ${training.max_steps}: spaCy's create_optimizer,
                    # resume_training and debug data resolve this section uninterpolated.
                    "total_steps": schedule["max_steps"],
                    "initial_rate": learn_rate,
                },
            },
            # Filled from the components' default score weights.
            "score_weights": {},
        },
        "pretraining": {},
        "initialize": {
            "vectors": "${paths.vectors}",
            "init_tok2vec": "${paths.init_tok2vec}",
            "vocab_data": None,
            "lookups": None,
            "before_init": None,
            "after_init": None,
            "components": {},
            "tokenizer": {},
        },
    }
    return Config(data)


# A text classifier reads each doc whole (up to the model's positions), so that
# a causal decoder's last token has read all of it; NER reads windows of 128
# tokens every 96, which give every token context on both sides at a cost
# linear in the doc's length.
WHOLE_DOC_SPANS = {"@span_getters": "spacy-transformers.doc_spans.v1"}
NER_SPANS = {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 128, "stride": 96}
DOC_CLEANER = {"factory": "doc_cleaner", "attrs": {"_.trf_data": None}, "silent": True}

# What init-config says, in the config it writes, under a section's header:
# why a value is what it is. Keyed by what the section holds (see config_notes).
NOTES = {
    "doc_cleaner": [
        "Drops the decoder's hidden states from each doc after the last component:",
        'spacy.load(path, exclude=["doc_cleaner"]) keeps them.',
    ],
    "spacy-transformers.doc_spans.v1": [
        "Each doc whole, so that a causal decoder's last token has read all of it",
        "(up to the model's positions; longer docs run in consecutive windows).",
    ],
    "spacy-transformers.strided_spans.v1": [
        "Windows of 128 tokens every 96: every token gets context on both sides,",
        "at a cost linear in the doc's length.",
    ],
    "lsllama_ner": [
        "LS-unLLaMA's own head (spacy_lsllama/heads/ner.py): dropout, one linear layer",
        "over each word's vector, BIO tags, decoded by constrained Viterbi. Its bias",
        "starts at the tags' prior in the training data (bias_init), which learns rare",
        "types faster; class_balance (0 to 1) would weigh rare tags up in the loss.",
    ],
    "spacy-lsllama.reduce_first.v1": [
        "thinc's reduce_first (the first piece of each word), except that a token",
        "with no pieces gets a zero vector instead of an error.",
    ],
    "spacy-lsllama.reduce_last.v1": [
        "thinc's reduce_last (the last piece), except that a token or doc with no",
        "pieces gets a zero vector instead of an error.",
    ],
    "total_steps": [
        "total_steps equals [training] max_steps: override both together. A literal,",
        "because spaCy's create_optimizer, resume_training and debug data read this",
        "section uninterpolated.",
    ],
}


def config_notes(config: Dict[str, Any]) -> Dict[str, List[str]]:
    """The NOTES that apply to `config`, by dotted section name: each follows
    from what the section holds, so a note is written wherever that value is."""
    notes: Dict[str, List[str]] = {}

    def visit(section: Dict[str, Any], path: str) -> None:
        for key in ("factory", "@span_getters", "@layers"):
            if section.get(key) in NOTES:
                notes[path] = NOTES[section[key]]
        if path == "training.optimizer.learn_rate" and isinstance(section.get("total_steps"), int):
            notes[path] = NOTES["total_steps"]
        for key, value in section.items():
            if isinstance(value, dict):
                visit(value, f"{path}.{key}" if path else key)

    visit(config, "")
    return notes


def config_text(config: Any) -> str:
    """`config` as init-config writes it: confection's text with each section
    after its parent (as spaCy's own configs read, where confection writes
    level by level) and its notes as comments under the section's header."""
    notes = config_notes(config)
    blocks: Dict[str, List[str]] = {}
    for line in config.to_str().splitlines():
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1]
            blocks[name] = [line] + [f"# {note}" for note in notes.get(name, [])]
        elif line.strip():
            blocks[name].append(line)
    return "\n\n".join("\n".join(blocks[name]) for name in _sections_depth_first(config) if name in blocks) + "\n"


def _sections_depth_first(section: Dict[str, Any], path: str = "") -> List[str]:
    names = [path] if path else []
    for key, value in section.items():
        if isinstance(value, dict):
            names += _sections_depth_first(value, f"{path}.{key}" if path else key)
    return names


def transformer_component(
    bidirectional: bool, quantization: Optional[str], gpu: bool, lora_targets: Optional[str], whole_docs: bool
) -> Dict[str, Any]:
    model: Dict[str, Any] = {
        "@architectures": ARCHITECTURE,
        "name": "${paths.model}",
        "revision": None,
        # bfloat16 weights and compute on a GPU, as the paper; NumPy has no
        # bfloat16, so CPU runs stay in float32 (hidden states reach spaCy as
        # float32 either way).
        "dtype": "bfloat16" if gpu else "float32",
        "quantization": None,
        "bidirectional": bidirectional,
        # null: sdpa, or eager where sdpa would drop a feature of the model's
        # attention (Gemma-2's logit soft-capping).
        "attn_implementation": None,
        "max_length": None,
        "gradient_checkpointing": gpu,
        "mixed_precision": False,
        "trust_remote_code": False,
        "get_spans": dict(WHOLE_DOC_SPANS if whole_docs else NER_SPANS),
        "max_batch_pieces": defaults.MAX_BATCH_PIECES,
        # null: predictions run in the base's dtype with the LoRA deltas merged
        # (the trained answers); "bfloat16" can be chosen at load time.
        "serving_precision": None,
        "lora": {"r": defaults.LORA_R, "alpha": defaults.LORA_ALPHA, "dropout": defaults.LORA_DROPOUT, "target_modules": lora_targets},
        "tokenizer_config": {},
        "grad_scaler_config": {},
    }
    if quantization == "4bit":
        # QLoRA: NF4 with double quantization; compute in bfloat16 on a GPU, and
        # in float32 on the CPU (null picks it by device).
        model["quantization"] = {
            "bits": 4,
            "quant_type": "nf4",
            "double_quant": True,
            "compute_dtype": "bfloat16" if gpu else None,
        }
    elif quantization == "8bit":
        model["quantization"] = "8bit"
    return {
        "factory": "transformer",
        "max_batch_items": defaults.MAX_BATCH_PIECES,
        "set_extra_annotations": {"@annotation_setters": "spacy-transformers.null_annotation_setter.v1"},
        "model": model,
    }


def text_classifier(task: str, bidirectional: bool) -> Dict[str, Any]:
    from ..heads.pooling import classifier_config  # imports torch: not at CLI start-up

    exclusive = task == "textcat"
    return {
        "factory": f"lsllama_{task}",
        "scorer": {"@scorers": "spacy.textcat_scorer.v2" if exclusive else "spacy.textcat_multilabel_scorer.v2"},
        "threshold": 0.0 if exclusive else 0.5,
        "model": classifier_config(exclusive, bidirectional),
    }


def ner_component(bidirectional: bool, head: str) -> Dict[str, Any]:
    """The ner component with the chosen head."""
    return linear_NER(bidirectional) if head == "linear" else NER(bidirectional)


def ner_pooling(bidirectional: bool) -> str:
    """The piece each word is labelled from: the first under bidirectional
    attention, as the paper; the last under causal attention (see NER)."""
    return "spacy-lsllama.reduce_first.v1" if bidirectional else "spacy-lsllama.reduce_last.v1"


def linear_NER(bidirectional: bool) -> Dict[str, Any]:
    """LS-unLLaMA's own head: dropout and one linear layer over each word's
    vector, BIO tags (the paper's), constrained Viterbi decoding."""
    from ..heads.pooling import listener_config  # imports torch: not at CLI start-up

    return {
        "factory": "lsllama_ner",
        "scheme": "BIO",
        "scorer": {"@scorers": "spacy.ner_scorer.v1"},
        "model": {
            "@architectures": "spacy-lsllama.TokenTagger.v1",
            "dropout": 0.1,
            "nO": None,
            "tok2vec": listener_config(ner_pooling(bidirectional)),
        },
    }


def NER(bidirectional: bool) -> Dict[str, Any]:
    """Under bidirectional attention (LS-unLLaMA) the head labels the first piece
    of each word, as the paper. A causal decoder's first piece has not seen the
    rest of its word; its last piece has, and labels better (benchmarks/RESULTS.md,
    pooling ablations)."""
    from ..heads.pooling import listener_config  # imports torch: not at CLI start-up

    return {
        "factory": "ner",
        "incorrect_spans_key": None,
        "moves": None,
        "scorer": {"@scorers": "spacy.ner_scorer.v1"},
        "update_with_oracle_cut_size": 100,
        "model": {
            "@architectures": "spacy.TransitionBasedParser.v2",
            "state_type": "ner",
            "extra_state_tokens": False,
            "hidden_width": 64,
            "maxout_pieces": 2,
            "use_upper": False,
            "nO": None,
            "tok2vec": listener_config(ner_pooling(bidirectional)),
        },
    }


def fill_config(config):
    """Fill `config` with spaCy's defaults and validate it, the way
    `spacy init fill-config` does: build the pipeline (no weights are loaded),
    build it again from the filled config, and resolve [training]."""
    from spacy.schemas import ConfigSchemaTraining
    from spacy.util import load_model_from_config, registry

    try:
        nlp = load_model_from_config(config, auto_fill=True, validate=True)
        filled = nlp.config
        load_model_from_config(filled, auto_fill=False, validate=True)
        registry.resolve(filled.interpolate()["training"], schema=ConfigSchemaTraining, validate=True)
    except Exception as error:  # a bug here, not a user error: show what spaCy said
        raise CommandError(f"The generated config does not validate: {error}") from error
    return filled


def init_config(
    output: Path,
    tasks: Sequence[str],
    model: str,
    *,
    bidirectional: Optional[bool] = None,
    quantization: Optional[str] = None,
    gpu: bool = False,
    ner_head: Optional[str] = None,
):
    """Build, fill, validate and write the config; `output` "-" prints it."""
    config = fill_config(
        build_config(tasks, model, bidirectional=bidirectional, quantization=quantization, gpu=gpu, ner_head=ner_head)
    )
    if str(output) == "-":
        print(config_text(config), end="")
    else:
        output = Path(output)
        if output.is_dir():
            raise CommandError(f"{output} is a directory: give a file name, e.g. {output / 'config.cfg'}.")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(config_text(config), encoding="utf8")
    return config


@reports_errors
def init_config_cli(
    output: Path = typer.Argument(..., help="File to write the config to, or - for stdout.", allow_dash=True),
    tasks: str = typer.Option(..., "--tasks", "-t", help=f"Comma-separated components to train on the shared transformer: {', '.join(TASKS)}."),
    model: str = typer.Option(..., "--model", "-m", help="Hub id or local folder of the base decoder (stored as [paths] model)."),
    bidirectional: Optional[bool] = typer.Option(
        None,
        "--bidirectional/--causal",
        help="Remove the causal mask (LS-unLLaMA) or keep it (LS-LLaMA). Default: bidirectional when the tasks include ner.",
        show_default=False,
    ),
    quantization: Optional[str] = typer.Option(None, "--quantization", "-q", help="Load the base quantized by bitsandbytes: 4bit (QLoRA, NF4) or 8bit."),
    gpu: bool = typer.Option(False, "--gpu", "-G", help="Train on a GPU: bfloat16, gradient checkpointing and the paper's batch sizes and learning rates."),
    ner_head: Optional[str] = typer.Option(
        None,
        "--ner-head",
        help=f"The ner's head: transition (spaCy's transition-based ner) or linear (LS-unLLaMA's linear tagger, lsllama_ner). Default: linear on the CPU, transition with --gpu.",
        show_default=False,
    ),
):
    """Write a complete, validated training config: one LoRA decoder shared by
    ner, textcat and textcat_multilabel heads, with the paper's defaults
    (LoRA r=12, alpha=32, dropout 0.1 on the family's default targets: q_proj
    and v_proj on LLaMA). On the CPU, a pipeline with a ner puts LoRA on every
    linear layer ("all-linear"): a small model needs it."""
    config = init_config(
        output, parse_tasks(tasks), model, bidirectional=bidirectional, quantization=quantization, gpu=gpu, ner_head=ner_head
    )
    if str(output) != "-":
        settings = config["components"]["transformer"]["model"]
        mode = "bidirectional (LS-unLLaMA)" if settings["bidirectional"] else "causal (LS-LLaMA)"
        msg.good(f"Saved config to {output}")
        msg.info(f"Pipeline: {', '.join(config['nlp']['pipeline'])}; {mode}; base {model}")
        msg.text(f"Train with: python -m spacy train {output} --paths.train train.spacy --paths.dev dev.spacy" + (" --gpu-id 0" if gpu else ""))
        msg.text(
            "To change --training.max_steps, set --training.optimizer.learn_rate.total_steps to the "
            "same value: the learning rate reaches 0 at total_steps."
        )
