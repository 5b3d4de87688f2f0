"""spacy-lsllama: label-supervised decoder LLMs (LS-LLaMA, LS-unLLaMA) for spaCy.

spaCy finds the registered functions (`spacy-lsllama.LlamaTransformer.v2`,
the pooling layers, the component factories, the `lsllama` CLI group)
through entry points, so configs work without an import and `spacy package`
records spacy-lsllama as a requirement. The names below load on first use:
spaCy loads every CLI plugin at start-up, and importing transformers and peft
there would slow every `spacy` command down by seconds.
"""
import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "LlamaTransformer": "models.architectures",
    "Tok2VecLlamaTransformer": "models.tok2vec",
    "TextCatReduce": "heads.pooling",
    "reduce_first": "heads.pooling",
    "reduce_last": "heads.pooling",
    "LlamaSettings": "decoder.settings",
    "LoraSettings": "decoder.settings",
    "QuantizationSettings": "decoder.settings",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
