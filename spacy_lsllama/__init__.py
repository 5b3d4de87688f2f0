"""spacy-lsllama: label-supervised decoder LLMs (LS-LLaMA, LS-unLLaMA) for spaCy.

Importing the package registers `spacy-lsllama.LlamaTransformer.v1`; spaCy
also finds it through the `spacy_architectures` entry point, so configs work
without an import and `spacy package` records spacy-lsllama as a requirement.
"""
from .architectures import LlamaTransformer
from .pooling import TextCatReduce, reduce_first, reduce_last
from .settings import LlamaSettings, LoraSettings, QuantizationSettings

__version__ = "0.1.0"
__all__ = ["LlamaTransformer", "TextCatReduce", "reduce_first", "reduce_last", "LlamaSettings", "LoraSettings", "QuantizationSettings", "__version__"]
