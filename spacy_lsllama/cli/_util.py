"""Shared pieces of the command-line interface.

Command modules import only typer, wasabi and the standard library at import
time: `python -m spacy` imports every `spacy_cli` plugin on each call, so torch,
transformers and peft are imported inside the commands that need them.
"""
import functools
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

from wasabi import msg

ARCHITECTURE = "spacy-lsllama.LlamaTransformer.v3"
# Every version, for commands that read saved pipelines.
ARCHITECTURES = ("spacy-lsllama.LlamaTransformer.v1", "spacy-lsllama.LlamaTransformer.v2", ARCHITECTURE)


class CommandError(ValueError):
    """A command cannot run with the arguments it was given; the message says why and what to do."""


def reports_errors(command: Callable) -> Callable:
    """Turn a CommandError into a red one-line message and exit code 1, the way
    spaCy's own commands report user errors, instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CommandError as error:
            msg.fail(str(error))
            sys.exit(1)

    return wrapper


def split_list(value: str) -> List[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def pipeline_config(path: Path):
    """The saved config of the pipeline at `path`, or an error that says what is missing."""
    from thinc.api import Config

    if not path.exists():
        raise CommandError(f"Pipeline not found: {path} does not exist.")
    if not path.is_dir() or not (path / "config.cfg").is_file():
        raise CommandError(
            f"{path} is not a spaCy pipeline directory (it has no config.cfg). Pass the folder "
            "written by nlp.to_disk or spacy train (e.g. training/model-best)."
        )
    return Config().from_disk(path / "config.cfg", interpolate=False)


def lsllama_components(config) -> List[Tuple[str, Dict[str, Any]]]:
    """The components of a pipeline config whose model is a LlamaTransformer."""
    return [
        (name, component)
        for name, component in config.get("components", {}).items()
        if isinstance(component.get("model"), dict)
        and component["model"].get("@architectures") in ARCHITECTURES
    ]


def require_lsllama_components(path: Path, config) -> List[Tuple[str, Dict[str, Any]]]:
    components = lsllama_components(config)
    if not components:
        names = ", ".join(config.get("nlp", {}).get("pipeline", [])) or "no components"
        raise CommandError(
            f"{path} is not a spacy-lsllama pipeline: none of its components ({names}) "
            f"uses {ARCHITECTURE}."
        )
    return components
