"""`lsllama_ner`: LS-unLLaMA's named entity recognizer, a linear token tagger.

The paper's NER (LS-unLLaMA) labels each word from its final hidden state
with one linear layer, trains on token-level cross-entropy and reads the
entities off the tags. This component does that inside a spaCy pipeline:

- its model (`spacy-lsllama.TokenTagger.v1`, spacy_lsllama/token_head.py)
  gives tag logits for every token, from a `TransformerListener` that pools
  the first piece of each word by default, as the paper;
- training: cross-entropy over BIO (the paper's) or BILUO tags, averaged over
  the tokens whose gold tag is known; optionally weighted towards rare tags
  (`class_balance`), with the output bias starting at the tags' prior
  (`bias_init`; both from the tag counts of the training data, kept with
  the component: spacy_lsllama/heads/tag_frequencies.py). Tokens with missing annotation (spaCy's
  "-" / None in `Example.get_aligned_ner()`, e.g. partial annotation or
  tokens the reference tokenization does not align) get no loss and no
  gradient: they are not taught to be "O";
- prediction: the most likely tag sequence the scheme allows (constrained
  Viterbi, spacy_lsllama/tagging.py), so every result is a set of
  well-formed, non-overlapping entities. It replaces `doc.ents` as spaCy's
  `ner` does: entities already set (e.g. by an `entity_ruler` before it) and
  blocked tokens are kept, and new entities are found around them;
- labels come from the training data in `initialize` (or `spacy init labels`,
  or `add_label`), and are saved with the component;
- scoring is spaCy's NER scorer (`spacy.ner_scorer.v1`): `ents_p`, `ents_r`,
  `ents_f` and `ents_per_type`, as for spaCy's `ner`.

spaCy's transition-based `ner` can listen to the same transformer; which head
to use is a matter of measurement (benchmarks/bench_ner_heads.py).
"""
from itertools import islice
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy
from spacy.attrs import ENT_IOB
from spacy.errors import Errors
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Model, Ops, set_dropout_rate
from thinc.types import Floats2d, Ints1d

from .pooling import listener_config
from .tagging import (
    OUTSIDE,
    SCHEMES,
    check_scheme,
    from_biluo,
    log_softmax,
    outside_only,
    split_tag,
    tag_names,
    tags_to_spans,
    transition_masks,
    viterbi,
)
from .tag_frequencies import balance_weights, check_bias_init, check_class_balance, count_tags, prior_bias
from .token_head import ARCHITECTURE, has_weights, output_width

FACTORY = "lsllama_ner"
DEFAULT_SCHEME = "BIO"
DEFAULT_CLASS_BALANCE = 0.0
# Chosen on the dev sets of CoNLL-2003 and WNUT-16 together (issue #25):
# "prior" learned WNUT-16's rare types where "zero" left most at 0 F1, and
# tied on CoNLL-2003; weighting the loss (class_balance 0.5) lost on both.
DEFAULT_BIAS_INIT = "prior"
MISSING = -1  # the gold tag index of a token whose annotation is missing

DEFAULT_NER_MODEL: Dict[str, Any] = {
    "@architectures": ARCHITECTURE,
    "dropout": 0.1,
    "nO": None,
    # The paper labels the first piece of each word.
    "tok2vec": listener_config("spacy-lsllama.reduce_first.v1"),
}
# spaCy's ner weights: training selects on ents_f.
SCORE_WEIGHTS = {"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None}


# --------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------


def gold_tag_ids(example: Example, index: Dict[str, int], scheme: str) -> numpy.ndarray:
    """The gold tag index of each predicted token of `example`, MISSING (-1)
    where the annotation is missing. A gold label the component does not have
    is a ValueError."""
    tags = from_biluo(example.get_aligned_ner(), scheme)
    ids = numpy.full((len(tags),), MISSING, dtype="int64")
    for i, tag in enumerate(tags):
        if tag is None:
            continue
        if tag not in index:
            label = split_tag(tag)[1]
            raise ValueError(
                f"The gold entity label {label!r} (in {example.reference.text[:60]!r}) is not one of the "
                f"labels {sorted({split_tag(name)[1] for name in index if name != OUTSIDE})}. Labels are "
                "taken from the data given to initialize; add it with add_label, or initialize with data that has it."
            )
        ids[i] = index[tag]
    return ids


def masked_cross_entropy(
    ops: Ops,
    scores: Sequence[Floats2d],
    golds: Sequence[numpy.ndarray],
    tag_weights: Optional[numpy.ndarray] = None,
) -> Tuple[float, List[Floats2d]]:
    """Softmax cross-entropy of tag logits against gold tag indices, averaged
    over the tokens whose gold tag is known (index >= 0), and its gradient
    with respect to the logits. Tokens with a MISSING gold tag contribute
    exactly 0 to both. With `tag_weights` (one per tag), each token's term
    weighs its gold tag's weight and the mean is the weighted mean."""
    token_weights = [
        numpy.where(gold >= 0, 1.0 if tag_weights is None else tag_weights[numpy.maximum(gold, 0)], 0.0)
        for gold in golds
    ]
    denominator = sum(float(weights.sum()) for weights in token_weights) or 1.0
    loss = 0.0
    gradients: List[Floats2d] = []
    for logits, gold, weights in zip(scores, golds, token_weights):
        if len(gold) != len(logits):
            raise ValueError(f"Got {len(logits)} rows of tag scores for {len(gold)} gold tags.")
        log_probs = log_softmax(ops.to_numpy(logits))
        known = numpy.nonzero(gold >= 0)[0]
        gradient = numpy.exp(log_probs)
        gradient[known, gold[known]] -= 1.0
        gradient *= weights[:, None]
        loss -= float((weights[known] * log_probs[known, gold[known]]).sum())
        gradients.append(ops.asarray2f((gradient / denominator).astype("float32")))
    return loss / denominator, gradients


# --------------------------------------------------------------------------
# The component
# --------------------------------------------------------------------------


def fixed_tokens(doc: Doc) -> numpy.ndarray:
    """The tokens whose entity annotation is already fixed: those of preset
    entities and blocked tokens (spaCy's `ner` keeps both), whose ENT_IOB is
    I (1) or B (3); O (2) and missing (0) tokens are free."""
    if not len(doc):
        return numpy.zeros((0,), dtype="int64")
    iob = doc.to_array(ENT_IOB)
    return numpy.nonzero((iob == 1) | (iob == 3))[0]


class LinearEntityRecognizer(TrainablePipe):
    """Named entities from a linear tagger over each token's vector, decoded
    into valid spans (see the module docstring)."""

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = FACTORY,
        *,
        scheme: str = DEFAULT_SCHEME,
        class_balance: float = DEFAULT_CLASS_BALANCE,
        bias_init: str = DEFAULT_BIAS_INIT,
        scorer: Optional[Callable] = get_ner_prf,
    ) -> None:
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        self.class_balance = check_class_balance(class_balance)
        self.bias_init = check_bias_init(bias_init)
        # tag_counts: how many training tokens have each tag (in the order of
        # tag_names), counted by initialize; they weigh the loss (class_balance).
        self.cfg: Dict[str, Any] = {"labels": [], "scheme": check_scheme(scheme)}

    @property
    def labels(self) -> Tuple[str, ...]:
        """The entity labels, in the order of their tags."""
        return tuple(self.cfg["labels"])

    @property
    def label_data(self) -> Tuple[str, ...]:
        """What `spacy init labels` saves and `initialize(labels=...)` takes."""
        return self.labels

    @property
    def scheme(self) -> str:
        return self.cfg["scheme"]

    @property
    def tag_names(self) -> List[str]:
        """Every tag, in the order of the model's outputs."""
        return tag_names(self.labels, self.scheme)

    # Prediction ------------------------------------------------------------

    def predict(self, docs: Iterable[Doc]) -> List[Ints1d]:
        """The tag indices of each doc's best valid tag sequence. Tokens of
        preset entities and blocked tokens are decoded as "O"."""
        docs = list(docs)
        if not any(len(doc) for doc in docs):
            return [numpy.zeros((0,), dtype="int64") for _ in docs]
        scores = self.model.predict(docs)
        names = self.tag_names
        if len(scores) != len(docs) or (scores and scores[0].shape[1] != len(names)):
            raise ValueError(
                f"{self.name}'s model gave {len(scores)} score arrays of width "
                f"{scores[0].shape[1] if scores else '?'} for {len(docs)} docs and {len(names)} tags."
            )
        start, allowed, end = transition_masks(names, self.scheme)
        lengths = [len(doc) for doc in docs]
        log_probs = log_softmax(numpy.concatenate([self.model.ops.to_numpy(s) for s in scores]))
        guesses = []
        for doc, doc_log_probs in zip(docs, numpy.split(log_probs, numpy.cumsum(lengths)[:-1])):
            fixed = fixed_tokens(doc)
            token_allowed = outside_only(len(doc), names, fixed) if len(fixed) else None
            guesses.append(viterbi(doc_log_probs, start, allowed, end, token_allowed))
        return guesses

    def set_annotations(self, docs: Iterable[Doc], batch_tag_ids: Sequence[Ints1d]) -> None:
        """Set each doc's entities from its decoded tags, keeping preset
        entities and blocked tokens; every other token is outside."""
        names = self.tag_names
        for doc, tag_ids in zip(docs, batch_tag_ids):
            spans = tags_to_spans([names[i] for i in tag_ids], self.scheme)
            found = [Span(doc, start, end, label=label) for start, end, label in spans]
            if not len(fixed_tokens(doc)):
                doc.set_ents(found, default="outside")
                continue
            covered = {i for span in found for i in range(span.start, span.end)}
            outside = [doc[i : i + 1] for i, token in enumerate(doc) if token.ent_iob == 0 and i not in covered]
            doc.set_ents(found, outside=outside, default="unmodified")

    # Training -------------------------------------------------------------

    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optional[Callable] = None,
        losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
        """One step of learning on a batch: the masked cross-entropy of the
        gold tags, back through the model (and the listener to the decoder)."""
        if losses is None:
            losses = {}
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        validate_examples(examples, "LinearEntityRecognizer.update")
        if not any(len(eg.predicted) for eg in examples):
            return losses
        set_dropout_rate(self.model, drop)
        scores, backprop = self.model.begin_update([eg.predicted for eg in examples])
        loss, d_scores = self.get_loss(examples, scores)
        backprop(d_scores)
        if sgd not in (None, False):
            self.finish_update(sgd)
        losses[self.name] += loss
        return losses

    def get_loss(self, examples: Iterable[Example], scores: Sequence[Floats2d]) -> Tuple[float, List[Floats2d]]:
        """The cross-entropy of the gold tags, averaged over the tokens whose
        annotation is known, and its gradient; missing tokens get none."""
        examples = list(examples)
        validate_examples(examples, "LinearEntityRecognizer.get_loss")
        index = {name: i for i, name in enumerate(self.tag_names)}
        golds = [gold_tag_ids(eg, index, self.scheme) for eg in examples]
        for doc_scores in scores:
            if not numpy.isfinite(self.model.ops.to_numpy(doc_scores)).all():
                raise ValueError(Errors.E940)
        loss, d_scores = masked_cross_entropy(self.model.ops, scores, golds, self._tag_weights())
        return loss, d_scores

    def _tag_weights(self) -> Optional[numpy.ndarray]:
        """The loss weight of each tag (class_balance), None for the plain loss."""
        if not self.class_balance:
            return None
        if "tag_counts" not in self.cfg:
            raise ValueError(
                f"{self.name}: class_balance needs the tag counts of the training data, which initialize "
                "gathers; this component has none (it was saved before they were kept). Initialize it on "
                "the training data (`spacy train` does, unless the component is sourced or frozen), or set "
                "class_balance = 0."
            )
        return balance_weights(numpy.asarray(self.cfg["tag_counts"]), self.class_balance)

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        labels: Optional[Iterable[str]] = None,
    ) -> None:
        """Add the labels (given, or every entity label of the examples, in
        sorted order), count the tags of the examples, and initialize the
        model on a sample of them, its output bias at the tags' prior if
        bias_init is "prior"."""
        validate_get_examples(get_examples, "LinearEntityRecognizer.initialize")
        if labels is None:
            labels = sorted({ent.label_ for eg in get_examples() for ent in eg.reference.ents})
        for label in labels:
            self.add_label(label)
        self._require_labels()
        n_tags = len(self.tag_names)
        if output_width(self.model) not in (None, n_tags):
            self.model.attrs["resize_output"](self.model, n_tags)
        docs = [eg.predicted for eg in islice(get_examples(), 10)]
        if not docs:
            raise ValueError(Errors.E923.format(name=self.name))
        sample = [self.model.ops.alloc2f(len(doc), n_tags) for doc in docs]
        self.model.initialize(X=docs, Y=sample)
        index = {name: i for i, name in enumerate(self.tag_names)}
        counts = count_tags((gold_tag_ids(eg, index, self.scheme) for eg in get_examples()), n_tags)
        self.cfg["tag_counts"] = counts.tolist()
        if self.bias_init == "prior":
            weights = balance_weights(counts, self.class_balance) if self.class_balance else None
            output_layer = self.model.get_ref("output_layer")
            output_layer.set_param("b", self.model.ops.asarray1f(prior_bias(counts, weights).astype("float32")))

    def add_label(self, label: str) -> int:
        """Add an entity label: 1 if it is new, 0 if it was there. Its tags
        come after those of the other labels, so a trained model keeps its
        weights and gets new, zero ones for the new tags."""
        if not isinstance(label, str):
            raise ValueError(Errors.E187)
        if not label:
            raise ValueError(f"{self.name}: an entity label cannot be empty.")
        if label in self.labels:
            return 0
        n_tags = len(self.tag_names)
        self.cfg["labels"].append(label)
        if "tag_counts" in self.cfg:
            self.cfg["tag_counts"].extend([0] * (len(self.tag_names) - n_tags))
        self.vocab.strings.add(label)
        if has_weights(self.model):
            self.model.attrs["resize_output"](self.model, len(self.tag_names))
            if self.bias_init == "prior":
                self._start_new_tags_unlikely(n_tags)
        return 1

    def _start_new_tags_unlikely(self, n_old: int) -> None:
        """Give the tags after the first `n_old` the bias of the least likely
        old tag: with a prior bias, the zero bias of a resized layer would
        make a new label's tags likelier than "O" everywhere."""
        output_layer = self.model.get_ref("output_layer")
        bias = self.model.ops.to_numpy(output_layer.get_param("b")).copy()
        bias[n_old:] = bias[:n_old].min()
        output_layer.set_param("b", self.model.ops.asarray1f(bias))


@Language.factory(
    FACTORY,
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config={
        "model": DEFAULT_NER_MODEL,
        "scheme": DEFAULT_SCHEME,
        "class_balance": DEFAULT_CLASS_BALANCE,
        "bias_init": DEFAULT_BIAS_INIT,
        "scorer": {"@scorers": "spacy.ner_scorer.v1"},
    },
    default_score_weights=SCORE_WEIGHTS,
)
def make_ner(
    nlp: Language,
    name: str,
    model: Model,
    scheme: str,
    class_balance: float,
    bias_init: str,
    scorer: Optional[Callable],
) -> LinearEntityRecognizer:
    """LS-unLLaMA's NER head: a linear tagger over BIO (default, the paper's)
    or BILUO tags, decoded into valid entities.

    class_balance: from 0 (plain cross-entropy, the paper's) to 1: how far the
        loss evens out the tags' frequencies in the training data.
    bias_init: "zero" (every tag starts equally likely) or "prior" (the
        output bias starts at the log of the tags' frequencies).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"{name}: unknown scheme {scheme!r}; use one of {', '.join(SCHEMES)}.")
    return LinearEntityRecognizer(
        nlp.vocab, model, name, scheme=scheme, class_balance=class_balance, bias_init=bias_init, scorer=scorer
    )
