"""Validated settings of a `spacy-lsllama.LlamaTransformer` model.

The config file hands the architecture plain values and dict sections; this
module turns them into frozen dataclasses once, so that every bad value fails
at config validation time with a message that names the setting and the fix,
and every later module can rely on clean types.
"""
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, Dict, Optional, Tuple, Union

import torch

from .defaults import ALL_LINEAR, LORA_ALPHA, LORA_DROPOUT, LORA_R, LORA_TARGETS

DTYPES: Dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
QUANTIZATION_BITS = {"4bit": 4, "8bit": 8}
QUANT_TYPES = ("nf4", "fp4")


class SettingsError(ValueError):
    """A setting of the LlamaTransformer architecture has a bad value."""


@dataclass(frozen=True)
class LoraSettings:
    """The LoRA adapters trained on top of the frozen base (peft `LoraConfig`).

    target_modules: layer names; None for the family's default targets;
    or ALL_LINEAR. The symbols are resolved to names when the model loads
    (lora_targets.resolve_targets), and a loaded model's settings hold names."""

    r: int = LORA_R
    alpha: float = LORA_ALPHA
    dropout: float = LORA_DROPOUT
    target_modules: Union[None, str, Tuple[str, ...]] = LORA_TARGETS

    @classmethod
    def from_section(cls, section: Optional[Dict[str, Any]]) -> Optional["LoraSettings"]:
        """Read the `lora` config section; `None` means full finetuning."""
        if section is None:
            return None
        if not isinstance(section, dict):
            raise SettingsError(
                f"lora must be a section with r, alpha, dropout and target_modules, "
                f"or null for full finetuning; got {section!r}."
            )
        unknown = set(section) - {"r", "alpha", "dropout", "target_modules"}
        if unknown:
            raise SettingsError(
                f"Unknown lora setting(s) {sorted(unknown)}: the lora section takes "
                "r, alpha, dropout and target_modules."
            )
        defaults = cls()
        r = section.get("r", defaults.r)
        alpha = section.get("alpha", defaults.alpha)
        dropout = section.get("dropout", defaults.dropout)
        targets = _target_setting(section.get("target_modules", defaults.target_modules))
        if not isinstance(r, int) or r < 1:
            raise SettingsError(f"lora.r must be a positive integer, got {r!r}.")
        if not isinstance(alpha, (int, float)) or alpha <= 0:
            raise SettingsError(f"lora.alpha must be a positive number, got {alpha!r}.")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise SettingsError(f"lora.dropout must be in [0, 1), got {dropout!r}.")
        return cls(r=r, alpha=float(alpha), dropout=float(dropout), target_modules=targets)


def _target_setting(targets: Any) -> Union[None, str, Tuple[str, ...]]:
    """`lora.target_modules` as LoraSettings holds it: None, ALL_LINEAR, or a
    tuple of names (a single name may be given as a string)."""
    if targets is None or targets == ALL_LINEAR:
        return targets
    if isinstance(targets, str):
        targets = (targets,)
    if not targets or not isinstance(targets, (list, tuple)) or not all(isinstance(t, str) and t for t in targets):
        raise SettingsError(
            "lora.target_modules must be a non-empty list of module names "
            f'(e.g. ["q_proj", "v_proj"]), null for the family\'s default targets, or "{ALL_LINEAR}"; '
            f"got {targets!r}."
        )
    return tuple(targets)


FOUR_BIT_SETTINGS = ("quant_type", "double_quant", "compute_dtype")


@dataclass(frozen=True)
class QuantizationSettings:
    """A bitsandbytes quantized base: 4-bit (NF4/FP4, QLoRA) or 8-bit (LLM.int8)."""

    bits: int
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: Optional[str] = None  # None: bfloat16 on a GPU, float32 on the CPU

    @classmethod
    def from_setting(
        cls, setting: Union[None, str, Dict[str, Any]]
    ) -> Optional["QuantizationSettings"]:
        """Read `quantization`: null, "4bit", "8bit", or a section with `bits`."""
        if setting is None:
            return None
        if isinstance(setting, str):
            if setting not in QUANTIZATION_BITS:
                raise SettingsError(
                    f"Unknown quantization {setting!r}: use null, \"4bit\" or \"8bit\", "
                    "or a [quantization] section with bits, quant_type, double_quant "
                    "and compute_dtype."
                )
            return cls(bits=QUANTIZATION_BITS[setting])
        if not isinstance(setting, dict):
            raise SettingsError(f"quantization must be null, a string or a section; got {setting!r}.")
        unknown = set(setting) - {"bits", "quant_type", "double_quant", "compute_dtype"}
        if unknown:
            raise SettingsError(
                f"Unknown quantization setting(s) {sorted(unknown)}: the section takes "
                "bits, quant_type, double_quant and compute_dtype."
            )
        bits = setting.get("bits")
        if bits not in (4, 8):
            raise SettingsError(f"quantization.bits must be 4 or 8, got {bits!r}.")
        four_bit_only = sorted(key for key in FOUR_BIT_SETTINGS if setting.get(key) is not None)
        if bits == 8 and four_bit_only:
            raise SettingsError(
                f"quantization.{', quantization.'.join(four_bit_only)} only apply to 4-bit "
                "quantization; LLM.int8 (bits = 8) has no such setting. Remove them, or set bits = 4."
            )
        quant_type = setting.get("quant_type", "nf4")
        if quant_type not in QUANT_TYPES:
            raise SettingsError(
                f"quantization.quant_type must be one of {QUANT_TYPES}, got {quant_type!r}."
            )
        compute_dtype = setting.get("compute_dtype")
        if compute_dtype is not None and compute_dtype not in DTYPES:
            raise SettingsError(
                f"quantization.compute_dtype must be one of {sorted(DTYPES)} or null, "
                f"got {compute_dtype!r}."
            )
        return cls(
            bits=bits,
            quant_type=quant_type,
            double_quant=bool(setting.get("double_quant", True)),
            compute_dtype=compute_dtype,
        )


# Each setting of a LlamaTransformer is one of three kinds (the `role` of its field):
# - DESCRIPTION: what the trained decoder is (its adapters, its attention, how its
#   text is cut). Saved with the pipeline and fixed by training: at load time the
#   saved value wins over the config's.
# - BASE: where its base lives. Saved for reference; the loading config's value
#   wins, so a pipeline can be pointed at a moved copy of its base.
# - LOAD: how this process loads and runs it (dtype, quantization, attention
#   kernel, trust, sharing). Never saved: each load chooses.
DESCRIPTION, BASE, LOAD = "description", "base", "load"


def _setting(role: str, default: Any = None, *, factory: Any = MISSING) -> Any:
    if factory is not MISSING:
        return field(default_factory=factory, metadata={"role": role})
    return field(default=default, metadata={"role": role})


@dataclass(frozen=True)
class LlamaSettings:
    """Everything needed to rebuild a LlamaTransformer exactly, each setting
    marked as part of the saved description, the base's location, or a load
    option (see DESCRIPTION, BASE and LOAD)."""

    name: str = _setting(BASE)
    revision: Optional[str] = _setting(BASE)
    tokenizer_config: Dict[str, Any] = _setting(DESCRIPTION, factory=dict)
    lora: Optional[LoraSettings] = _setting(DESCRIPTION, factory=LoraSettings)
    dtype: str = _setting(LOAD, "float32")
    quantization: Optional[QuantizationSettings] = _setting(LOAD)
    bidirectional: bool = _setting(DESCRIPTION, False)
    # None: sdpa, or eager where sdpa drops a feature of the model's attention
    # (families.attention_implementation); resolved when the model loads.
    attn_implementation: Optional[str] = _setting(LOAD)
    max_length: Optional[int] = _setting(DESCRIPTION)
    gradient_checkpointing: bool = _setting(LOAD, False)
    trust_remote_code: bool = _setting(LOAD, False)
    share_base: bool = _setting(LOAD, True)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise SettingsError("name must be a hub id or a local folder of a decoder model.")
        if self.dtype not in DTYPES:
            raise SettingsError(
                f"Unknown dtype {self.dtype!r}: use one of {sorted(DTYPES)}."
            )
        if self.attn_implementation is not None and self.attn_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise SettingsError(
                f"Unknown attn_implementation {self.attn_implementation!r}: use one of "
                f"{ATTENTION_IMPLEMENTATIONS}, or null for the model's best."
            )
        if self.bidirectional and self.attn_implementation == "flash_attention_2":
            raise SettingsError(
                "bidirectional = true cannot be honoured by flash_attention_2, which takes "
                'no attention mask; set attn_implementation = "sdpa" or "eager".'
            )
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise SettingsError(f"max_length must be an integer >= 2 or null, got {self.max_length!r}.")
        if self.quantization is not None and self.lora is None:
            raise SettingsError(
                "A quantized base cannot be finetuned fully: set a lora section "
                "or quantization = null."
            )

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def saved_form(self) -> Dict[str, Any]:
        """What a pipeline saves: the description and the base's location."""
        return {key: value for key, value in self.to_dict().items() if _ROLES[key] != LOAD}

    def loaded_as(self, saved: "LlamaSettings") -> "LlamaSettings":
        """These settings (the loading config's) with the saved decoder's
        description, which training fixed."""
        return replace(self, **{key: getattr(saved, key) for key, role in _ROLES.items() if role == DESCRIPTION})

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "LlamaSettings":
        """Read `to_dict()` or `saved_form()` (pipelines saved before 0.3 hold
        every setting; the load options among them are read, then ignored)."""
        data = dict(data)
        lora = data.pop("lora")
        quantization = data.pop("quantization", None)
        return cls(
            lora=None if lora is None else LoraSettings(**{**lora, "target_modules": _target_setting(lora["target_modules"])}),
            quantization=None if quantization is None else QuantizationSettings(**quantization),
            **data,
        )


_ROLES: Dict[str, str] = {setting.name: setting.metadata["role"] for setting in fields(LlamaSettings)}

