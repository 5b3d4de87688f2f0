"""`spacy-lsllama.Tok2VecLlamaTransformer.v2`: a LlamaTransformer owned by one
component, with the pooling its listener had.

This is the architecture `nlp.replace_listeners` writes into a component's
config when it gives the component its own copy of the shared transformer
(see spacy_lsllama/listeners.py); a config may also use it directly, for a
component that should not share the decoder. Its layers are the ones the
replaced listener leaves in the component, so the saved weights load into it:

    chain(chain(LlamaTransformer, split_trf_batch), trfs2arrays(pooling, grad_factor))

The arguments are those of `spacy-lsllama.LlamaTransformer.v3`, plus the
listener's `pooling` and `grad_factor`.
"""
from typing import Any, List

from spacy.tokens import Doc
from spacy.util import registry
from spacy_transformers.layers.trfs2arrays import trfs2arrays
from thinc.api import Model, chain
from thinc.types import Floats2d, Ragged

from .architectures import LlamaTransformer
from .listeners import replace_listener
from .versions import extended, older_version


def _tok2vec(pooling: Model[Ragged, Floats2d], grad_factor: float = 1.0, **settings: Any) -> Model[List[Doc], List[Floats2d]]:
    transformer = LlamaTransformer(**settings)
    return chain(replace_listener(transformer), trfs2arrays(pooling, grad_factor))


Tok2VecLlamaTransformer = registry.architectures(
    "spacy-lsllama.Tok2VecLlamaTransformer.v2",
    func=extended(
        LlamaTransformer,
        _tok2vec,
        name="Tok2VecLlamaTransformer",
        doc="""A LoRA decoder whose pooled piece vectors give one row per token, for a
    single component (no listener). Takes every setting of `LlamaTransformer`, and:

    pooling: reduces each token's piece vectors to one (e.g.
        `spacy-lsllama.reduce_first.v1`), as the listener's pooling.
    grad_factor: scales the gradient passed back to the decoder.
    """,
    ),
)


Tok2VecLlamaTransformerWithoutServingPrecision = registry.architectures(
    "spacy-lsllama.Tok2VecLlamaTransformer.v1",
    func=older_version(
        Tok2VecLlamaTransformer,
        name="Tok2VecLlamaTransformerWithoutServingPrecision",
        without=["serving_precision"],
        doc="""v1 of `spacy-lsllama.Tok2VecLlamaTransformer`, kept for the pipelines
    saved with it: v2 without `serving_precision`.""",
    ),
)
