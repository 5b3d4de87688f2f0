"""The saved form of a LlamaTransformer: adapters, tokenizer and a base reference.

spacy-transformers writes the whole state dict of the model into one msgpack
blob, which fails past 4 GiB, and on loading first builds a random
full-precision model. A LlamaTransformer instead saves:
- the trainable weights only (the LoRA adapters; everything under full
  finetuning), as safetensors, never pickle;
- the tokenizer files, as `save_pretrained` writes them;
- its settings;
- a reference to the base model: name, revision and a fingerprint of its config.
`spacy.load` rebuilds the base from the reference and attaches the adapters.
"""
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

import srsly
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

FORMAT = "spacy-lsllama.LlamaTransformer/1"
# msgpack stores a bin object in at most 2**32 - 1 bytes.
MAX_INLINE_BYTES = 2**32 - 1


class SavedTransformerError(ValueError):
    """Saved transformer data that cannot be read."""


@dataclass
class BaseReference:
    name: str
    revision: Any
    fingerprint: str


@dataclass
class SavedTransformer:
    settings: Dict[str, Any]
    base: BaseReference
    tokenizer_files: Dict[str, bytes]
    weights: Dict[str, torch.Tensor]


def tokenizer_to_files(tokenizer) -> Dict[str, bytes]:
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return {path.name: path.read_bytes() for path in Path(folder).iterdir() if path.is_file()}


def tokenizer_from_files(files: Dict[str, bytes]):
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as folder:
        for name, content in files.items():
            (Path(folder) / Path(name).name).write_bytes(content)
        return AutoTokenizer.from_pretrained(folder)


def weights_to_bytes(weights: Dict[str, torch.Tensor]) -> bytes:
    data = save_safetensors({key: tensor.detach().contiguous().cpu() for key, tensor in weights.items()})
    if len(data) > MAX_INLINE_BYTES:
        raise SavedTransformerError(
            f"The trainable weights take {len(data) / 2**30:.1f} GiB, more than a spaCy "
            "pipeline file can hold (4 GiB). Train LoRA adapters (a lora section) "
            "instead of full finetuning, or merge the adapters into a Hugging Face folder."
        )
    return data


def dump_saved_transformer(saved: SavedTransformer) -> bytes:
    message = {
        "format": FORMAT,
        "settings": saved.settings,
        "base": {
            "name": saved.base.name,
            "revision": saved.base.revision,
            "fingerprint": saved.base.fingerprint,
        },
        "tokenizer": saved.tokenizer_files,
        "weights": weights_to_bytes(saved.weights),
    }
    return srsly.msgpack_dumps(message)


def load_saved_transformer(data: bytes) -> SavedTransformer:
    """Read saved transformer bytes, or explain why they cannot be read."""
    try:
        message = srsly.msgpack_loads(data)
    except Exception as error:
        raise SavedTransformerError(
            "The saved transformer is corrupt or truncated (it is not valid msgpack: "
            f"{error}). Save the pipeline again, or restore it from a backup."
        ) from error
    if not isinstance(message, dict) or message.get("format") != FORMAT:
        found = message.get("format") if isinstance(message, dict) else type(message).__name__
        raise SavedTransformerError(
            f"The saved transformer has format {found!r}, expected {FORMAT!r}: it was not "
            "written by this version of spacy-lsllama's LlamaTransformer.v1."
        )
    try:
        weights = load_safetensors(message["weights"])
        base = message["base"]
        return SavedTransformer(
            settings=message["settings"],
            base=BaseReference(base["name"], base["revision"], base["fingerprint"]),
            tokenizer_files=message["tokenizer"],
            weights=weights,
        )
    except Exception as error:
        raise SavedTransformerError(
            f"The saved transformer is corrupt or incomplete ({type(error).__name__}: {error}). "
            "Save the pipeline again, or restore it from a backup."
        ) from error
