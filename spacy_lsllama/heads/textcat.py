"""`lsllama_textcat` and `lsllama_textcat_multilabel`: spaCy's text classifiers
that score every doc, the empty ones included.

spaCy's `TextCategorizer.predict` does not call its model on a batch in which
no doc has a token (`nlp("")`, or `nlp.pipe` over only empty texts): it returns
all-zero scores, which for exclusive classes is not a distribution. In a batch
that also holds a non-empty doc, the same empty doc is scored by the model. These
components always call the model, so a doc gets the same scores whatever batch
it is in, and exclusive scores always sum to 1. Their model must accept a batch
of only empty docs, as `spacy-lsllama.TextCatReduce.v1` does; spaCy's own
architectures do not, and are refused.

Everything else (labels, training, scoring, serialization) is spaCy's
`textcat` / `textcat_multilabel`. The default model is LS-LLaMA's classifier:
the last token of a causal decoder, read through a `TransformerListener`.
"""
from typing import Callable, Iterable, Optional

from spacy.language import Language
from spacy.pipeline.textcat import TextCategorizer
from spacy.pipeline.textcat_multilabel import MultiLabel_TextCategorizer
from spacy.tokens import Doc
from thinc.api import Model
from thinc.types import Floats2d

from .pooling import SCORES_EMPTY_BATCHES, classifier_config
from ..decoder.settings import SettingsError

TEXTCAT_FACTORY = "lsllama_textcat"
TEXTCAT_MULTILABEL_FACTORY = "lsllama_textcat_multilabel"

DEFAULT_TEXTCAT_MODEL = classifier_config(exclusive=True)
DEFAULT_TEXTCAT_MULTILABEL_MODEL = classifier_config(exclusive=False)


def _score_every_doc(component: TextCategorizer, docs: Iterable[Doc]) -> Floats2d:
    return component.model.ops.asarray(component.model.predict(list(docs)))


def _require_empty_batch_support(factory: str, model: Model) -> None:
    """spaCy's own text classifier models fail on a batch of only empty docs
    (spaCy's components never give them one); refuse them when the pipeline is
    built, not on the first empty text in production."""
    if not model.attrs.get(SCORES_EMPTY_BATCHES):
        raise SettingsError(
            f"{factory} calls its model on every batch, also on one in which no doc has a token "
            f"(nlp(\"\")), and its model {model.name!r} is not known to handle that. Use "
            f'@architectures = "spacy-lsllama.TextCatReduce.v1", or, for spaCy\'s own '
            f'architectures, factory = "{factory.replace("lsllama_", "")}".'
        )


class LSLlamaTextCategorizer(TextCategorizer):
    """spaCy's exclusive text classifier, scoring empty docs with its model."""

    def predict(self, docs: Iterable[Doc]) -> Floats2d:
        return _score_every_doc(self, docs)


class LSLlamaMultiLabelTextCategorizer(MultiLabel_TextCategorizer):
    """spaCy's multi-label text classifier, scoring empty docs with its model."""

    def predict(self, docs: Iterable[Doc]) -> Floats2d:
        return _score_every_doc(self, docs)


# spaCy's textcat and textcat_multilabel weights: cats_score (macro F1 for
# exclusive classes, macro AUC for multi-label) is the one training selects on.
SCORE_WEIGHTS = {
    "cats_score": 1.0,
    **dict.fromkeys(
        ["cats_score_desc", "cats_micro_p", "cats_micro_r", "cats_micro_f", "cats_macro_p",
         "cats_macro_r", "cats_macro_f", "cats_macro_auc", "cats_f_per_type"]
    ),
}


@Language.factory(
    TEXTCAT_FACTORY,
    assigns=["doc.cats"],
    default_config={
        "threshold": 0.0,
        "model": DEFAULT_TEXTCAT_MODEL,
        "scorer": {"@scorers": "spacy.textcat_scorer.v2"},
    },
    default_score_weights=SCORE_WEIGHTS,
)
def make_textcat(
    nlp: Language, name: str, model: Model, threshold: float, scorer: Optional[Callable]
) -> LSLlamaTextCategorizer:
    """Exclusive classes: each doc's scores sum to 1, empty docs included."""
    _require_empty_batch_support(TEXTCAT_FACTORY, model)
    return LSLlamaTextCategorizer(nlp.vocab, model, name, threshold=threshold, scorer=scorer)


@Language.factory(
    TEXTCAT_MULTILABEL_FACTORY,
    assigns=["doc.cats"],
    default_config={
        "threshold": 0.5,
        "model": DEFAULT_TEXTCAT_MULTILABEL_MODEL,
        "scorer": {"@scorers": "spacy.textcat_multilabel_scorer.v2"},
    },
    default_score_weights=SCORE_WEIGHTS,
)
def make_textcat_multilabel(
    nlp: Language, name: str, model: Model, threshold: float, scorer: Optional[Callable]
) -> LSLlamaMultiLabelTextCategorizer:
    """Independent labels, each scored in [0, 1], empty docs included."""
    _require_empty_batch_support(TEXTCAT_MULTILABEL_FACTORY, model)
    return LSLlamaMultiLabelTextCategorizer(nlp.vocab, model, name, threshold=threshold, scorer=scorer)
