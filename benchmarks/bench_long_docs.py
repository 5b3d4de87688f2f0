"""Long documents: what a causal LS-LLaMA classifier reads, and at what cost.

A classifier is trained once, with `configs/textcat-causal.cfg`, on short
Rotten Tomatoes snippets. It is then evaluated on long documents built from the
test snippets: each labelled snippet comes first, followed by plot summaries of
the same corpus (neutral text, no label) until the doc is 300-1,000 tokens
long. The same trained pipeline runs with two span settings, side by side:

- "v1 strided": LlamaTransformer.v1's default, windows of 128 tokens every 96;
  the last token, which the classifier reads, sees only the doc's last window;
- "v2 whole doc": v2's default (the shipped textcat configs), one span per doc
  up to the model's positions.

Reported: accuracy on the long docs and on the short snippets, words/s on
both, and the peak resident memory of each run (every run is a fresh
subprocess). Short-text throughput is also measured interleaved in one process
(the two settings alternate, median of the rounds), the ratio the speed floor
is about. A second part measures the peak memory of processing one 2,000-word
and one 20,000-word doc with the shipped defaults.

`--train-long` adds the comparison that matters when the training data are
long too: each span setting trains its own classifier on long docs (snippet
first, plot summaries after, `--train-long-tokens` long), the two trainings
side by side with one thread each, and each is tested on the long test docs
with the spans it was trained with.

    python benchmarks/bench_long_docs.py --output benchmarks/results/long_docs.json
    python benchmarks/bench_long_docs.py --train-long --output benchmarks/results/long_docs.json

Set OMP_NUM_THREADS to the cores you have, and run nothing else meanwhile.
"""
import argparse
import bz2
import csv
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from _common import DEFAULT_MODEL, ROOT, machine_info, write_output  # noqa: E402

SPANS = {
    "v1 strided": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 128, "stride": 96},
    "v2 whole doc": {"@span_getters": "spacy-transformers.doc_spans.v1"},
}
LABELS = {"fresh": "POSITIVE", "rotten": "NEGATIVE"}


def read_corpus(packages_dir: Path) -> Tuple[List[Tuple[str, str]], List[str]]:
    from asset_manifest import asset_path

    snippets, plots, seen = [], [], set()
    with bz2.open(asset_path("rotten-tomatoes", packages_dir), "rt", encoding="utf8", newline="") as file_:
        for row in csv.DictReader(file_):
            text = " ".join(row["text"].split())
            if not text or text in seen:
                continue
            seen.add(text)
            if row["category"] == "plot":
                plots.append(text)
            else:
                snippets.append((text, LABELS[row["category"]]))
    return snippets, plots


def long_text(nlp, text: str, plots: List[str], rng: random.Random, target: int) -> str:
    parts = [text]
    while len(nlp.make_doc(" ".join(parts))) < target:
        parts.append(rng.choice(plots))
    return " ".join(parts)


def build_long_training_data(work: Path, packages_dir: Path, n_train: int, n_dev: int, n_test: int,
                             seed: int, tokens: Tuple[int, int]) -> None:
    """train_long/dev_long .spacy files: the same snippets as the short
    training data, each followed by plot summaries."""
    import spacy
    from spacy.tokens import DocBin

    snippets, plots = read_corpus(packages_dir)
    rng = random.Random(seed)
    rng.shuffle(snippets)
    dev, train = snippets[n_test : n_test + n_dev], snippets[n_test + n_dev : n_test + n_dev + n_train]
    nlp = spacy.blank("en")
    for name, examples in (("train_long", train), ("dev_long", dev)):
        docs = []
        for text, label in examples:
            doc = nlp.make_doc(long_text(nlp, text, plots, rng, rng.randint(*tokens)))
            doc.cats = {value: float(value == label) for value in LABELS.values()}
            docs.append(doc)
        DocBin(docs=docs).to_disk(work / f"{name}.spacy")


def build_data(work: Path, packages_dir: Path, n_train: int, n_dev: int, n_test: int, seed: int) -> None:
    """train/dev .spacy files of short snippets; test.jsonl with each test
    snippet short and long (snippet first, plot summaries after)."""
    import spacy
    from spacy.tokens import DocBin

    snippets, plots = read_corpus(packages_dir)
    rng = random.Random(seed)
    rng.shuffle(snippets)
    test, dev, train = snippets[:n_test], snippets[n_test : n_test + n_dev], snippets[n_test + n_dev : n_test + n_dev + n_train]
    nlp = spacy.blank("en")
    for name, examples in (("train", train), ("dev", dev)):
        docs = []
        for doc, label in nlp.pipe(examples, as_tuples=True):
            doc.cats = {value: float(value == label) for value in LABELS.values()}
            docs.append(doc)
        DocBin(docs=docs).to_disk(work / f"{name}.spacy")
    with (work / "test.jsonl").open("w", encoding="utf8") as file_:
        for text, label in test:
            long = long_text(nlp, text, plots, rng, rng.randint(300, 1000))
            file_.write(json.dumps({"short": text, "long": long, "label": label}) + "\n")


def train(work: Path, model: Path) -> Path:
    output = work / "textcat"
    if not (output / "model-best").exists():
        subprocess.run(
            [sys.executable, "-m", "spacy", "train", str(ROOT / "configs" / "textcat-causal.cfg"),
             "--output", str(output), "--paths.train", str(work / "train.spacy"),
             "--paths.dev", str(work / "dev.spacy"), "--paths.model", str(model)],
            check=True,
        )
    return output / "model-best"


def train_long(work: Path, model: Path, steps: int, batch_size: int) -> Dict[str, Path]:
    """One classifier per span setting, trained on long docs, side by side
    (one thread each); returns each one's model-best."""
    import os

    outputs = {spans: work / f"textcat-long-{spans.split()[0]}" for spans in SPANS}
    jobs = []
    for spans, output in outputs.items():
        if (output / "model-best").exists():
            continue
        overrides = [
            "--output", str(output), "--paths.train", str(work / "train_long.spacy"),
            "--paths.dev", str(work / "dev_long.spacy"), "--paths.model", str(model),
            "--training.max_steps", str(steps), "--training.optimizer.learn_rate.total_steps", str(steps),
            "--training.optimizer.learn_rate.warmup_steps", str(max(1, steps // 10)),
            "--training.eval_frequency", str(max(1, steps // 3)), "--training.batcher.size", str(batch_size),
            "--components.transformer.model.get_spans", json.dumps(SPANS[spans]),
        ]
        log = open(output.with_suffix(".log"), "w")
        jobs.append((subprocess.Popen(
            [sys.executable, "-m", "spacy", "train", str(ROOT / "configs" / "textcat-causal.cfg"), *overrides],
            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=subprocess.STDOUT,
        ), log))
    for job, log in jobs:
        if job.wait() != 0:
            raise RuntimeError(f"training failed: see {log.name}")
    return {spans: output / "model-best" for spans, output in outputs.items()}


def throughput_worker(pipeline: str, model: str, test: str, rounds: int) -> Dict[str, Any]:
    """Short-text words/s of both span settings in one process, interleaved."""
    import statistics

    import spacy
    from spacy.util import registry

    nlp = spacy.load(pipeline, config={"components.transformer.model.name": model})
    transformer = nlp.get_pipe("transformer").model
    getters = {spans: registry.resolve({"g": config})["g"] for spans, config in SPANS.items()}
    texts = [json.loads(line)["short"] for line in Path(test).read_text(encoding="utf8").splitlines()]
    words = sum(len(doc) for doc in nlp.tokenizer.pipe(texts))
    seconds: Dict[str, List[float]] = {spans: [] for spans in SPANS}
    for round_ in range(rounds):
        order = list(SPANS) if round_ % 2 == 0 else list(reversed(SPANS))
        for spans in order:
            transformer.attrs["get_spans"] = getters[spans]
            start = time.perf_counter()
            list(nlp.pipe(texts, batch_size=8))
            seconds[spans].append(time.perf_counter() - start)
    medians = {spans: words / statistics.median(values) for spans, values in seconds.items()}
    return {"rounds": rounds, "words": words, "words_per_second": medians, "seconds": seconds}


def evaluate_worker(pipeline: str, model: str, spans: str, test: str) -> Dict[str, Any]:
    """One span setting, in its own process: accuracy, words/s, peak RSS."""
    import spacy

    nlp = spacy.load(pipeline, config={
        "components.transformer.model.name": model,
        "components.transformer.model.get_spans": SPANS[spans],
    })
    rows = [json.loads(line) for line in Path(test).read_text(encoding="utf8").splitlines()]
    result: Dict[str, Any] = {"spans": spans}
    for kind in ("short", "long"):
        texts = [row[kind] for row in rows]
        start = time.perf_counter()
        docs = list(nlp.pipe(texts, batch_size=8))
        seconds = time.perf_counter() - start
        correct = sum(max(doc.cats, key=doc.cats.get) == row["label"] for doc, row in zip(docs, rows))
        words = sum(len(doc) for doc in docs)
        result[kind] = {"docs": len(docs), "words": words, "accuracy": correct / len(docs),
                        "seconds": seconds, "words_per_second": words / seconds}
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def memory_worker(pipeline: str, model: str, n_words: int, plots_file: str) -> Dict[str, Any]:
    """One doc of `n_words` words with the shipped defaults, in its own process."""
    import spacy

    nlp = spacy.load(pipeline, config={"components.transformer.model.name": model})
    plots = json.loads(Path(plots_file).read_text(encoding="utf8"))
    words: List[str] = []
    i = 0
    while len(words) < n_words:
        words.extend(plots[i % len(plots)].split())
        i += 1
    text = " ".join(words[:n_words])
    calls: List[int] = []
    encoder = nlp.get_pipe("transformer").model.layers[0].shims[0].encoder
    encoder.transformer.register_forward_pre_hook(lambda m, a, k: calls.append(k["input_ids"].numel()), with_kwargs=True)
    loaded_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    doc = nlp(text)
    seconds = time.perf_counter() - start
    return {
        "words": n_words, "tokens": len(doc), "seconds": seconds, "decoder_calls": len(calls),
        "largest_call_pieces": max(calls), "hidden_states_kept": doc._.trf_data is not None,
        "peak_rss_after_load_mb": loaded_rss,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def in_subprocess(*args: str) -> Dict[str, Any]:
    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--packages-dir", type=Path, default=ROOT / "assets" / "packages")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "runs" / "long_docs")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--dev-size", type=int, default=300)
    parser.add_argument("--test-size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-words", default="2000,20000")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the short-text throughput")
    parser.add_argument("--train-long", action="store_true", help="also train each span setting on long docs")
    parser.add_argument("--train-long-size", type=int, default=400)
    parser.add_argument("--train-long-tokens", default="300,400")
    parser.add_argument("--train-long-steps", type=int, default=60)
    parser.add_argument("--train-long-batch", type=int, default=4)
    parser.add_argument("--output", default=None)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "evaluate":
            result = evaluate_worker(*rest)
        elif kind == "throughput":
            result = throughput_worker(rest[0], rest[1], rest[2], int(rest[3]))
        else:
            result = memory_worker(rest[0], rest[1], int(rest[2]), rest[3])
        print(json.dumps(result))
        return

    args.work.mkdir(parents=True, exist_ok=True)
    if not (args.work / "test.jsonl").exists():
        build_data(args.work, args.packages_dir, args.train_size, args.dev_size, args.test_size, args.seed)
    pipeline = train(args.work, args.model.resolve())
    model = str(args.model.resolve())
    previous = json.loads(Path(args.output).read_text()) if args.output and Path(args.output).exists() else {}
    test = str(args.work / "test.jsonl")
    if args.train_long:
        if not (args.work / "train_long.spacy").exists():
            low, high = (int(value) for value in args.train_long_tokens.split(","))
            build_long_training_data(args.work, args.packages_dir, args.train_long_size, 100, args.test_size,
                                     args.seed, (low, high))
        start = time.perf_counter()
        trained = train_long(args.work, args.model.resolve(), args.train_long_steps, args.train_long_batch)
        trained_long = {
            "setup": {"train_docs": args.train_long_size, "tokens": args.train_long_tokens, "steps": args.train_long_steps,
                      "batch_size": args.train_long_batch, "training_seconds_side_by_side": time.perf_counter() - start},
            "runs": [in_subprocess("--worker", "evaluate", str(path), model, spans, test) for spans, path in trained.items()],
        }
        write_output(args.output, {**previous, "trained_on_long_docs": trained_long, "machine_train_long": machine_info()})
        return
    runs = [in_subprocess("--worker", "evaluate", str(pipeline), model, spans, test) for spans in SPANS]
    throughput = in_subprocess("--worker", "throughput", str(pipeline), model, test, str(args.rounds))
    _, plots = read_corpus(args.packages_dir)
    plots_file = args.work / "plots.json"
    plots_file.write_text(json.dumps(plots), encoding="utf8")
    memory = [
        in_subprocess("--worker", "memory", str(pipeline), model, words, str(plots_file))
        for words in args.memory_words.split(",")
    ]
    old, new = runs
    result = {
        "machine": machine_info(),
        "setup": {"train_snippets": args.train_size, "test_docs": args.test_size, "seed": args.seed,
                  "config": "configs/textcat-causal.cfg", "model": model},
        "runs": runs,
        "short_throughput_interleaved": throughput,
        "memory": memory,
        "ratios": {
            "short_words_per_second_v2_over_v1_interleaved": (
                throughput["words_per_second"]["v2 whole doc"] / throughput["words_per_second"]["v1 strided"]
            ),
            "short_words_per_second_v2_over_v1_separate_runs": new["short"]["words_per_second"] / old["short"]["words_per_second"],
            "long_words_per_second_v2_over_v1": new["long"]["words_per_second"] / old["long"]["words_per_second"],
            "peak_rss_longest_over_shortest_doc": memory[-1]["peak_rss_mb"] / memory[0]["peak_rss_mb"],
        },
    }
    write_output(args.output, result)


if __name__ == "__main__":
    main()
