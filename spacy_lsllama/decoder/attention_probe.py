"""Checking, once per loaded base, that the attention runs as configured.

`bidirectional = true` hands the decoder a 4D mask that opens the causal
triangle (attention.py). Most families pass it to eager and SDPA attention
untouched, but not all: GPT-2 under eager attention and GPT-Neo apply a
causal buffer of their own and stay causal without a word; BLOOM and
GPT-BigCode fail with unrelated errors. So the mode is verified, not assumed:
`verify_attention` probes the loaded base once and refuses a model that does
not attend as asked, naming the family and the attention implementations
that do work.

The probe runs two rows of PROBE_PIECES pieces through the same path as every
batch (SpanEncoder's masks and position ids); the second row's last pieces are
padding. It records what each decoder layer receives and returns, then calls
each layer again with its input at the last position changed, and compares
the layer's outputs:

- bidirectional: the first piece's output of every layer must change (it
  reads the last piece), checked layer by layer, so that a causal layer
  cannot hide behind a bidirectional one before it;
- both modes: no real piece of the padded row may change (padding stays
  masked in every layer).

Unchanged means bit-identical up to one unit in the last place, which
causal attention gives exactly, in any dtype. The probe costs one forward
pass of the two rows plus one more call of each layer on them: about two
forward passes, once per loaded base. Sliding windows longer than the probe
are not probed; transformers' 4D masks replace them (the tests set the
windows of Mistral, Gemma-2 and Gemma-3 shorter than the probe).
"""
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from transformers import PretrainedConfig

from .families import decoder_layers, text_config
from .settings import SettingsError

PROBE_PIECES = 8
PADDED_ROW_LENGTH = 5
IMPLEMENTATIONS_TRIED = ("eager", "sdpa")

Encode = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class UnsupportedAttentionError(SettingsError):
    """The model does not attend as configured (bidirectional, or padding masked)."""


@dataclass(frozen=True)
class AttentionProbe:
    """What the probe found: the output width, or why it could not run."""

    width: Optional[int] = None
    failure: Optional[str] = None  # the forward pass raised this error
    # The layers (indices; or "all", the model's output, when its layers could
    # not be probed one by one) whose first piece does not read the last
    # piece, and those whose real pieces read padding.
    blind_layers: Tuple[object, ...] = ()
    leaking_layers: Tuple[object, ...] = ()

    def problem(self, bidirectional: bool) -> Optional[str]:
        """What is wrong for the mode, or None."""
        if self.failure is not None:
            given = "a 4D attention mask that opens the causal mask" if bidirectional else "a padded batch"
            return f"it fails on {given} ({self.failure})"
        if bidirectional and self.blind_layers:
            return (
                f"{_where(self.blind_layers)} the first piece does not see the pieces after it: "
                "the model keeps a causal mask of its own and ignores the 4D mask"
            )
        if self.leaking_layers:
            return f"{_where(self.leaking_layers)} real pieces attend to padding, so vectors would depend on the batch"
        return None


def _where(layers: Tuple[object, ...]) -> str:
    if layers == ("all",):
        return "in the model's output"
    return f"in layer(s) {', '.join(str(layer) for layer in layers)}"


def probe_inputs(model: torch.nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """Two rows of piece ids spread over the vocabulary; the second one padded."""
    embeddings = model.get_input_embeddings()
    vocabulary = embeddings.num_embeddings
    device = embeddings.weight.device
    row = [(3 + 7 * i) % vocabulary for i in range(PROBE_PIECES)]
    input_ids = torch.tensor([row, row], device=device)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, PADDED_ROW_LENGTH:] = 0
    return input_ids, attention_mask


def _changed(before: torch.Tensor, after: torch.Tensor) -> bool:
    """Whether any value differs by more than one unit in its last place."""
    eps = torch.finfo(before.dtype).eps if before.is_floating_point() else 0.0
    before, after = before.float(), after.float()
    return bool(((after - before).abs() > eps * before.abs().clamp_min(1e-12)).any())


def _hidden_of(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _with_last_changed(args: tuple, kwargs: Dict[str, Any]) -> Tuple[tuple, Dict[str, Any]]:
    """A layer's call arguments with its hidden states changed at the last position."""
    if args and isinstance(args[0], torch.Tensor):
        hidden, rest = args[0], args[1:]
    else:
        hidden, rest = kwargs["hidden_states"], args
    changed = hidden.clone()
    changed[:, -1] = -changed[:, -1] + changed.abs().mean()
    if args and isinstance(args[0], torch.Tensor):
        return (changed, *rest), kwargs
    return rest, {**kwargs, "hidden_states": changed}


def probe_attention(model: torch.nn.Module, encode: Encode) -> AttentionProbe:
    """Run the probe (see the module docstring) through `encode`, the
    SpanEncoder path, on `model`, the base decoder without adapters."""
    input_ids, attention_mask = probe_inputs(model)
    vocabulary = model.get_input_embeddings().num_embeddings
    layers = decoder_layers(model)
    calls: List[Tuple[tuple, Dict[str, Any], torch.Tensor]] = []

    def record(module, args, kwargs, output):
        calls.append((args, kwargs, _hidden_of(output).clone()))

    handles = [layer.register_forward_hook(record, with_kwargs=True) for layer in (layers or [])]
    try:
        with torch.no_grad():
            hidden = encode(input_ids, attention_mask)
    except Exception as error:  # whatever the modeling code raises: reported, never hidden
        return AttentionProbe(failure=f"{type(error).__name__}: {error}")
    finally:
        for handle in handles:
            handle.remove()
    width = int(hidden.shape[-1])
    if layers is None or len(calls) != len(layers):
        return _probe_outputs(encode, input_ids, attention_mask, hidden, width, vocabulary)
    try:
        return _probe_layers(layers, calls, width)
    except Exception:  # a layer that cannot be called again on its recorded inputs
        return _probe_outputs(encode, input_ids, attention_mask, hidden, width, vocabulary)


def _probe_layers(
    layers: torch.nn.ModuleList, calls: List[Tuple[tuple, Dict[str, Any], torch.Tensor]], width: int
) -> AttentionProbe:
    """Call each layer again on its recorded inputs changed at the last
    position; compare the first piece, and the padded row's real pieces, with
    what it returned."""
    blind, leaking = [], []
    with torch.no_grad():
        for index, (layer, (args, kwargs, before)) in enumerate(zip(layers, calls)):
            changed_args, changed_kwargs = _with_last_changed(args, kwargs)
            after = _hidden_of(layer(*changed_args, **changed_kwargs))
            if not _changed(before[0, 0], after[0, 0]):
                blind.append(index)
            if _changed(before[1, :PADDED_ROW_LENGTH], after[1, :PADDED_ROW_LENGTH]):
                leaking.append(index)
    return AttentionProbe(width=width, blind_layers=tuple(blind), leaking_layers=tuple(leaking))


def _probe_outputs(
    encode: Encode,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    hidden: torch.Tensor,
    width: int,
    vocabulary: int,
) -> AttentionProbe:
    """The probe for a model whose decoder layers cannot be probed one by one:
    the first piece's final output must change with the last piece's id. It
    stands for every layer together (a causal layer after a bidirectional one
    goes unseen), and padding, whose ids never reach the model, is not probed."""
    changed_ids = input_ids.clone()
    changed_ids[:, -1] = (changed_ids[:, -1] + 1) % vocabulary
    with torch.no_grad():
        changed = encode(changed_ids, attention_mask)
    return AttentionProbe(width=width, blind_layers=() if _changed(hidden[0, 0], changed[0, 0]) else ("all",))


# Refusing, with what works instead ------------------------------------------------


def _configs(model: torch.nn.Module) -> List[PretrainedConfig]:
    found: Dict[int, PretrainedConfig] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if isinstance(config, PretrainedConfig):
            found.setdefault(id(config), config)
    return list(found.values())


@contextmanager
def attention_switched(model: torch.nn.Module, implementation: str) -> Iterator[None]:
    """Run the loaded model with another attention implementation for a while,
    where its modeling code reads the choice from its config at each call."""
    configs = _configs(model)
    previous = [config._attn_implementation for config in configs]
    try:
        for config in configs:
            config._attn_implementation = implementation
        yield
    finally:
        for config, value in zip(configs, previous):
            config._attn_implementation = value


def offered_implementations(model: torch.nn.Module) -> List[str]:
    """The attention implementations (of those the plugin uses on the CPU and
    GPU alike) that transformers offers for the model's family."""
    return [name for name in IMPLEMENTATIONS_TRIED if name == "eager" or getattr(model, f"_supports_{name}", False)]


def implementations_that_work(model: torch.nn.Module, encode: Encode, bidirectional: bool, current: str) -> List[str]:
    """The other offered attention implementations under which the probe passes."""
    working = []
    for implementation in offered_implementations(model):
        if implementation == current:
            continue
        with attention_switched(model, implementation):
            if probe_attention(model, encode).problem(bidirectional) is None:
                working.append(implementation)
    return working


def refusal(
    model_type: str, implementation: str, bidirectional: bool, problem: str, working: List[str], offered: List[str]
) -> str:
    """The error message: the mode, the family and the implementation that
    failed, what the probe found, and the settings that work instead."""
    mode = "bidirectional = true" if bidirectional else "causal attention"
    lines = [f"{mode} does not work for this {model_type} model under {implementation} attention: {problem}."]
    if working:
        lines.append(
            f'It works under {" and ".join(working)} attention: set attn_implementation = "{working[0]}"'
            + (", or set bidirectional = false (LS-LLaMA)." if bidirectional else ".")
        )
        return "\n".join(lines)
    tried = f"No attention implementation that transformers offers for {model_type} ({', '.join(offered)})"
    if bidirectional:
        lines.append(
            f"{tried} makes it bidirectional: set bidirectional = false (LS-LLaMA), or use a family "
            'that supports it (see "Decoder families" in the README).'
        )
    else:
        lines.append(f"{tried} masks its padding.")
    return "\n".join(lines)


# Once per loaded base ----------------------------------------------------------------

# Probe results for bases shared between pipelines (sharing.SharedBase), by mode.
_VERIFIED: "weakref.WeakKeyDictionary[Any, Dict[bool, int]]" = weakref.WeakKeyDictionary()


def verify_attention(model: torch.nn.Module, encode: Encode, *, bidirectional: bool, cache_key: Any = None) -> int:
    """The model's output width, once the probe found its attention as
    configured; otherwise an UnsupportedAttentionError that names the family
    and the implementations that work. A base shared by several pipelines
    (`cache_key`, its SharedBase) is probed once per mode."""
    verified = _VERIFIED.get(cache_key, {}) if cache_key is not None else {}
    if bidirectional in verified:
        return verified[bidirectional]
    probe = probe_attention(model, encode)
    problem = probe.problem(bidirectional)
    if problem is not None:
        config = model.config
        current = config._attn_implementation
        working = implementations_that_work(model, encode, bidirectional, current)
        family = text_config(config).model_type
        offered = offered_implementations(model)
        raise UnsupportedAttentionError(refusal(family, current, bidirectional, problem, working, offered))
    assert probe.width is not None
    if cache_key is not None:
        _VERIFIED.setdefault(cache_key, {})[bidirectional] = probe.width
    return probe.width
