"""The docs' benchmark tables are the result files, rendered (benchmarks/render_docs.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import render_docs  # noqa: E402


def test_every_benchmark_table_in_the_docs_is_rendered_from_its_result_file():
    assert render_docs.main(["--check"]) == 0, "run python benchmarks/render_docs.py"


def test_every_renderer_has_a_place_in_the_docs():
    text = "".join(page.read_text() for page in render_docs.PAGES)
    for name in render_docs.RENDERERS:
        assert f"<!-- {name}-table -->" in text and f"<!-- /{name}-table -->" in text, name


PROJECT_RUN = {
    "commit": "0123456789abcdef",
    "machine": {"date": "2026-12-07T13:00:00+00:00", "nproc": "2", "cpu_model": "AMD EPYC",
                "cpu_flags": ["avx2", "avx512_bf16", "avx512_vnni"]},
    "omp_num_threads": "2",
    "wall_seconds": 856.4,
    "summary": {
        "textcat": {"test_docs": 500, "accuracy": 84.6, "macro_f1": 84.21, "majority_label": "POSITIVE",
                    "majority_accuracy": 58.6, "best_dev": {"score": 84.0, "step": 250, "last_step": 300}},
        "ner": {"test_docs": 500, "f1": 80.24, "precision": 81.6, "recall": 78.8,
                "per_type_f1": {"LOC": 85.0, "MISC": 70.0, "ORG": 75.5, "PER": 88.1},
                "best_dev": {"score": 82.2, "step": 300, "last_step": 300}},
        "settings": {"textcat_config": "configs/textcat-causal.cfg", "ner_config": "configs/ner-bidirectional-linear.cfg"},
    },
}


def test_the_project_table_is_the_recorded_run():
    table = render_docs.project_table(PROJECT_RUN)
    assert "accuracy 84.6, macro F1 84.2 | 58.6 (always POSITIVE) | 84.0 (step 250 of 300) |" in table
    assert "F1 80.2 (P 81.6, R 78.8; LOC 85.0, MISC 70.0, ORG 75.5, PER 88.1)" in table
    assert "configs/ner-bidirectional-linear.cfg" in table
    assert "commit 0123456, fetching the assets included) took 14 min 16 s on 2026-12-07, 2 cores AMD EPYC" in table
    assert "(avx512_bf16, avx512_vnni), OMP_NUM_THREADS=2" in table


def test_the_project_table_says_what_else_ran_beside_a_timed_run():
    shared = {**PROJECT_RUN, "timing_note": "a helper's downloads ran beside it"}
    assert "took 14 min 16 s (a helper's downloads ran beside it) on 2026-12-07" in render_docs.project_table(shared)


def test_the_search_table_shows_each_recipe_with_the_dev_score_it_was_chosen_on():
    def row(system, dev_curve, f1, shipped=False):
        return {"task": "ner", "system": system, "status": "ok", "shipped": shipped, "dev_curve": dev_curve,
                "test": {"f1": f1}, "max_steps": 300, "learn_rate": 1e-3, "title": system}

    results = {"results": [
        row("search-ner-zero-bias", [[0, 0.0], [300, 84.46]], 80.5),
        row("shipped", [[0, 0.0], [250, 83.7], [300, 84.2]], 81.0, shipped=True),
        row("mpnet", [[0, 0.0], [300, 57.4]], 57.3),
    ]}
    lines = render_docs.search_table(results).splitlines()
    assert lines[2] == "| CoNLL-2003 (news): F1, 300 steps | **as shipped now** | 84.2 (300) | – | 84.2 | 81.0 | – | 0.001 |"
    assert "output bias at zero (shipped until this search) | 84.5 (300) | – | 84.5 | 80.5 |" in lines[3]
    assert not any("mpnet" in line for line in lines)
    results["results"].append({**results["results"][0], "seed": 1, "dev_curve": [[0, 0.0], [300, 86.46]], "test": {"f1": 82.5}})
    again = render_docs.search_table(results).splitlines()
    assert "(shipped until this search) | 84.5 (300) | 85.5 (2 seeds) | 84.5 (85.5) | 80.5 | 81.5 | 0.001 |" in again[3]


def test_the_search_table_shows_where_each_run_ended_on_dev_the_fall_a_best_score_hides():
    """The best dev score rewards a curve that swings: a recipe that peaks and then
    falls is chosen over one that holds. The last evaluation shows the fall."""
    row = {"task": "textcat", "system": "search-textcat-no-decay", "status": "ok", "title": "search: no decay",
           "dev_curve": [[0, 0.0], [250, 90.0], [300, 68.1]], "test": {"macro_f1": 82.0}, "max_steps": 300, "learn_rate": 1e-3}
    again = {**row, "seed": 1, "dev_curve": [[0, 0.0], [250, 88.5], [300, 88.5]]}
    lines = render_docs.search_table({"results": [row, again]}).splitlines()
    assert "learning rate 1e-3 | 90.0 (250) | 89.2 (2 seeds) | 68.1 (78.3) | 82.0 |" in lines[2]


def test_the_seeds_table_shows_the_spread_of_each_system_run_at_several_seeds():
    def row(system, seed, dev, macro_f1):
        return {"task": "textcat", "system": system, "seed": seed, "status": "ok", "shipped": system == "shipped",
                "dev_curve": [[0, 30.0], [50, dev]], "test": {"macro_f1": macro_f1}}

    results = {"results": [row("shipped", 0, 87.5, 82.0), row("shipped", 1, 85.0, 84.0), row("mpnet", 0, 85.8, 83.8)]}
    lines = render_docs.seeds_table(results).splitlines()
    assert lines[2].startswith("| Rotten Tomatoes (film reviews): macro F | spacy-lsllama as shipped")
    assert lines[2].endswith("| 0, 1 | 83.0 (82.0–84.0) | 86.2 |")
    assert not any("mpnet" in line for line in lines)  # one seed: no spread to show


def test_the_floors_name_the_smallest_budget_that_meets_them_or_say_none_does():
    def budgets(met_at):
        return {"task": "textcat", "floor": "the smallest budget run at which the shipped recipe meets it",
                "budgets": [300, 600, 1200], "met_at": met_at, "met": met_at is not None}

    assert render_docs.floor_lines([budgets(None)]) == [
        "- textcat: the smallest budget run at which the shipped recipe meets it, of 300, 600, 1200 steps: **not met** at any of them."
    ]
    assert render_docs.floor_lines([budgets(600)])[0].endswith("of 300, 600, 1200 steps: 600 steps.")


def test_the_floors_stored_with_the_accuracy_results_are_those_their_rows_give():
    """render_docs computes the floors from the rows; the copy in accuracy.json, for its readers, must agree."""
    import json

    from bench_accuracy import floors

    result = json.loads(render_docs.result_file("accuracy").read_text(encoding="utf8"))
    assert result["floors"] == floors(result["results"]), "recompute accuracy.json's floors"


def test_the_accuracy_footnote_says_how_often_each_run_chose_on_dev():
    """Runs at N times the steps evaluate every N x the shared frequency: the footnote
    says so, with the frequency the results were measured at (not a fixed 50)."""
    import json

    result = json.loads(render_docs.result_file("accuracy").read_text(encoding="utf8"))
    table = render_docs.accuracy_table({**result, "eval_frequency": 25})
    assert "the model chosen on dev every 25 steps (every 25 × N in runs at N times the steps)" in table


def test_the_search_budget_is_the_cpu_time_its_rows_recorded():
    """Training and test evaluation, summed per day the rows were measured; the
    recipe search's share (bench_accuracy.in_recipe_search) beside it."""

    def row(system, date, train, evaluate):
        return {"system": system, "measured": {"date": date, "machine": "2 cores AMD EPYC", "cpu_flags": ["avx512_bf16"]},
                "train": {"cpu_seconds": train}, "evaluate": {"cpu_seconds": evaluate}}

    result = {"results": [
        row("shipped", "2026-12-07", 3600, 1800),
        row("search-textcat-no-decay", "2026-12-07", 1500, 300),
        row("transition-head", "2026-12-07", 600, 0),
        row("mpnet", "2026-11-24 or earlier", 7200, 0),
        {**row("minilm", "2026-12-07", 0, 0), "train": {"returncode": 1}, "evaluate": None},
    ]}
    text = render_docs.budget_table(result)
    assert "The runs whose rows accuracy.json keeps took, on 2026-12-07, 2.2 CPU-hours on 2 cores AMD EPYC (avx512_bf16)" in text
    assert "(training and test evaluation), 40 CPU-minutes of them for the recipe search" in text
    assert "the rows kept from runs on 2026-11-24 or earlier took 2.0 CPU-hours more" in text
