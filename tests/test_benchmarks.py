"""Smoke tests of the benchmarks in benchmarks/: each script runs on the tiny
model and a few texts and writes its result. No timing or score is asserted;
the real measurements are run on demand (benchmarks/RESULTS.md)."""
import json
import sys
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin

from pipelines import TRAIN_DATA, write_corpus

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_accuracy  # noqa: E402
import bench_inference  # noqa: E402
import bench_memory  # noqa: E402
import bench_ner_heads  # noqa: E402
import bench_serving  # noqa: E402
import bench_training  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def textcat_data(tmp_path_factory) -> Path:
    nlp = spacy.blank("en")
    docs = []
    for text, annotations in TRAIN_DATA[:3]:
        doc = nlp.make_doc(text)
        doc.cats = dict(annotations["cats"])
        docs.append(doc)
    path = tmp_path_factory.mktemp("benchmark-data") / "train.spacy"
    DocBin(docs=docs).to_disk(path)
    return path


@pytest.fixture
def tiny_args(tiny_model_dirs, textcat_data):
    return ["--model", str(tiny_model_dirs["byte_level"]), "--data", str(textcat_data)]


def write_benchmark_corpus(corpus: Path, *folders: str) -> None:
    """Train, dev and test splits of tiny data in each of corpus/FOLDER, as
    bench_accuracy.py reads a task's data."""
    for folder in folders:
        (corpus / folder).mkdir(parents=True)
        for split in ("train", "dev", "test"):
            write_corpus(corpus / folder / f"{split}.spacy")


def read(path: Path) -> dict:
    assert path.exists()
    return json.loads(path.read_text(encoding="utf8"))


def test_inference_benchmark(tiny_args, tmp_path):
    output = tmp_path / "inference.json"
    bench_inference.main(
        tiny_args + ["--n-texts", "3", "--batch-sizes", "2", "--repeats", "1", "--output", str(output)]
    )
    result = read(output)
    entry = result["batch_sizes"]["2"]
    assert entry["ratio_plugin_over_plain_throughput"]["median"] > 0
    assert entry["same_padding"]
    assert result["hidden_state_max_abs_diff"] < 1e-4
    assert result["machine"]["packages"]["torch"]


def test_training_benchmark(tiny_args, tmp_path):
    output = tmp_path / "training.json"
    bench_training.main(
        tiny_args + ["--n-texts", "3", "--batch-sizes", "2", "--steps", "1", "--output", str(output)]
    )
    entry = read(output)["batch_sizes"]["2"]
    assert entry["ratio_plain_over_plugin_step_time"]["n"] == 1
    assert entry["plugin_seconds_per_step"]["median"] > 0


def test_memory_benchmark(tiny_args, tmp_path):
    """One subprocess (float32, plugin), which also saves the pipeline."""
    output = tmp_path / "memory.json"
    bench_memory.main(
        tiny_args
        + ["--precisions", "float32", "--systems", "plugin", "--steps", "1", "--batch-size", "2"]
        + ["--output", str(output)]
    )
    result = read(output)
    assert result["table"]["float32"]["plugin_training_peak_rss_mb"] > 0
    assert result["disk"]["saved_pipeline_bytes"] > 0
    assert result["disk"]["base_weights_bytes"] > 0


def test_accuracy_benchmark_trains_tests_and_records_failures(tiny_model_dirs, tmp_path):
    """Every system trains with `spacy train` and is scored with `spacy evaluate`;
    a system that cannot run (here: a missing MiniLM) is recorded as failed
    with its error, and the others still run."""
    corpus = tmp_path / "corpus"
    write_benchmark_corpus(corpus, "conll2003", "rotten_tomatoes")
    output = tmp_path / "results" / "accuracy.json"
    bench_accuracy.main(
        ["--corpus", str(corpus), "--smollm2", str(tiny_model_dirs["byte_level"])]
        + ["--minilm", str(tmp_path / "no-such-model"), "--systems", "spacy-cnn,minilm,ls-unllama,shipped"]
        + ["--max-steps", "2", "--eval-frequency", "1", "--workdir", str(tmp_path / "runs")]
        + ["--output", str(output)]
    )
    results = {(r["task"], r["system"]): r for r in read(output)["results"]}
    assert len(results) == 8
    for task in ("ner", "textcat"):
        failed = results[(task, "minilm")]
        assert failed["status"] == "failed"
        assert any("no-such-model" in line for line in failed["error"])
        for system in ("spacy-cnn", "ls-unllama", "shipped"):
            run = results[(task, system)]
            assert run["status"] == "ok", run.get("error")
            assert run["shipped"] is (system == "shipped")
            assert [step for step, _ in run["dev_curve"]] == [0, 1, 2]  # every evaluation
            assert run["measured"]["machine"] and run["measured"]["date"]
            assert 0 <= run["test"]["f1" if task == "ner" else "accuracy"] <= 100
            assert run["train"]["peak_rss_mb"] > 0
            assert 0 < run["parameters"]["trainable"] <= run["parameters"]["total"]
    lora = results[("textcat", "ls-unllama")]["parameters"]
    assert lora["trainable"] < lora["total"] / 2  # the base is frozen
    table = output.with_suffix(".md").read_text(encoding="utf8")
    assert "LS-unLLaMA" in table and "failed" in table


def test_accuracy_benchmark_skips_finished_runs(tiny_model_dirs, tmp_path):
    write_benchmark_corpus(tmp_path / "corpus", "rotten_tomatoes")
    args = ["--corpus", str(tmp_path / "corpus"), "--tasks", "textcat", "--systems", "spacy-cnn"]
    args += ["--max-steps", "1", "--eval-frequency", "1", "--workdir", str(tmp_path / "runs")]
    first = bench_accuracy.main(args)["results"][0]
    again = bench_accuracy.main(args)["results"][0]
    assert again["train"] == first["train"]  # not retrained
    changed = bench_accuracy.main(args[:-4] + ["--max-steps", "2"] + args[-4:])["results"][0]
    assert changed["max_steps"] == 2 and changed["train"] != first["train"]
    assert [step for step, _ in first["dev_curve"]] == [0, 1]
    # spaCy's logger will not overwrite a log: the rerun's curve must be its own, not the first run's.
    assert [step for step, _ in changed["dev_curve"]] == [0, 1, 2]


def test_checks_run_the_systems_chosen_on_the_tuning_task_at_half_the_budget(tiny_model_dirs, tmp_path):
    write_benchmark_corpus(tmp_path / "corpus", "rotten_tomatoes", "amazon_reviews")
    args = ["--corpus", str(tmp_path / "corpus"), "--smollm2", str(tiny_model_dirs["byte_level"])]
    args += ["--runs", "textcat/shipped,textcat/spacy-cnn", "--checks", "amazon_reviews", "--max-steps", "4"]
    args += ["--eval-frequency", "2", "--workdir", str(tmp_path / "runs")]
    results = bench_accuracy.main(args)["results"]
    assert [(r["task"], r["system"], r["max_steps"]) for r in results] == [
        ("textcat", "shipped", 4), ("textcat", "spacy-cnn", 4), ("amazon_reviews", "shipped", 2)
    ]  # spaCy's CNN is not among the compared systems


def test_a_batch_in_words_run_records_the_mean_words_it_trained_on(tiny_model_dirs, tmp_path):
    write_benchmark_corpus(tmp_path / "corpus", "rotten_tomatoes")
    args = ["--corpus", str(tmp_path / "corpus"), "--smollm2", str(tiny_model_dirs["byte_level"])]
    args += ["--runs", "textcat/search-textcat-words88", "--max-steps", "2", "--eval-frequency", "2"]
    run = bench_accuracy.main(args + ["--workdir", str(tmp_path / "runs")])["results"][0]
    assert run["status"] == "ok", run.get("error")
    assert (run["max_steps"], [step for step, _ in run["dev_curve"]]) == (4, [0, 4])
    assert 0 < run["mean_words_per_batch"] <= 101
    with pytest.raises(SystemExit):  # 0.5 x 1 step is not a whole step: refused before any run
        bench_accuracy.main(args[:-6] + ["--runs", "textcat/search-textcat-words351", "--max-steps", "2", "--eval-frequency", "1"])


def test_accuracy_output_keeps_the_rows_of_systems_not_run_again(tiny_model_dirs, tmp_path):
    write_benchmark_corpus(tmp_path / "corpus", "rotten_tomatoes")
    output = tmp_path / "accuracy.json"
    args = ["--corpus", str(tmp_path / "corpus"), "--tasks", "textcat", "--max-steps", "1"]
    args += ["--eval-frequency", "1", "--workdir", str(tmp_path / "runs"), "--output", str(output)]
    bench_accuracy.main(args + ["--systems", "spacy-cnn-long"])
    first = read(output)["results"][0]
    bench_accuracy.main(args + ["--systems", "spacy-cnn"])
    results = read(output)["results"]
    assert [r["system"] for r in results] == ["spacy-cnn", "spacy-cnn-long"]
    assert results[1] == first
    assert "spaCy CNN (tok2vec), 10x the steps" in output.with_suffix(".md").read_text(encoding="utf8")


def test_runs_at_several_seeds_are_kept_apart(tiny_model_dirs, tmp_path):
    """--seeds repeats each run with another training seed: every seed is a
    row of its own, in a folder of its own, and running one seed again keeps
    the rows of the others."""
    write_benchmark_corpus(tmp_path / "corpus", "rotten_tomatoes")
    output = tmp_path / "accuracy.json"
    args = ["--corpus", str(tmp_path / "corpus"), "--runs", "textcat/spacy-cnn", "--max-steps", "1"]
    args += ["--eval-frequency", "1", "--workdir", str(tmp_path / "runs"), "--output", str(output)]
    bench_accuracy.main(args + ["--seeds", "0,1"])
    results = read(output)["results"]
    assert [(r["system"], r["seed"]) for r in results] == [("spacy-cnn", 0), ("spacy-cnn", 1)]
    assert results[0]["overrides"]["system.seed"] == 0 and results[1]["overrides"]["system.seed"] == 1
    assert results[0]["key"] != results[1]["key"]
    assert sorted(path.name for path in (tmp_path / "runs" / "textcat").iterdir()) == ["spacy-cnn", "spacy-cnn.seed1"]
    bench_accuracy.main(args + ["--seeds", "1", "--force"])
    again = read(output)
    assert [(r["system"], r["seed"]) for r in again["results"]] == [("spacy-cnn", 0), ("spacy-cnn", 1)]
    assert again["results"][0] == results[0]
    assert again["seeds"] == [1]


def _row(task, system, test, curve, shipped=False, per_type=None, seed=0):
    scores = {"f1": test, "macro_f1": test, "per_type_f1": per_type or {}}
    return {"task": task, "system": system, "seed": seed, "status": "ok", "shipped": shipped, "test": scores, "max_steps": 300,
            "dev_curve": [[0, 0.0]] + [[50 * (i + 1), score] for i, score in enumerate(curve)],
            "measured": {"date": "2026-12-07", "machine": "2 cores"}}  # fmt: skip


SYNTHETIC = [
    _row("ner", "shipped", 78.0, [60, 75], shipped=True, per_type={"PER": 90.0, "MISC": 0.0}),
    _row("ner", "mpnet", 70.0, [50, 69]),
    _row("ner", "mpnet-lr0.0001", 80.0, [65, 79]),
    _row("ner", "minilm", 72.0, [55, 70]),
    _row("textcat", "shipped", 85.0, [80, 84], shipped=True),
    _row("textcat", "mpnet", 86.0, [82, 85]),
]


def test_each_model_is_compared_at_its_best_learning_rate_on_dev():
    chosen = {row["system"] for _, row in bench_accuracy.compared_rows(SYNTHETIC, "ner")}
    assert chosen == {"shipped", "mpnet-lr0.0001", "minilm"}


def test_on_a_check_task_each_model_keeps_the_rate_chosen_on_its_tuning_task():
    """WNUT-16 checks the NER recipes where they were not tuned: no choice is made on its data."""
    rows = SYNTHETIC + [
        _row("wnut16", "shipped", 40.0, [30, 35], shipped=True),
        _row("wnut16", "mpnet-lr0.0001", 30.0, [20, 25]),
        _row("wnut16", "mpnet", 50.0, [40, 45]),  # better on WNUT's dev, but not chosen on CoNLL's
    ]
    chosen = [row["system"] for _, row in bench_accuracy.compared_rows(rows, "wnut16")]
    assert chosen == ["shipped", "mpnet-lr0.0001"]


def test_the_floors_compare_the_shipped_recipes_with_mpnet_at_its_best_rate():
    floors = {(f["task"], f["floor"]): f for f in bench_accuracy.floors(SYNTHETIC)}
    ner = floors[("ner", "shipped test f1 >= all-mpnet-base-v2's")]
    assert (ner["shipped"], ner["mpnet"], ner["mpnet_system"], ner["met"]) == (78.0, 80.0, "mpnet-lr0.0001", False)
    assert floors[("ner", "no entity type at 0 F1")]["types_at_zero"] == ["MISC"]
    assert floors[("textcat", "shipped test macro_f1 >= all-mpnet-base-v2's")]["met"] is False
    assert not any("twice the budget" in floor for _, floor in floors)


def test_a_floor_not_met_is_checked_again_at_twice_the_budget_when_both_ran():
    doubled = [dict(_row("textcat", "budget-2x-shipped", 88.0, [84, 86]), max_steps=600),
               dict(_row("textcat", "budget-2x-mpnet", 87.0, [83, 85]), max_steps=600)]  # fmt: skip
    floors = [f for f in bench_accuracy.floors(SYNTHETIC + doubled) if "twice the budget" in f["floor"]]
    assert [(f["task"], f["floor"], f["shipped"], f["mpnet"], f["met"]) for f in floors] == [
        ("textcat", "the same at twice the budget (600 steps)", 88.0, 87.0, True)
    ]


def _budget_pair(factor, shipped, mpnet, **fields):
    steps = 300 * factor
    return [dict(_row("textcat", f"budget-{factor}x-shipped", shipped, [80, 81]), max_steps=steps, **fields),
            dict(_row("textcat", f"budget-{factor}x-mpnet", mpnet, [80, 81]), max_steps=steps)]  # fmt: skip


def test_a_floor_not_met_is_checked_again_at_four_times_the_budget_and_the_budget_that_meets_it_is_named():
    budgets = _budget_pair(2, 84.0, 87.0) + _budget_pair(4, 88.0, 87.5)
    floors = {f["floor"]: f for f in bench_accuracy.floors(SYNTHETIC + budgets) if f["task"] == "textcat"}
    assert floors["the same at twice the budget (600 steps)"]["met"] is False
    four = floors["the same at four times the budget (1200 steps)"]
    assert (four["shipped"], four["mpnet"], four["met"]) == (88.0, 87.5, True)
    assert (four["max_steps"], floors["the same at twice the budget (600 steps)"]["max_steps"]) == (1200, 600)
    first = floors["the smallest budget run at which the shipped recipe meets it"]
    assert (first["budgets"], first["met_at"], first["met"]) == ([300, 600, 1200], 1200, True)


def test_the_budget_that_meets_a_floor_is_none_when_no_budget_run_does():
    budgets = _budget_pair(2, 84.0, 87.0)
    floors = {f["floor"]: f for f in bench_accuracy.floors(SYNTHETIC + budgets) if f["task"] == "textcat"}
    first = floors["the smallest budget run at which the shipped recipe meets it"]
    assert (first["budgets"], first["met_at"], first["met"]) == ([300, 600], None, False)
    assert not any("smallest budget" in f["floor"] for f in bench_accuracy.floors(SYNTHETIC) if f["task"] == "ner")


def _smallest_budget(rows):
    return [f for f in bench_accuracy.floors(rows) if f["floor"].startswith("the smallest budget")]


def test_the_smallest_budget_that_meets_a_floor_is_the_first_in_steps():
    [entry] = _smallest_budget(SYNTHETIC + _budget_pair(4, 80.0, 87.0) + _budget_pair(2, 88.0, 87.0))
    assert (entry["budgets"], entry["met_at"]) == ([300, 600, 1200], 600)


def test_no_smallest_budget_where_the_shared_budget_meets_the_floor_or_no_pair_ran_whole():
    met = [r if r["system"] != "shipped" or r["task"] != "textcat" else {**r, "test": {"macro_f1": 90.0}} for r in SYNTHETIC]
    assert _smallest_budget(met + _budget_pair(2, 88.0, 87.0)) == []
    half_a_pair = _budget_pair(2, 88.0, 87.0)[:1]
    assert _smallest_budget(SYNTHETIC + half_a_pair) == []
    assert not any("twice the budget" in f["floor"] for f in bench_accuracy.floors(SYNTHETIC + half_a_pair))


def test_the_smallest_budget_is_sought_when_the_mean_over_seeds_misses_the_floor_though_seed_0_meets_it():
    rows = [r if r["system"] != "shipped" or r["task"] != "textcat" else {**r, "test": {"macro_f1": 87.0}} for r in SYNTHETIC]
    rows += [_row("textcat", "shipped", 70.0, [81, 83], shipped=True, seed=1), _row("textcat", "mpnet", 86.0, [80, 84], seed=1)]
    [entry] = _smallest_budget(rows + _budget_pair(2, 88.0, 87.0))
    assert (entry["budgets"], entry["met_at"]) == ([300, 600], 600)


def test_a_budget_run_with_another_recipe_is_shown_but_does_not_count_for_the_smallest_budget():
    earlier = _budget_pair(2, 88.0, 87.0, earlier_recipe="the rate shipped before (5e-4)")
    floors = bench_accuracy.floors(SYNTHETIC + earlier)
    assert "the same at twice the budget (600 steps), the shipped side run with the rate shipped before (5e-4)" in [
        f["floor"] for f in floors
    ]
    assert _smallest_budget(SYNTHETIC + earlier) == []
    [entry] = _smallest_budget(SYNTHETIC + earlier + _budget_pair(4, 80.0, 87.0))
    assert (entry["budgets"], entry["met_at"]) == ([300, 1200], None)


def test_budget_pairs_count_only_with_mpnet_at_the_rate_chosen_for_it():
    pair = _budget_pair(2, 88.0, 87.0)
    pair[1]["learn_rate"] = 5e-5
    rows = [{**r, "learn_rate": 1e-4} if r["system"] == "mpnet" else r for r in SYNTHETIC]
    assert not any("twice the budget" in f["floor"] for f in bench_accuracy.floors(rows + pair))


def test_a_rate_is_chosen_on_the_first_seed_only():
    """Runs at further seeds measure the spread of a chosen system; they do
    not take part in choosing (a lucky seed would win the choice)."""
    rows = SYNTHETIC + [_row("ner", "mpnet", 99.0, [99, 99], seed=1)]
    chosen = {row["system"]: row["seed"] for _, row in bench_accuracy.compared_rows(rows, "ner")}
    assert chosen == {"shipped": 0, "mpnet-lr0.0001": 0, "minilm": 0}


SEEDS = [
    _row("textcat", "shipped", 84.0, [81, 83], shipped=True, seed=1),
    _row("textcat", "shipped", 87.0, [82, 86], shipped=True, seed=2),
    _row("textcat", "mpnet", 85.0, [80, 84], seed=1),
    _row("textcat", "mpnet", 83.0, [79, 83], seed=2),
    _row("textcat", "mpnet", 70.0, [60, 70], seed=3),  # a seed the shipped recipe did not run
]


def test_the_floors_compare_means_over_the_seeds_both_sides_ran():
    floors = [f for f in bench_accuracy.floors(SYNTHETIC + SEEDS) if f.get("seeds")]
    assert [(f["task"], f["seeds"], f["shipped"], f["mpnet"], f["met"]) for f in floors] == [
        ("textcat", [0, 1, 2], round((85 + 84 + 87) / 3, 2), round((86 + 85 + 83) / 3, 2), True)
    ]
    assert floors[0]["shipped_by_seed"] == [85.0, 84.0, 87.0]
    assert floors[0]["floor"] == "shipped mean test macro_f1 over 3 seeds >= all-mpnet-base-v2's"


def test_systems_run_at_several_seeds_are_summarized_with_their_spread():
    summary = {(s["task"], s["system"]): s for s in bench_accuracy.seed_summary(SYNTHETIC + SEEDS)}
    assert set(summary) == {("textcat", "shipped"), ("textcat", "mpnet")}
    shipped = summary[("textcat", "shipped")]
    assert shipped["seeds"] == [0, 1, 2]
    assert (shipped["test_mean"], shipped["test_min"], shipped["test_max"]) == (round(256 / 3, 2), 84.0, 87.0)
    assert shipped["dev_mean"] == round((84 + 83 + 86) / 3, 2)
    assert summary[("textcat", "mpnet")]["seeds"] == [0, 1, 2, 3]


def test_seeds_of_another_recipe_are_not_averaged_together():
    """A seed-0 row rerun after a config edit keeps the older seeds' rows in
    the file: only the seeds of the same config and overrides count, each once."""
    def recipe(row, sha, rate=5e-4):
        log = f"runs/textcat/{row['system']}.seed{row['seed']}/train_log.jsonl"  # each run logs in its folder
        return {**row, "config": "configs/textcat-causal.cfg", "config_sha256": sha, "max_steps": 300,
                "overrides": {"system.seed": row["seed"], "training.optimizer.learn_rate.initial_rate": rate,
                              "training.logger.output_file": log}}

    rows = [
        recipe(_row("textcat", "shipped", 80.0, [80, 81], shipped=True), "new"),
        recipe(_row("textcat", "shipped", 90.0, [90, 91], shipped=True, seed=1), "old"),  # before the edit
        recipe(_row("textcat", "shipped", 82.0, [80, 82], shipped=True, seed=2), "new"),
        recipe(_row("textcat", "shipped", 82.0, [80, 82], shipped=True, seed=2), "new"),  # listed twice
        recipe(_row("textcat", "mpnet", 84.0, [80, 84], seed=0), "m"),
        recipe(_row("textcat", "mpnet", 70.0, [70, 70], seed=1), "m", rate=1e-4),  # another rate
        recipe(_row("textcat", "mpnet", 86.0, [80, 86], seed=2), "m"),
    ]
    summary = {s["system"]: s for s in bench_accuracy.seed_summary(rows)}
    assert summary["shipped"]["seeds"] == [0, 2] and summary["shipped"]["test_by_seed"] == [80.0, 82.0]
    assert summary["mpnet"]["seeds"] == [0, 2]
    [floor] = [f for f in bench_accuracy.floors(rows) if f.get("seeds")]
    assert (floor["seeds"], floor["shipped"], floor["mpnet"]) == ([0, 2], 81.0, 85.0)


def test_the_twice_the_budget_floor_is_seed_0s():
    doubled = [dict(_row("textcat", "budget-2x-shipped", 88.0, [84, 86]), max_steps=600),
               dict(_row("textcat", "budget-2x-shipped", 70.0, [84, 86], seed=1), max_steps=600),
               dict(_row("textcat", "budget-2x-mpnet", 87.0, [83, 85]), max_steps=600)]  # fmt: skip
    [floor] = [f for f in bench_accuracy.floors(SYNTHETIC + doubled) if "twice the budget" in f["floor"]]
    assert floor["shipped"] == 88.0


def test_dev_curves_are_drawn_from_the_results(tmp_path):
    import plot_dev_curves

    results = tmp_path / "accuracy.json"
    results.write_text(json.dumps({"results": SYNTHETIC}), encoding="utf8")
    written = plot_dev_curves.main(["--results", str(results), "--output-dir", str(tmp_path)])
    assert [path.name for path in written] == ["dev_curves_ner.png", "dev_curves_textcat.png"]
    assert all(path.read_bytes()[:4] == b"\x89PNG" for path in written)


def test_a_run_is_redone_when_its_config_file_changes(tmp_path):
    """The shipped configs change as recipes are chosen: a cached run of the
    old file must not be taken for a run of the new one."""
    config = tmp_path / "textcat.cfg"
    config.write_text("[training]\nmax_steps = 150\n", encoding="utf8")
    before = bench_accuracy.run_settings(config, {"training.max_steps": 300})
    config.write_text("[training]\nmax_steps = 150\ndropout = 0.2\n", encoding="utf8")
    after = bench_accuracy.run_settings(config, {"training.max_steps": 300})
    assert bench_accuracy.run_key("textcat", "shipped", before) != bench_accuracy.run_key("textcat", "shipped", after)


def test_a_batch_in_words_trains_on_the_words_of_the_shipped_batches():
    """The batch-size search keeps the budget in words: batches of about the
    words of 8 training examples at the shared steps, half of that at twice
    the steps, twice at half; warmup and evaluations scale with the steps."""
    systems = {name: system for name, system in bench_accuracy.SYSTEMS.items() if "-words" in name}
    assert {name.split("-")[1] for name in systems} == {"textcat", "ner"}
    for name, system in systems.items():
        task = name.split("-")[1]
        overrides = system.overrides
        assert overrides["training.batcher.@batchers"] == "spacy.batch_by_words.v1"
        mean_words = int(name.rsplit("-words", 1)[1])
        steps, eval_frequency = bench_accuracy.step_budget(task, system, max_steps=300, eval_frequency=50)
        assert abs(mean_words * steps - 300 * bench_accuracy.WORDS_PER_8_EXAMPLES[task]) <= steps, name
        assert overrides["training.batcher.size"] > mean_words, "the size is a cap, above the mean"
        assert steps / eval_frequency == 300 / 50, name
        assert overrides["training.optimizer.learn_rate.warmup_steps"] == round(15 * system.steps_factor), name
    assert sorted(bench_accuracy.SYSTEMS[n].steps_factor for n in systems if "-textcat-" in n) == [0.5, 1, 2]


def test_a_batch_in_words_holds_less_than_its_size_on_average():
    """batch_by_words stops a batch short of its size unless the next example
    fits: on examples of mixed lengths the mean is below the size, which is
    why each size is chosen for its mean."""
    uniform = bench_accuracy.mean_words_per_batch([10] * 80, size=80)
    mixed = bench_accuracy.mean_words_per_batch([5, 30] * 40, size=80)
    assert uniform == 80
    assert 60 < mixed < 80


def test_step_budgets_that_are_not_whole_steps_are_refused():
    half = bench_accuracy.SYSTEMS["search-textcat-words351"]
    assert bench_accuracy.step_budget("textcat", half, 300, 50) == (150, 25)
    with pytest.raises(ValueError, match="not a whole number of steps"):
        bench_accuracy.step_budget("textcat", half, 300, 25)


def test_budget_runs_keep_the_step_budget_rule():
    """Whole factors as before (the run keys of cached runs depend on it); the
    check tasks at their share of the steps."""
    shipped, twice = bench_accuracy.SYSTEMS["shipped"], bench_accuracy.SYSTEMS["budget-2x-shipped"]
    assert bench_accuracy.step_budget("textcat", shipped, 300, 50) == (300, 50)
    assert bench_accuracy.step_budget("textcat", twice, 300, 50) == (600, 100)
    assert bench_accuracy.step_budget("wnut16", shipped, 300, 50) == (150, 50)
    assert all(isinstance(n, int) for n in bench_accuracy.step_budget("textcat", twice, 300, 50))


def test_accuracy_runs_end_the_schedule_with_their_step_budget():
    """The shipped configs give total_steps as a literal: a run with another
    budget overrides it together with max_steps."""
    shipped = bench_accuracy.schedule_overrides(bench_accuracy.PRODUCT_CONFIGS / "ner-bidirectional.cfg", 300)
    assert shipped == {"training.max_steps": 300, "training.optimizer.learn_rate.total_steps": 300}
    cnn = bench_accuracy.schedule_overrides(bench_accuracy.BENCHMARK_CONFIGS / "cnn-ner.cfg", 300)
    assert cnn == {"training.max_steps": 300}


def test_ner_heads_benchmark_trains_packages_and_times_both_heads(tiny_model_dirs, tmp_path):
    """Both heads train with `spacy train`, are scored with `spacy evaluate`
    (per type too), are packaged with `spacy package`, and the packaged
    pipelines are timed side by side."""
    corpus = tmp_path / "conll2003"
    corpus.mkdir()
    for split in ("train", "dev", "test"):
        write_corpus(corpus / f"{split}.spacy")
    output = tmp_path / "results" / "ner_heads.json"
    bench_ner_heads.main(
        ["--smollm2", str(tiny_model_dirs["metaspace"]), "--corpus-2k", str(corpus), "--systems", "transition,linear"]
        + ["--max-steps", "2", "--speed-texts", "3", "--speed-repeats", "1", "--workdir", str(tmp_path / "runs")]
        + ["--output", str(output)]
    )
    block = read(output)["settings"]["2k"]
    assert [r["system"] for r in block["results"]] == ["transition", "linear"]
    for run in block["results"]:
        assert run["status"] == "ok", run.get("error")
        assert 0 <= run["test"]["f1"] <= 100 and "LOC" in run["test"]["per_type_f1"]
        assert run["train"]["seconds"] > 0 and Path(run["package"]["pipeline"]).is_dir()
        assert block["speed"][run["system"]]["ner_words_per_second"] > 0
    assert block["speed"]["linear"]["pipeline_speed_vs_transition"] > 0
    assert "linear tagger" in output.with_suffix(".md").read_text(encoding="utf8")


def test_serving_benchmark(tiny_model_dirs, tmp_path):
    """Every system runs on tiny trained pipelines and every figure is recorded."""
    from pipelines import train_pipeline, write_corpus

    model = tiny_model_dirs["byte_level"]
    train_pipeline(model, steps=2).to_disk(tmp_path / "textcat")
    train_pipeline(model, steps=2, bidirectional=True).to_disk(tmp_path / "ner")
    corpus = write_corpus(tmp_path / "test.spacy")
    output = tmp_path / "serving.json"
    bench_serving.main(
        ["--textcat", str(tmp_path / "textcat"), "--textcat-test", str(corpus), "--ner", str(tmp_path / "ner")]
        + ["--ner-test", str(corpus), "--timed-docs", "4", "--repeats", "1", "--output", str(output)]
    )
    result = read(output)
    assert result["machine"]["relevant_flags"] is not None
    for task in ("textcat", "ner"):
        entry = result["tasks"][task]
        for batch in ("1", str(entry["default_batch"])):
            assert set(entry["batches"][batch]) == set(result["systems"])
            assert entry["batches"][batch]["plain"]["ratio_to_plain"] == 1.0
        assert entry["scores"]["pipeline"]["largest_cats_difference_to_training_form"] < 1e-4
        assert entry["scores"]["pipeline"]["entities_identical_to_training_form"]
        assert all(rss > 0 for rss in entry["peak_rss_gb"].values())


def test_the_project_benchmark_sees_uncommitted_changes(tmp_path):
    import subprocess

    import bench_project

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "project.yml").write_text("title: x\n")
    (tmp_path / "untracked.txt").write_text("not part of the project\n")
    git("add", "project.yml")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x")
    assert bench_project.uncommitted_changes(tmp_path) == []
    (tmp_path / "project.yml").write_text("title: y\n")
    assert bench_project.uncommitted_changes(tmp_path) == ["project.yml"]


def test_the_project_benchmark_clones_into_a_new_folder_each_time(tmp_path, monkeypatch):
    """--workdir DIR once failed on a second run (git refused to clone into
    DIR/project): each run now gets a fresh folder, and earlier ones are kept."""
    import subprocess

    import bench_project

    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)

    git("init", "-q")
    (repo / "project.yml").write_text("title: x\n")
    git("add", "project.yml")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x")
    workdir = tmp_path / "runs"
    monkeypatch.chdir(tmp_path)
    first = bench_project.clone_head(repo, Path("runs"))  # relative, as typed on the command line
    (first / "metrics").mkdir()  # what a finished run leaves
    second = bench_project.clone_head(repo, workdir)
    assert first != second and first.parent == second.parent == workdir.resolve()
    assert (first / "metrics").is_dir() and (second / "project.yml").read_text() == "title: x\n"


def test_the_machine_record_counts_the_cores_not_the_threads_a_run_was_given(monkeypatch):
    """Runs are started with OMP_NUM_THREADS=1, which `nproc` obeys: the
    record once said "1 cores" of a 2-core machine."""
    import os

    from _common import machine_info

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert machine_info()["nproc"] == str(len(os.sched_getaffinity(0)))


def test_every_run_project_yml_asks_the_accuracy_benchmark_for_exists():
    """A misspelt system in benchmark-accuracy would fail only hours into the run."""
    import shlex

    import srsly

    project = srsly.read_yaml(BENCHMARKS.parent / "project.yml")
    [command] = [c for c in project["commands"] if c["name"] == "benchmark-accuracy"]
    runs = []
    for line in command["script"]:
        words = shlex.split(line)
        if "benchmarks/bench_accuracy.py" in words:
            runs += words[words.index("--runs") + 1].split(",")
    assert len(runs) > 20
    for run in runs:
        task, system = run.split("/")
        assert task in bench_accuracy.TASKS and system in bench_accuracy.SYSTEMS, run
        assert bench_accuracy.TASKS[task].kind in bench_accuracy.SYSTEMS[system].configs, run


def test_a_recipe_is_the_same_whether_its_paths_were_given_relative_or_absolute():
    """project.yml passes assets/... and the defaults are absolute: the same base
    model and data at either spelling is one recipe (its seeds are summarized together)."""
    def row(model, seed):
        return {"task": "textcat", "system": "gemma3", "seed": seed, "status": "ok", "config": "configs/textcat-causal.cfg",
                "config_sha256": "abc", "max_steps": 300, "dev_curve": [[0, 0.0], [300, 88.0 + seed]],
                "test": {"macro_f1": 84.0 + seed},
                "overrides": {"paths.model": model, "paths.train": "corpus/benchmark/rotten_tomatoes/train.spacy", "system.seed": seed}}

    absolute = str(bench_accuracy.ROOT / "assets" / "gemma3-270m")
    rows = [row(absolute, 0), row("assets/gemma3-270m", 1)]
    assert bench_accuracy.recipe_of(rows[0]) == bench_accuracy.recipe_of(rows[1])
    assert [s["seeds"] for s in bench_accuracy.seed_summary(rows)] == [[0, 1]]
    assert bench_accuracy.recipe_of(rows[0]) != bench_accuracy.recipe_of(row("assets/smollm2-135m", 1))
