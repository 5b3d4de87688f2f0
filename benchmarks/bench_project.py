"""The project as a newcomer runs it: `python -m spacy project run all` in a
fresh clone of this repository's committed HEAD (no assets, corpus, training
or metrics: an empty project, as the README's first command leaves it), timed
from start to end, with the test scores its report writes.

The result, benchmarks/results/project.json, holds the commit, the machine,
the wall time and metrics/summary.json of the run (scripts/report.py);
benchmarks/render_docs.py renders it into the README and docs/project.md, so
the project's own scores there are never copied by hand.

    OMP_NUM_THREADS=2 python benchmarks/bench_project.py --output benchmarks/results/project.json

It refuses a working tree with uncommitted changes to tracked files: the
figures must be those of a commit. Run it alone: training is CPU-bound.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine_info, write_output  # noqa: E402


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def uncommitted_changes(root: Path = ROOT) -> List[str]:
    """The tracked files of `root` that differ from HEAD."""
    return git("diff", "--name-only", "HEAD", cwd=root).splitlines()


def clone_head(root: Path, workdir: Path) -> Path:
    """A clone of `root`'s committed HEAD in a new folder under `workdir`
    (workdir/project-XXXX): a second run never meets the first one's files,
    and the first one's are kept."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    clone = Path(tempfile.mkdtemp(prefix="project-", dir=workdir))
    git("clone", "--quiet", str(root), str(clone), cwd=workdir)
    return clone


def run_project(clone: Path, log: Path, env: Dict[str, str]) -> Dict[str, Any]:
    """`spacy project run all` in `clone`, its output in `log`: exit code and wall seconds."""
    start = time.perf_counter()
    with log.open("w", encoding="utf8") as out:
        process = subprocess.run(
            [sys.executable, "-m", "spacy", "project", "run", "all"], cwd=clone, stdout=out, stderr=subprocess.STDOUT, env=env
        )
    return {"returncode": process.returncode, "seconds": round(time.perf_counter() - start, 1)}


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help="where to clone, in a new folder each run (default: a temporary folder, removed after)")
    parser.add_argument("--output", help="the JSON file to write (e.g. benchmarks/results/project.json)")
    args = parser.parse_args(argv)
    changed = uncommitted_changes()
    if changed:
        parser.error(f"uncommitted changes to {', '.join(changed[:5])}: commit them, the figures must be a commit's")
    commit = git("rev-parse", "HEAD")
    with tempfile.TemporaryDirectory() as temporary:
        clone = clone_head(ROOT, Path(args.workdir or temporary))
        log = clone.with_name(clone.name + ".log")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        print(f"spacy project run all in {clone} (commit {commit[:10]})", flush=True)
        run = run_project(clone, log, env)
        if run["returncode"] != 0:
            tail = log.read_text(encoding="utf8").splitlines()[-20:]
            raise SystemExit(f"spacy project run all failed ({run['returncode']}):\n" + "\n".join(tail))
        summary = json.loads((clone / "metrics" / "summary.json").read_text(encoding="utf8"))
    result = {
        "benchmark": "project",
        "commit": commit,
        "machine": machine_info(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "command": "python -m spacy project run all",
        "from": "a fresh clone: no assets, corpus, training or metrics",
        "wall_seconds": run["seconds"],
        "summary": summary,
    }
    write_output(args.output, result)
    return result


if __name__ == "__main__":
    main()
