"""`nlp.replace_listeners` for components listening to a LlamaTransformer.

spaCy's `Language.replace_listeners` (also run for `source = ...` components
with `replace_listeners = ["model.tok2vec"]`) gives a component its own copy
of the transformer in two steps, through two attrs of the transformer's model:

- `replace_listener(model)` turns the copied transformer model into the layer
  that takes the place of the `TransformerListener` node in the component's
  model. The listener's pooling (`trfs2arrays`) stays where it was, after it;
- `replace_listener_cfg(tok2vec_cfg, listener_cfg)` writes the config of the
  component's new `tok2vec`, so that the saved pipeline builds the same layers
  when it loads.

spacy-transformers' versions rewrite the config only for architectures named
"...TransformerModel...": for `spacy-lsllama.LlamaTransformer` the
component's `tok2vec` became a bare transformer without pooling, and the saved
pipeline failed to load ("mismatched structure"). These versions write
`spacy-lsllama.Tok2VecLlamaTransformer.v2` (models/tok2vec.py, the arguments
of every LlamaTransformer version), whose
layers are exactly those `replace_listener` leaves in the component:

    chain(chain(LlamaTransformer, split_trf_batch), trfs2arrays(pooling, grad_factor))

Both are module-level functions, so a pipeline holding them pickles.
"""
import copy
from typing import Any, Dict

from spacy_transformers.layers.split_trf import split_trf_batch
from thinc.api import Model, chain

from ..decoder.defaults import V1_STRIDE, V1_WINDOW

TOK2VEC_ARCHITECTURE = "spacy-lsllama.Tok2VecLlamaTransformer.v2"
V1_ARCHITECTURE = "spacy-lsllama.LlamaTransformer.v1"
LISTENER_ARCHITECTURE = "spacy-transformers.TransformerListener.v1"


def replace_listener(model: Model) -> Model:
    """The copied transformer, split by doc: what the listener node produced.
    The listener's pooling follows it in the component's model."""
    return chain(model, split_trf_batch())


def replace_listener_cfg(tok2vec_model_cfg: Dict[str, Any], listener_model_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The config of the component's own transformer: the LlamaTransformer's
    settings, with the pooling and grad_factor of the listener it replaces."""
    architecture = listener_model_cfg.get("@architectures", "")
    if "TransformerListener" not in architecture:
        raise ValueError(
            f"replace_listeners on a spacy-lsllama transformer needs {LISTENER_ARCHITECTURE} "
            f"listeners; the component's tok2vec is {architecture!r}, whose layers it cannot rebuild."
        )
    result = copy.deepcopy(dict(tok2vec_model_cfg))
    if result.get("@architectures") == V1_ARCHITECTURE and result.get("get_spans") is None:
        # The component's own transformer takes the current arguments; keep v1's default spans.
        result["get_spans"] = {"@span_getters": "spacy-transformers.strided_spans.v1", "window": V1_WINDOW, "stride": V1_STRIDE}
    result["@architectures"] = TOK2VEC_ARCHITECTURE
    for key in ("pooling", "grad_factor"):
        if key in listener_model_cfg:
            result[key] = copy.deepcopy(listener_model_cfg[key])
    return result
