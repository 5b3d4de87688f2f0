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
from typing import Any, Callable, Dict, List, Optional, Union

from spacy.tokens import Doc, Span
from spacy.util import registry
from spacy_transformers.layers.trfs2arrays import trfs2arrays
from thinc.api import Model, chain
from thinc.types import Floats2d, Ragged

from ..decoder.defaults import MAX_BATCH_PIECES
from .architectures import LlamaTransformer
from .listeners import replace_listener
from .versions import older_version


@registry.architectures("spacy-lsllama.Tok2VecLlamaTransformer.v2")
def Tok2VecLlamaTransformer(
    name: str,
    pooling: Model[Ragged, Floats2d],
    grad_factor: float = 1.0,
    get_spans: Optional[Callable[[List[Doc]], List[List[Span]]]] = None,
    tokenizer_config: Dict[str, Any] = {},
    lora: Optional[Dict[str, Any]] = {},
    dtype: str = "float32",
    quantization: Union[None, str, Dict[str, Any]] = None,
    bidirectional: bool = False,
    attn_implementation: Optional[str] = None,
    max_length: Optional[int] = None,
    revision: Optional[str] = None,
    gradient_checkpointing: bool = False,
    mixed_precision: bool = False,
    grad_scaler_config: Dict[str, Any] = {},
    trust_remote_code: bool = False,
    share_base: bool = True,
    max_batch_pieces: int = MAX_BATCH_PIECES,
    serving_precision: Optional[str] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """A LoRA decoder whose pooled piece vectors give one row per token, for a
    single component (no listener). See `LlamaTransformer` for the settings.

    pooling: reduces each token's piece vectors to one (e.g.
        `spacy-lsllama.reduce_first.v1`), as the listener's pooling.
    grad_factor: scales the gradient passed back to the decoder.
    """
    transformer = LlamaTransformer(
        name=name,
        get_spans=get_spans,
        tokenizer_config=tokenizer_config,
        lora=lora,
        dtype=dtype,
        quantization=quantization,
        bidirectional=bidirectional,
        attn_implementation=attn_implementation,
        max_length=max_length,
        revision=revision,
        gradient_checkpointing=gradient_checkpointing,
        mixed_precision=mixed_precision,
        grad_scaler_config=grad_scaler_config,
        trust_remote_code=trust_remote_code,
        share_base=share_base,
        max_batch_pieces=max_batch_pieces,
        serving_precision=serving_precision,
    )
    return chain(replace_listener(transformer), trfs2arrays(pooling, grad_factor))


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
