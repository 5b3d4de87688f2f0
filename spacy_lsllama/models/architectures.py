"""`spacy-lsllama.LlamaTransformer.v3`: a LoRA decoder LLM as a spaCy transformer.

The model is a drop-in `model` for spacy-transformers' `transformer`
component: it maps docs to a `FullTransformerBatch`, which the component
broadcasts to `TransformerListener` layers in `textcat`, `textcat_multilabel`
and `ner`. Label supervision (LS-LLaMA) is then just spaCy's own heads trained
on the decoder's final hidden states with cross-entropy.
"""
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from spacy.tokens import Doc, Span
from spacy.util import registry
from spacy_transformers.data_classes import FullTransformerBatch, WordpieceBatch
from spacy_transformers.span_getters import configure_strided_spans, get_doc_spans
from thinc.api import ArgsKwargs, Model, xp2torch
from thinc.layers.pytorchwrapper import forward as pytorch_forward
from thinc.shims import PyTorchGradScaler
from transformers.modeling_outputs import BaseModelOutput

from ..decoder.defaults import MAX_BATCH_PIECES, V1_STRIDE, V1_WINDOW
from ..decoder.inference import ServingSettings
from ..decoder.settings import LlamaSettings, LoraSettings, QuantizationSettings, SettingsError
from ..decoder.shim import LlamaShim, find_decoder_shim
from ..persistence.atomic import write_file_atomically
from ..tokenizers.alignment import align_spans
from ..tokenizers.tokenization import encode_spans
from .listeners import replace_listener, replace_listener_cfg
from .versions import older_version


@registry.architectures("spacy-lsllama.LlamaTransformer.v3")
def LlamaTransformer(
    name: str,
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
) -> Model[List[Doc], FullTransformerBatch]:
    """A LoRA-adapted decoder LLM whose final hidden states feed spaCy's heads.

    name: hub id or local folder of a decoder that transformers loads (AutoModel,
        or the decoder of AutoModelForCausalLM); every weight must be found in it.
    get_spans: splits docs into the spans the model reads. By default each doc
        is one span, read whole up to max_length pieces, so a causal
        classifier's last token has read the entire doc (v1: windows of 128
        tokens every 96, which a last-token classifier reads only the end of).
    tokenizer_config: keyword arguments for AutoTokenizer.from_pretrained.
    lora: r, alpha, dropout, target_modules (defaults: the paper's 12, 32, 0.1,
        and the family's default targets: q_proj and v_proj on LLaMA; or
        "all-linear", or layer names); null trains every weight instead.
    dtype: float32, bfloat16 or float16, for weights and compute.
    quantization: null, "4bit" (NF4, double quantization), "8bit" (LLM.int8),
        or a section with bits, quant_type, double_quant and compute_dtype.
    bidirectional: remove the causal mask in every layer (LS-unLLaMA); checked
        when the model loads, and refused for models that stay causal.
    attn_implementation: eager, sdpa or flash_attention_2 (causal only); null
        picks sdpa, or eager where the model's attention needs it (Gemma-2's
        logit soft-capping).
    max_length: the longest piece row run in one pass; longer spans run in
        consecutive windows. Defaults to the model's positions.
    gradient_checkpointing: trade compute for activation memory.
    mixed_precision, grad_scaler_config: thinc's fp16 autocast on a GPU.
    trust_remote_code: run code from the model's repository (off unless asked).
    share_base: reuse the frozen weights of an identical base that another
        pipeline in this process has loaded (LoRA, unquantized only).
    max_batch_pieces: the most padded pieces in one decoder call; a batch, or
        a long doc, runs as several calls (a call holds one row at least).
    serving_precision: how predictions run outside training, chosen at load
        time (decoder/inference.py): null, the base's dtype with the LoRA
        deltas merged (the trained answers); "bfloat16" where the device
        computes it natively (refused elsewhere), or "float32".
    """
    if not isinstance(max_batch_pieces, int) or max_batch_pieces < 1:
        raise SettingsError(f"max_batch_pieces must be a positive integer, got {max_batch_pieces!r}.")
    settings = LlamaSettings(
        name=name,
        revision=revision,
        tokenizer_config=dict(tokenizer_config),
        lora=LoraSettings.from_section(lora),
        dtype=dtype,
        quantization=QuantizationSettings.from_setting(quantization),
        bidirectional=bidirectional,
        attn_implementation=attn_implementation,
        max_length=max_length,
        gradient_checkpointing=gradient_checkpointing,
        trust_remote_code=trust_remote_code,
        share_base=share_base,
    )
    if get_spans is None:
        get_spans = get_doc_spans
    grad_scaler = PyTorchGradScaler(**{"enabled": mixed_precision, **grad_scaler_config})
    shim = LlamaShim(
        settings,
        mixed_precision=mixed_precision,
        grad_scaler=grad_scaler,
        max_batch_pieces=max_batch_pieces,
        serving=ServingSettings(precision=serving_precision),
    )
    decoder = Model(
        "lsllama-decoder",
        pytorch_forward,
        init=_init_decoder,
        attrs={"convert_inputs": _wordpieces_to_torch, "convert_outputs": _hidden_states_from_torch},
        shims=[shim],
    )
    return LlamaTransformerModel(
        "spacy-lsllama.LlamaTransformer",
        forward,
        init=init,
        layers=[decoder],
        dims={"nO": None},
        attrs={
            "get_spans": get_spans,
            "replace_listener": replace_listener,
            "replace_listener_cfg": replace_listener_cfg,
        },
    )


def _windowed_by_default(settings: Dict[str, Any]) -> Dict[str, Any]:
    if settings["get_spans"] is None:
        settings["get_spans"] = configure_strided_spans(V1_WINDOW, V1_STRIDE)
    return settings


LlamaTransformerWithoutServingPrecision = registry.architectures(
    "spacy-lsllama.LlamaTransformer.v2",
    func=older_version(
        LlamaTransformer,
        name="LlamaTransformerWithoutServingPrecision",
        without=["serving_precision"],
        doc="""v2 of `spacy-lsllama.LlamaTransformer`, kept for the pipelines trained
    with it: v3 without `serving_precision`, so it serves in the base's dtype
    (LoRA merged, as v3 by default). To serve such a pipeline in bfloat16,
    load it as v3 (see docs/serving.md).""",
    ),
)

WindowedLlamaTransformer = registry.architectures(
    "spacy-lsllama.LlamaTransformer.v1",
    func=older_version(
        LlamaTransformer,
        name="WindowedLlamaTransformer",
        without=["max_batch_pieces", "serving_precision"],
        adjust=_windowed_by_default,
        doc="""v1 of `spacy-lsllama.LlamaTransformer`, kept for the pipelines trained
    with it: by default each doc is read in strided windows of 128 tokens every
    96, so a causal classifier's last token sees only a doc's last window.
    v2 reads whole docs and takes `max_batch_pieces`; v3 adds
    `serving_precision`. All cap each decoder call at the default number of
    pieces and serve in the base's dtype by default.""",
    ),
)


class LlamaTransformerModel(Model):
    """A thinc Model whose file is replaced atomically on saving.

    The bytes are built first and written beside the target, then moved over
    it: a save that fails or is interrupted leaves the previous file intact
    (or none), never a truncated one."""

    def to_disk(self, path: Union[str, Path]) -> None:
        data = self.to_bytes()
        write_file_atomically(Path(path), lambda temporary: temporary.write_bytes(data))


def init(model: Model, X: Optional[List[Doc]] = None, Y=None) -> None:
    """Load the base with fresh adapters. Initializing a trained pipeline
    starts over, as spaCy re-creates every head: adapters trained for the old
    heads would otherwise be kept under new ones."""
    shim = find_decoder_shim(model)
    shim.load_pretrained()
    model.set_dim("nO", shim.hidden_size, force=True)


def _init_decoder(model: Model, X=None, Y=None) -> None:
    """The decoder is loaded by its parent's `init`. An explicit init (even
    an empty one) keeps thinc from storing `partial(empty_init, model)` on the
    model: a reference cycle that keeps the decoder's weights alive until a
    full garbage collection."""


def forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[FullTransformerBatch, Callable]:
    shim = find_decoder_shim(model)
    # spacy-transformers' split_by_doc does not count the row of an empty
    # span (an empty doc under doc_spans), which would shift every later doc.
    nested_spans = [[span for span in doc_spans if len(span)] for doc_spans in model.attrs["get_spans"](docs)]
    flat_spans = [span for doc_spans in nested_spans for span in doc_spans]
    if not flat_spans:
        return FullTransformerBatch.empty(len(docs)), lambda d_output: docs
    encoded = encode_spans(shim.loaded_tokenizer(), [span.text for span in flat_spans])
    row_length = encoded.wordpieces.input_ids.shape[1]
    align = align_spans(flat_spans, encoded.offsets, row_length)
    model_output, backprop_decoder = model.layers[0](encoded.wordpieces, is_train)
    output = FullTransformerBatch(
        spans=nested_spans, wordpieces=encoded.wordpieces, model_output=model_output, align=align
    )

    def backprop(d_output: FullTransformerBatch) -> List[Doc]:
        backprop_decoder(d_output.model_output)
        return docs

    return output, backprop


def _wordpieces_to_torch(model: Model, wordpieces: WordpieceBatch, is_train: bool):
    device = model.shims[0].device
    kwargs = {
        "input_ids": xp2torch(wordpieces.input_ids, device=device).long(),
        "attention_mask": xp2torch(wordpieces.attention_mask, device=device),
    }
    return ArgsKwargs(args=(), kwargs=kwargs), lambda d_inputs: []


def _hidden_states_from_torch(model: Model, inputs_outputs, is_train: bool):
    _, hidden_states = inputs_outputs

    def backprop(d_model_output: BaseModelOutput) -> ArgsKwargs:
        return ArgsKwargs(args=(hidden_states,), kwargs={"grad_tensors": tuple(d_model_output.values())})

    return BaseModelOutput(last_hidden_state=hidden_states), backprop
