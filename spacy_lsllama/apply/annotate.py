"""One shard, start to end: read its records, run the pipeline, write its output.

The same function runs in the local runner and inside every Ray actor, so a
shard's output does not depend on where it ran: its rows are `nlp.pipe` over
its records, in input order, written by OutputFolder.write_shard.
"""
import time
from dataclasses import dataclass
from typing import Callable, Optional

from ..decoder.defaults import PIPE_BATCH_SIZE
from .output import OutputFolder
from .readers import Shard, read_shard
from .writers import new_docbin, result_row


@dataclass(frozen=True)
class Annotation:
    """How a shard's records are annotated, wherever it runs: the keys read
    from each record (`id_key` None: records are numbered) and the docs per
    `nlp.pipe` batch, within which rows are grouped by length."""

    text_key: str = "text"
    id_key: Optional[str] = "id"
    batch_size: int = PIPE_BATCH_SIZE


@dataclass(frozen=True)
class ShardResult:
    index: int
    docs: int
    words: int  # tokens that are not whitespace
    seconds: float


def annotate_shard(
    nlp,
    shard: Shard,
    output: OutputFolder,
    annotation: Annotation = Annotation(),
    *,
    after_batch: Optional[Callable[[int], None]] = None,
) -> ShardResult:
    """Annotate `shard` and write its output; `after_batch(docs)` is called
    after every batch of docs (and after the last ones), for progress."""
    started = time.perf_counter()
    batch_size = annotation.batch_size
    records = read_shard(shard, text_key=annotation.text_key, id_key=annotation.id_key, vocab=nlp.vocab)
    docbin = new_docbin() if output.docbin else None
    rows = []
    words = 0
    pending = 0
    for record, doc in zip(records, nlp.pipe((record.content for record in records), batch_size=batch_size)):
        rows.append(result_row(shard.file.name, record.id, doc))
        words += sum(1 for token in doc if not token.is_space)
        if docbin is not None:
            docbin.add(doc)
        pending += 1
        if after_batch is not None and pending == batch_size:
            after_batch(pending)
            pending = 0
    if after_batch is not None and pending:
        after_batch(pending)
    output.write_shard(shard.index, rows, docbin)
    return ShardResult(shard.index, len(rows), words, time.perf_counter() - started)
