"""Tag schemes for token-level NER: encoding spans as tags, the transitions
a scheme allows, constrained Viterbi decoding and tags back to spans.

LS-unLLaMA labels every word with a tag and reads the entities off the tags.
Taking the most likely tag of each token on its own can give sequences that
encode no spans (`O I-PER`, `B-PER I-LOC`, and in BILUO `B-PER O`). Here the
tags of a doc are decoded jointly: the most likely sequence among those the
scheme allows (Viterbi over the allowed transitions), so every decoded
sequence is a set of well-formed, non-overlapping spans.

Two schemes:

- BIO (IOB2, the paper's): `B-X` begins an entity of type X, `I-X` continues
  it, `O` is outside. `I-X` may only follow `B-X` or `I-X`.
- BILUO (spaCy's): `B-X` begins a multi-token entity, `I-X` is inside it,
  `L-X` is its last token, `U-X` is a one-token entity. An entity that was
  begun must be ended with `L-X` before anything else.

Tags are strings, `None` is a token whose annotation is missing (unknown:
neither an entity nor outside). Tag indices follow `tag_names`: `O` first, then
each label's tags in the order of the labels given, so that appending a label
appends tags and leaves the indices of the old ones unchanged.

Everything here is a pure function over lists and NumPy arrays: no spaCy
objects, so it is tested on its own (tests/test_tagging.py).
"""
from functools import lru_cache
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy

OUTSIDE = "O"
SCHEMES: Dict[str, Tuple[str, ...]] = {"BIO": ("B", "I"), "BILUO": ("B", "I", "L", "U")}
# spaCy marks missing entity annotation with "-" (or None) in BILUO tag lists.
MISSING_TAGS = (None, "-", "")

Span = Tuple[int, int, str]  # (start token, end token exclusive, label)


def check_scheme(scheme: str) -> str:
    """`scheme` if it is one of SCHEMES, otherwise a ValueError that lists them."""
    if scheme not in SCHEMES:
        raise ValueError(f"Unknown tag scheme {scheme!r}: use one of {', '.join(SCHEMES)}.")
    return scheme


def tag_names(labels: Sequence[str], scheme: str) -> List[str]:
    """All tags of `scheme` for `labels`: "O", then per label (in the order
    given) its "B-", "I-" (and "L-", "U-") tags."""
    prefixes = SCHEMES[check_scheme(scheme)]
    return [OUTSIDE] + [f"{prefix}-{label}" for label in labels for prefix in prefixes]


@lru_cache(maxsize=4096)
def split_tag(tag: str) -> Tuple[str, str]:
    """("B", "PER") for "B-PER"; ("O", "") for "O". Labels may contain "-".
    Cached: decoding splits every tag of every doc."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, sep, label = tag.partition("-")
    if not sep or not label or len(prefix) != 1:
        raise ValueError(f"Malformed tag {tag!r}: expected 'O' or a prefix, '-' and a label, e.g. 'B-PER'.")
    return prefix, label


# --------------------------------------------------------------------------
# Which tag may follow which
# --------------------------------------------------------------------------


def _is_open(prefix: str) -> bool:
    """Whether an entity is still open after a token tagged `prefix`, and so
    must be continued (BILUO) or may be continued (BIO) by the next token."""
    return prefix in ("B", "I")


def may_start(tag: str, scheme: str) -> bool:
    """Whether a sequence may begin with `tag`: never inside an entity."""
    prefix, _ = split_tag(tag)
    return prefix not in ("I", "L")


def may_end(tag: str, scheme: str) -> bool:
    """Whether a sequence may end with `tag`: in BILUO an entity begun must
    have been closed by L or U."""
    prefix, _ = split_tag(tag)
    return scheme == "BIO" or not _is_open(prefix)


def may_follow(previous: str, tag: str, scheme: str) -> bool:
    """Whether `tag` may come right after `previous` under `scheme`."""
    prev_prefix, prev_label = split_tag(previous)
    prefix, label = split_tag(tag)
    continues = prefix in ("I", "L")
    if scheme == "BIO":
        return not continues or (_is_open(prev_prefix) and prev_label == label)
    if _is_open(prev_prefix):  # BILUO: an open entity must go on with the same label
        return continues and prev_label == label
    return not continues


def transition_masks(names: Sequence[str], scheme: str) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """The allowed first tags (n_tags,), transitions (previous, next) as
    (n_tags, n_tags) and last tags (n_tags,) of `scheme`, as boolean arrays
    over the tag indices of `names`. Cached per tag set, and read-only."""
    return _transition_masks(tuple(names), check_scheme(scheme))


@lru_cache(maxsize=32)
def _transition_masks(names: Tuple[str, ...], scheme: str) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    start = numpy.array([may_start(tag, scheme) for tag in names], dtype=bool)
    end = numpy.array([may_end(tag, scheme) for tag in names], dtype=bool)
    allowed = numpy.array([[may_follow(prev, tag, scheme) for tag in names] for prev in names], dtype=bool)
    for mask in (start, allowed, end):
        mask.flags.writeable = False
    return start, allowed, end


# --------------------------------------------------------------------------
# Spans <-> tags
# --------------------------------------------------------------------------


def _check_spans(length: int, spans: Iterable[Span]) -> List[Span]:
    ordered = sorted(spans)
    previous_end = 0
    for start, end, label in ordered:
        if not (0 <= start < end <= length):
            raise ValueError(f"Span ({start}, {end}, {label!r}) is empty or outside a sequence of {length} tokens.")
        if start < previous_end:
            raise ValueError(f"Span ({start}, {end}, {label!r}) overlaps the span before it: tags encode no overlaps.")
        if not label:
            raise ValueError(f"Span ({start}, {end}) has an empty label.")
        previous_end = end
    return ordered


def spans_to_tags(
    length: int, spans: Iterable[Span], scheme: str, missing: Iterable[int] = ()
) -> List[Optional[str]]:
    """The tags of a sequence of `length` tokens holding `spans` (start, end,
    label), with None for the tokens in `missing` (unannotated) and "O" for
    the other tokens outside every span. A missing token inside a span is an
    error: the span says what it is."""
    check_scheme(scheme)
    tags: List[Optional[str]] = [OUTSIDE] * length
    for index in missing:
        if not 0 <= index < length:
            raise ValueError(f"Missing token {index} is outside a sequence of {length} tokens.")
        tags[index] = None
    for start, end, label in _check_spans(length, spans):
        if any(tags[i] is None for i in range(start, end)):
            raise ValueError(f"Span ({start}, {end}, {label!r}) covers a token marked missing.")
        if scheme == "BIO":
            tags[start:end] = [f"B-{label}"] + [f"I-{label}"] * (end - start - 1)
        elif end - start == 1:
            tags[start] = f"U-{label}"
        else:
            tags[start:end] = [f"B-{label}"] + [f"I-{label}"] * (end - start - 2) + [f"L-{label}"]
    return tags


def tags_to_spans(tags: Sequence[str], scheme: str) -> List[Span]:
    """The spans (start, end, label) a valid tag sequence encodes. A sequence
    the scheme does not allow, or one with missing tags, is a ValueError:
    decoding never produces one, so it means a bug or a foreign sequence."""
    check_scheme(scheme)
    spans: List[Span] = []
    open_start, open_label = -1, ""
    for i, tag in enumerate(tags):
        if tag in MISSING_TAGS:
            raise ValueError(f"Tag {i} is missing ({tag!r}): only complete sequences decode to spans.")
        prefix, label = split_tag(tag)
        if prefix not in SCHEMES[scheme] + (OUTSIDE,):
            raise ValueError(f"Tag {tag!r} at position {i} is not a {scheme} tag.")
        previous = tags[i - 1] if i else None
        allowed = may_start(tag, scheme) if previous is None else may_follow(previous, tag, scheme)
        if not allowed:
            raise ValueError(f"Invalid {scheme} sequence: {tag!r} at position {i} after {previous!r}.")
        if open_start >= 0 and prefix not in ("I", "L"):
            spans.append((open_start, i, open_label))
            open_start = -1
        if prefix in ("B", "U"):
            open_start, open_label = i, label
        if prefix in ("L", "U"):
            spans.append((open_start, i + 1, open_label))
            open_start = -1
    if tags and not may_end(tags[-1], scheme):
        raise ValueError(f"Invalid {scheme} sequence: it ends inside an entity ({tags[-1]!r}).")
    if open_start >= 0:
        spans.append((open_start, len(tags), open_label))
    return spans


def from_biluo(tags: Sequence[Optional[str]], scheme: str) -> List[Optional[str]]:
    """spaCy's BILUO gold tags (`Example.get_aligned_ner()`, with None or "-"
    for missing annotation) in `scheme`, missing tags as None. BIO keeps B and
    I, and writes L as I and U as B."""
    check_scheme(scheme)
    converted: List[Optional[str]] = []
    for tag in tags:
        if tag in MISSING_TAGS:
            converted.append(None)
            continue
        prefix, label = split_tag(tag)
        if scheme == "BIO" and prefix in ("L", "U"):
            tag = f"{'I' if prefix == 'L' else 'B'}-{label}"
        converted.append(tag)
    return converted


# --------------------------------------------------------------------------
# Constrained decoding
# --------------------------------------------------------------------------


def log_softmax(logits: numpy.ndarray) -> numpy.ndarray:
    """Row-wise log-probabilities of `logits` (n, n_tags), computed stably."""
    logits = numpy.asarray(logits, dtype="float64")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - numpy.log(numpy.exp(shifted).sum(axis=-1, keepdims=True))


def viterbi(
    scores: numpy.ndarray,
    start: numpy.ndarray,
    allowed: numpy.ndarray,
    end: numpy.ndarray,
    token_allowed: Optional[numpy.ndarray] = None,
) -> numpy.ndarray:
    """The tag indices (n,) of the highest-scoring sequence that starts, moves
    and ends only as the masks allow.

    scores: (n, n_tags) per-token scores that add up along a sequence, e.g.
        log-probabilities. -inf is treated as a very low finite score, so that
        an allowed sequence always exists; NaN is an error.
    start, allowed, end: boolean masks from `transition_masks`.
    token_allowed: an optional (n, n_tags) boolean mask of the tags each token
        may take (e.g. `outside_only`). If no sequence satisfies it, that is a
        ValueError.
    Ties go to the lower tag index, so the result is deterministic.
    """
    scores = numpy.asarray(scores, dtype="float64")
    n_tokens, n_tags = scores.shape if scores.ndim == 2 else (None, None)
    if n_tokens is None or n_tags != len(start) or allowed.shape != (n_tags, n_tags) or len(end) != n_tags:
        raise ValueError(f"Scores of shape {numpy.shape(scores)} do not match masks for {len(start)} tags.")
    if n_tokens == 0:
        return numpy.zeros((0,), dtype="int64")
    if numpy.isnan(scores).any() or numpy.isposinf(scores).any():
        raise ValueError("The scores contain NaN or +inf: the model's outputs are not usable numbers.")
    finite_floor = -1e30  # far below any real score, far above -inf
    scores = numpy.maximum(scores, finite_floor)
    if token_allowed is not None:
        if token_allowed.shape != scores.shape:
            raise ValueError(f"token_allowed has shape {token_allowed.shape}, the scores {scores.shape}.")
        scores = numpy.where(token_allowed, scores, -numpy.inf)
    transition = numpy.where(allowed, 0.0, -numpy.inf)
    best = scores[0] + numpy.where(start, 0.0, -numpy.inf)
    backpointers = numpy.zeros((n_tokens, n_tags), dtype="int64")
    for i in range(1, n_tokens):
        candidates = best[:, None] + transition  # (previous, next)
        backpointers[i] = candidates.argmax(axis=0)
        best = candidates[backpointers[i], numpy.arange(n_tags)] + scores[i]
    best = best + numpy.where(end, 0.0, -numpy.inf)
    last = int(best.argmax())
    if best[last] == -numpy.inf:
        raise ValueError("No tag sequence satisfies the constraints: the preset annotations contradict each other.")
    path = numpy.empty((n_tokens,), dtype="int64")
    path[-1] = last
    for i in range(n_tokens - 1, 0, -1):
        path[i - 1] = backpointers[i, path[i]]
    return path


def outside_only(length: int, names: Sequence[str], tokens: Iterable[int]) -> numpy.ndarray:
    """The (length, n_tags) mask of the tags each token may take when
    `tokens` must be tagged "O": every tag for the other tokens.

    This is how annotation fixed before decoding is kept, as spaCy's `ner`
    keeps it: the tokens of preset entities and blocked tokens are decoded as
    outside (their own entities are put back afterwards, whatever their
    label), so no decoded entity overlaps or continues them. For the tokens
    around them, "O" allows exactly what a preset entity's own tags would: in
    both schemes the next token cannot continue it, and in BILUO the token
    before must be closed."""
    mask = numpy.ones((length, len(names)), dtype=bool)
    rows = numpy.fromiter(tokens, dtype="int64")
    if len(rows) and (rows.min() < 0 or rows.max() >= length):
        raise ValueError(f"Fixed tokens {rows.tolist()} fall outside a sequence of {length} tokens.")
    mask[rows] = False
    mask[rows, names.index(OUTSIDE)] = True
    return mask


def decode(
    scores: numpy.ndarray,
    names: Sequence[str],
    scheme: str,
    token_allowed: Optional[numpy.ndarray] = None,
) -> List[str]:
    """The best valid tag sequence for `scores` (n, len(names)), as tag strings."""
    start, allowed, end = transition_masks(names, scheme)
    return [names[i] for i in viterbi(scores, start, allowed, end, token_allowed)]
