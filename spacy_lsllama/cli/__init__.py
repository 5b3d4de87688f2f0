"""Command-line interface: `python -m spacy_lsllama COMMAND`, and the same
commands as `python -m spacy lsllama COMMAND` through spaCy's `spacy_cli` entry
point (see spacy_plugin.py).

    init-config  a complete, validated training config for ner/textcat/textcat_multilabel
    merge        bake the LoRA adapters into the base weights (spaCy pipeline or HF folder)
    info         trainable parameters and a memory estimate for training and inference
    apply        annotate a corpus with a trained pipeline, here or on a Ray cluster (--ray)
"""
import typer

from .apply import apply_cli
from .info import info_cli
from .init_config import init_config_cli
from .merge import merge_cli

HELP = """spacy-lsllama: label-supervised LoRA decoders (LS-LLaMA, LS-unLLaMA) for spaCy."""


def build_app(name: str) -> typer.Typer:
    app = typer.Typer(name=name, help=HELP, no_args_is_help=True, rich_markup_mode=None, add_completion=False)
    app.command("init-config")(init_config_cli)
    app.command("merge")(merge_cli)
    app.command("info")(info_cli)
    app.command("apply")(apply_cli)
    return app


app = build_app("spacy_lsllama")


def main() -> None:
    from typer.main import get_command

    get_command(app)(prog_name="python -m spacy_lsllama")
