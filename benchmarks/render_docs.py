"""Write the benchmark tables of the docs from the result files, never by hand.

Each table lives between `<!-- NAME-table -->` and `<!-- /NAME-table -->` in a
page of docs/ (or the README); this script replaces what is between them with
a table rendered from `benchmarks/results/NAME.json`.

    python benchmarks/render_docs.py            # rewrite every marked table
    python benchmarks/render_docs.py --check    # fail if a table is out of date
"""
import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

SYSTEM_NAMES = {
    "plain": "plain loop: transformers + peft, unmerged, input order, float32",
    "plain-tuned": "plain loop, hand-optimized: LoRA merged, sorted by length",
    "pipeline": "**`nlp.pipe`, default** (inference form, float32)",
    "pipeline-bfloat16": '**`nlp.pipe`, `serving_precision = "bfloat16"`**',
    "minilm": "all-MiniLM-L6-v2 pipeline (spacy-transformers)",
    "cnn": "spaCy CNN pipeline (tok2vec)",
}


def serving_table(result: Dict[str, Any]) -> str:
    machine = result["machine"]
    cpu = next((line.split(":", 1)[1].strip() for line in machine["lscpu"].splitlines() if "Model name" in line), "?")
    lines: List[str] = [
        f"Measured {machine['date'][:10]} on {cpu}, {machine['nproc']} cores, torch threads "
        f"{machine['torch_threads']}; CPU flags: {', '.join(machine['relevant_flags'])} (bfloat16 native: "
        f"{machine['bfloat16_native']}). Command: `{machine['command']}`. Ratios are to the plain loop, "
        "taken repeat by repeat in one process (median); words/s are medians.",
        "",
    ]
    for task, entry in result["tasks"].items():
        batch = str(entry["default_batch"])
        scores = entry.get("scores", {})
        memory = entry.get("peak_rss_gb", {})
        metric = "ents_f" if task == "ner" else "cats_macro_f"
        lines += [
            f"**{task}** ({entry['timed_docs']} test docs, {entry['timed_words']} words timed)",
            "",
            f"| system | words/s, batch {batch} | × plain | words/s, batch 1 | × plain | peak RSS | test score |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name in result["systems"]:
            at_batch, at_one = entry["batches"][batch][name], entry["batches"]["1"][name]
            score = scores.get(name, {}).get(metric)
            if score is None and name in ("plain", "plain-tuned"):
                score_text = "as `nlp.pipe` (same model)"
            elif score is None:
                score_text = "see benchmarks.md"
            else:
                score_text = f"{100 * score:.1f}"
            rss = memory.get(name)
            lines.append(
                f"| {SYSTEM_NAMES.get(name, name)} | {at_batch['words_per_second']:.0f} | "
                f"{at_batch['ratio_to_plain']:.2f} | {at_one['words_per_second']:.0f} | {at_one['ratio_to_plain']:.2f} | "
                f"{'' if rss is None else f'{rss:.2f} GB'} | {score_text} |"
            )
        for name, row in scores.items():
            lines.append("")
            lines.append(
                f"`{name}` against the training form (the peft model, unmerged) on the whole test set: largest "
                f"score difference {row['largest_cats_difference_to_training_form']:.1e}, entities identical: "
                f"{row['entities_identical_to_training_form']}."
            )
        lines.append("")
    return "\n".join(lines).rstrip()


def matrix_flags(cpu_flags: List[str]) -> str:
    """The CPU flags that decide torch's bfloat16 and int8 kernels, for a
    table's "measured on" line."""
    return ", ".join(flag for flag in cpu_flags if any(k in flag for k in ("bf16", "vnni", "amx"))) or "no bf16/vnni/amx"


def accuracy_table(result: Dict[str, Any]) -> str:
    """The shipped recipes against the encoders and the larger decoder, each
    at its best learning rate on dev, per task; then the floors of issue #25."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_accuracy import COMPARED, TASKS, compared_rows, dev_selection_text, floors, learn_rate

    results = result["results"]
    columns = [label for label, _ in COMPARED]
    lines = [
        "| task (test metric) | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    measured, earlier = set(), set()
    for task, spec in TASKS.items():
        chosen = dict(compared_rows(results, task))
        if not chosen:
            continue
        metric = "f1" if spec.kind == "ner" else "macro_f1"
        cells = []
        for label in columns:
            row = chosen.get(label)
            if row is None:
                cells.append("not run")
                continue
            measured.add((row["measured"]["date"], row["measured"]["machine"], matrix_flags(row["measured"]["cpu_flags"])))
            rate = learn_rate(row)
            text = f"{row['test'][metric]:.1f}"
            if spec.kind == "ner" and row["test"].get("per_type_f1"):
                zeros = sum(f == 0 for f in row["test"]["per_type_f1"].values())
                text += f", {zeros} of {len(row['test']['per_type_f1'])} types at 0" if zeros else ""
            text += f" (lr {rate:g})" if rate is not None and not row.get("shipped") else ""
            if row.get("earlier_recipe"):
                earlier.add(row["earlier_recipe"])
                text += "*"
            cells.append(text)
        steps = sorted({row["max_steps"] for row in chosen.values()})
        budget = " or ".join(str(n) for n in steps)
        name = f"{spec.name}: {'entity F1' if spec.kind == 'ner' else 'macro F'}, {budget} steps"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    if earlier:
        lines += [f"\\* Run with {'; '.join(sorted(earlier))}.", ""]
    lines += floor_lines(floors(results))
    where = "; ".join(f"{date}, {machine} ({flags})" for date, machine, flags in sorted(measured))
    lines += [
        "",
        f"Steps of 8 examples, {dev_selection_text(result['eval_frequency'])}, seed 0 (the floors also over more seeds "
        "where both sides ran them; differences under about 2 points are within noise). The encoders at their best learning rate on the dev set of the tuning "
        "task (CoNLL-2003 for NER, Rotten Tomatoes for text classification), and at that rate on the other data. "
        f"Measured {where}. From `benchmarks/results/accuracy.json`.",
    ]
    return "\n".join(lines)


def floor_lines(floors: List[Dict[str, Any]]) -> List[str]:
    """One line per floor of bench_accuracy.floors, met or **not met**, with its
    numbers; for the smallest budget that meets a floor, that budget or none."""
    lines = []
    for floor in floors:
        mark = "met" if floor["met"] else "**not met**"
        if "seeds" in floor:
            shipped = " / ".join(f"{score:.1f}" for score in floor["shipped_by_seed"])
            mpnet = " / ".join(f"{score:.1f}" for score in floor["mpnet_by_seed"])
            seeds = ", ".join(map(str, floor["seeds"]))
            lines.append(
                f"- {floor['task']}: {floor['floor']}: {mark} ({floor['shipped']:.1f} against {floor['mpnet']:.1f}; "
                f"seeds {seeds}: {shipped} against {mpnet})."
            )
        elif "mpnet" in floor:
            lines.append(f"- {floor['task']}: {floor['floor']}: {mark} ({floor['shipped']:.1f} against {floor['mpnet']:.1f}).")
        elif "budgets" in floor:
            budgets = ", ".join(map(str, floor["budgets"]))
            found = f"{floor['met_at']} steps" if floor["met"] else "**not met** at any of them"
            lines.append(f"- {floor['task']}: {floor['floor']}, of {budgets} steps: {found}.")
        else:
            zero = ", ".join(floor["types_at_zero"]) or "none"
            lines.append(f"- {floor['task']}: {floor['floor']}: {mark} (types at 0: {zero}).")
    return lines


def search_table(result: Dict[str, Any]) -> str:
    """The recipe search: per task, the shipped recipe and each system of the
    search (bench_accuracy.in_recipe_search), with the dev score it was chosen
    on (seed 0's, and the mean over seeds where it ran at more), where its
    curve ended (a best score hides a curve that peaked and fell) and, for
    reference, its test score."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_accuracy import TASKS, best_dev, in_recipe_search, last_dev, learn_rate, seed_of, seed_summary, system_title

    spread = {(s["task"], s["system"]): s for s in seed_summary(result["results"])}
    lines = [
        "| task | recipe | best dev (step) | best dev, mean over seeds | dev at the last step (mean over seeds) | test | test, mean over seeds | learning rate |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for task, spec in TASKS.items():
        rows = [
            r for r in result["results"]
            if r["task"] == task and r["status"] == "ok" and r.get("dev_curve") and seed_of(r) == 0
            and (r.get("shipped") or in_recipe_search(r["system"]))
        ]  # fmt: skip
        if not any(in_recipe_search(r["system"]) for r in rows):
            continue
        metric, metric_name = ("f1", "F1") if spec.kind == "ner" else ("macro_f1", "macro F")
        for r in sorted(rows, key=lambda r: (not r.get("shipped"), r["system"])):
            title = system_title(r["system"], r.get("title"))
            title = "**as shipped now**" if r.get("shipped") else title.removeprefix("search: ")
            step = max(r["dev_curve"], key=lambda point: point[1])[0]
            seeds = spread.get((task, r["system"]))
            dev_mean = f"{seeds['dev_mean']:.1f} ({len(seeds['seeds'])} seeds)" if seeds else "–"
            test_mean = f"{seeds['test_mean']:.1f}" if seeds else "–"
            ended = f"{last_dev(r):.1f}" + (f" ({seeds['last_dev_mean']:.1f})" if seeds else "")
            lines.append(
                f"| {spec.name}: {metric_name}, {r['max_steps']} steps | {title} | {best_dev(r):.1f} ({step}) | "
                f"{dev_mean} | {ended} | {r['test'][metric]:.1f} | {test_mean} | {learn_rate(r):g} |"
            )
    lines += ["", "From `benchmarks/results/accuracy.json` (seed 0; the means over the seeds a recipe also ran at)."]
    return "\n".join(lines)


def seeds_table(result: Dict[str, Any]) -> str:
    """The systems run at more than one training seed (bench_accuracy
    --seeds): per task, the mean test and best dev scores over the seeds,
    with the lowest and highest test score, the spread a single run hides."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_accuracy import TASKS, seed_summary, system_title

    lines = [
        "| task | system | seeds | test, mean (lowest–highest) | best dev, mean |",
        "|---|---|---|---:|---:|",
    ]
    for summary in seed_summary(result["results"]):
        spec = TASKS[summary["task"]]
        title = system_title(summary["system"])
        metric = "F1" if spec.kind == "ner" else "macro F"
        lines.append(
            f"| {spec.name}: {metric} | {title} | {', '.join(map(str, summary['seeds']))} | "
            f"{summary['test_mean']:.1f} ({summary['test_min']:.1f}–{summary['test_max']:.1f}) | {summary['dev_mean']:.1f} |"
        )
    lines += ["", "From `benchmarks/results/accuracy.json`: the same runs, training seed changed."]
    return "\n".join(lines)


def project_table(result: Dict[str, Any]) -> str:
    """The test scores of `spacy project run all` from a fresh clone
    (benchmarks/bench_project.py), with its wall time and machine."""
    machine, summary = result["machine"], result["summary"]
    textcat, ner = summary["textcat"], summary["ner"]
    minutes, seconds = divmod(round(result["wall_seconds"]), 60)

    def dev(task: Dict[str, Any]) -> str:
        best = task["best_dev"]
        return f"{best['score']:.1f} (step {best['step']} of {best['last_step']})"

    per_type = ", ".join(f"{label} {f1:.1f}" for label, f1 in ner["per_type_f1"].items())
    # A one-off note added to the record by hand: what else ran on the machine during the timed run.
    note = f" ({result['timing_note']})" if result.get("timing_note") else ""
    lines = [
        "| task | pipeline | test set | test score | chance | best dev score |",
        "|---|---|---|---|---|---|",
        f"| textcat | LS-LLaMA (`{summary['settings'].get('textcat_config', '?')}`) | {textcat['test_docs']} Rotten "
        f"Tomatoes snippets | accuracy {textcat['accuracy']:.1f}, macro F1 {textcat['macro_f1']:.1f} | "
        f"{textcat['majority_accuracy']:.1f} (always {textcat['majority_label']}) | {dev(textcat)} |",
        f"| NER | LS-unLLaMA (`{summary['settings'].get('ner_config', '?')}`) | {ner['test_docs']} CoNLL-2003 "
        f"sentences | F1 {ner['f1']:.1f} (P {ner['precision']:.1f}, R {ner['recall']:.1f}; {per_type}) | ~0 | {dev(ner)} |",
        "",
        f"`python -m spacy project run all` from a fresh clone (commit {result['commit'][:7]}, fetching the "
        f"assets included) took {minutes} min {seconds:02d} s{note} on {machine['date'][:10]}, {machine['nproc']} cores "
        f"{machine['cpu_model']} ({matrix_flags(machine['cpu_flags'])}), OMP_NUM_THREADS="
        f"{result.get('omp_num_threads') or 'unset'}. From `benchmarks/results/project.json`.",
    ]
    return "\n".join(lines)


def budget_table(result: Dict[str, Any]) -> str:
    """The CPU time of the runs whose rows accuracy.json keeps (training and
    test evaluation), for the latest day they were measured, with the recipe
    search's share; the rows kept from earlier days apart."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_accuracy import RECIPE_SEARCH_ROWS, in_recipe_search

    def cpu_seconds(row: Dict[str, Any]) -> float:
        return sum((row.get(step) or {}).get("cpu_seconds") or 0 for step in ("train", "evaluate"))

    rows = result["results"]
    dated = [row for row in rows if re.fullmatch(r"\d{4}-\d{2}-\d{2}", row["measured"]["date"])]
    latest = max(row["measured"]["date"] for row in dated)
    on_latest = [row for row in rows if row["measured"]["date"] == latest]
    machines = sorted({(row["measured"]["machine"], matrix_flags(row["measured"]["cpu_flags"])) for row in on_latest})
    earlier: Dict[str, float] = {}
    for row in rows:
        if row["measured"]["date"] != latest:
            earlier[row["measured"]["date"]] = earlier.get(row["measured"]["date"], 0.0) + cpu_seconds(row)
    text = (
        f"The runs whose rows accuracy.json keeps took, on {latest}, "
        f"{sum(map(cpu_seconds, on_latest)) / 3600:.1f} CPU-hours on "
        + " and ".join(f"{machine} ({flags})" for machine, flags in machines)
        + " (training and test evaluation), "
        f"{sum(cpu_seconds(row) for row in on_latest if in_recipe_search(row['system'])) / 60:.0f} CPU-minutes "
        f"of them for the recipe search ({RECIPE_SEARCH_ROWS}, seeds included)"
    )
    kept = "; ".join(f"the rows kept from runs on {date} took {seconds / 3600:.1f} CPU-hours more" for date, seconds in sorted(earlier.items()))
    return text + (f"; {kept}." if kept else ".") + " From `benchmarks/results/accuracy.json`."


RENDERERS: Dict[str, Callable[[Dict[str, Any]], str]] = {
    "serving": serving_table,
    "accuracy": accuracy_table,
    "search": search_table,
    "seeds": seeds_table,
    "budget": budget_table,
    "project": project_table,
}


def result_file(name: str) -> Path:
    """The result file a table is rendered from: the recipe search, the
    seeds and the search's budget are in accuracy.json."""
    return RESULTS / f"{'accuracy' if name in ('search', 'seeds', 'budget') else name}.json"


def render(text: str) -> str:
    for name, renderer in RENDERERS.items():
        path = result_file(name)
        if not path.exists():
            continue
        table = renderer(json.loads(path.read_text()))
        pattern = re.compile(rf"(<!-- {name}-table -->\n).*?(<!-- /{name}-table -->)", re.S)
        text = pattern.sub(lambda match: f"{match.group(1)}{table}\n{match.group(2)}", text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that every table is up to date")
    args = parser.parse_args(argv)
    stale = []
    for page in PAGES:
        text = page.read_text()
        rendered = render(text)
        if rendered != text:
            stale.append(page)
            if not args.check:
                page.write_text(rendered)
    if args.check and stale:
        print(f"Out of date: {', '.join(str(page.relative_to(ROOT)) for page in stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
