"""The Ray Data runner: shards spread over a pool of actors, one pipeline each.

The dataset holds one row per pending shard (a few plain fields: file, range,
byte offsets). `map_batches` hands one shard at a time to ShardAnnotator, a
callable class: Ray Data starts a fixed pool of `actors` of it, each with
`num_cpus` CPUs and `num_gpus` GPUs, and each loads the pipeline once, in its
`__init__`, from the pipeline's path; the pipeline is never pickled from the
driver. The actor reads the shard itself, runs `nlp.pipe` over it, writes the
shard's output atomically and returns one small row (docs, words, seconds), which
the driver uses for the progress bar and the summary. So only shard
descriptors and summaries travel through Ray; texts and results go straight
between storage and the actors. INPUT, OUTPUT and the pipeline must therefore
be at the same path on every node (one machine, or a shared filesystem); the
base model must be found on every node like `spacy.load` finds it, or at the
path given with `--base`.

Faults. Ray Data starts the actors with `max_restarts=-1` and
`max_task_retries=-1` (its defaults for actor pools, which this runner keeps):
an actor that dies (killed, out of memory, its node lost) is restarted, loads
the pipeline again, and the shards it was working on are run again. A shard's
output appears only when complete and is the same whichever attempt writes it
(output.py), so every input is written exactly once. A Python error (bad
input, a missing base) is not retried: it stops the run, and the driver
reports it as the ApplyError raised in the actor, naming the node.

Environment. The actors get the driver's SPACY_LSLLAMA_* variables (e.g.
SPACY_LSLLAMA_ACCEPT_BASE) and its HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE switches,
so they load the pipeline under the same rules. Where the Hugging Face cache
lives (HF_HOME) is a property of each node and is not forwarded.
"""
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from ..decoder.identity import why_a_path
from .annotate import Annotation, ShardResult, annotate_shard
from .errors import ApplyError, find_apply_error
from .output import OutputFolder
from .ray_options import RayOptions
from .readers import Shard

RAY_MISSING = 'Running on Ray needs Ray Data: pip install "spacy-lsllama[ray]" (it installs ray[data] 2.60).'
FORWARDED_PREFIX = "SPACY_LSLLAMA_"
FORWARDED = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# Test hook: "N:MARKER" makes the first actor that finishes its N-th batch of
# docs exit at once (os._exit, as if killed), mid-shard, unless MARKER exists;
# it creates MARKER first, so the restarted actor carries on.
EXIT_AFTER_BATCHES = "SPACY_LSLLAMA_TEST_EXIT_AFTER_BATCHES"


def import_ray():
    """ray, with Ray Data, or an ApplyError that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ApplyError(RAY_MISSING) from None
    return ray


@dataclass(frozen=True)
class ActorJob:
    """Everything an actor needs, as plain values (sent to every actor)."""

    pipeline: str
    base: Optional[str]
    output: OutputFolder
    annotation: Annotation


@dataclass
class RayRun:
    results: List[ShardResult] = field(default_factory=list)
    actors: int = 0
    startup_seconds: float = 0.0  # starting or joining the cluster
    load_seconds: float = 0.0  # the slowest actor's start (imports, pipeline load)
    nodes: List[str] = field(default_factory=list)


def node_description() -> str:
    import ray

    return f"Ray node {ray.get_runtime_context().get_node_id()} ({socket.gethostname()})"


def configure_torch_threads() -> int:
    """One torch thread per CPU Ray gave this actor (Ray already sets
    OMP_NUM_THREADS from it; torch may have read it before, so set it again)."""
    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    threads = max(1, int(cpus))
    torch.set_num_threads(threads)
    return threads


class ShardAnnotator:
    """The Ray Data callable class: loads the pipeline once, then annotates
    and writes one shard per call.

    Errors while loading are kept and raised from the first call: Ray Data
    then reports them as a task error, with the message intact, instead of an
    actor that died during start-up."""

    def __init__(self, job: ActorJob):
        started = time.perf_counter()
        self.job = job
        self.where = node_description()
        self.error: Optional[str] = None
        self.nlp = None
        try:
            self.threads = configure_torch_threads()
            self.nlp = self._load()
        except ApplyError as error:
            self.error = str(error) if self.where in str(error) else f"{error} (on {self.where})"
        except Exception as error:  # the loader's own errors, e.g. a missing or wrong base
            self.error = (
                f"Loading {job.pipeline} failed on {self.where}: {type(error).__name__}: {error}\n"
                "On a cluster, every node needs the base model: install it there (same path, or the "
                "Hugging Face cache), or pass --base with a path that exists on every node."
            )
        self.load_seconds = time.perf_counter() - started
        self.reported_load = False
        self.after_batch = exit_hook()

    def _load(self):
        import ray
        import spacy

        from .pipeline import load_pipeline

        job = self.job
        if job.base is not None and why_a_path(job.base) is not None and not Path(job.base).exists():
            raise ApplyError(
                f"The base model {job.base} (--base) does not exist on {self.where}. Put a copy of the "
                "base at that path on every node, or pass --base with a path that exists on all of them."
            )
        if why_a_path(job.pipeline) is not None and not Path(job.pipeline).exists():
            raise ApplyError(f"Pipeline {job.pipeline} does not exist on {self.where}: {shared_storage('the pipeline')}")
        if not Path(job.output.path).is_dir():
            raise ApplyError(f"Output folder {job.output.path} does not exist on {self.where}: {shared_storage('OUTPUT')}")
        if ray.get_gpu_ids():
            spacy.require_gpu(0)  # Ray set CUDA_VISIBLE_DEVICES to this actor's GPU
        return load_pipeline(job.pipeline, base=job.base)

    def __call__(self, batch):
        import pyarrow as pa
        import torch

        if self.error is not None:
            raise ApplyError(self.error)
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)  # Ray Data may call from a thread of its own
        results = []
        for row in batch.to_pylist():
            shard = Shard.from_row(row)
            if not Path(shard.file.path).exists():
                raise ApplyError(f"Input file {shard.file.path} does not exist on {self.where}: {shared_storage('INPUT')}")
            result = annotate_shard(self.nlp, shard, self.job.output, self.job.annotation, after_batch=self.after_batch)
            results.append(
                {
                    "index": result.index, "docs": result.docs, "words": result.words, "seconds": result.seconds,
                    "node": self.where, "load_seconds": 0.0 if self.reported_load else self.load_seconds,
                }
            )
            self.reported_load = True
        return pa.Table.from_pylist(results)


def shared_storage(what: str) -> str:
    return f"{what} must be at the same path on every node of the cluster (a shared filesystem)."


class _ExitAfterBatches:
    def __init__(self, batches: int, marker: str):
        self.batches = batches
        self.marker = marker
        self.seen = 0

    def __call__(self, docs: int) -> None:
        self.seen += 1
        if self.seen < self.batches:
            return
        try:
            descriptor = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(descriptor, f"{os.getpid()}\n".encode())
        os.close(descriptor)
        os._exit(1)


def exit_hook():
    spec = os.environ.get(EXIT_AFTER_BATCHES)
    if not spec:
        return None
    batches, marker = spec.split(":", 1)
    return _ExitAfterBatches(int(batches), marker)


def forwarded_env() -> Dict[str, str]:
    return {
        name: value for name, value in os.environ.items() if name.startswith(FORWARDED_PREFIX) or name in FORWARDED
    }


def default_actors(resources: Dict[str, float], gpus_per_actor: float, cpus_per_actor: float) -> int:
    """One actor per GPU share when actors take GPUs, else one per CPU share."""
    if gpus_per_actor > 0:
        return max(1, int(resources.get("GPU", 0) // gpus_per_actor))
    return max(1, int(resources.get("CPU", 1) // max(cpus_per_actor, 1e-9)))


def connect(ray, address: Optional[str]):
    """Join the cluster at `address` (or RAY_ADDRESS), or start a local one.
    Returns whether this call started the connection (and must end it)."""
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address)
        else:
            ray.init(include_dashboard=False)
    except ConnectionError as error:
        raise ApplyError(f"Cannot reach the Ray cluster at {address or os.environ.get('RAY_ADDRESS')}: {error}") from None
    return True


def run_ray(
    pipeline: str,
    shards: List[Shard],
    output: OutputFolder,
    annotation: Annotation,
    options: RayOptions = RayOptions(),
    *,
    base: Optional[str] = None,
    progress: bool = False,
    stop_after_shards: Optional[int] = None,
) -> RayRun:
    """Annotate `shards` on the Ray cluster; see the module docstring."""
    from tqdm import tqdm

    ray = import_ray()
    run = RayRun()
    if not shards:
        return run
    started = time.perf_counter()
    owned = connect(ray, options.address)
    run.startup_seconds = time.perf_counter() - started
    context = ray.data.DataContext.get_current()
    saved = (context.enable_progress_bars, context.raise_original_map_exception)
    try:
        resources = ray.cluster_resources()
        gpus_per_actor = options.gpus_per_actor
        if gpus_per_actor is None:
            gpus_per_actor = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
        run.actors = min(options.actors or default_actors(resources, gpus_per_actor, options.cpus_per_actor), len(shards))
        job = ActorJob(pipeline, base, output, annotation)
        context.enable_progress_bars = False  # ours counts docs, not blocks
        context.raise_original_map_exception = True  # an ApplyError, not a UserCodeException hiding it
        dataset = ray.data.from_items([shard.to_row() for shard in shards], override_num_blocks=len(shards))
        dataset = dataset.map_batches(
            ShardAnnotator,
            fn_constructor_kwargs={"job": job},
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=run.actors),
            num_cpus=options.cpus_per_actor,
            num_gpus=gpus_per_actor,
            runtime_env={"env_vars": forwarded_env()} if forwarded_env() else None,
        )
        bar = tqdm(total=sum(shard.size for shard in shards), unit="doc", disable=not progress, file=sys.stderr)
        rows = iter(dataset.iter_rows())
        try:
            for row in rows:
                run.results.append(ShardResult(row["index"], row["docs"], row["words"], row["seconds"]))
                run.load_seconds = max(run.load_seconds, row["load_seconds"])
                if row["node"] not in run.nodes:
                    run.nodes.append(row["node"])
                bar.update(row["docs"])
                if stop_after_shards is not None and len(run.results) >= stop_after_shards:
                    break
        except ApplyError:
            raise
        except Exception as error:
            cause = find_apply_error(error)
            if cause is None:
                raise
            raise ApplyError(str(cause)) from None
        finally:
            bar.close()
            if hasattr(rows, "close"):
                rows.close()  # stops the execution (and its actors) now, when stopped early
        return run
    finally:
        context.enable_progress_bars, context.raise_original_map_exception = saved
        if owned:
            ray.shutdown()
