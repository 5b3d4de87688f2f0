"""NER heads side by side: spaCy's transition-based `ner` against LS-unLLaMA's
linear tagger (`lsllama_ner`), on the same decoder, LoRA, steps and seed.

Systems (see SYSTEMS; the first three run by default):

- transition: configs/ner-bidirectional.cfg as shipped (bidirectional
  SmolLM2-135M, LoRA on every linear layer, lr 1e-3, first piece);
- linear: configs/ner-bidirectional-linear.cfg, the same config with the
  linear head (`init-config --ner-head linear`): dropout, one linear layer,
  BIO tags, constrained Viterbi;
- linear-causal: the linear head on a causal decoder (LS-LLaMA), last piece
  of each word as `init-config --causal` picks: the paper's bidirectional claim
  re-checked with its own head;
- on demand, to find out why if the linear head trails (pooling, learning
  rate, tags): linear-mean, linear-lr5e-4, linear-lr2e-3, linear-biluo,
  linear-causal-first (the paper's first piece under causal attention) and
  transition-causal.

Settings (`--settings`): `2k`, the accuracy benchmark's data (first 2,000
CoNLL-2003 training sentences, first 200 dev, full test, 300 steps of 8), and
`full`, every training sentence at `--full-max-steps` steps (1,000 by default:
about 0.6 epochs, what a 2-core machine trains in well under an hour per run).
Missing corpora are written from the fetched assets by scripts/convert_conll.py.

Every run is `spacy train` (model chosen on dev), `spacy evaluate` of
model-best on the test set (F1, P, R and F1 per type), and `spacy package` of
model-best; it records its wall and CPU time and peak memory. Finished runs are
kept in `--workdir` and skipped when the script is run again with the same
settings (`--force` redoes them). After the runs of a setting, the packaged
pipelines are loaded into one process and their inference speed measured side
by side, interleaved, order rotating: words per second of the whole pipeline
(`nlp.pipe`) and of the NER component alone on docs the transformer has
already run over (the head's own cost).

    python benchmarks/bench_ner_heads.py --settings 2k,full --jobs 2 --threads 1 \
        --output benchmarks/results/ner_heads.json

writes the JSON and, beside it, a markdown table (ner_heads.md).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine_info, write_output  # noqa: E402
from bench_accuracy import _log_tail, _override_args, _run_logged, run_key, schedule_overrides  # noqa: E402

CONFIGS = ROOT / "configs"
TRANSITION_CONFIG = CONFIGS / "ner-bidirectional.cfg"
LINEAR_CONFIG = CONFIGS / "ner-bidirectional-linear.cfg"
ENTITY_TYPES = ("PER", "ORG", "LOC", "MISC")
PACKAGE_VERSION = "0.0.0"


@dataclass(frozen=True)
class System:
    title: str
    config: Path
    overrides: Dict[str, Any] = field(default_factory=dict)


CAUSAL = {"components.transformer.model.bidirectional": False}
LAST_PIECE = {"components.ner.model.tok2vec.pooling": {"@layers": "spacy-lsllama.reduce_last.v1"}}
SYSTEMS: Dict[str, System] = {
    "transition": System("transition-based ner (spaCy), bidirectional", TRANSITION_CONFIG),
    "linear": System("linear tagger (lsllama_ner, BIO), bidirectional", LINEAR_CONFIG),
    "linear-causal": System("linear tagger, causal, last piece", LINEAR_CONFIG, {**CAUSAL, **LAST_PIECE}),
    # On demand: why the linear head scores what it scores.
    "linear-mean": System(
        "linear tagger, bidirectional, mean of the pieces",
        LINEAR_CONFIG,
        {"components.ner.model.tok2vec.pooling": {"@layers": "reduce_mean.v1"}},
    ),
    "linear-lr5e-4": System(
        "linear tagger, bidirectional, learning rate 5e-4",
        LINEAR_CONFIG,
        {"training.optimizer.learn_rate.initial_rate": 5e-4},
    ),
    "linear-lr2e-3": System(
        "linear tagger, bidirectional, learning rate 2e-3",
        LINEAR_CONFIG,
        {"training.optimizer.learn_rate.initial_rate": 2e-3},
    ),
    "linear-biluo": System("linear tagger (BILUO), bidirectional", LINEAR_CONFIG, {"components.ner.scheme": "BILUO"}),
    "linear-causal-first": System("linear tagger, causal, first piece (the paper's pooling)", LINEAR_CONFIG, CAUSAL),
    "transition-causal": System("transition-based ner, causal, last piece", TRANSITION_CONFIG, {**CAUSAL, **LAST_PIECE}),
}
DEFAULT_SYSTEMS = ["transition", "linear", "linear-causal"]


@dataclass(frozen=True)
class Setting:
    title: str
    folder: str  # under --corpus-root, holding conll2003/{train,dev,test}.spacy
    convert_args: List[str]  # scripts/convert_conll.py arguments that write it


SETTINGS: Dict[str, Setting] = {
    "2k": Setting(
        "first 2,000 training sentences",
        "benchmark",
        ["--limit", "2000", "--dev-limit", "200", "--test-limit", "0", "--first"],
    ),
    "full": Setting(
        "all 14,041 training sentences",
        "benchmark-full",
        ["--limit", "0", "--dev-limit", "200", "--test-limit", "0", "--first"],
    ),
}


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def corpus_dir(setting: str, args: argparse.Namespace) -> Path:
    override = getattr(args, f"corpus_{setting}")
    return Path(override) if override else Path(args.corpus_root) / SETTINGS[setting].folder / "conll2003"


def ensure_corpus(setting: str, args: argparse.Namespace) -> Path:
    """The setting's corpus folder, written from the fetched assets if missing."""
    folder = corpus_dir(setting, args)
    if all((folder / f"{split}.spacy").exists() for split in ("train", "dev", "test")):
        return folder
    command = [
        sys.executable, str(ROOT / "scripts" / "convert_conll.py"),
        "--packages-dir", str(args.packages_dir), "--output", str(folder), *SETTINGS[setting].convert_args,
    ]  # fmt: skip
    print(f"[{setting}] writing {folder}: {' '.join(command)}", flush=True)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(
            f"Could not write {folder}:\n{result.stdout}{result.stderr}\n"
            "Fetch the assets first: python -m spacy project run fetch-assets"
        )
    return folder


# --------------------------------------------------------------------------
# One run: train, evaluate, package
# --------------------------------------------------------------------------


def max_steps_of(setting: str, args: argparse.Namespace) -> int:
    return args.full_max_steps if setting == "full" else args.max_steps


def package_name(setting: str, name: str) -> str:
    return f"ner_heads_{setting}_{name}".replace("-", "_")


def packaged_pipeline(run_dir: Path, setting: str, name: str) -> Path:
    """The pipeline folder inside the package `spacy package` wrote."""
    full_name = f"en_{package_name(setting, name)}"
    return run_dir / "packages" / f"{full_name}-{PACKAGE_VERSION}" / full_name / f"{full_name}-{PACKAGE_VERSION}"


def run_one(setting: str, name: str, args: argparse.Namespace) -> Dict[str, Any]:
    system = SYSTEMS[name]
    corpus = corpus_dir(setting, args)
    max_steps = max_steps_of(setting, args)
    overrides: Dict[str, Any] = {
        "paths.train": str(corpus / "train.spacy"),
        "paths.dev": str(corpus / "dev.spacy"),
        "paths.model": str(args.smollm2),
        **schedule_overrides(system.config, max_steps),
        "training.eval_frequency": max(1, max_steps // 6),
        "system.seed": args.seed,
        **system.overrides,
    }
    settings = {"config": str(system.config.relative_to(ROOT)), "overrides": overrides}
    key = run_key(setting, name, settings)
    run_dir = Path(args.workdir) / setting / name
    result_path = run_dir / "result.json"
    if result_path.exists() and not args.force:
        previous = json.loads(result_path.read_text(encoding="utf8"))
        if previous.get("key") == key and previous.get("status") == "ok":
            print(f"[{setting}/{name}] up to date, skipped", flush=True)
            return previous
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    result: Dict[str, Any] = {
        "setting": setting, "system": name, "title": system.title, "key": key, "max_steps": max_steps, **settings,
    }  # fmt: skip
    print(f"[{setting}/{name}] training ({max_steps} steps)", flush=True)
    train_command = [
        sys.executable, "-m", "spacy", "train", str(system.config), "--output", str(run_dir / "training"),
        *_override_args(overrides),
    ]  # fmt: skip
    result["train"] = _run_logged(train_command, run_dir / "train.log", env)
    best = run_dir / "training" / "model-best"
    steps = [
        ("evaluate", [sys.executable, "-m", "spacy", "evaluate", str(best), str(corpus / "test.spacy"),
                      "--output", str(run_dir / "test-metrics.json")]),
        ("package", [sys.executable, "-m", "spacy", "package", str(best), str(run_dir / "packages"),
                     "--name", package_name(setting, name), "--version", PACKAGE_VERSION, "--force"]),
    ]  # fmt: skip
    failed = result["train"]["returncode"] != 0 or not best.exists()
    log = run_dir / "train.log"
    if not failed:
        (run_dir / "packages").mkdir(exist_ok=True)
        for step, command in steps:
            print(f"[{setting}/{name}] {step}", flush=True)
            log = run_dir / f"{step}.log"
            result[step] = _run_logged(command, log, env)
            if result[step]["returncode"] != 0:
                failed = True
                break
    if failed:
        result["status"] = "failed"
        result["error"] = _log_tail(log)
        print(f"[{setting}/{name}] FAILED: {result['error'][-1] if result['error'] else '?'}", flush=True)
    else:
        result["status"] = "ok"
        metrics = json.loads((run_dir / "test-metrics.json").read_text(encoding="utf8"))
        result["test"] = scores_of(metrics)
        result["dev_best"] = json.loads((best / "meta.json").read_text(encoding="utf8")).get("performance", {})
        result["package"]["pipeline"] = str(packaged_pipeline(run_dir, setting, name))
        print(f"[{setting}/{name}] ok: test F1 {result['test']['f1']:.1f}", flush=True)
    result_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf8")
    return result


def scores_of(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """F1, P and R in %, F1 per entity type in %, and spacy evaluate's words/s."""
    per_type = metrics.get("ents_per_type") or {}
    return {
        "f1": 100 * metrics["ents_f"],
        "precision": 100 * metrics["ents_p"],
        "recall": 100 * metrics["ents_r"],
        "per_type_f1": {label: 100 * scores["f"] for label, scores in sorted(per_type.items())},
        "evaluate_words_per_second": metrics.get("speed"),
    }


# --------------------------------------------------------------------------
# Inference speed of the packaged pipelines, side by side
# --------------------------------------------------------------------------


def measure_speed(
    pipelines: Dict[str, Path], model: Path, texts: List[str], repeats: int, batch_size: int
) -> Dict[str, Any]:
    """Words per second of each packaged pipeline (`nlp.pipe`) and of its NER
    component alone, interleaved over `repeats` rounds with the order rotating
    each round; medians, and each system's ratio to the first system."""
    import spacy

    loaded = {
        name: spacy.load(path, config={"components.transformer.model.name": str(model)})
        for name, path in pipelines.items()
    }
    names = list(loaded)
    n_words = sum(len(doc) for doc in loaded[names[0]].tokenizer.pipe(texts))
    # The head alone: docs the system's own transformer has already run over.
    annotated = {name: list(nlp.get_pipe("transformer").pipe(nlp.tokenizer.pipe(texts), batch_size=batch_size))
                 for name, nlp in loaded.items()}  # fmt: skip
    pipeline_seconds: Dict[str, List[float]] = {name: [] for name in names}
    head_seconds: Dict[str, List[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        order = names[round_ % len(names):] + names[: round_ % len(names)]
        for name in order:
            nlp = loaded[name]
            start = time.perf_counter()
            for _ in nlp.pipe(texts, batch_size=batch_size):
                pass
            pipeline_seconds[name].append(time.perf_counter() - start)
            docs = annotated[name]
            for doc in docs:  # no entities left from the last round: both heads keep preset ones
                doc.set_ents([], default="missing")
            start = time.perf_counter()
            for _ in nlp.get_pipe("ner").pipe(docs, batch_size=batch_size):
                pass
            head_seconds[name].append(time.perf_counter() - start)
    first = names[0]
    report: Dict[str, Any] = {"n_texts": len(texts), "n_words": n_words, "repeats": repeats, "batch_size": batch_size}
    for name in names:
        pipeline_wps = n_words / statistics.median(pipeline_seconds[name])
        head_wps = n_words / statistics.median(head_seconds[name])
        report[name] = {
            "pipeline_words_per_second": pipeline_wps,
            "ner_words_per_second": head_wps,
            "pipeline_seconds": pipeline_seconds[name],
            "ner_seconds": head_seconds[name],
        }
    for name in names:
        report[name][f"pipeline_speed_vs_{first}"] = report[name]["pipeline_words_per_second"] / report[first]["pipeline_words_per_second"]
        report[name][f"ner_speed_vs_{first}"] = report[name]["ner_words_per_second"] / report[first]["ner_words_per_second"]
    return report


def sentences_of(corpus: Path, n: int) -> List[str]:
    import spacy
    from spacy.tokens import DocBin

    docs = DocBin().from_disk(corpus / "test.spacy").get_docs(spacy.blank("en").vocab)
    return [doc.text for _, doc in zip(range(n), docs)]


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def _fmt(value: Optional[float], digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(report: Dict[str, Any]) -> str:
    lines = [
        "# NER heads: transition-based against linear",
        "",
        f"{report['machine']['date'][:10]}, {report['machine']['nproc']} cores, {report['jobs']} run(s) at a time, "
        f"{report['threads_per_job'] or 'default'} thread(s) each; seed {report['seed']}. "
        f"Command: `{report['machine']['command']}`.",
        "",
    ]
    for setting, block in report["settings"].items():
        speed = block.get("speed") or {}
        lines += [
            f"## {setting}: {SETTINGS[setting].title}, {block['max_steps']} steps of 8",
            "",
            "| system | F1 | P | R | " + " | ".join(ENTITY_TYPES) + " | dev F1 | train wall | train CPU | peak RSS"
            " | pipeline words/s | NER words/s |",
            "|---|" + "---:|" * (3 + len(ENTITY_TYPES) + 6),
        ]
        for r in block["results"]:
            train = r.get("train") or {}
            timing = (
                f"{train['seconds'] / 60:.1f} min | {train['cpu_seconds'] / 60:.1f} min | {train['peak_rss_mb'] / 1024:.2f} GB"
                if train else "– | – | –"
            )
            if r["status"] != "ok":
                reason = (r.get("error") or ["?"])[-1].replace("|", "\\|")[:160]
                lines.append(f"| {r['title']} | failed: {reason} |" + " – |" * (2 + len(ENTITY_TYPES) + 1) + f" {timing} | – | – |")
                continue
            test = r["test"]
            per_type = " | ".join(_fmt(test["per_type_f1"].get(label)) for label in ENTITY_TYPES)
            dev = r.get("dev_best", {}).get("ents_f")
            dev_text = _fmt(100 * dev if dev is not None else None)
            system_speed = speed.get(r["system"], {})
            lines.append(
                f"| {r['title']} | {_fmt(test['f1'])} | {_fmt(test['precision'])} | {_fmt(test['recall'])} | {per_type}"
                f" | {dev_text} | {timing} | {_fmt(system_speed.get('pipeline_words_per_second'), 0)}"
                f" | {_fmt(system_speed.get('ner_words_per_second'), 0)} |"
            )
        if speed:
            lines += [
                "",
                f"Speed: {speed['n_texts']} test sentences ({speed['n_words']} words), batch {speed['batch_size']},"
                f" median of {speed['repeats']} interleaved rounds, packaged pipelines in one process.",
            ]
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Relative paths are taken from the repository root, where every run starts.",
    )
    parser.add_argument("--settings", default="2k", help=f"comma-separated, of {', '.join(SETTINGS)}")
    parser.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS), help=f"of {', '.join(SYSTEMS)}")
    parser.add_argument("--smollm2", default=str(ROOT / "assets" / "smollm2-135m"), help="the base model folder")
    parser.add_argument("--corpus-root", default=str(ROOT / "corpus"))
    parser.add_argument("--corpus-2k", default=None, help="folder with train/dev/test.spacy (default: under --corpus-root)")
    parser.add_argument("--corpus-full", default=None, help="folder with train/dev/test.spacy (default: under --corpus-root)")
    parser.add_argument("--packages-dir", default=str(ROOT / "assets" / "packages"), help="fetched assets, to write missing corpora")
    parser.add_argument("--max-steps", type=int, default=300, help="steps of the 2k setting")
    parser.add_argument("--full-max-steps", type=int, default=1000, help="steps of the full setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of each run, and torch threads of the speed test")
    parser.add_argument("--speed-texts", type=int, default=1000, help="test sentences for the speed test (0: skip it)")
    parser.add_argument("--speed-repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32, help="nlp.pipe batch size of the speed test")
    parser.add_argument("--workdir", default=str(ROOT / "benchmarks" / "runs" / "ner_heads"))
    parser.add_argument("--force", action="store_true", help="redo finished runs")
    parser.add_argument("--output", default=None, help="write the JSON here (and a .md beside it)")
    args = parser.parse_args(argv)
    settings = [s for s in args.settings.split(",") if s]
    names = [s for s in args.systems.split(",") if s]
    unknown = [s for s in settings if s not in SETTINGS] + [s for s in names if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown setting or system {unknown}; settings: {list(SETTINGS)}, systems: {list(SYSTEMS)}")
    if not Path(args.smollm2).exists():
        parser.error(f"{args.smollm2} not found: run `python -m spacy project run convert-model` first")
    for setting in settings:
        ensure_corpus(setting, args)
    runs = [(setting, name) for setting in settings for name in names]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda run: run_one(*run, args), runs))
    report: Dict[str, Any] = {
        "benchmark": "ner_heads",
        "machine": machine_info(),
        "seed": args.seed,
        "jobs": args.jobs,
        "threads_per_job": args.threads,
        "settings": {},
    }
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    for setting in settings:
        block_results = [r for r in results if r["setting"] == setting]
        block: Dict[str, Any] = {"max_steps": max_steps_of(setting, args), "results": block_results}
        ok = {r["system"]: Path(r["package"]["pipeline"]) for r in block_results if r["status"] == "ok"}
        if args.speed_texts and ok:
            print(f"[{setting}] measuring inference speed of {', '.join(ok)}", flush=True)
            texts = sentences_of(corpus_dir(setting, args), args.speed_texts)
            block["speed"] = measure_speed(ok, Path(args.smollm2), texts, args.speed_repeats, args.batch_size)
        report["settings"][setting] = block
    write_output(args.output, report)
    if args.output:
        Path(args.output).with_suffix(".md").write_text(markdown(report), encoding="utf8")
    return report


if __name__ == "__main__":
    main()
