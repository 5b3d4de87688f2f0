"""Write what a person looks at after `spacy project run all`.

Reads the test-set metrics written by ``spacy evaluate --per-component`` and the JSONL
training logs written by ``spacy.ConsoleLogger.v3`` (one line per evaluation on the dev
set: ``{"epoch", "step", "losses": {pipe: loss}, "scores": {name: 0-100}, "score"}``,
the losses summed over the steps since the previous line), and writes into the output
folder:

* ``summary.md``: the test scores of both pipelines beside what chance gives (the
  majority class for text classification), the run's settings and the training runs'
  best dev scores; and the same figures in ``summary.json``, which
  benchmarks/bench_project.py records and the docs are rendered from;
* ``training_curves.png``: per task, the mean training loss per step and the dev score
  over the training steps;
* ``ner_predictions.html``: a displaCy page of test sentences, the gold entities above
  the entities the trained NER pipeline predicts, on the gold tokenization.

Usage (paths as in project.yml):
    python scripts/report.py --output-dir metrics --ner-model training/ner/model-best \\
        --setting model=assets/smollm2-135m --setting max_steps=300
"""

from __future__ import annotations

import html
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import typer

NER_COLORS = {"PER": "#aa9cfc", "ORG": "#7aecec", "LOC": "#ff9561", "MISC": "#e4e7d2"}


# ---------------------------------------------------------------- reading inputs


def read_log(path: Path) -> List[Dict[str, Any]]:
    """Read a spacy.ConsoleLogger.v3 JSONL log (one dict per dev evaluation)."""
    entries = []
    for line in path.read_text(encoding="utf8").splitlines():
        if line.strip():
            entries.append(json.loads(line))
    if not entries:
        raise ValueError(f"{path} has no log lines: did training evaluate at all?")
    return entries


def loss_curves(entries: List[Dict[str, Any]]) -> Dict[str, Tuple[List[int], List[float]]]:
    """Mean loss per training step between consecutive evaluations, per component.

    spaCy sums the losses from one evaluation to the next and evaluates after the
    first update (step 0), so the window of step s is s - previous step (1 for step 0).
    """
    curves: Dict[str, Tuple[List[int], List[float]]] = {}
    previous = -1
    for entry in entries:
        window = max(entry["step"] - previous, 1)
        previous = entry["step"]
        for pipe, loss in entry["losses"].items():
            steps, values = curves.setdefault(pipe, ([], []))
            steps.append(entry["step"])
            values.append(float(loss) / window)
    # The transformer's "loss" only sums what its listeners sent back: not a loss.
    return {
        pipe: curve
        for pipe, curve in curves.items()
        if pipe != "transformer" and any(curve[1])
    }


def read_scores(path: Path, component: str) -> Dict[str, Any]:
    """The scores of ``component`` from ``spacy evaluate --per-component`` output."""
    data = json.loads(path.read_text(encoding="utf8"))
    if component not in data:
        raise ValueError(f"{path} has no scores for {component!r}: {sorted(data)}")
    scores = dict(data[component])
    scores["speed"] = data.get("speed")
    return scores


def label_counts(path: Path) -> Tuple[int, Counter]:
    """Number of docs and count of each gold text category (the top one) in a corpus."""
    import spacy
    from spacy.tokens import DocBin

    vocab = spacy.blank("en").vocab
    counts: Counter = Counter()
    n_docs = 0
    for doc in DocBin().from_disk(path).get_docs(vocab):
        n_docs += 1
        if doc.cats:
            counts[max(doc.cats, key=doc.cats.get)] += 1
    return n_docs, counts


# ---------------------------------------------------------------- the plot


def plot_curves(logs: Dict[str, List[Dict[str, Any]]], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(len(logs), 2, figsize=(11, 3.6 * len(logs)), squeeze=False)
    for row, (task, entries) in enumerate(logs.items()):
        loss_ax, score_ax = axes[row]
        for pipe, (steps, values) in loss_curves(entries).items():
            loss_ax.plot(steps, values, marker="o", markersize=3, label=f"{pipe} loss")
        loss_ax.set_title(f"{task}: training loss (mean per step)")
        loss_ax.set_xlabel("step")
        loss_ax.set_ylabel("loss")
        loss_ax.grid(alpha=0.3)
        if loss_ax.get_legend_handles_labels()[0]:
            loss_ax.legend()
        steps = [entry["step"] for entry in entries]
        names = sorted({name for entry in entries for name in entry["scores"]})
        for name in names:
            values = [entry["scores"].get(name, float("nan")) for entry in entries]
            score_ax.plot(steps, values, marker="o", markersize=3, label=name)
        best = max(entries, key=lambda entry: entry["score"])
        score_ax.axvline(best["step"], color="grey", linestyle=":", label="model-best")
        score_ax.set_title(f"{task}: dev score")
        score_ax.set_xlabel("step")
        score_ax.set_ylabel("score (%)")
        score_ax.set_ylim(0, 100)
        score_ax.grid(alpha=0.3)
        score_ax.legend()
        for ax in (loss_ax, score_ax):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- the displaCy page


def _render(doc, title: str) -> str:
    from spacy import displacy

    doc.user_data["title"] = title
    return displacy.render(
        doc, style="ent", page=False, jupyter=False, options={"colors": NER_COLORS}
    )


def ner_page(model: Path, test: Path, n_docs: int, output: Path) -> Dict[str, int]:
    """Render gold and predicted entities of ``n_docs`` test sentences with entities."""
    import spacy
    from spacy.tokens import Doc, DocBin

    nlp = spacy.load(model)
    gold_docs = [
        doc
        for doc in DocBin().from_disk(test).get_docs(nlp.vocab)
        if doc.ents and len(doc) >= 5
    ][:n_docs]
    # predict on the gold tokenization, without the gold entities
    inputs = [
        Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])
        for doc in gold_docs
    ]
    predicted = list(nlp.pipe(inputs))
    exact = 0
    blocks = []
    for i, (gold, pred) in enumerate(zip(gold_docs, predicted), start=1):
        gold_set = {(e.start, e.end, e.label_) for e in gold.ents}
        pred_set = {(e.start, e.end, e.label_) for e in pred.ents}
        same = gold_set == pred_set
        exact += same
        verdict = "all entities right" if same else (
            f"{len(gold_set & pred_set)} of {len(gold_set)} gold entities found, "
            f"{len(pred_set - gold_set)} wrong"
        )
        blocks.append(
            f'<section class="{"ok" if same else "diff"}"><h3>#{i}: {html.escape(verdict)}</h3>'
            + _render(gold, "gold")
            + _render(pred, "predicted")
            + "</section>"
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>LS-unLLaMA NER predictions on CoNLL-2003 test sentences</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto; }}
section {{ border-left: 6px solid #ccc; padding: 0 1em; margin: 1.5em 0; }}
section.ok {{ border-color: #4caf50; }}
section.diff {{ border-color: #ff9800; }}
h3 {{ font-size: 1em; color: #444; }}
</style></head><body>
<h1>NER predictions on CoNLL-2003 test sentences</h1>
<p>Pipeline: <code>{html.escape(str(model))}</code>. The first {len(gold_docs)} test
sentences that have entities; in each, the gold entities come first, then the
predicted ones. All entities right in {exact} of {len(gold_docs)} sentences.</p>
{"".join(blocks)}
</body></html>
"""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf8")
    return {"sentences": len(gold_docs), "exact": exact}


# ---------------------------------------------------------------- the summary


def summary_record(
    textcat: Dict[str, Any],
    ner: Dict[str, Any],
    textcat_test: Tuple[int, Counter],
    ner_test_docs: int,
    logs: Dict[str, List[Dict[str, Any]]],
    settings: Dict[str, str],
) -> Dict[str, Any]:
    """The run's figures, in %: test scores beside chance, best dev scores,
    speed and settings. summary.md is rendered from it, summary.json is it."""
    n_docs, counts = textcat_test
    majority_label, majority = counts.most_common(1)[0] if counts else (None, 0)

    def pct(value: Optional[float]) -> Optional[float]:
        return None if value is None else round(100 * value, 2)

    def best(entries: List[Dict[str, Any]]) -> Dict[str, Any]:
        entry = max(entries, key=lambda e: e["score"])
        return {"score": pct(entry["score"]), "step": entry["step"], "last_step": entries[-1]["step"]}

    per_type = sorted((ner.get("ents_per_type") or {}).items())
    return {
        "textcat": {
            "test_docs": n_docs,
            "accuracy": pct(textcat.get("cats_micro_f")),
            "macro_f1": pct(textcat.get("cats_macro_f")),
            "macro_auc": pct(textcat.get("cats_macro_auc")),
            "majority_label": majority_label,
            "majority_accuracy": pct(majority / n_docs) if n_docs else None,
            "best_dev": best(logs["textcat"]),
            "words_per_second": textcat.get("speed"),
        },
        "ner": {
            "test_docs": ner_test_docs,
            "f1": pct(ner.get("ents_f")),
            "precision": pct(ner.get("ents_p")),
            "recall": pct(ner.get("ents_r")),
            "per_type": {label: {key: pct(prf[key]) for key in ("p", "r", "f")} for label, prf in per_type},
            "per_type_f1": {label: pct(prf["f"]) for label, prf in per_type},
            "best_dev": best(logs["ner"]),
            "words_per_second": ner.get("speed"),
        },
        "settings": settings,
    }


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def _best(best: Dict[str, Any]) -> str:
    return f"{best['score']:.1f} at step {best['step']} (of {best['last_step']})"


def summary_markdown(record: Dict[str, Any], page: Dict[str, int]) -> str:
    """summary.md: the figures of `record` (summary_record) as tables."""
    textcat, ner = record["textcat"], record["ner"]
    majority = textcat["majority_accuracy"]
    chance_macro_f1 = None if majority is None else 100 * (majority / 100) / (1 + majority / 100)
    lines = [
        "# spacy-lsllama: test scores",
        "",
        "Scores on the held-out test sets (`spacy evaluate`), in %. The pipelines were",
        "selected on the dev sets (model-best), never on the test sets.",
        "",
        f"## Text classification: LS-LLaMA (causal), Rotten Tomatoes, {textcat['test_docs']} test snippets",
        "",
        "| metric | score | chance |",
        "| --- | ---: | ---: |",
        f"| accuracy | {_pct(textcat['accuracy'])} | {_pct(majority)} (always {textcat['majority_label'] or '-'}) |",
        f"| macro F1 | {_pct(textcat['macro_f1'])} | {_pct(chance_macro_f1)} |",
        f"| macro ROC AUC | {_pct(textcat['macro_auc'])} | 50.0 |",
        "",
        f"## Named entities: LS-unLLaMA (bidirectional), CoNLL-2003, {ner['test_docs']} test sentences",
        "",
        "| entity type | precision | recall | F1 |",
        "| --- | ---: | ---: | ---: |",
        f"| **all** | {_pct(ner['precision'])} | {_pct(ner['recall'])} | **{_pct(ner['f1'])}** |",
    ]
    for label, prf in ner["per_type"].items():
        lines.append(f"| {label} | {_pct(prf['p'])} | {_pct(prf['r'])} | {_pct(prf['f'])} |")
    lines += [
        "",
        f"All entities right in {page['exact']} of the {page['sentences']} sentences of "
        "[ner_predictions.html](ner_predictions.html).",
        "",
        "## Training",
        "",
        "| task | best dev score | test speed (words/s) |",
        "| --- | --- | ---: |",
        f"| textcat | {_best(textcat['best_dev'])} | {textcat['words_per_second'] or 0:.0f} |",
        f"| ner | {_best(ner['best_dev'])} | {ner['words_per_second'] or 0:.0f} |",
        "",
        "Curves: [training_curves.png](training_curves.png).",
        "",
        "## Settings",
        "",
        "| setting | value |",
        "| --- | --- |",
    ]
    lines += [f"| {key} | `{value}` |" for key, value in record["settings"].items()]
    lines.append("")
    return "\n".join(lines)


def main(
    output_dir: Path = typer.Option(Path("metrics"), help="Folder for the report files."),
    textcat_metrics: Path = typer.Option(Path("metrics/textcat.json")),
    ner_metrics: Path = typer.Option(Path("metrics/ner.json")),
    textcat_log: Path = typer.Option(Path("training/textcat/train_log.jsonl")),
    ner_log: Path = typer.Option(Path("training/ner/train_log.jsonl")),
    textcat_test: Path = typer.Option(Path("corpus/rotten_tomatoes/test.spacy")),
    ner_test: Path = typer.Option(Path("corpus/conll2003/test.spacy")),
    ner_model: Path = typer.Option(Path("training/ner/model-best")),
    n_docs: int = typer.Option(25, help="Test sentences on the displaCy page."),
    setting: List[str] = typer.Option(
        [], help="KEY=VALUE shown in the summary's settings table (repeatable)."
    ),
) -> None:
    """Write summary.md, summary.json, training_curves.png and ner_predictions.html."""
    start = time.perf_counter()
    settings = dict(item.split("=", 1) for item in setting)
    logs = {"textcat": read_log(textcat_log), "ner": read_log(ner_log)}
    curves = output_dir / "training_curves.png"
    plot_curves(logs, curves)
    typer.echo(f"wrote {curves}")
    page_path = output_dir / "ner_predictions.html"
    page = ner_page(ner_model, ner_test, n_docs, page_path)
    typer.echo(f"wrote {page_path} ({page['sentences']} sentences)")
    textcat = read_scores(textcat_metrics, "textcat")
    ner = read_scores(ner_metrics, "ner")
    ner_test_docs = label_counts(ner_test)[0]
    record = summary_record(textcat, ner, label_counts(textcat_test), ner_test_docs, logs, settings)
    (output_dir / "summary.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf8")
    text = summary_markdown(record, page)
    summary = output_dir / "summary.md"
    summary.write_text(text, encoding="utf8")
    typer.echo(f"wrote {summary} and summary.json ({time.perf_counter() - start:.1f} s)\n")
    typer.echo(text)


if __name__ == "__main__":
    typer.run(main)
