"""Writing files and folders all or nothing.

Every save in the package goes through these two functions: a file or a
folder is written beside its target under a temporary name, flushed to disk,
and renamed over the target (`os.replace` is atomic within a filesystem). A
save that fails or is interrupted leaves the previous file or folder, or none,
never a truncated or half-written one.
"""
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

# Marks the temporary names, so that leftovers of a killed process can be found.
TEMPORARY_MARK = ".tmp-"


def temporary_path(final: Path) -> Path:
    """A unique hidden name beside `final`: two writers of the same target
    (a retried Ray task, a second run) never write into each other's file."""
    return final.parent / f".{final.name}{TEMPORARY_MARK}{uuid.uuid4().hex}"


def _fsync_tree(path: Path) -> None:
    """Flush the files written under `path` (or `path` itself) to disk. Links
    are left alone (what they point at was not written here), and files are
    opened read-only, which fsync needs no more than."""
    files = [path] if path.is_file() else [item for item in path.rglob("*") if item.is_file() and not item.is_symlink()]
    for file_path in files:
        descriptor = os.open(file_path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def write_file_atomically(final: Path, write: Callable[[Path], None]) -> None:
    """Write `final` through `write(temporary)`, an fsync and a rename: `final`
    is the old file or the new one, never a part of either."""
    final = Path(final)
    temporary = temporary_path(final)
    try:
        write(temporary)
        _fsync_tree(temporary)
        os.replace(temporary, final)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_folder_atomically(final: Path, write: Callable[[Path], None]) -> None:
    """Write the folder `final` through `write(staging)` into a new staging
    folder, fsync its files and swap it in: `final` is the old folder or the
    new one, never a mix of their files. (A folder cannot be renamed over
    another in one step: the old one is renamed aside first, then removed.)"""
    final = Path(final)
    staging = temporary_path(final)
    staging.mkdir(parents=True)
    try:
        write(staging)
        _fsync_tree(staging)
        swap_in(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def swap_in(staging: Path, final: Path) -> None:
    """Move the finished folder `staging` to `final`, replacing what is there."""
    if not final.exists():
        os.rename(staging, final)
        return
    retired = temporary_path(final)
    os.rename(final, retired)
    os.rename(staging, final)
    shutil.rmtree(retired, ignore_errors=True)
