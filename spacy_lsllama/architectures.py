"""`spacy-lsllama.LlamaTransformer.v1`: a LoRA decoder LLM as a spaCy transformer.

The model is a drop-in `model` for spacy-transformers' `transformer`
component: it maps docs to a `FullTransformerBatch`, which the component
broadcasts to `TransformerListener` layers in `textcat`, `textcat_multilabel`
and `ner`. Label supervision (LS-LLaMA) is then just spaCy's own heads trained
on the decoder's final hidden states with cross-entropy.
"""
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from spacy.tokens import Doc, Span
from spacy.util import registry
from spacy_transformers.data_classes import FullTransformerBatch, WordpieceBatch
from spacy_transformers.layers._util import replace_listener, replace_listener_cfg
from spacy_transformers.span_getters import configure_strided_spans
from thinc.api import ArgsKwargs, Model, xp2torch
from thinc.layers.pytorchwrapper import forward as pytorch_forward
from thinc.shims import PyTorchGradScaler
from transformers.modeling_outputs import BaseModelOutput

from .alignment import align_spans
from .settings import LlamaSettings, LoraSettings, QuantizationSettings
from .shim import LlamaShim
from .tokenization import encode_spans

DEFAULT_WINDOW = 128
DEFAULT_STRIDE = 96


@registry.architectures("spacy-lsllama.LlamaTransformer.v1")
def LlamaTransformer(
    name: str,
    get_spans: Optional[Callable[[List[Doc]], List[List[Span]]]] = None,
    tokenizer_config: Dict[str, Any] = {},
    lora: Optional[Dict[str, Any]] = {},
    dtype: str = "float32",
    quantization: Union[None, str, Dict[str, Any]] = None,
    bidirectional: bool = False,
    attn_implementation: str = "sdpa",
    max_length: Optional[int] = None,
    revision: Optional[str] = None,
    gradient_checkpointing: bool = False,
    mixed_precision: bool = False,
    grad_scaler_config: Dict[str, Any] = {},
    trust_remote_code: bool = False,
    share_base: bool = True,
) -> Model[List[Doc], FullTransformerBatch]:
    """A LoRA-adapted decoder LLM whose final hidden states feed spaCy's heads.

    name: hub id or local folder of any decoder that transformers' AutoModel loads.
    get_spans: splits docs into the spans the model reads; strided spans of
        128 tokens with a stride of 96 by default.
    tokenizer_config: keyword arguments for AutoTokenizer.from_pretrained.
    lora: r, alpha, dropout, target_modules (defaults: the paper's 12, 32, 0.1,
        q_proj and v_proj); null trains every weight instead.
    dtype: float32, bfloat16 or float16, for weights and compute.
    quantization: null, "4bit" (NF4, double quantization), "8bit" (LLM.int8),
        or a section with bits, quant_type, double_quant and compute_dtype.
    bidirectional: remove the causal mask in every layer (LS-unLLaMA).
    attn_implementation: eager, sdpa or flash_attention_2 (causal only).
    max_length: the longest piece row run in one pass; longer spans run in
        consecutive windows. Defaults to the model's positions.
    gradient_checkpointing: trade compute for activation memory.
    mixed_precision, grad_scaler_config: thinc's fp16 autocast on a GPU.
    trust_remote_code: run code from the model's repository (off unless asked).
    share_base: reuse the frozen weights of an identical base that another
        pipeline in this process has loaded (LoRA, unquantized only).
    """
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
        get_spans = configure_strided_spans(DEFAULT_WINDOW, DEFAULT_STRIDE)
    grad_scaler = PyTorchGradScaler(**{"enabled": mixed_precision, **grad_scaler_config})
    shim = LlamaShim(settings, mixed_precision=mixed_precision, grad_scaler=grad_scaler)
    decoder = Model(
        "lsllama-decoder",
        pytorch_forward,
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


class LlamaTransformerModel(Model):
    """A thinc Model whose file is replaced atomically on saving.

    The bytes are built first and written beside the target, then moved over
    it: a save that fails or is interrupted leaves the previous file intact
    (or none), never a truncated one."""

    def to_disk(self, path: Union[str, Path]) -> None:
        path = Path(path)
        data = self.to_bytes()
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        os.replace(partial, path)


def decoder_shim(model: Model) -> LlamaShim:
    return model.layers[0].shims[0]


def init(model: Model, X: Optional[List[Doc]] = None, Y=None) -> None:
    shim = decoder_shim(model)
    if not shim.is_loaded:
        shim.load_pretrained()
    model.set_dim("nO", shim.hidden_size)


def forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[FullTransformerBatch, Callable]:
    shim = decoder_shim(model)
    nested_spans = model.attrs["get_spans"](docs)
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
