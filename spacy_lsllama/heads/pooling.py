"""Reductions that accept empty sequences.

thinc's `reduce_first`, `reduce_last` and `reduce_max` raise "all sequence
lengths must be > 0" on an empty sequence. In a pipeline that happens for an
empty doc in a batch (`nlp.pipe(["", "hello"])` with last-token textcat
pooling) and for a token with no pieces. These layers give an empty sequence
a zero vector and no gradient, and behave exactly like thinc's otherwise.
LS-LLaMA's text classifier pools the last token, so its configs use these.
`TextCatReduce` also takes a batch in which no doc has a token at all.

Every forward and init function here is a module-level function, never a
closure: pipelines are pickled to reach worker processes (`nlp.pipe(n_process=...)`
under spawn, joblib, Ray), and closures cannot be pickled.
"""
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Tuple

from spacy.ml.models.textcat import resize_and_set_ref, resize_linear_weighted
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Linear, Logistic, Model, Softmax, chain, concatenate, list2ragged, reduce_mean
from thinc.api import resizable
from thinc.types import Floats2d, Ints1d, Ragged

NEG_VALUE = -5000.0  # the bias of new labels in a resized softmax, as spaCy uses
# Marks a text classifier model that scores a batch in which no doc has a token.
SCORES_EMPTY_BATCHES = "lsllama_scores_empty_batches"


def _no_init(model: Model, X=None, Y=None) -> None:
    """An explicit empty init: without one thinc stores `partial(empty_init,
    model)` on the model, a reference cycle."""


def _reduce_to_one_row(model: Model[Ragged, Floats2d], Xr: Ragged, is_train: bool) -> Tuple[Floats2d, Callable]:
    """The first or last row (`model.attrs["row"]`) of each sequence."""
    xp = model.ops.xp
    lengths = model.ops.asarray1i(Xr.lengths)
    ends = xp.cumsum(lengths)
    present = xp.nonzero(lengths > 0)[0]
    rows = (ends - lengths if model.attrs["row"] == "first" else ends - 1)[present]
    Y = model.ops.alloc2f(len(lengths), Xr.dataXd.shape[1])
    Y[present] = Xr.dataXd[rows]

    def backprop(dY: Floats2d) -> Ragged:
        dX = model.ops.alloc2f(*Xr.dataXd.shape)
        dX[rows] = dY[present]
        return Ragged(dX, Xr.lengths)

    return Y, backprop


def _reduce_mean_of_any_batch() -> Model[Ragged, Floats2d]:
    """thinc's `reduce_mean`, except for a batch of only empty sequences: thinc
    returns an array of width 0 for it, where this returns zeros of the input's width."""
    return Model("lsllama-reduce-mean", _reduce_mean_forward, init=_no_init, layers=[reduce_mean()])


def _reduce_mean_forward(model: Model[Ragged, Floats2d], Xr: Ragged, is_train: bool) -> Tuple[Floats2d, Callable]:
    if Xr.dataXd.shape[0] > 0:
        return model.layers[0](Xr, is_train)
    Y = model.ops.alloc2f(len(Xr.lengths), Xr.dataXd.shape[1])
    return Y, lambda dY: Ragged(model.ops.alloc2f(*Xr.dataXd.shape), Xr.lengths)


@registry.layers("spacy-lsllama.reduce_first.v1")
def reduce_first() -> Model[Ragged, Floats2d]:
    """The first row of each sequence; zeros for an empty one."""
    return Model("lsllama-reduce-first", _reduce_to_one_row, init=_no_init, attrs={"row": "first"})


@registry.layers("spacy-lsllama.reduce_last.v1")
def reduce_last() -> Model[Ragged, Floats2d]:
    """The last row of each sequence; zeros for an empty one."""
    return Model("lsllama-reduce-last", _reduce_to_one_row, init=_no_init, attrs={"row": "last"})


def accept_empty_batches(tok2vec: Model[List[Doc], List[Floats2d]]) -> Model[List[Doc], List[Floats2d]]:
    """`tok2vec`, except that a batch in which no doc has a token gets zero-row
    arrays of its width without calling it. spacy-transformers' listener cannot
    pool such a batch: the transformer produced no output for it."""
    return Model("lsllama-accept-empty-batches", _accept_empty_forward, init=_accept_empty_init, layers=[tok2vec])


def _accept_empty_forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[List[Floats2d], Callable]:
    tok2vec = model.layers[0]
    if any(len(doc) for doc in docs):
        return tok2vec(docs, is_train)
    width = tok2vec.get_dim("nO")
    return [model.ops.alloc2f(0, width) for _ in docs], _no_gradient_to_docs


def _accept_empty_init(model: Model, X: Optional[List[Doc]] = None, Y=None) -> None:
    model.layers[0].initialize(X=X, Y=Y)


def _no_gradient_to_docs(d_arrays: List[Floats2d]) -> List[Doc]:
    return []


@registry.architectures("spacy-lsllama.TextCatReduce.v1")
def TextCatReduce(
    tok2vec: Model,
    exclusive_classes: bool,
    use_reduce_first: bool = False,
    use_reduce_last: bool = True,
    use_reduce_mean: bool = False,
    nO: Optional[int] = None,
) -> Model:
    """`spacy.TextCatReduce.v1` whose first/last-token pooling accepts empty docs.

    An empty doc gets the scores of a zero vector, in a batch of only empty
    docs too: a valid distribution that sums to 1 for exclusive classes. Max
    pooling is left out: it has no meaningful value for an empty doc."""
    reductions: List[Model] = []
    if use_reduce_first:
        reductions.append(reduce_first())
    if use_reduce_last:
        reductions.append(reduce_last())
    if use_reduce_mean:
        reductions.append(_reduce_mean_of_any_batch())
    if not reductions:
        raise ValueError("TextCatReduce needs at least one of use_reduce_first, use_reduce_last, use_reduce_mean.")
    width = tok2vec.maybe_get_dim("nO")
    nI = width * len(reductions) if width is not None else None
    if exclusive_classes:
        output_layer = Softmax(nO=nO, nI=nI)
        fill_defaults = {"b": NEG_VALUE, "W": 0}
    else:
        output_layer = Linear(nO=nO, nI=nI)
        fill_defaults = {"b": 0, "W": 0}
    resizable_layer = resizable(
        output_layer, resize_layer=partial(resize_linear_weighted, fill_defaults=fill_defaults)
    )
    layers = [accept_empty_batches(tok2vec), list2ragged(), concatenate(*reductions), resizable_layer]
    if not exclusive_classes:
        layers.append(Logistic())
    model = chain(*layers)
    model.set_ref("tok2vec", tok2vec)
    model.set_ref("output_layer", output_layer)
    model.attrs["resize_output"] = partial(resize_and_set_ref, resizable_layer=resizable_layer)
    model.attrs["multi_label"] = not exclusive_classes
    model.attrs[SCORES_EMPTY_BATCHES] = True
    if nO is not None:
        model.set_dim("nO", nO)
    return model


def listener_config(pooling: str) -> Dict[str, Any]:
    """A `TransformerListener` that pools each token's pieces with `pooling`."""
    return {
        "@architectures": "spacy-transformers.TransformerListener.v1",
        "grad_factor": 1.0,
        "upstream": "*",
        "pooling": {"@layers": pooling},
    }


def classifier_config(exclusive: bool, bidirectional: bool = False) -> Dict[str, Any]:
    """The `TextCatReduce` config of an LS-LLaMA text classifier. LS-LLaMA
    (causal) classifies from the last token, the only one that has read the
    whole text; under bidirectional attention (LS-unLLaMA) every token has, and
    the text is mean-pooled (the reference code's `mean` pooling)."""
    return {
        "@architectures": "spacy-lsllama.TextCatReduce.v1",
        "exclusive_classes": exclusive,
        "use_reduce_first": False,
        "use_reduce_last": not bidirectional,
        "use_reduce_mean": bidirectional,
        "nO": None,
        "tok2vec": listener_config("reduce_mean.v1" if bidirectional else "spacy-lsllama.reduce_last.v1"),
    }
