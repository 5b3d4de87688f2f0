"""Memory: peak training RSS of the plugin and of a plain peft loop, at
float32, 8-bit and 4-bit; size on disk of a saved pipeline against its base
model's weights.

Every (system, precision) configuration runs in its own subprocess, which
loads the model, runs a few training steps (transformer + textcat
`nlp.update` for the plugin; the loop of bench_training.py for the plain
system) and reports:

- rss_after_load: resident memory once the model is loaded;
- training_peak_rss: the highest RSS sampled (every 5 ms) during the steps;
- training_peak_anon_rss: the same for anonymous memory only (RssAnon: heap
  and tensors, without the file-backed pages of the mmapped weight file,
  which count in RSS but can be reclaimed by the kernel);
- peak_rss: the process's ru_maxrss, which also covers loading.

The float32 plugin run also saves its trained pipeline with `nlp.to_disk`;
its size is compared with the base model's weight files.

    python benchmarks/bench_memory.py --precisions float32,8bit,4bit --steps 5 \
        --output benchmarks/results/memory.json
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, DEFAULT_MODEL, machine_info, write_output  # noqa: E402

MB = 1024 * 1024
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def weights_size(model: Path) -> int:
    return sum(f.stat().st_size for f in Path(model).iterdir() if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))


def anon_rss() -> Optional[int]:
    """Anonymous resident memory (heap, tensors), without file-backed pages
    such as the mmapped safetensors file; Linux only."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        return None
    return None


class PeakSampler:
    """Sample this process's RSS (and anonymous RSS) in a thread; the maxima seen."""

    def __init__(self, interval: float = 0.005):
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.peak = 0
        self.peak_anon: Optional[int] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak = max(self.peak, self.process.memory_info().rss)
        anon = anon_rss()
        if anon is not None:
            self.peak_anon = max(self.peak_anon or 0, anon)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _mb(value: Optional[int]) -> Optional[float]:
    return None if value is None else value / MB


def worker(args) -> Dict[str, Any]:
    import resource

    import psutil
    import torch

    from _common import build_plain, build_plugin, load_texts_and_cats, plugin_examples
    from bench_training import PlainTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    quantization = None if args.precision == "float32" else args.precision
    process = psutil.Process()
    rss_after_import = process.memory_info().rss
    data = load_texts_and_cats(Path(args.data), args.batch_size * args.steps)
    labels = sorted({label for _, cats in data for label in cats})
    if args.system == "plugin":
        nlp = build_plugin(Path(args.model), with_textcat=True, quantization=quantization)
        optimizer = nlp.initialize(lambda: plugin_examples(nlp, data[: args.batch_size]))
        step_batches = [
            plugin_examples(nlp, data[i : i + args.batch_size]) for i in range(0, len(data), args.batch_size)
        ]

        def step(batch) -> None:
            nlp.update(batch, sgd=optimizer, drop=0.1, losses={})

    else:
        model, tokenizer = build_plain(Path(args.model), quantization=quantization)
        plain = PlainTrainer(model, tokenizer, labels)
        step_batches = [data[i : i + args.batch_size] for i in range(0, len(data), args.batch_size)]
        step = plain.step
    rss_after_load = process.memory_info().rss
    anon_after_load = anon_rss()
    peak_after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with PeakSampler() as sampler:
        for batch in step_batches:
            step(batch)
    result = {
        "system": args.system,
        "precision": args.precision,
        "steps": len(step_batches),
        "batch_size": args.batch_size,
        "rss_after_import_mb": rss_after_import / MB,
        "rss_after_load_mb": rss_after_load / MB,
        "anon_rss_after_load_mb": _mb(anon_after_load),
        "peak_rss_during_load_mb": peak_after_load / MB,
        "training_peak_rss_mb": sampler.peak / MB,
        "training_peak_anon_rss_mb": _mb(sampler.peak_anon),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB,
    }
    if args.save_to and args.system == "plugin":
        nlp.to_disk(args.save_to)
        transformer_dir = Path(args.save_to) / "transformer"
        result["saved_pipeline_bytes"] = folder_size(Path(args.save_to))
        result["saved_transformer_bytes"] = folder_size(transformer_dir)
        result["saved_files"] = {
            str(f.relative_to(args.save_to)): f.stat().st_size
            for f in sorted(Path(args.save_to).rglob("*"))
            if f.is_file()
        }
    return result


def run_worker(args, system: str, precision: str, save_to: Optional[str]) -> Dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--system", system,
        "--precision", precision,
        "--model", args.model,
        "--data", args.data,
        "--steps", str(args.steps),
        "--batch-size", str(args.batch_size),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if save_to:
        command += ["--save-to", save_to]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    if completed.returncode != 0:
        raise RuntimeError(
            f"worker {system}/{precision} failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--precisions", default="float32,8bit,4bit")
    parser.add_argument("--systems", default="plugin,plain")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument("--output", default=None)
    # worker mode (one configuration, in this process)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--system", default="plugin", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--save-to", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = worker(args)
        print(json.dumps(result))
        return result

    precisions = args.precisions.split(",")
    systems = args.systems.split(",")
    runs: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        saved_dir = None
        for repeat in range(args.repeats):
            for i, precision in enumerate(precisions):
                order = systems if (i + repeat) % 2 == 0 else list(reversed(systems))
                for system in order:
                    save_to = None
                    if system == "plugin" and precision == "float32" and saved_dir is None:
                        saved_dir = save_to = os.path.join(tmp, "pipeline")
                    run = run_worker(args, system, precision, save_to)
                    run["repeat"] = repeat
                    runs.append(run)
                    print(
                        f"{system:6s} {precision:7s} training peak RSS {run['training_peak_rss_mb']:.0f} MB "
                        f"(anonymous {run['training_peak_anon_rss_mb'] or 0:.0f} MB), "
                        f"overall peak {run['peak_rss_mb']:.0f} MB",
                        file=sys.stderr,
                    )

    table: Dict[str, Dict[str, Any]] = {}
    for precision in precisions:
        row: Dict[str, Any] = {}
        for system in systems:
            mine = [r for r in runs if r["system"] == system and r["precision"] == precision]
            for key in ("training_peak_rss_mb", "training_peak_anon_rss_mb", "peak_rss_mb", "rss_after_load_mb"):
                values = sorted(r[key] for r in mine if r[key] is not None)
                row[f"{system}_{key}"] = statistics.median(values) if values else None
        if {"plugin", "plain"} <= set(systems):
            row["ratio_training_peak_plugin_over_plain"] = (
                row["plugin_training_peak_rss_mb"] / row["plain_training_peak_rss_mb"]
            )
            row["ratio_peak_plugin_over_plain"] = row["plugin_peak_rss_mb"] / row["plain_peak_rss_mb"]
            if row["plain_training_peak_anon_rss_mb"]:
                row["ratio_training_peak_anon_plugin_over_plain"] = (
                    row["plugin_training_peak_anon_rss_mb"] / row["plain_training_peak_anon_rss_mb"]
                )
        table[precision] = row

    result: Dict[str, Any] = {
        "benchmark": "memory",
        "machine": machine_info(),
        "model": args.model,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "table": table,
        "runs": runs,
    }
    saved = [r for r in runs if "saved_pipeline_bytes" in r]
    if saved:
        base = weights_size(Path(args.model))
        result["disk"] = {
            "base_weights_bytes": base,
            "saved_pipeline_bytes": saved[0]["saved_pipeline_bytes"],
            "saved_transformer_bytes": saved[0]["saved_transformer_bytes"],
            "ratio_saved_pipeline_over_base_weights": saved[0]["saved_pipeline_bytes"] / base,
            "saved_files": saved[0]["saved_files"],
        }
    write_output(args.output, result)
    return result


if __name__ == "__main__":
    main()
