"""Pieces: tokenizing spaCy spans for a decoder, and aligning pieces to tokens."""
