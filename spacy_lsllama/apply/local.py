"""The one-machine runner: the shards one after the other in this process.

Like `spacy apply`, with a progress bar (tqdm, on stderr) over the docs still
to do. Stopping it at any point (Ctrl-C, a crash, `stop_after_shards`) leaves
complete shards and nothing else; the next run goes on from there.
"""
import sys
import time
from typing import List, Optional

from .annotate import Annotation, ShardResult, annotate_shard
from .output import OutputFolder
from .readers import Shard


def run_local(
    nlp,
    shards: List[Shard],
    output: OutputFolder,
    annotation: Annotation,
    *,
    progress: bool = False,
    stop_after_shards: Optional[int] = None,
) -> List[ShardResult]:
    """Annotate `shards` (the ones not complete yet) with the loaded `nlp`."""
    from tqdm import tqdm

    results: List[ShardResult] = []
    bar = tqdm(total=sum(shard.size for shard in shards), unit="doc", disable=not progress, file=sys.stderr, smoothing=0.1)
    try:
        for shard in shards:
            if stop_after_shards is not None and len(results) >= stop_after_shards:
                break
            results.append(
                annotate_shard(nlp, shard, output, annotation, after_batch=bar.update)
            )
    finally:
        bar.close()
    return results


def timed_load(pipeline, base):
    """The loaded pipeline and the seconds it took (a Language passes through)."""
    from spacy.language import Language

    from .pipeline import load_pipeline

    if isinstance(pipeline, Language):
        return pipeline, 0.0
    started = time.perf_counter()
    nlp = load_pipeline(pipeline, base=base)
    return nlp, time.perf_counter() - started
