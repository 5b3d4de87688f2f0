"""The docs' benchmark tables are the result files, rendered (benchmarks/render_docs.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import render_docs  # noqa: E402


def test_every_benchmark_table_in_the_docs_is_rendered_from_its_result_file():
    assert render_docs.main(["--check"]) == 0, "run python benchmarks/render_docs.py"
