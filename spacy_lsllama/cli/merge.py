"""`merge`: bake the LoRA adapters of a pipeline into its base weights.

`--format spacy` writes a self-contained pipeline: every other component as
saved, and each LlamaTransformer component as an `lsllama_merged_transformer`
whose merged decoder is a Hugging Face folder inside the component's folder
(`OUTPUT/transformer/base/`, safetensors). It loads offline from wherever the
folder is moved; see spacy_lsllama/merged.py.

`--format hf` writes only the merged decoder and its tokenizer as a Hugging
Face folder (no LM head, no spaCy heads).

Both folders work with plain `AutoTokenizer` + `AutoModel` and padding: when
spacy-lsllama's own pad token got an id past the base's embedding table (every
base whose tokenizer fills its vocabulary: LLaMA-2, Llama-3, SmolLM2), the
merged decoder's embeddings grow to the tokenizer's size, the new rows zero;
and the tokenizer pads on the right, as the adapters were trained (a bare
forward pass numbers positions from the first column, so left padding would
shift every padded row). spaCy masks padding, so nothing the pipeline
computes changes.

A quantized base is refused: the adapters were trained against the quantized
weights, and merging into them would round the adapters away (4-bit) or
requantize every layer. `--dequantize` loads the original full-precision
weights instead and merges there; the result then differs from the quantized
pipeline by the quantization error.
"""
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import typer
from wasabi import msg

from ._util import (
    CommandError,
    pipeline_config,
    reports_errors,
    require_lsllama_components,
)

FORMATS = ("spacy", "hf")


def plan_merge(
    pipeline: Path, output: Path, *, format: str, component: Optional[str], dequantize: bool
) -> Tuple[List[str], Dict[str, object]]:
    """Check everything that can be checked without loading weights; return the
    components to merge and the config overrides to load the pipeline with."""
    if format not in FORMATS:
        raise CommandError(f"Unknown format {format!r}: use spacy or hf.")
    config = pipeline_config(pipeline)
    components = require_lsllama_components(pipeline, config)
    if component is not None:
        components = [(name, section) for name, section in components if name == component]
        if not components:
            names = ", ".join(name for name, _ in require_lsllama_components(pipeline, config))
            raise CommandError(f"{pipeline} has no LlamaTransformer component {component!r}; it has: {names}.")
    if format == "hf" and len(components) > 1:
        names = ", ".join(name for name, _ in components)
        raise CommandError(f"{pipeline} has several LlamaTransformer components ({names}): choose one with --component.")
    quantized = [name for name, section in components if section["model"].get("quantization") is not None]
    if quantized and not dequantize:
        raise CommandError(
            f"The base of {', '.join(quantized)} is loaded quantized ({components[0][1]['model']['quantization']!r}); "
            "merging into quantized weights would round the adapters away. Pass --dequantize to merge "
            "into the full-precision base instead (predictions then differ from the quantized "
            "pipeline by the quantization error), or load the pipeline as it is."
        )
    if output.resolve() == pipeline.resolve() or pipeline.resolve() in output.resolve().parents:
        raise CommandError(f"Write the merged model outside the pipeline it comes from ({pipeline}).")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise CommandError(f"{output} exists and is not an empty directory: choose a new output folder.")
    overrides: Dict[str, object] = {f"components.{name}.model.quantization": None for name in quantized}
    for name, _ in components:
        # merge_and_unload adds the adapters to the base weights in place: the
        # base must be this pipeline's own copy, never one shared with other
        # pipelines in the process (see spacy_lsllama/sharing.py).
        overrides[f"components.{name}.model.share_base"] = False
    return [name for name, _ in components], overrides


def merged_decoder(shim):
    """The shim's decoder with its adapters merged in (peft `merge_and_unload`);
    a decoder without adapters (lora = null) is returned as it is."""
    from peft import PeftModel

    transformer = shim.encoder.transformer
    if isinstance(transformer, PeftModel):
        transformer = transformer.merge_and_unload(safe_merge=True)
    return transformer


def fit_embeddings_to_tokenizer(decoder, tokenizer):
    """Give `decoder` an embedding row for every id `tokenizer` can produce.

    Without it, a padded batch in plain transformers looks up the pad id past
    the table: an IndexError on the CPU, a device-side assert on CUDA. The new
    rows are zero rather than random, so the folder is deterministic; their
    values never matter where padding is masked."""
    import torch

    rows = decoder.get_input_embeddings().num_embeddings
    if len(tokenizer) <= rows:
        return decoder
    decoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        decoder.get_input_embeddings().weight[rows:] = 0
    return decoder


def pad_on_the_right_when_saved(tokenizer):
    """Make `save_pretrained` record the right padding spacy-lsllama set.

    transformers saves only the attributes named in `init_kwargs`, so a LLaMA
    tokenizer set to pad on the right is saved without it and loads padding on
    the left again, its class default."""
    tokenizer.init_kwargs["padding_side"] = tokenizer.padding_side
    tokenizer.init_kwargs["truncation_side"] = tokenizer.truncation_side
    return tokenizer


def merge(
    pipeline: Path,
    output: Path,
    *,
    format: str = "spacy",
    component: Optional[str] = None,
    dequantize: bool = False,
) -> Path:
    pipeline, output = Path(pipeline), Path(output)
    names, overrides = plan_merge(pipeline, output, format=format, component=component, dequantize=dequantize)

    import spacy
    import srsly
    from spacy.util import load_model_from_config

    from ..persistence.merged import BASE_FOLDER, FACTORY, decoder_shim, write_base

    nlp = spacy.load(pipeline, config=overrides)
    if format == "hf":
        shim = decoder_shim(nlp.get_pipe(names[0]).model)
        tokenizer = pad_on_the_right_when_saved(shim.loaded_tokenizer())
        write_base(output, fit_embeddings_to_tokenizer(merged_decoder(shim), tokenizer), tokenizer)
        return output

    # The saved config, without the load-time overrides above.
    config = pipeline_config(pipeline)
    merged_from = {}
    for name in names:
        settings = decoder_shim(nlp.get_pipe(name).model).settings
        section = config["components"][name]
        section["factory"] = FACTORY
        section["model"].update(
            name=BASE_FOLDER,
            revision=None,
            lora=None,
            quantization=None,
            # The saved settings define the attention and windows, whatever the config said.
            bidirectional=settings.bidirectional,
            max_length=settings.max_length,
        )
        merged_from[name] = {
            "base": settings.name,
            "revision": settings.revision,
            "lora": None if settings.lora is None else settings.to_dict()["lora"],
            "dequantized": overrides.get(f"components.{name}.model.quantization", "kept") is None,
        }
    # Fail before writing anything if the new config is wrong (no weights load here).
    load_model_from_config(config, auto_fill=False, validate=True)

    nlp.meta.setdefault("lsllama", {})["merged_from"] = merged_from
    nlp.to_disk(output, exclude=names)
    for name in names:
        shim = decoder_shim(nlp.get_pipe(name).model)
        (output / name).mkdir()
        srsly.write_json(output / name / "cfg", nlp.get_pipe(name).cfg)
        tokenizer = pad_on_the_right_when_saved(shim.loaded_tokenizer())
        write_base(output / name / BASE_FOLDER, fit_embeddings_to_tokenizer(merged_decoder(shim), tokenizer), tokenizer)
    config.to_disk(output / "config.cfg")
    return output


@reports_errors
def merge_cli(
    pipeline: Path = typer.Argument(..., help="Folder of a trained spacy-lsllama pipeline (e.g. training/model-best)."),
    output: Path = typer.Argument(..., help="New folder to write the merged pipeline or model to."),
    format: str = typer.Option("spacy", "--format", "-f", help="spacy: a self-contained pipeline holding the merged decoder; hf: only the merged decoder and tokenizer, as a Hugging Face folder."),
    component: Optional[str] = typer.Option(None, "--component", "-c", help="The transformer component to merge (default: every LlamaTransformer component; --format hf needs exactly one)."),
    dequantize: bool = typer.Option(False, "--dequantize", help="For a quantized base: merge into the full-precision base weights instead of refusing."),
):
    """Bake the LoRA adapters into the base weights (peft merge_and_unload).
    The merged pipeline predicts like the adapter pipeline, without the adapter
    computation, and needs no base model from the hub or cache."""
    merge(pipeline, output, format=format, component=component, dequantize=dequantize)
    size = sum(path.stat().st_size for path in output.rglob("*") if path.is_file())
    if format == "hf":
        msg.good(f"Saved the merged decoder and tokenizer to {output} ({size / 2**20:.1f} MB)")
        msg.text("It holds the decoder without LM head; the spaCy heads (textcat, ner) are not in it.")
        components = require_lsllama_components(pipeline, pipeline_config(pipeline))
        if any(section["model"].get("bidirectional") for name, section in components if component in (None, name)):
            msg.warn(
                "The adapters were trained without the causal mask (LS-unLLaMA): run the decoder with "
                "spacy_lsllama.decoder.attention.bidirectional_mask, not AutoModel's default causal attention."
            )
    else:
        msg.good(f"Saved the merged pipeline to {output} ({size / 2**20:.1f} MB)")
        msg.text(f"Load it with spacy.load({str(output)!r}); no base model is needed.")
