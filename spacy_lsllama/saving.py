"""`spacy-lsllama.atomic_to_disk.v1`: save a whole pipeline atomically.

`Language.to_disk` writes the tokenizer, meta, config and then each component
into the target folder, one after another. Interrupted over an existing
pipeline (a killed job, a full disk), it leaves new adapters beside an old
textcat or ner head: a folder that loads without complaint as a model nobody
trained. spaCy's `spacy train` overwrites `model-best` this way at every new
best score.

This callback, set as `[nlp] after_pipeline_creation`, makes the pipeline's
`to_disk` write into a fresh sibling folder (starting from a copy of the old
one, so files spaCy would have kept are kept) and swap it into place with two
renames only once everything is written. An interruption before the swap
leaves the old pipeline untouched; one between the two renames leaves no
pipeline at the path (loading fails loudly) and the old one beside it as
`.NAME.old-*`. The callback is part of the config, so a pipeline loaded with
`spacy.load` saves atomically too.
"""
import functools
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable, Iterable, Union

from spacy.language import Language
from spacy.util import SimpleFrozenList, registry


@registry.callbacks("spacy-lsllama.atomic_to_disk.v1")
def create_atomic_to_disk() -> Callable[[Language], Language]:
    """Make `nlp.to_disk` write to a temporary folder and swap it into place."""

    def make_atomic(nlp: Language) -> Language:
        # An instance attribute, not a subclass: a dynamically made class could
        # not be pickled (nlp.pipe(n_process=...) with spawn), a partial can.
        nlp.to_disk = functools.partial(save_atomically, nlp)  # type: ignore[method-assign]
        return nlp

    return make_atomic


def save_atomically(
    nlp: Language,
    path: Union[str, Path],
    *,
    exclude: Iterable[str] = SimpleFrozenList(),
) -> None:
    """`Language.to_disk(nlp, path, exclude=exclude)`, all or nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"Cannot save the pipeline to {path}: it is a file. Choose a folder path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging = path.with_name(f".{path.name}.saving-{token}")
    try:
        if path.exists():
            shutil.copytree(path, staging, symlinks=True)
        Language.to_disk(nlp, staging, exclude=exclude)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not path.exists():
        os.rename(staging, path)
        return
    retired = path.with_name(f".{path.name}.old-{token}")
    os.rename(path, retired)
    os.rename(staging, path)
    shutil.rmtree(retired, ignore_errors=True)
