"""`apply_pipeline`: plan the shards, prepare the output folder, run them.

The same job runs on one machine (local.py) or on a Ray cluster
(ray_runner.py); only the runner differs, so both write the same files.
"""
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from ..decoder.defaults import PIPE_BATCH_SIZE
from .annotate import Annotation
from .errors import ApplyError
from .local import run_local, timed_load
from .output import build_manifest, output_folder
from .pipeline import pipeline_stamp
from .ray_options import RayOptions
from .readers import plan_shards, require_pyarrow_parquet
from .writers import SUFFIXES


@dataclass(frozen=True)
class ApplyResult:
    """What one run did. `seconds` is the time spent annotating: on Ray it
    includes the actors' start-up (imports and pipeline loads, also given as
    `load_seconds`, the slowest actor's) but not the cluster's
    (`startup_seconds`); on one machine it excludes loading the pipeline."""

    output: str
    docs: int
    words: int
    seconds: float
    shards_written: int  # by this run
    shards_skipped: int  # complete before this run
    shards_total: int
    actors: int  # Ray actors (0: this process)
    startup_seconds: float
    load_seconds: float

    @property
    def complete(self) -> bool:
        return self.shards_written + self.shards_skipped == self.shards_total

    @property
    def docs_per_second(self) -> float:
        return self.docs / self.seconds if self.seconds > 0 else 0.0

    @property
    def words_per_second(self) -> float:
        return self.words / self.seconds if self.seconds > 0 else 0.0


def apply_pipeline(
    pipeline: Any,
    source: Union[str, Path],
    output: Union[str, Path],
    *,
    text_key: str = "text",
    id_key: Optional[str] = "id",
    input_format: str = "auto",
    output_format: str = "jsonl",
    docbin: bool = False,
    shard_size: int = 1000,
    batch_size: int = PIPE_BATCH_SIZE,
    base: Optional[Union[str, Path]] = None,
    gpu_id: int = -1,
    ray: Union[bool, RayOptions] = False,
    progress: bool = False,
    stop_after_shards: Optional[int] = None,
) -> ApplyResult:
    """Run `pipeline` (a path, an installed package name, or, on one machine, a
    loaded Language) over `source` (a file or a folder) and write the rows to
    the folder `output`, shard by shard; a rerun finishes an interrupted run.

    With `ray=True`, or `ray=RayOptions(...)` (the cluster's address, the
    actors and what each reserves), the shards run on a Ray cluster. `base`
    points the pipeline to another copy of its base model, in this process or
    in every actor. `stop_after_shards` stops after that many shards (for
    tests and trials); `progress` shows a progress bar on stderr."""
    if output_format not in SUFFIXES:
        raise ApplyError(f"Unknown output format {output_format!r}: use {' or '.join(SUFFIXES)}.")
    if output_format == "parquet":
        require_pyarrow_parquet("write Parquet output")
    if batch_size < 1:
        raise ApplyError(f"The batch size must be at least 1 (got {batch_size}).")
    if ray is True:
        ray = RayOptions()
    on_ray = isinstance(ray, RayOptions)
    if on_ray:
        from .ray_runner import import_ray

        import_ray()
        pipeline = _actor_path(pipeline)
    base = None if base is None else _absolute_if_here(base)
    id_key = id_key or None
    source, output = Path(source), Path(output)
    if source.is_dir() and (output.resolve() == source.resolve() or source.resolve() in output.resolve().parents):
        raise ApplyError(f"Write the output outside the input folder {source}: a rerun would read it as input.")

    shards = plan_shards(source, shard_size=shard_size, text_key=text_key, id_key=id_key, input_format=input_format)
    manifest = build_manifest(
        pipeline=pipeline_stamp(pipeline), source=source, shards=shards, input_format=input_format,
        text_key=text_key, id_key=id_key, shard_size=shard_size, output_format=output_format, docbin=docbin,
    )
    annotation = Annotation(text_key=text_key, id_key=id_key, batch_size=batch_size)
    folder = output_folder(output, manifest)
    folder.prepare(manifest)
    pending = [shard for shard in shards if not folder.is_complete(shard.index)]
    skipped = len(shards) - len(pending)

    if on_ray:
        from .ray_runner import run_ray

        started = time.perf_counter()
        run = run_ray(
            pipeline, pending, folder, annotation, ray, base=base, progress=progress, stop_after_shards=stop_after_shards
        )
        seconds = time.perf_counter() - started - run.startup_seconds
        results, actor_count, startup, load = run.results, run.actors, run.startup_seconds, run.load_seconds
    else:
        results, seconds, load = [], 0.0, 0.0
        if pending:
            if gpu_id >= 0:
                import spacy

                spacy.require_gpu(gpu_id)
            nlp, load = timed_load(pipeline, base)
            started = time.perf_counter()
            results = run_local(
                nlp, pending, folder, annotation, progress=progress, stop_after_shards=stop_after_shards,
            )
            seconds = time.perf_counter() - started
        actor_count, startup = 0, 0.0
    return ApplyResult(
        output=folder.path,
        docs=sum(result.docs for result in results),
        words=sum(result.words for result in results),
        seconds=seconds,
        shards_written=len(results),
        shards_skipped=skipped,
        shards_total=len(shards),
        actors=actor_count,
        startup_seconds=startup,
        load_seconds=load,
    )


def _actor_path(pipeline: Any) -> str:
    """The pipeline as actors load it: an absolute path (every node must see
    the same path) or a package name. A loaded pipeline is refused: actors
    load their own, never a copy pickled from here."""
    from spacy.language import Language

    if isinstance(pipeline, Language):
        raise ApplyError(
            "On Ray every actor loads the pipeline itself: pass its path (or package name), not a loaded pipeline."
        )
    return str(Path(pipeline).resolve()) if Path(pipeline).exists() else str(pipeline)


def _absolute_if_here(base: Union[str, Path]) -> str:
    """An existing relative base path made absolute (actors run in other
    folders); anything else (a hub id, a path on other nodes) as given."""
    return str(Path(base).resolve()) if Path(base).exists() else str(base)
