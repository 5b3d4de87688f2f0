"""spacy-lsllama: label-supervised decoder LLMs (LS-LLaMA, LS-unLLaMA) for spaCy.

spaCy finds the registered functions (`spacy-lsllama.LlamaTransformer.v1`,
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
    "LlamaTransformer": "architectures",
    "Tok2VecLlamaTransformer": "tok2vec",
    "TextCatReduce": "pooling",
    "reduce_first": "pooling",
    "reduce_last": "pooling",
    "LlamaSettings": "settings",
    "LoraSettings": "settings",
    "QuantizationSettings": "settings",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
