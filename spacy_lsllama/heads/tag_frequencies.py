"""How often each tag occurs in the training data, and what the NER head does
with it.

In NER most tokens are outside every entity (82% of the tokens of the
benchmark's 2,000 CoNLL-2003 training sentences, 95% of WNUT-16's), and some
entity types are rare (four of WNUT-16's ten types have 24 to 32 training
mentions). The linear head (`lsllama_ner`) uses
the tag counts of its training data in two ways:

- **the starting bias** (`bias_init = "prior"`): the output layer's bias
  starts at the log of the tags' frequencies, so a model that has seen nothing
  predicts the prior. Its loss starts at the prior's entropy rather than at
  ln(n_tags), and the first gradients into the weights and the adapters carry
  what tells a tag's tokens from the others, not the push of every entity tag
  down towards its rarity. This is the prior initialization of RetinaNet's
  classifier (Lin et al. 2017, "Focal Loss for Dense Object Detection",
  arXiv 1708.02002, section 4.1).
- **the loss weights** (`class_balance`): each token's cross-entropy weighs
  (n_max / n_tag) ** class_balance, where n_tag counts its gold tag in the
  training data and n_max the most common tag's: 0 is the plain loss (the
  paper's), 1 gives every tag the same total weight, between them a rare tag
  counts more without the common ones counting for nothing. The loss is the
  weighted mean over the known tokens of a batch.

With weights, the starting bias is the log of the weighted frequencies: the
optimum of the weighted loss for a model that sees nothing. Everything here is
a pure function over NumPy arrays.
"""
from typing import Iterable, Optional

import numpy

BIAS_INITS = ("zero", "prior")


def count_tags(golds: Iterable[numpy.ndarray], n_tags: int) -> numpy.ndarray:
    """How many tokens have each gold tag index, over `golds` (one array of
    tag indices per doc, negative where the annotation is missing)."""
    counts = numpy.zeros((n_tags,), dtype="int64")
    for gold in golds:
        known = gold[gold >= 0]
        if len(known) and known.max() >= n_tags:
            raise ValueError(f"A gold tag index {int(known.max())} is out of range for {n_tags} tags.")
        counts += numpy.bincount(known, minlength=n_tags)
    return counts


def check_class_balance(class_balance: float) -> float:
    """`class_balance` if it is a number in [0, 1], otherwise a ValueError."""
    if isinstance(class_balance, bool) or not isinstance(class_balance, (int, float)) or not 0 <= class_balance <= 1:
        raise ValueError(
            f"class_balance must be a number from 0 (plain cross-entropy) to 1 (every tag weighs the same in "
            f"total), got {class_balance!r}."
        )
    return float(class_balance)


def check_bias_init(bias_init: str) -> str:
    """`bias_init` if it is one of BIAS_INITS, otherwise a ValueError."""
    if bias_init not in BIAS_INITS:
        raise ValueError(f"bias_init must be one of {', '.join(map(repr, BIAS_INITS))}, got {bias_init!r}.")
    return bias_init


def balance_weights(counts: numpy.ndarray, class_balance: float) -> numpy.ndarray:
    """Each tag's loss weight, (n_max / n_tag) ** class_balance; a tag never
    seen in training counts as seen once (the largest weight)."""
    counts = numpy.asarray(counts, dtype="float64")
    if not len(counts) or counts.max() <= 0:
        raise ValueError("The tag counts are empty: the training data has no annotated token.")
    return (counts.max() / numpy.maximum(counts, 1.0)) ** check_class_balance(class_balance)


def prior_bias(counts: numpy.ndarray, weights: Optional[numpy.ndarray] = None) -> numpy.ndarray:
    """The log of each tag's (weighted) frequency, counting every tag once more
    than seen, so that a tag absent from the training data gets a finite,
    low bias rather than -inf."""
    mass = numpy.asarray(counts, dtype="float64") + 1.0
    if weights is not None:
        mass = mass * weights
    return numpy.log(mass / mass.sum())
