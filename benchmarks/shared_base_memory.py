"""Memory saved when two pipelines share one base model (run on demand).

Builds two transformer pipelines (causal and bidirectional, as a textcat and
an NER pipeline would be) on the same base, once with `share_base = true` and
once with `share_base = false`, each configuration in its own subprocess, and
reports the resident memory after both are loaded, side by side.

    python benchmarks/shared_base_memory.py --model assets/smollm2-135m
"""
import json
import subprocess
import sys
from pathlib import Path

import typer

CHILD = """
import json, sys, psutil, spacy, spacy_lsllama
model, share = sys.argv[1], sys.argv[2] == "1"
process = psutil.Process()
before = process.memory_info().rss
pipelines = []
for bidirectional in (False, True):
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {
        "@architectures": "spacy-lsllama.LlamaTransformer.v1", "name": model,
        "bidirectional": bidirectional, "share_base": share}})
    nlp.initialize()
    nlp("warm up the pipeline")
    pipelines.append(nlp)
print(json.dumps({"rss_mb": (process.memory_info().rss - before) / 2**20}))
"""


def measure(model: str, share: bool) -> float:
    output = subprocess.run(
        [sys.executable, "-c", CHILD, model, "1" if share else "0"],
        capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])["rss_mb"]


def main(
    model: str = typer.Option("assets/smollm2-135m", help="Base model folder or hub id."),
    repeats: int = typer.Option(2, help="Measurements per configuration, interleaved."),
    output: Path = typer.Option(None, help="Write the figures as JSON here too."),
):
    shared, separate = [], []
    for _ in range(repeats):
        shared.append(measure(model, True))
        separate.append(measure(model, False))
    result = {
        "model": model,
        "two_pipelines_shared_mb": min(shared),
        "two_pipelines_separate_mb": min(separate),
        "ratio_shared_to_separate": min(shared) / min(separate),
    }
    print(json.dumps(result, indent=2))
    if output is not None:
        output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    typer.run(main)
