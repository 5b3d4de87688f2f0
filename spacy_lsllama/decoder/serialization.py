"""The saved form of a LlamaTransformer: adapters, tokenizer and a base reference.

spacy-transformers writes the whole state dict of the model into one msgpack
blob, which fails past 4 GiB, and on loading first builds a random
full-precision model. A LlamaTransformer instead saves:
- the trainable weights only (the LoRA adapters; everything under full
  finetuning), as safetensors, never pickle;
- the tokenizer files, as `save_pretrained` writes them;
- its settings;
- a reference to the base model: name, revision, whether it was a local folder
  or a hub id, and its identity (config fields and weights, see identity.py),
  plus the config hash of spacy-lsllama 0.1.0, so that 0.1.0 can still load it.
`spacy.load` rebuilds the base from the reference and attaches the adapters.

Everything read back is data: safetensors, msgpack and tokenizer files, which
are rebuilt with remote code off and without any .py file among them.
"""
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import srsly
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .identity import BaseIdentity

FORMAT = "spacy-lsllama.LlamaTransformer/1"
# msgpack stores a bin object in at most 2**32 - 1 bytes.
MAX_INLINE_BYTES = 2**32 - 1


class SavedTransformerError(ValueError):
    """Saved transformer data that cannot be read."""


@dataclass
class BaseReference:
    """What a saved pipeline records about its base. Pipelines saved by 0.1.0
    have neither `identity` nor `source`."""

    name: str
    revision: Any
    fingerprint: str  # spacy-lsllama 0.1.0's hash of config.to_dict()
    identity: Optional[BaseIdentity] = None
    source: Optional[str] = None  # identity.FOLDER or identity.HUB


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
    """The tokenizer, rebuilt from its saved files as data only: Python files
    among them are not written, and transformers is told not to run code from
    the folder (nor to ask whether it may)."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as folder:
        for name, content in files.items():
            path = Path(folder) / Path(name).name
            if path.suffix != ".py":
                path.write_bytes(content)
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=False, local_files_only=True)


def weights_to_bytes(weights: Dict[str, torch.Tensor]) -> bytes:
    data = save_safetensors({key: tensor.detach().contiguous().cpu() for key, tensor in weights.items()})
    if len(data) > MAX_INLINE_BYTES:
        raise SavedTransformerError(
            f"The trainable weights take {len(data) / 2**30:.1f} GiB, more than a spaCy "
            "pipeline file can hold (4 GiB). Train LoRA adapters (a lora section) "
            "instead of full finetuning, or merge the adapters into a Hugging Face folder."
        )
    return data


def base_to_dict(base: BaseReference) -> Dict[str, Any]:
    data: Dict[str, Any] = {"name": base.name, "revision": base.revision, "fingerprint": base.fingerprint}
    if base.identity is not None:
        data["identity"] = base.identity.to_dict()
        data["source"] = base.source
    return data


def base_from_dict(data: Dict[str, Any]) -> BaseReference:
    identity = data.get("identity")
    return BaseReference(
        name=data["name"],
        revision=data["revision"],
        fingerprint=data["fingerprint"],
        identity=None if identity is None else BaseIdentity.from_dict(identity),
        source=data.get("source"),
    )


def dump_saved_transformer(saved: SavedTransformer) -> bytes:
    message = {
        "format": FORMAT,
        "settings": saved.settings,
        "base": base_to_dict(saved.base),
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
            "written by this version of spacy-lsllama's LlamaTransformer."
        )
    try:
        weights = load_safetensors(message["weights"])
        return SavedTransformer(
            settings=message["settings"],
            base=base_from_dict(message["base"]),
            tokenizer_files=message["tokenizer"],
            weights=weights,
        )
    except Exception as error:
        raise SavedTransformerError(
            f"The saved transformer is corrupt or incomplete ({type(error).__name__}: {error}). "
            "Save the pipeline again, or restore it from a backup."
        ) from error
