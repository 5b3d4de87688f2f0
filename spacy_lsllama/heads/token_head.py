"""`spacy-lsllama.TokenTagger.v1`: LS-unLLaMA's token classifier.

The paper's NER head is one linear layer over each word's final hidden state:
dropout (0.1), then `Linear(hidden, n_tags)`, trained with token-level
cross-entropy. Here the word's vector comes from a `TransformerListener`,
whose pooling picks the piece (the first piece of each word, as the paper, by
default). The model returns one row of tag logits per token; the component
(`lsllama_ner`, spacy_lsllama/ner.py) takes the softmax, the loss and the
constrained decoding.

    docs -> tok2vec (listener) -> dropout -> Linear -> logits (n_tokens, n_tags) per doc

The linear layer's weights start at zero, as the output layers of spaCy's
parser and tagger, so the first steps send no random gradient into the
adapters. A random start is not small here: SmolLM2's final hidden states
have norms near 50, and thinc's default initialization gave logits with a
standard deviation near 3 (loss 6.7 for 9 tags). The bias starts at zero
(every tag equally likely) and `lsllama_ner` sets it to the tags' prior when
it initializes (its `bias_init`, spacy_lsllama/heads/tag_frequencies.py). The
output layer is resizable: a label added after training appends tags, with
zero weights and bias (which `lsllama_ner` lowers to its least likely tag's
when its bias started at the prior), and keeps the trained ones.

Every forward and init function here is thinc's or a module-level function,
never a closure: pipelines are pickled to reach worker processes.
"""
from functools import partial
from typing import List, Optional

from spacy.ml.models.textcat import resize_and_set_ref
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Dropout, Linear, Model, chain, resizable, with_array, zero_init
from thinc.layers.resizable import resize_linear_weighted
from thinc.types import Floats2d

from .pooling import accept_empty_batches

ARCHITECTURE = "spacy-lsllama.TokenTagger.v1"


@registry.architectures(ARCHITECTURE)
def TokenTagger(
    tok2vec: Model[List[Doc], List[Floats2d]],
    dropout: float = 0.1,
    nO: Optional[int] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """Tag logits for every token: dropout, then one linear layer over the
    vectors of `tok2vec`.

    tok2vec: one vector per token, usually a `TransformerListener`.
    dropout: the rate of the dropout before the linear layer (the paper's
        0.1). `spacy train` sets every dropout layer to `[training] dropout`,
        this one included.
    nO: the number of tags; left unset, the component sets it from its labels.
    """
    width = tok2vec.maybe_get_dim("nO")
    output_layer = Linear(nO=nO, nI=width, init_W=zero_init)
    resizable_layer = resizable(output_layer, resize_layer=partial(resize_linear_weighted, fill_defaults={"W": 0, "b": 0}))
    model = chain(
        accept_empty_batches(tok2vec),
        with_array(chain(Dropout(dropout), resizable_layer)),
    )
    model.set_ref("tok2vec", tok2vec)
    model.set_ref("output_layer", output_layer)
    model.attrs["resize_output"] = partial(resize_and_set_ref, resizable_layer=resizable_layer)
    if nO is not None:
        model.set_dim("nO", nO)
    return model


def output_width(model: Model) -> Optional[int]:
    """The number of tags `model` outputs, or None before it is set."""
    return model.get_ref("output_layer").maybe_get_dim("nO")


def has_weights(model: Model) -> bool:
    """Whether the output layer's weights exist (the model was initialized)."""
    return model.get_ref("output_layer").has_param("W") is True
