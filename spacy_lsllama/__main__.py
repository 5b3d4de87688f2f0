"""`python -m spacy_lsllama COMMAND`: see spacy_lsllama/cli."""
from spacy_lsllama.cli import main

if __name__ == "__main__":
    main()
