"""`apply`: run a trained pipeline over a corpus, on one machine or on Ray Data.

    from spacy_lsllama.apply import apply_pipeline, read_results

    apply_pipeline("training/model-best", "corpus.jsonl", "annotated")          # this process
    apply_pipeline("training/model-best", "corpus/", "annotated", ray=True)     # a Ray cluster
    apply_pipeline(..., ray=RayOptions(address="ray://head:10001", actors=8))
    rows = read_results("annotated")   # [{"source", "id", "text", "ents", "cats"}, ...]

The modules, by responsibility:

    readers.py     input files and formats, shard planning, reading and checking one shard
    writers.py     output rows, JSONL/Parquet/DocBin files, atomic writes
    output.py      the output folder: one file per shard, the manifest, resuming
    pipeline.py    loading the pipeline, the --base override
    ray_options.py RayOptions: the cluster and the actor pool
    annotate.py    one shard: read, nlp.pipe, write (shared by both runners)
    local.py       the one-machine runner
    ray_runner.py  the Ray Data runner (actor pool, one pipeline per actor)
    jobs.py        apply_pipeline: plan, prepare, run

Ray is optional (`pip install "spacy-lsllama[ray]"`) and imported only when asked for.
"""
from .errors import ApplyError
from .jobs import ApplyResult, apply_pipeline
from .output import missing_shards, read_results
from .ray_options import RayOptions

__all__ = ["ApplyError", "ApplyResult", "RayOptions", "apply_pipeline", "missing_shards", "read_results"]
