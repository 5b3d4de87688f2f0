"""Pipelines on disk beyond the decoder's own saved form: atomic whole-pipeline
saves, and the component that stores a merged decoder inside the pipeline."""
