"""Remove files or folders left by an earlier run of a project command.

``spacy train`` keeps an existing output folder, and ``spacy.ConsoleLogger.v3`` refuses
to write its JSONL log when the file already exists ("Saving logs is disabled"). The
train commands of project.yml therefore clear their output folder first, so a rerun
writes a fresh log and no stale model-best survives.

Usage:
    python scripts/clean_outputs.py training/textcat
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import List

import typer


def main(paths: List[Path] = typer.Argument(..., help="Files or folders to remove.")) -> None:
    """Remove PATHS (missing ones are fine)."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            typer.echo(f"removed {path}/")
        elif path.exists() or path.is_symlink():
            path.unlink()
            typer.echo(f"removed {path}")


if __name__ == "__main__":
    typer.run(main)
