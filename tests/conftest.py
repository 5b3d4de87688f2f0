"""Shared fixtures: tiny offline LLaMA checkpoints and small pipelines on them."""
import os
from pathlib import Path
from typing import Dict

import pytest

from tiny_models import save_tiny_llama

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TOKENIZER_KINDS = ("metaspace", "byte_level")

@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {kind: save_tiny_llama(root / kind, kind) for kind in TOKENIZER_KINDS}


@pytest.fixture(params=TOKENIZER_KINDS)
def tiny_model(request, tiny_model_dirs) -> Path:
    """A tiny LLaMA checkpoint, once with each tokenizer family."""
    return tiny_model_dirs[request.param]


@pytest.fixture
def metaspace_model(tiny_model_dirs) -> Path:
    return tiny_model_dirs["metaspace"]
