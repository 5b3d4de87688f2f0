"""Adds the commands to spaCy's CLI as `python -m spacy lsllama COMMAND`.

spaCy's `setup_cli` loads every `spacy_cli` entry point before it runs a
command (`registry.cli.get_all()`); loading this module adds the group.
"""
from spacy.cli._util import app as spacy_app

from . import build_app

lsllama_cli = build_app("lsllama")
spacy_app.add_typer(lsllama_cli, name="lsllama")
