"""`apply`: a trained pipeline over a corpus, on one machine or on Ray Data
(spacy_lsllama/apply, spacy_lsllama/cli/apply.py).

Every run is checked against `nlp.pipe` on the same inputs (entities exact,
scores within 1e-5) and for exactly-once output: every input row appears once,
joinable by its id. The Ray tests share one local cluster (2 CPUs) for the
whole module; they are skipped where Ray is not installed (CI installs it).
"""
import json
import random
import re
import shutil
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import spacy
from spacy.tokens import DocBin
from typer.testing import CliRunner

from pipelines import assert_same_predictions, train_pipeline
from spacy_lsllama.apply import ApplyError, RayOptions, apply_pipeline, read_results
from spacy_lsllama.cli import app

PLACES = ["London", "Paris", "Rome", "Berlin", "Zürich", "São Paulo"]
WORDS = ["I", "like", "hate", "the", "food", "in", "a", "lot", "trip", "to", "was", "bad", "great", "café", "really"]


def corpus(size: int, seed: int = 0) -> List[str]:
    """Short, varied texts with a place in most of them (and a few empty ones)."""
    rng = random.Random(seed)
    texts = []
    for i in range(size):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 7))]
        if rng.random() < 0.7:
            words.insert(rng.randint(0, len(words)), rng.choice(PLACES))
        texts.append("" if i % 97 == 13 else " ".join(words))
    return texts


def expected_predictions(nlp, inputs) -> List:
    return [
        (doc.cats, [(e.start_char, e.end_char, e.label_) for e in doc.ents])
        for doc in nlp.pipe(inputs, batch_size=16)
    ]


def row_predictions(rows: List[Dict]) -> List:
    return [(row["cats"], [(e["start"], e["end"], e["label"]) for e in row["ents"]]) for row in rows]


def write_lines(path: Path, lines: List[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def write_jsonl(path: Path, records: List[Dict]) -> Path:
    return write_lines(path, [json.dumps(record, ensure_ascii=False) for record in records])


def write_parquet(path: Path, columns: Dict[str, List]) -> Path:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    # small row groups, so shards start and end inside them
    pq.write_table(pa.table(columns), path, row_group_size=7)
    return path


def write_docbin(path: Path, texts: List[str]) -> Path:
    blank = spacy.blank("en")
    DocBin(docs=[blank.make_doc(text) for text in texts]).to_disk(path)
    return path


@pytest.fixture(scope="module")
def pipeline_dir(tiny_model_dirs, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("apply") / "pipeline"
    train_pipeline(tiny_model_dirs["metaspace"], steps=3).to_disk(path)
    return path


@pytest.fixture(scope="module")
def nlp(pipeline_dir):
    return spacy.load(pipeline_dir)


@pytest.fixture(scope="module")
def small_texts() -> List[str]:
    return corpus(60, seed=1)


@pytest.fixture(scope="module")
def small_expected(nlp, small_texts):
    return expected_predictions(nlp, small_texts)


# One machine: every input format ---------------------------------------------------


def test_plain_text_one_doc_per_line(nlp, small_texts, small_expected, tmp_path):
    source = write_lines(tmp_path / "corpus.txt", small_texts)
    result = apply_pipeline(nlp, source, tmp_path / "out", shard_size=16, batch_size=8)
    rows = read_results(tmp_path / "out")
    assert [row["id"] for row in rows] == list(range(1, len(small_texts) + 1))  # line numbers
    assert [row["text"] for row in rows] == small_texts
    assert {row["source"] for row in rows} == {"corpus.txt"}
    assert_same_predictions(small_expected, row_predictions(rows))
    assert (result.docs, result.shards_written, result.shards_skipped) == (60, 4, 0)
    assert result.words == sum(len(doc) for doc in nlp.pipe(small_texts))


def test_jsonl_with_text_and_id_keys_and_parquet_output(nlp, small_texts, small_expected, tmp_path):
    pytest.importorskip("pyarrow")
    records = [{"body": text, "doc_id": f"d{i:03d}", "other": i} for i, text in enumerate(small_texts)]
    source = write_jsonl(tmp_path / "corpus.jsonl", records)
    apply_pipeline(
        nlp, source, tmp_path / "out", text_key="body", id_key="doc_id", output_format="parquet", shard_size=25
    )
    assert sorted(path.name for path in (tmp_path / "out").glob("*.parquet")) == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"
    ]
    rows = read_results(tmp_path / "out")
    assert [row["id"] for row in rows] == [record["doc_id"] for record in records]
    assert_same_predictions(small_expected, row_predictions(rows))


def test_jsonl_without_ids_uses_line_numbers_and_skips_blank_lines(nlp, small_texts, small_expected, tmp_path):
    lines = [json.dumps({"text": text}) for text in small_texts]
    lines.insert(5, "   ")
    source = write_lines(tmp_path / "corpus.jsonl", lines)
    apply_pipeline(nlp, source, tmp_path / "out", shard_size=20)
    rows = read_results(tmp_path / "out")
    assert [row["id"] for row in rows] == [*range(1, 6), *range(7, len(lines) + 1)]
    assert_same_predictions(small_expected, row_predictions(rows))


def test_parquet_input_row_numbers_and_id_column(nlp, small_texts, small_expected, tmp_path):
    plain = write_parquet(tmp_path / "plain.parquet", {"text": small_texts})
    apply_pipeline(nlp, plain, tmp_path / "out-plain", shard_size=10, output_format="parquet")
    rows = read_results(tmp_path / "out-plain")
    assert [row["id"] for row in rows] == list(range(len(small_texts)))  # row numbers
    assert_same_predictions(small_expected, row_predictions(rows))

    ids = [1000 + i for i in range(len(small_texts))]
    with_ids = write_parquet(tmp_path / "ids.parquet", {"id": ids, "text": small_texts})
    apply_pipeline(nlp, with_ids, tmp_path / "out-ids", shard_size=10)
    rows = read_results(tmp_path / "out-ids")
    assert [row["id"] for row in rows] == ids
    assert_same_predictions(small_expected, row_predictions(rows))


def test_docbin_input_and_docbin_shards(nlp, small_texts, small_expected, tmp_path):
    source = write_docbin(tmp_path / "corpus.spacy", small_texts)
    apply_pipeline(nlp, source, tmp_path / "out", shard_size=16, docbin=True)
    rows = read_results(tmp_path / "out")
    assert [row["id"] for row in rows] == list(range(len(small_texts)))
    assert_same_predictions(small_expected, row_predictions(rows))
    shards = sorted((tmp_path / "out" / "docs").glob("*.spacy"))
    assert [path.name for path in shards] == [f"part-{i:05d}.spacy" for i in range(4)]
    docs = [doc for path in shards for doc in DocBin().from_disk(path).get_docs(nlp.vocab)]
    assert_same_predictions(
        small_expected, [(doc.cats, [(e.start_char, e.end_char, e.label_) for e in doc.ents]) for doc in docs]
    )


def test_a_folder_of_mixed_files(nlp, small_texts, small_expected, tmp_path):
    pytest.importorskip("pyarrow")
    folder = tmp_path / "corpus"
    (folder / "nested").mkdir(parents=True)
    parts = [small_texts[:15], small_texts[15:30], small_texts[30:45], small_texts[45:]]
    write_lines(folder / "a.txt", parts[0])
    write_jsonl(folder / "b.jsonl", [{"text": text} for text in parts[1]])
    write_parquet(folder / "nested" / "c.parquet", {"text": parts[2]})
    write_docbin(folder / "nested" / "d.spacy", parts[3])
    (folder / "README.md").write_text("not a corpus file")
    (folder / ".hidden.txt").write_text("skipped\n")
    apply_pipeline(nlp, folder, tmp_path / "out", shard_size=10)
    rows = read_results(tmp_path / "out")
    assert [row["source"] for row in rows] == ["a.txt"] * 15 + ["b.jsonl"] * 15 + ["nested/c.parquet"] * 15 + ["nested/d.spacy"] * 15
    assert len({(row["source"], row["id"]) for row in rows}) == 60  # joinable by (source, id)
    assert_same_predictions(small_expected, row_predictions(rows))


def test_empty_texts_give_valid_empty_results(nlp, tmp_path):
    source = write_jsonl(tmp_path / "corpus.jsonl", [{"text": ""}, {"text": "I like London"}, {"text": ""}])
    apply_pipeline(nlp, source, tmp_path / "out")
    rows = read_results(tmp_path / "out")
    assert [row["text"] for row in rows] == ["", "I like London", ""]
    assert rows[0]["ents"] == [] and rows[2]["ents"] == []
    assert_same_predictions(expected_predictions(nlp, ["", "I like London", ""]), row_predictions(rows))
    assert set(rows[0]["cats"]) == {"POS", "NEG"}


# Bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,content,expected",
    [
        ("missing.jsonl", b'{"text": "a"}\n{"text": "b"}\n{"body": "c"}\n', ["missing.jsonl", "line 3", "'text'", "body"]),
        ("latin1.txt", "fine\ncaf\xe9\n".encode("latin-1"), ["latin1.txt", "line 2", "UTF-8"]),
        ("latin1.jsonl", '{"text": "ok"}\n{"text": "caf\xe9"}\n'.encode("latin-1"), ["latin1.jsonl", "line 2", "UTF-8"]),
        ("broken.jsonl", b'{"text": "a"}\n{"text": \n', ["broken.jsonl", "line 2", "JSON"]),
        ("number.jsonl", b'{"text": "a"}\n{"text": 3}\n', ["number.jsonl", "line 2", "string"]),
        ("noid.jsonl", b'{"text": "a", "id": 1}\n{"text": "b"}\n', ["noid.jsonl", "line 2", "'id'"]),
        ("empty.txt", b"", ["empty.txt", "empty"]),
        ("blank.jsonl", b"\n\n", ["blank.jsonl", "no records"]),
        ("corpus.csv", b"text\na\n", ["corpus.csv", "--input-format"]),
    ],
)
def test_bad_input_names_the_file_and_line(nlp, tmp_path, name, content, expected):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ApplyError) as error:
        apply_pipeline(nlp, tmp_path / name, tmp_path / "out")
    for part in expected:
        assert part in str(error.value)


def test_bad_parquet_input_names_the_file_and_row(nlp, tmp_path):
    pytest.importorskip("pyarrow")
    write_parquet(tmp_path / "other.parquet", {"body": ["a", "b"]})
    with pytest.raises(ApplyError, match=r"other\.parquet.*no column 'text'.*body"):
        apply_pipeline(nlp, tmp_path / "other.parquet", tmp_path / "out")
    write_parquet(tmp_path / "null.parquet", {"text": ["a", "b", None]})
    with pytest.raises(ApplyError, match=r"null\.parquet, row 2"):
        apply_pipeline(nlp, tmp_path / "null.parquet", tmp_path / "out2")


def test_missing_input_and_empty_folder(nlp, tmp_path):
    with pytest.raises(ApplyError, match="does not exist"):
        apply_pipeline(nlp, tmp_path / "nothing.txt", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ApplyError, match="no input files"):
        apply_pipeline(nlp, tmp_path / "empty", tmp_path / "out")


def test_parquet_without_pyarrow_says_what_to_install(nlp, tmp_path, monkeypatch):
    source = write_lines(tmp_path / "corpus.txt", ["a"])
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ApplyError, match=r"pip install pyarrow"):
        apply_pipeline(nlp, source, tmp_path / "out", output_format="parquet")


def test_ray_without_ray_installed_says_what_to_install(pipeline_dir, tmp_path, monkeypatch):
    source = write_lines(tmp_path / "corpus.txt", ["a"])
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ApplyError, match=r'pip install "spacy-lsllama\[ray\]"'):
        apply_pipeline(pipeline_dir, source, tmp_path / "out", ray=True)


# Exactly once, resuming ----------------------------------------------------------------


def shard_stamps(output: Path) -> Dict[str, tuple]:
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in output.glob("part-*")}


def test_an_interrupted_local_run_resumes_without_redoing_shards(nlp, small_texts, small_expected, tmp_path):
    source = write_lines(tmp_path / "corpus.txt", small_texts)
    first = apply_pipeline(nlp, source, tmp_path / "out", shard_size=10, stop_after_shards=2)
    assert first.shards_written == 2
    with pytest.raises(ApplyError, match="incomplete"):
        read_results(tmp_path / "out")
    done = shard_stamps(tmp_path / "out")
    assert sorted(done) == ["part-00000.jsonl", "part-00001.jsonl"]
    (tmp_path / "out" / ".part-00002.jsonl.tmp-leftover").write_text("half a shard")  # a killed write
    second = apply_pipeline(nlp, source, tmp_path / "out", shard_size=10)
    assert (second.shards_written, second.shards_skipped, second.docs) == (4, 2, 40)
    assert {name: stamp for name, stamp in shard_stamps(tmp_path / "out").items() if name in done} == done
    assert not list((tmp_path / "out").glob(".*tmp*"))
    assert_same_predictions(small_expected, row_predictions(read_results(tmp_path / "out")))


def test_a_rerun_with_other_settings_or_inputs_is_refused(nlp, small_texts, tmp_path):
    source = write_lines(tmp_path / "corpus.txt", small_texts)
    apply_pipeline(nlp, source, tmp_path / "out", shard_size=10, stop_after_shards=1)
    with pytest.raises(ApplyError, match="shard size"):
        apply_pipeline(nlp, source, tmp_path / "out", shard_size=20)
    write_lines(source, small_texts[:-1])
    with pytest.raises(ApplyError, match="input"):
        apply_pipeline(nlp, source, tmp_path / "out", shard_size=10)


# The command ----------------------------------------------------------------------------


def test_command_reports_progress_and_words_per_second(pipeline_dir, small_texts, tmp_path):
    source = write_lines(tmp_path / "corpus.txt", small_texts[:20])
    result = CliRunner().invoke(app, ["apply", str(pipeline_dir), str(source), str(tmp_path / "out"), "--shard-size", "8"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "20 docs" in output and "words/s" in output
    assert len(read_results(tmp_path / "out")) == 20
    again = CliRunner().invoke(app, ["apply", str(pipeline_dir), str(source), str(tmp_path / "out"), "--shard-size", "8"])
    assert again.exit_code == 0 and "3 shards already complete" in " ".join(again.output.split())


def test_command_reports_bad_input_without_a_traceback(pipeline_dir, tmp_path):
    (tmp_path / "bad.jsonl").write_bytes(b'{"body": "x"}\n')
    result = CliRunner().invoke(app, ["apply", str(pipeline_dir), str(tmp_path / "bad.jsonl"), str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "bad.jsonl, line 1" in " ".join(result.output.split())
    assert "Traceback" not in result.output


@pytest.mark.parametrize("flags", [["--actors", "2"], ["--cpus-per-actor", "2"], ["--gpus-per-actor", "1"]])
def test_command_refuses_actor_pool_flags_without_ray(pipeline_dir, small_texts, tmp_path, flags):
    """They would be ignored in this process: the user meant --ray."""
    source = write_lines(tmp_path / "corpus.txt", small_texts[:4])
    result = CliRunner().invoke(app, ["apply", str(pipeline_dir), str(source), str(tmp_path / "out"), *flags])
    assert result.exit_code == 1
    assert f"{flags[0]} size the Ray actor pool: add --ray" in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("options", [{"actors": 0}, {"cpus_per_actor": 0}, {"gpus_per_actor": -1}])
def test_ray_options_refuse_an_empty_pool(options):
    with pytest.raises(ApplyError, match="must be"):
        RayOptions(**options)


# Ray Data --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster (2 CPUs) for every Ray test of the module."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def big_corpus(nlp, tmp_path_factory):
    texts = corpus(2000, seed=2)
    folder = tmp_path_factory.mktemp("big")
    write_jsonl(folder / "corpus.jsonl", [{"id": f"doc-{i}", "text": text} for i, text in enumerate(texts)])
    return folder / "corpus.jsonl", texts, expected_predictions(nlp, texts)


def assert_exactly_once(rows: List[Dict], ids: List) -> None:
    assert sorted(row["id"] for row in rows) == sorted(ids)
    assert len({row["id"] for row in rows}) == len(rows)


@pytest.mark.slow
def test_ray_two_actors_equal_nlp_pipe(ray_cluster, pipeline_dir, big_corpus, tmp_path):
    source, texts, expected = big_corpus
    result = apply_pipeline(
        pipeline_dir, source, tmp_path / "out", ray=RayOptions(actors=2), batch_size=32, shard_size=250,
        output_format="parquet",
    )
    assert (result.docs, result.shards_written, result.actors) == (2000, 8, 2)
    rows = read_results(tmp_path / "out")
    assert_exactly_once(rows, [f"doc-{i}" for i in range(2000)])
    assert [row["text"] for row in rows] == texts
    assert_same_predictions(expected, row_predictions(rows))


@pytest.mark.slow
def test_ray_actor_killed_mid_batch_is_restarted_and_every_input_is_written_once(
    ray_cluster, pipeline_dir, tiny_model_dirs, small_texts, small_expected, tmp_path, monkeypatch
):
    texts, expected = small_texts * 4, small_expected * 4
    source = write_lines(tmp_path / "corpus.txt", texts)
    marker = tmp_path / "killed"
    # The first actor to finish its 3rd batch of docs exits mid-shard (os._exit),
    # once: the marker file keeps the restarted actor alive.
    monkeypatch.setenv("SPACY_LSLLAMA_TEST_EXIT_AFTER_BATCHES", f"3:{marker}")
    base = shutil.copytree(tiny_model_dirs["metaspace"], tmp_path / "elsewhere" / "base")  # --base in the actor
    result = apply_pipeline(
        pipeline_dir, source, tmp_path / "out", ray=RayOptions(actors=2), batch_size=4, shard_size=20, base=base
    )
    assert marker.exists(), "no actor was killed"
    assert (result.docs, result.shards_written) == (240, 12)
    rows = read_results(tmp_path / "out")
    assert_exactly_once(rows, list(range(1, 241)))
    assert_same_predictions(expected, row_predictions(rows))


@pytest.mark.slow
def test_ray_interrupted_run_resumes_without_redoing_shards(
    ray_cluster, pipeline_dir, small_texts, small_expected, tmp_path
):
    texts, expected = small_texts * 8, small_expected * 8
    source = write_lines(tmp_path / "corpus.txt", texts)
    first = apply_pipeline(
        pipeline_dir, source, tmp_path / "out", ray=RayOptions(actors=2), batch_size=8, shard_size=10, stop_after_shards=3
    )
    assert first.shards_written == 3
    # the actors may have completed more shards than the driver had counted when it stopped
    done = shard_stamps(tmp_path / "out")
    assert 3 <= len(done) < 48, len(done)
    # the command this time, as users run it
    second = CliRunner().invoke(
        app, ["apply", str(pipeline_dir), str(source), str(tmp_path / "out"), "--ray", "--actors", "2",
              "--batch-size", "8", "--shard-size", "10", "--no-progress"],
    )
    assert second.exit_code == 0, second.output
    report = " ".join(second.output.split())
    assert "Ray actor" in report and "words/s" in report
    written, skipped = map(int, re.search(r"(\d+) shards written to .*; (\d+) shards already complete", report).groups())
    assert skipped >= len(done) and written == 48 - skipped
    assert {name: stamp for name, stamp in shard_stamps(tmp_path / "out").items() if name in done} == done
    rows = read_results(tmp_path / "out")
    assert_exactly_once(rows, list(range(1, 481)))
    assert_same_predictions(expected, row_predictions(rows))


@pytest.mark.slow
def test_ray_missing_base_names_the_node(ray_cluster, pipeline_dir, tmp_path):
    source = write_lines(tmp_path / "corpus.txt", ["I like London"])
    with pytest.raises(ApplyError) as error:
        apply_pipeline(pipeline_dir, source, tmp_path / "out", ray=RayOptions(actors=1), base=tmp_path / "no-such-base")
    message = str(error.value)
    node = ray_cluster.get_runtime_context().get_node_id()
    assert "no-such-base" in message and node in message
    import socket

    assert socket.gethostname() in message


@pytest.mark.slow
def test_benchmark_script_runs(ray_cluster, pipeline_dir, tiny_model_dirs, tmp_path):
    """A smoke test of benchmarks/bench_apply.py on the tiny pipeline (one Ray
    system; ray_2 is the same code with two actors). No speed is asserted."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import bench_apply

    data = write_lines(tmp_path / "texts.txt", corpus(12, seed=3))
    result = bench_apply.main([
        "--pipelines", str(pipeline_dir), "--data", str(data), "--base", str(tiny_model_dirs["metaspace"]),
        "--n-docs", "12", "--batch-size", "4", "--shard-size", "4", "--systems", "nlp_pipe,apply,ray_1",
        "--output", str(tmp_path / "apply.json"),
    ])
    entry = result["pipelines"][str(pipeline_dir)]
    assert all(system["same_as_nlp_pipe"] for system in entry["systems"].values())
    assert entry["ratios"]["ray_1_over_nlp_pipe"] > 0 and entry["ratios"]["apply_over_nlp_pipe"] > 0
    assert json.loads((tmp_path / "apply.json").read_text())["cluster_startup_seconds"] >= 0
