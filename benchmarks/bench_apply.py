"""Throughput of `apply`: plain `nlp.pipe`, `apply` in one process, and
`apply --ray` with 1 and 2 actors, side by side in one run.

For each pipeline (by default the project's SmolLM2 NER and textcat pipelines,
training/*/model-best), the same texts (the first --n-docs docs of --data)
run through four systems, each with one torch thread per worker:

- nlp_pipe:  `list(nlp.pipe(texts, batch_size=B))` in this process, the
             pipeline loaded beforehand (load time not counted);
- apply:     `apply_pipeline(nlp, corpus.jsonl, out)` in this process: the same
             plus reading the JSONL shards and writing the output shards;
- ray_1:     `apply_pipeline(path, ..., ray=RayOptions(actors=1, cpus_per_actor=1))`;
- ray_2:     the same with 2 actors.

The Ray cluster is started once (`ray.init(num_cpus=--cpus)`) before any
system runs, and its start-up is reported separately, not counted. A Ray
run's time does include its actors' start (each actor imports torch,
transformers and peft and loads the pipeline): it is reported as measured
("wall") and without the slowest actor's start ("steady"), which is what the
throughput of a long job tends to. Rounds (--repeats) run the systems in
alternating order; medians are reported. Every run's output is checked
against nlp.pipe (entities exact, scores within 1e-5).

Reported ratios: ray_2 / ray_1 docs/s (scaling factor; floor 1.6), ray_1 /
nlp_pipe (per-actor overhead; floor 0.85), apply / nlp_pipe.

    OMP_NUM_THREADS=1 python benchmarks/bench_apply.py --output benchmarks/results/apply.json
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine_info, write_output  # noqa: E402

from spacy_lsllama.apply import RayOptions  # noqa: E402

DEFAULT_PIPELINES = f"{ROOT / 'training' / 'ner' / 'model-best'},{ROOT / 'training' / 'textcat' / 'model-best'}"
DEFAULT_DATA = ROOT / "corpus" / "conll2003" / "test.spacy"
DEFAULT_BASE = ROOT / "assets" / "smollm2-135m"
SYSTEMS = ("nlp_pipe", "apply", "ray_1", "ray_2")
FLOORS = {"ray_2_over_ray_1": 1.6, "ray_1_over_nlp_pipe": 0.85}


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipelines", default=DEFAULT_PIPELINES, help="comma-separated pipeline folders")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help=".spacy, .txt or .jsonl file with the texts")
    parser.add_argument("--base", default=str(DEFAULT_BASE), help="base model folder for every system ('' to keep the pipelines')")
    parser.add_argument("--n-docs", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ",".join(SYSTEMS))
    parser.add_argument("--output", default=None, help="write the JSON result here")
    return parser.parse_args(argv)


def load_texts(path: Path, n: int) -> List[str]:
    """The first `n` texts of `path`, cycled if it holds fewer."""
    if path.suffix == ".spacy":
        import spacy
        from spacy.tokens import DocBin

        texts = [doc.text for doc in DocBin().from_disk(path).get_docs(spacy.blank("en").vocab)]
    elif path.suffix == ".jsonl":
        texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        texts = path.read_text(encoding="utf-8").splitlines()
    if not texts:
        raise SystemExit(f"{path} holds no texts")
    return [texts[i % len(texts)] for i in range(n)]


def predictions_of_docs(docs) -> List:
    return [(dict(doc.cats), [(e.start_char, e.end_char, e.label_) for e in doc.ents]) for doc in docs]


def predictions_of_rows(rows) -> List:
    return [(row["cats"], [(e["start"], e["end"], e["label"]) for e in row["ents"]]) for row in rows]


def same_predictions(expected: List, got: List, tolerance: float = 1e-5) -> bool:
    if len(expected) != len(got):
        return False
    for (cats_a, ents_a), (cats_b, ents_b) in zip(expected, got):
        if ents_a != ents_b or cats_a.keys() != cats_b.keys():
            return False
        if any(abs(cats_a[label] - cats_b[label]) > tolerance for label in cats_a):
            return False
    return True


def run_nlp_pipe(nlp, texts: List[str], batch_size: int) -> Dict[str, Any]:
    started = time.perf_counter()
    docs = list(nlp.pipe(texts, batch_size=batch_size))
    seconds = time.perf_counter() - started
    words = sum(1 for doc in docs for token in doc if not token.is_space)
    return {"docs": len(docs), "words": words, "seconds": seconds, "predictions": predictions_of_docs(docs)}


def run_apply(pipeline, corpus: Path, work: Path, args, **options) -> Dict[str, Any]:
    from spacy_lsllama.apply import apply_pipeline, read_results

    output = Path(tempfile.mkdtemp(dir=work))
    result = apply_pipeline(
        pipeline, corpus, output / "out", batch_size=args.batch_size, shard_size=args.shard_size,
        base=args.base or None, **options,
    )
    return {
        "docs": result.docs,
        "words": result.words,
        "seconds": result.seconds,
        "actor_start_seconds": result.load_seconds if result.actors else None,
        "predictions": predictions_of_rows(read_results(output / "out")),
    }


def throughput(run: Dict[str, Any]) -> Dict[str, Any]:
    entry = {key: value for key, value in run.items() if key != "predictions"}
    entry["docs_per_second"] = run["docs"] / run["seconds"]
    entry["words_per_second"] = run["words"] / run["seconds"]
    if run.get("actor_start_seconds") is not None:
        steady = max(run["seconds"] - run["actor_start_seconds"], 1e-9)
        entry["steady_docs_per_second"] = run["docs"] / steady
        entry["steady_words_per_second"] = run["words"] / steady
    return entry


def median_of(runs: List[Dict[str, Any]], key: str) -> Optional[float]:
    values = [run[key] for run in runs if key in run]
    return statistics.median(values) if values else None


def bench_pipeline(pipeline: Path, texts: List[str], work: Path, systems: List[str], args) -> Dict[str, Any]:
    import spacy

    config = {}
    if args.base:
        from spacy_lsllama.apply.pipeline import base_overrides

        config = base_overrides(pipeline, args.base)
    nlp = spacy.load(pipeline, config=config)
    list(nlp.pipe(texts[: args.batch_size], batch_size=args.batch_size))  # warm-up
    corpus = work / f"{pipeline.parent.name}-corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": text}, ensure_ascii=False) + "\n" for text in texts), encoding="utf-8")
    runners = {
        "nlp_pipe": lambda: run_nlp_pipe(nlp, texts, args.batch_size),
        "apply": lambda: run_apply(nlp, corpus, work, args),
        "ray_1": lambda: run_apply(pipeline, corpus, work, args, ray=RayOptions(actors=1, cpus_per_actor=1)),
        "ray_2": lambda: run_apply(pipeline, corpus, work, args, ray=RayOptions(actors=2, cpus_per_actor=1)),
    }
    reference = predictions_of_docs(nlp.pipe(texts, batch_size=args.batch_size))
    runs: Dict[str, List[Dict[str, Any]]] = {system: [] for system in systems}
    same = {system: True for system in systems}
    for repeat in range(args.repeats):
        order = systems if repeat % 2 == 0 else list(reversed(systems))
        for system in order:
            run = runners[system]()
            same[system] = same[system] and same_predictions(reference, run["predictions"])
            runs[system].append(throughput(run))
            print(f"{pipeline}: {system}: {runs[system][-1]['docs_per_second']:.1f} docs/s", file=sys.stderr)
    summary: Dict[str, Any] = {}
    for system in systems:
        summary[system] = {
            "docs_per_second": median_of(runs[system], "docs_per_second"),
            "words_per_second": median_of(runs[system], "words_per_second"),
            "steady_docs_per_second": median_of(runs[system], "steady_docs_per_second"),
            "actor_start_seconds": median_of(runs[system], "actor_start_seconds"),
            "same_as_nlp_pipe": same[system],
            "runs": runs[system],
        }
    ratios: Dict[str, Any] = {}

    def ratio(name: str, top: str, bottom: str, key: str) -> None:
        if top in summary and bottom in summary and summary[top][key] and summary[bottom][key]:
            ratios[name] = summary[top][key] / summary[bottom][key]

    ratio("ray_2_over_ray_1", "ray_2", "ray_1", "docs_per_second")
    ratio("ray_2_over_ray_1_steady", "ray_2", "ray_1", "steady_docs_per_second")
    ratio("ray_1_over_nlp_pipe", "ray_1", "nlp_pipe", "docs_per_second")
    ratio("ray_1_steady_over_nlp_pipe", "ray_1", "nlp_pipe", "steady_docs_per_second")
    ratio("apply_over_nlp_pipe", "apply", "nlp_pipe", "docs_per_second")
    floors = {name: ratios[name] >= floor for name, floor in FLOORS.items() if name in ratios}
    return {"systems": summary, "ratios": ratios, "floors_met": floors}


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    systems = [system for system in args.systems.split(",") if system]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        raise SystemExit(f"Unknown systems: {', '.join(unknown)} (choose from {', '.join(SYSTEMS)})")
    pipelines = [Path(path) for path in args.pipelines.split(",") if path]
    missing = [str(path) for path in pipelines if not (path / "config.cfg").is_file()]
    if missing:
        raise SystemExit(
            f"Pipelines not found: {', '.join(missing)}. Train them with the project (the step count does not "
            "change throughput), e.g.\n  python -m spacy project run train-ner . --vars.max_steps 20\n"
            "  python -m spacy project run train-textcat . --vars.max_steps 20\nor pass --pipelines."
        )
    import torch

    torch.set_num_threads(1)
    texts = load_texts(Path(args.data), args.n_docs)
    result: Dict[str, Any] = {"machine": machine_info(), "settings": {key: value for key, value in vars(args).items()}}
    cluster = None
    if any(system.startswith("ray") for system in systems):
        import ray

        started = time.perf_counter()
        if not ray.is_initialized():
            ray.init(num_cpus=args.cpus, include_dashboard=False)
            cluster = ray
        result["cluster_startup_seconds"] = time.perf_counter() - started
    try:
        with tempfile.TemporaryDirectory() as work:
            result["pipelines"] = {
                str(pipeline): bench_pipeline(pipeline, texts, Path(work), systems, args) for pipeline in pipelines
            }
    finally:
        if cluster is not None:
            cluster.shutdown()
    write_output(args.output, result)
    return result


if __name__ == "__main__":
    main()
