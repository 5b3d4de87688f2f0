"""Dev score against training step, one figure per task of the accuracy
benchmark: the shipped recipe against the encoders (and any larger decoder),
each at its best learning rate on dev, as `bench_accuracy.py` recorded them.

    python benchmarks/plot_dev_curves.py     # benchmarks/results/dev_curves_TASK.png

The curves are read from benchmarks/results/accuracy.json (each run's
"dev_curve": the weighted dev score at every evaluation), so a figure always
shows the runs its table reports.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_accuracy import COMPARED, TASKS, compared_rows  # noqa: E402
from _common import ROOT  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def plot(task: str, rows: List[Dict[str, Any]], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2))
    for label, row in rows:
        steps, scores = zip(*row["dev_curve"])
        style = {"linewidth": 2.5, "color": "black"} if row.get("shipped") else {"linewidth": 1.5}
        test = row["test"]["f1" if TASKS[task].kind == "ner" else "macro_f1"]
        axes.plot(steps, scores, marker="o", label=f"{label} (test {test:.1f})", **style)
    metric = "entity F1" if TASKS[task].kind == "ner" else "macro F"
    axes.set_xlabel("training step (8 examples each)")
    axes.set_ylabel(f"dev {metric} (%)")
    axes.set_title(TASKS[task].title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    date = rows[0][1]["measured"]["date"]
    machine = rows[0][1]["measured"]["machine"]
    figure.text(0.01, 0.01, f"{date}, {machine}", fontsize=7, color="gray")
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    figure.savefig(output, dpi=110)
    plt.close(figure)


def main(argv=None) -> List[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(RESULTS / "accuracy.json"))
    parser.add_argument("--output-dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    results = json.loads(Path(args.results).read_text(encoding="utf8"))["results"]
    written = []
    for task in TASKS:
        rows = [(label, row) for label, row in compared_rows(results, task) if row.get("dev_curve")]
        if not rows:
            continue
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        output = Path(args.output_dir) / f"dev_curves_{task}.png"
        plot(task, rows, output)
        written.append(output)
        print(f"{output}: {', '.join(label for label, _ in rows)}")
    return written


if __name__ == "__main__":
    main()
