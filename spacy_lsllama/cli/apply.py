"""`apply`: run a trained pipeline over a corpus, here or on a Ray cluster.

    python -m spacy_lsllama apply PIPELINE INPUT OUTPUT [--ray [--address ADDRESS]]

INPUT is a .txt (one doc per line), .jsonl, .parquet or .spacy file, or a
folder of them; OUTPUT a folder of shards (JSONL or Parquet rows with
`source`, `id`, `text`, `ents`, `cats`; optionally DocBin shards). A rerun
over the same OUTPUT finishes what an interrupted run left. See
spacy_lsllama/apply for the semantics.

`--ray` takes no value (typer, which the CLI is built on, has no options with
an optional value): `--ray` alone starts a local cluster, or joins the one in
RAY_ADDRESS; `--address ADDRESS` joins that cluster and implies `--ray`.
"""
from pathlib import Path
from typing import Optional

import typer
from wasabi import msg

from ..apply.ray_options import RayOptions, ray_help
from ..decoder.defaults import PIPE_BATCH_SIZE
from ._util import CommandError, reports_errors


@reports_errors
def apply_cli(
    pipeline: str = typer.Argument(..., help="Pipeline folder (e.g. training/model-best) or installed package"),
    input: Path = typer.Argument(..., help="A .txt, .jsonl, .parquet or .spacy file, or a folder of them"),
    output: Path = typer.Argument(..., help="Output folder: one file per input shard, and apply.json"),
    text_key: str = typer.Option("text", "--text-key", help="JSONL field / Parquet column with the text"),
    id_key: str = typer.Option("id", "--id-key", help="Field/column with the ids when the input has it ('' for none); else line (1-based) or row (0-based) numbers"),
    input_format: str = typer.Option("auto", "--input-format", help="auto (from the extension), text, jsonl, parquet or spacy"),
    output_format: str = typer.Option("jsonl", "--output-format", help="jsonl or parquet (needs pyarrow)"),
    docbin: bool = typer.Option(False, "--docbin", help="Also write each shard's annotated docs to OUTPUT/docs/*.spacy"),
    shard_size: int = typer.Option(1000, "--shard-size", help="Records per shard: the unit that is written, skipped on rerun, and retried"),
    batch_size: int = typer.Option(PIPE_BATCH_SIZE, "--batch-size", help="Docs per nlp.pipe batch (rows are grouped by length within one)"),
    base: Optional[str] = typer.Option(None, "--base", help="Path to the base model, overriding the pipeline's (on every node with --ray)"),
    gpu_id: int = typer.Option(-1, "--gpu-id", help="GPU for the local run (-1: CPU)"),
    ray: bool = typer.Option(False, "--ray", help="Run on Ray Data: a local cluster, or RAY_ADDRESS's"),
    address: Optional[str] = typer.Option(None, "--address", help=ray_help("address") + "; implies --ray"),
    actors: Optional[int] = typer.Option(None, "--actors", help=ray_help("actors")),
    gpus_per_actor: Optional[float] = typer.Option(None, "--gpus-per-actor", help=ray_help("gpus_per_actor")),
    cpus_per_actor: Optional[float] = typer.Option(None, "--cpus-per-actor", help=ray_help("cpus_per_actor") + " (default: 1)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar"),
):
    """Annotate a corpus with a trained pipeline: one machine, or a Ray cluster
    with --ray. Output rows hold ents (character offsets) and cats, joinable
    to the input by id; a rerun skips the shards already written."""
    from spacy_lsllama.apply import ApplyError, apply_pipeline

    pool = {"actors": actors, "gpus_per_actor": gpus_per_actor, "cpus_per_actor": cpus_per_actor}
    given = {name: value for name, value in pool.items() if value is not None}
    try:
        if ray or address is not None:
            on_ray = RayOptions(address=address, **given)
        elif given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise CommandError(f"{flags} size the Ray actor pool: add --ray (or --address), or drop them.")
        else:
            on_ray = False
        result = apply_pipeline(
            pipeline, input, output, text_key=text_key, id_key=id_key, input_format=input_format,
            output_format=output_format, docbin=docbin, shard_size=shard_size, batch_size=batch_size,
            base=base, gpu_id=gpu_id, ray=on_ray, progress=progress,
        )
    except ApplyError as error:
        raise CommandError(str(error)) from None
    report(result)


def report(result) -> None:
    where = f"on {result.actors} Ray actor{'s' if result.actors != 1 else ''}" if result.actors else "in this process"
    msg.good(
        f"Annotated {result.docs} docs ({result.words} words) in {result.seconds:.1f} s {where}: "
        f"{result.docs_per_second:.1f} docs/s, {result.words_per_second:.0f} words/s"
    )
    if result.actors:
        msg.text(
            f"Cluster start-up {result.startup_seconds:.1f} s (not counted); slowest actor start "
            f"(imports, pipeline load) {result.load_seconds:.1f} s (counted)."
        )
    elif result.load_seconds:
        msg.text(f"Loading the pipeline took {result.load_seconds:.1f} s (not counted).")
    msg.text(
        f"{result.shards_written} shards written to {result.output}; "
        f"{result.shards_skipped} shards already complete (skipped)."
    )
    if not result.complete:
        missing = result.shards_total - result.shards_written - result.shards_skipped
        msg.warn(f"{missing} shards are not done yet: run the same command again to finish them.")
