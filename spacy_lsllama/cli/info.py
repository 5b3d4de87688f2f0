"""`info`: trainable parameters and a memory estimate for a base model.

Parameter counts are exact: the model is built from its config on PyTorch's
meta device (no memory, no weights read) and counted; LoRA adds r * (in + out)
parameters to every targeted linear layer.

Memory is an estimate of what the tensors take, not of a process (add about
0.5-1 GB for Python, PyTorch and spaCy, and the CUDA context on a GPU):
- weights: the linear layers of the decoder in the load dtype, or 8 bits (plus
  one float32 scale per row) or 4 bits (plus block scales: 1 byte per 64
  weights with double quantization, 4 without); embeddings and norms are not
  quantized, and peft upcasts them to float32 for a quantized base;
- trainable parameters, their gradients and thinc's Adam moments (two float32
  values per parameter); peft keeps LoRA weights in float32;
- activations kept for the backward pass, per token and layer: the float32
  inputs of both RMSNorms, the inputs of every LoRA layer (and, under full
  finetuning, of every linear layer), the attention inputs and output (and the
  attention probabilities with eager attention), the three MLP tensors of
  SwiGLU; frozen linear layers keep nothing. Gradient checkpointing keeps only
  each layer's input and recomputes one layer at a time. One more layer's worth
  is added for the backward pass's working tensors, and three float32 copies of
  the final hidden states for spaCy (output, listener pooling, gradient);
- inference keeps nothing: the largest transient is one layer's tensors.
"""
import json
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import typer
from wasabi import msg

from ..decoder import defaults
from ._util import CommandError, reports_errors, split_list

# --lora-targets: None for the family's default, "all-linear", or layer names.
TargetOption = Union[None, str, Tuple[str, ...]]

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
FLOAT32 = 4


@dataclass(frozen=True)
class ParameterCounts:
    total: int  # every parameter of the base decoder (no LM head), logical counts
    linear: int  # in linear layers: what bitsandbytes quantizes
    linear_rows: int  # output rows of those layers: one 8-bit scale each
    other: int  # embeddings and norms
    trainable: int  # LoRA parameters, or every parameter under full finetuning
    adapters: int  # LoRA parameters added to the base (0 under full finetuning)

    @property
    def all(self) -> int:
        return self.total + self.adapters


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_width: int  # key/value projection width: kv heads * head dim
    lora_widths: tuple  # (in_features, out_features) of each LoRA layer in one decoder layer


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    trainable: int
    gradients: int
    optimizer: int
    activations: int
    activations_checkpointed: int
    inference_activations: int

    def training(self, gradient_checkpointing: bool) -> int:
        activations = self.activations_checkpointed if gradient_checkpointing else self.activations
        return self.weights + self.trainable + self.gradients + self.optimizer + activations

    @property
    def inference(self) -> int:
        return self.weights + self.inference_activations


def load_config(model: str, revision: Optional[str] = None, trust_remote_code: bool = False):
    """The base's config, found as the library finds a base: a path is a path
    (never looked up on the hub), a hub id is read from the hub or its cache."""
    from transformers import AutoConfig

    from ..decoder.identity import BaseModelError, locate_base

    try:
        location = locate_base(model, revision)
        return AutoConfig.from_pretrained(location.where, revision=revision, trust_remote_code=trust_remote_code)
    except BaseModelError as error:
        raise CommandError(str(error)) from error
    except (OSError, ValueError) as error:
        raise CommandError(
            f"Cannot read the config of {model!r}: {error}. Pass a local folder or a hub id that is "
            "reachable or in the Hugging Face cache."
        ) from error


def meta_model(config):
    """The decoder built on the meta device (shapes only, no memory), as the
    library loads it: AutoModel, or the decoder of AutoModelForCausalLM."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    from ..decoder.families import decoder_layers, decoder_of

    with torch.device("meta"):
        model = AutoModel.from_config(config)
        if decoder_layers(model) is None:
            model = decoder_of(AutoModelForCausalLM.from_config(config)) or model
    if decoder_layers(model) is None:
        raise CommandError(f"Cannot find the decoder blocks of {type(model).__name__}: is {config.model_type} a decoder?")
    return model


def _in_out(module) -> Tuple[int, int]:
    """(in_features, out_features) of a linear layer or a transformers Conv1D."""
    if hasattr(module, "in_features"):
        return module.in_features, module.out_features
    rows, columns = module.weight.shape  # Conv1D stores its weight as (in, out)
    return rows, columns


def resolve_lora_targets(model, targets: TargetOption) -> Tuple[str, ...]:
    """The layers that get adapters, resolved by the library's rule
    (decoder/lora_targets.py): None for the family's default, "all-linear",
    or layer names."""
    from ..decoder.lora_targets import resolve_targets
    from ..decoder.settings import SettingsError

    try:
        return resolve_targets(model, targets)
    except SettingsError as error:
        raise CommandError(str(error).replace("lora.target_modules", "--lora-targets")) from error


def count_parameters(model, lora_r: int, target_modules: Sequence[str]) -> ParameterCounts:
    """Exact counts; `lora_r` 0 means full finetuning."""
    from ..decoder.lora_targets import is_adaptable

    total = sum(parameter.numel() for parameter in model.parameters())
    adaptable = {name: module for name, module in model.named_modules() if is_adaptable(module)}
    linear = sum(sum(p.numel() for p in module.parameters(recurse=False)) for module in adaptable.values())
    rows = sum(_in_out(module)[1] for module in adaptable.values())
    if lora_r == 0:
        trainable = total
    else:
        targets = [module for name, module in adaptable.items() if name.rsplit(".", 1)[-1] in target_modules]
        trainable = sum(lora_r * sum(_in_out(module)) for module in targets)
    return ParameterCounts(
        total=total,
        linear=linear,
        linear_rows=rows,
        other=total - linear,
        trainable=trainable,
        adapters=0 if lora_r == 0 else trainable,
    )


def model_shape(config, model, target_modules: Sequence[str]) -> ModelShape:
    from ..decoder.families import decoder_layers, text_config
    from ..decoder.lora_targets import is_adaptable

    layer = decoder_layers(model)[0]
    widths = tuple(
        _in_out(module)
        for name, module in layer.named_modules()
        if is_adaptable(module) and name.rsplit(".", 1)[-1] in target_modules
    )
    config = text_config(config)
    hidden = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    intermediate = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
    return ModelShape(
        layers=config.num_hidden_layers,
        hidden=hidden,
        intermediate=intermediate,
        heads=heads,
        kv_width=kv_heads * head_dim,
        lora_widths=widths,
    )


def estimate_memory(
    counts: ParameterCounts,
    shape: ModelShape,
    *,
    dtype: str = "float32",
    quantization: Optional[str] = None,
    double_quant: bool = True,
    lora_r: int = defaults.LORA_R,
    lora_dropout: float = defaults.LORA_DROPOUT,
    batch_size: int = 8,
    seq_len: int = 64,
    attn_implementation: str = "sdpa",
) -> MemoryEstimate:
    """Bytes of tensors for training and inference; see the module docstring."""
    if dtype not in DTYPE_BYTES:
        raise CommandError(f"Unknown dtype {dtype!r}: use {', '.join(DTYPE_BYTES)}.")
    compute = DTYPE_BYTES[dtype]
    full_finetuning = lora_r == 0
    if quantization is None:
        weights = counts.total * compute
    elif quantization == "8bit":
        weights = counts.linear + counts.linear_rows * FLOAT32 + counts.other * FLOAT32
    elif quantization == "4bit":
        scales = counts.linear / 64 * (1 if double_quant else FLOAT32)
        weights = int(counts.linear / 2 + scales) + counts.other * FLOAT32
    else:
        raise CommandError(f"Unknown quantization {quantization!r}: use 4bit or 8bit, or leave it out.")
    trainable_bytes = FLOAT32 if not full_finetuning else compute
    trainable = counts.trainable * trainable_bytes
    gradients = counts.trainable * trainable_bytes
    optimizer = counts.trainable * 2 * FLOAT32

    h, inter, heads = shape.hidden, shape.intermediate, shape.heads
    tokens = batch_size * seq_len
    eager = attn_implementation == "eager"
    # Kept for backward, per token of one layer (bytes).
    norms = 2 * h * FLOAT32
    lora = sum((width_in + lora_r) * FLOAT32 + (width_in if lora_dropout > 0 else 0) for width_in, _ in shape.lora_widths)
    attention = 4 * h * compute + (heads * seq_len * (FLOAT32 + compute) if eager else heads * FLOAT32)
    mlp = 3 * inter * compute
    linear_inputs = (3 * h + inter) * compute if full_finetuning else 0
    per_layer = tokens * (norms + (0 if full_finetuning else lora) + attention + mlp + linear_inputs)
    layer_input = tokens * h * compute
    outputs = 3 * tokens * h * FLOAT32
    activations = (shape.layers + 1) * per_layer + outputs
    checkpointed = shape.layers * layer_input + 2 * per_layer + outputs
    transient = tokens * ((4 * h + 2 * shape.kv_width + 3 * inter) * compute + (heads * seq_len * (FLOAT32 + compute) if eager else 0))
    inference = transient + 2 * tokens * h * FLOAT32
    return MemoryEstimate(
        weights=int(weights),
        trainable=trainable,
        gradients=gradients,
        optimizer=optimizer,
        activations=activations,
        activations_checkpointed=checkpointed,
        inference_activations=inference,
    )


def info(
    model: str,
    *,
    quantization: Optional[str] = None,
    dtype: str = "float32",
    lora_r: int = defaults.LORA_R,
    lora_targets: TargetOption = defaults.LORA_TARGETS,
    lora_dropout: float = defaults.LORA_DROPOUT,
    batch_size: int = 8,
    seq_len: int = 64,
    attn_implementation: str = "sdpa",
    revision: Optional[str] = None,
    trust_remote_code: bool = False,
) -> Dict[str, object]:
    if lora_r < 0:
        raise CommandError("--lora-r must be positive, or 0 for full finetuning.")
    if quantization is not None and lora_r == 0:
        raise CommandError("A quantized base cannot be finetuned fully: give --lora-r > 0 or leave out --quantization.")
    if batch_size < 1 or seq_len < 1:
        raise CommandError("--batch-size and --seq-len must be at least 1.")
    if attn_implementation not in ("eager", "sdpa", "flash_attention_2"):
        raise CommandError(f"Unknown attention implementation {attn_implementation!r}: use eager, sdpa or flash_attention_2.")
    config = load_config(model, revision, trust_remote_code)
    decoder = meta_model(config)
    targets = resolve_lora_targets(decoder, lora_targets) if lora_r > 0 else ()
    counts = count_parameters(decoder, lora_r, targets)
    shape = model_shape(config, decoder, targets)
    estimate = estimate_memory(
        counts,
        shape,
        dtype=dtype,
        quantization=quantization,
        lora_r=lora_r,
        lora_dropout=lora_dropout,
        batch_size=batch_size,
        seq_len=seq_len,
        attn_implementation=attn_implementation,
    )
    return {
        "model": model,
        "lora_targets": list(targets),
        "parameters": {**asdict(counts), "all": counts.all},
        "shape": asdict(shape),
        "memory": asdict(estimate),
        "training": estimate.training(False),
        "training_checkpointed": estimate.training(True),
        "inference": estimate.inference,
    }


def target_option(value: str) -> TargetOption:
    """--lora-targets as the library's setting: empty for the family's default."""
    if not value.strip():
        return None
    if value.strip() == defaults.ALL_LINEAR:
        return defaults.ALL_LINEAR
    return tuple(split_list(value))


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


@reports_errors
def info_cli(
    model: str = typer.Option(..., "--model", "-m", help="Hub id or local folder of the base decoder (only its config is read)."),
    quantization: Optional[str] = typer.Option(None, "--quantization", "-q", help="4bit or 8bit (bitsandbytes); default: none."),
    dtype: str = typer.Option("float32", "--dtype", help="Weight and compute dtype: float32, bfloat16 or float16."),
    lora_r: int = typer.Option(defaults.LORA_R, "--lora-r", help="LoRA rank; 0 for full finetuning."),
    lora_targets: str = typer.Option(
        "", "--lora-targets", help=f'Comma-separated layers that get adapters, or "{defaults.ALL_LINEAR}"; default: the family\'s (q_proj,v_proj on LLaMA).'
    ),
    batch_size: int = typer.Option(8, "--batch-size", "-b", help="Spans per batch."),
    seq_len: int = typer.Option(64, "--seq-len", "-l", help="Pieces per span (padded length)."),
    attn_implementation: str = typer.Option("sdpa", "--attn-implementation", help="eager keeps the attention probabilities for backward."),
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as JSON."),
):
    """Print the trainable parameters of a LoRA decoder and estimate the memory
    of its tensors for training (with and without gradient checkpointing) and
    inference. Nothing is loaded but the model's config."""
    result = info(
        model,
        quantization=quantization,
        dtype=dtype,
        lora_r=lora_r,
        lora_targets=target_option(lora_targets),
        batch_size=batch_size,
        seq_len=seq_len,
        attn_implementation=attn_implementation,
    )
    if as_json:
        print(json.dumps(result, indent=2))
        return
    counts, memory = result["parameters"], result["memory"]
    msg.divider(f"{model}")
    msg.text(
        f"trainable params: {counts['trainable']:,} || all params: {counts['all']:,} || "
        f"trainable%: {100 * counts['trainable'] / counts['all']:.4f}"
    )
    msg.text(f"base: {counts['total']:,} ({counts['linear']:,} in linear layers, {counts['other']:,} in embeddings and norms)")
    weights = f"weights ({quantization or dtype})"
    rows: List[tuple] = [
        (weights, human(memory["weights"])),
        ("trainable parameters" if lora_r == 0 else "LoRA parameters (float32)", human(memory["trainable"])),
        ("gradients", human(memory["gradients"])),
        ("Adam moments (thinc, float32)", human(memory["optimizer"])),
        (f"activations, batch {batch_size} x {seq_len}", human(memory["activations"])),
        ("  with gradient checkpointing", human(memory["activations_checkpointed"])),
        ("training total", human(result["training"])),
        ("  with gradient checkpointing", human(result["training_checkpointed"])),
        ("inference total", human(result["inference"])),
    ]
    msg.table(rows, header=("memory (tensors only, estimate)", ""), aligns=("l", "r"))
    msg.text("Add about 0.5-1 GB for Python, PyTorch and spaCy (and the CUDA context on a GPU).")
