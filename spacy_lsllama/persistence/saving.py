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
renames only once everything is written and flushed to disk (atomic.py). An
interruption before the swap leaves the old pipeline untouched; one between
the two renames leaves no pipeline at the path (loading fails loudly) and the
old one beside it as `.NAME.tmp-*`. The callback is part of the config, so a pipeline loaded with
`spacy.load` saves atomically too.

A path that is a symlink (a stable `current` pointing at a versioned folder)
is followed: the swap happens beside the link's target, so the link stays a
link and points at the new pipeline.
"""
import importlib
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Type, Union, cast

from spacy.language import Language
from spacy.util import SimpleFrozenList, registry

from .atomic import write_folder_atomically


@registry.callbacks("spacy-lsllama.atomic_to_disk.v1")
def create_atomic_to_disk() -> Callable[[Language], Language]:
    """Make `nlp.to_disk` write to a temporary folder and swap it into place."""
    return make_atomic


def make_atomic(nlp: Language) -> Language:
    nlp.__class__ = atomic_language_class(type(nlp))
    return nlp


class AtomicSaving:
    """Mixed into a pipeline's language class: `to_disk` saves atomically.

    A class, not an instance attribute: a `to_disk` stored on the pipeline
    that refers back to it is a reference cycle, which keeps the pipeline and
    its decoder's weights alive after the last user drops it, until a full
    garbage collection happens to run."""

    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = SimpleFrozenList()) -> None:
        save_atomically(cast(Language, self), path, exclude=exclude)


_ATOMIC_NAME = "AtomicSaving[{module}/{qualname}]"


def atomic_language_class(language_class: Type[Language]) -> Type[Language]:
    """The subclass of `language_class` that saves atomically, made once per
    class and reachable as an attribute of this module, so that pickle finds
    it (also in a fresh worker process, through the module's `__getattr__`)."""
    if issubclass(language_class, AtomicSaving):
        return language_class
    name = _ATOMIC_NAME.format(
        module=language_class.__module__.replace(".", ":"),
        qualname=language_class.__qualname__.replace(".", ":"),
    )
    if name not in globals():
        globals()[name] = type(name, (AtomicSaving, language_class), {"__module__": __name__, "__qualname__": name})
    return globals()[name]


def __getattr__(name: str) -> Any:
    prefix, suffix = _ATOMIC_NAME.split("{module}/{qualname}")
    if not (name.startswith(prefix) and name.endswith(suffix) and "/" in name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, _, qualname = name[len(prefix) : -len(suffix)].partition("/")
    language_class: Any = importlib.import_module(module_name.replace(":", "."))
    for part in qualname.split(":"):
        language_class = getattr(language_class, part)
    return atomic_language_class(language_class)


def save_atomically(
    nlp: Language,
    path: Union[str, Path],
    *,
    exclude: Iterable[str] = SimpleFrozenList(),
) -> None:
    """`Language.to_disk(nlp, path, exclude=exclude)`, all or nothing."""
    path = follow_symlink(Path(path))
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"Cannot save the pipeline to {path}: it is a file. Choose a folder path.")
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(staging: Path) -> None:
        if path.exists():
            shutil.copytree(path, staging, symlinks=True, dirs_exist_ok=True)
        Language.to_disk(nlp, staging, exclude=exclude)

    write_folder_atomically(path, write)


def follow_symlink(path: Path) -> Path:
    """The folder a symlinked save path stands for: the link's final target
    (followed through chains of links, existing or not yet). Renaming the
    staging folder onto the link itself would replace the link with a real
    folder and leave its target stale. Other paths are returned unchanged."""
    if not path.is_symlink():
        return path
    target = Path(os.path.realpath(path))
    if target.is_symlink():
        raise OSError(f"Cannot save the pipeline to {path}: the symlink does not resolve (a loop?).")
    return target
