"""What checking a base's identity adds to loading it (run on demand).

`spacy.load` reads the identity of the base (config.json, the safetensors
headers and 4 x 64 bytes of every tensor, see spacy_lsllama/decoder/identity.py) before
loading it, and `_build` asks for it again, which the per-file cache answers.
This script times both reads (cache cleared before the first) against
`AutoModel.from_pretrained` of the same folder (which memory-maps the weights
and reads them lazily) and against `spacy.load` of a transformer-only pipeline
on it (which includes both reads), interleaved, in one process, with the files
in the page cache for all, and reports the median ratios. It
also reports how much the identity reads, and what that comes to for
LLaMA-2-7B (291 tensors in 2 safetensors shards, 13.5 GB).

    python benchmarks/base_identity_cost.py --model assets/smollm2-135m
"""
import gc
import json
import os
import statistics
import struct
import tempfile
import time
from pathlib import Path

import typer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# LLaMA-2-7B: embeddings, 32 blocks of 9 tensors (7 linear layers, 2 norms),
# the final norm and the LM head; 2 shards.
LLAMA2_7B_TENSORS = 1 + 32 * 9 + 1 + 1
LLAMA2_7B_SHARDS = 2
PAGE = 4096


def header_bytes(paths) -> int:
    total = 0
    for path in paths:
        with open(path, "rb") as file:
            total += 8 + struct.unpack("<Q", file.read(8))[0]
    return total


def save_pipeline(model: str, folder: Path) -> None:
    """A transformer-only pipeline on `model`, with fresh adapters."""
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {"@architectures": "spacy-lsllama.LlamaTransformer.v1", "name": model}})
    nlp.initialize()
    nlp.to_disk(folder)
    del nlp
    gc.collect()


def main(
    model: str = typer.Option("assets/smollm2-135m", help="Base model folder (safetensors)."),
    repeats: int = typer.Option(5, help="Interleaved measurements of each."),
    output: Path = typer.Option(None, help="Write the figures as JSON here too."),
):
    import torch
    from transformers import AutoModel

    from spacy_lsllama.decoder import identity

    location = identity.locate_base(model)
    _, paths = identity.weight_files(location)

    def read_identity_twice() -> None:
        identity._safetensors_entries.cache_clear()
        identity._pickle_file_entries.cache_clear()
        identity.read_base_identity(location)
        identity.read_base_identity(location)  # as _build asks again

    def load_base() -> None:
        AutoModel.from_pretrained(location.where, torch_dtype=torch.float32)

    folder = Path(tempfile.mkdtemp()) / "pipeline"
    save_pipeline(location.where, folder)

    def load_pipeline() -> None:
        import spacy

        nlp = spacy.load(folder)
        del nlp
        gc.collect()  # no live pipeline may lend its base to the next load

    runs = [("identity", read_identity_twice), ("load", load_base), ("spacy.load", load_pipeline)]
    times = {name: [] for name, _ in runs}
    for _, run in runs:
        run()  # warm the page cache for all
    for i in range(repeats):
        for name, run in runs[i % len(runs):] + runs[: i % len(runs)]:
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    identity_times, load_times = times["identity"], times["load"]
    pipeline_median = statistics.median(times["spacy.load"])
    found = identity.read_base_identity(location)
    n_tensors = len(found.weights.tensors)
    headers = header_bytes(paths)
    samples = identity.SAMPLES_PER_TENSOR * identity.SAMPLE_BYTES
    header_per_tensor = headers / n_tensors
    result = {
        "model": model,
        "load_s_median": statistics.median(load_times),
        "identity_s_median": statistics.median(identity_times),
        "ratio_identity_to_load": statistics.median(identity_times) / statistics.median(load_times),
        "spacy_load_s_median": pipeline_median,
        "ratio_identity_to_spacy_load": statistics.median(identity_times) / pipeline_median,
        "tensors": n_tensors,
        "weight_bytes": sum(path.stat().st_size for path in paths),
        "identity_bytes_read": headers + n_tensors * samples,
        "llama2_7b_estimate": {
            "tensors": LLAMA2_7B_TENSORS,
            "header_bytes": round(header_per_tensor * LLAMA2_7B_TENSORS),
            "sampled_bytes": LLAMA2_7B_TENSORS * samples,
            "max_page_bytes": LLAMA2_7B_TENSORS * identity.SAMPLES_PER_TENSOR * PAGE
            + round(header_per_tensor * LLAMA2_7B_TENSORS),
            "seeks": LLAMA2_7B_TENSORS * identity.SAMPLES_PER_TENSOR + LLAMA2_7B_SHARDS,
        },
        "repeats": repeats,
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, indent=2))
    if output is not None:
        output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    typer.run(main)
