"""Shared pieces of the overhead benchmarks.

Two systems run the same model, the same LoRA adapters and the same texts:

- "plugin": a spaCy pipeline built from `configs/textcat-causal.cfg`
  (`spacy-lsllama.LlamaTransformer.v1` + `textcat` with last-token pooling);
- "plain": transformers' `AutoModel` + peft's `get_peft_model` with the same
  LoRA settings, the HF tokenizer right-padding each batch, and (for training)
  a linear head on the last real token, trained with torch's AdamW.

Speed is always reported as a ratio taken side by side in one process: the two
systems are interleaved (order alternating) and the median is reported, so the
noise of a shared machine hits both alike.
"""
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "assets" / "smollm2-135m"
DEFAULT_DATA = ROOT / "corpus" / "rotten_tomatoes" / "train.spacy"
CONFIG = ROOT / "configs" / "textcat-causal.cfg"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def machine_info() -> Dict[str, Any]:
    import torch

    def run(command: str) -> str:
        try:
            return subprocess.run(
                command, shell=True, capture_output=True, text=True, timeout=30
            ).stdout.strip()
        except Exception as error:  # pragma: no cover - informational only
            return f"({error})"

    packages = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "spacy", "spacy-transformers", "thinc"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        # The cores this process may use: `nproc` would obey OMP_NUM_THREADS.
        "nproc": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "lscpu": run("lscpu | head"),
        "cpu_model": run("lscpu | sed -n 's/^Model name: *//p' | head -1"),
        # The flags that decide which kernels torch uses (bfloat16, int8, AMX).
        "cpu_flags": sorted(
            flag for flag in run("lscpu | sed -n 's/^Flags: *//p'").split()
            if flag.startswith(("avx512", "amx", "avx_vnni", "avx2", "fma"))
        ),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "packages": packages,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def write_output(path: Optional[str], result: Dict[str, Any]) -> None:
    text = json.dumps(result, indent=2, default=str)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n", encoding="utf8")
    print(text)


def summarize(values: Sequence[float]) -> Dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


class Timer:
    """Wall time (`seconds`) and the process's CPU time, all threads (`cpu_seconds`).

    On a shared machine the wall time of a step swings with other jobs' load;
    the CPU time is much less affected, so both are reported."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def load_texts_and_cats(path: Path, n: int) -> List[Tuple[str, Dict[str, float]]]:
    """The first `n` docs of a .spacy file as (text, cats), cycled if the
    file is shorter (the smoke test uses a file of a few docs)."""
    import spacy
    from spacy.tokens import DocBin

    nlp = spacy.blank("en")
    docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
    if not docs:
        raise ValueError(f"{path} holds no docs")
    return [(docs[i % len(docs)].text, dict(docs[i % len(docs)].cats)) for i in range(n)]


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --------------------------------------------------------------------------
# The plugin
# --------------------------------------------------------------------------


def build_plugin(
    model: Path,
    *,
    with_textcat: bool = True,
    quantization: Optional[str] = None,
    seed: int = 0,
):
    """The shipped textcat config (transformer + textcat), not yet initialized;
    with_textcat=False drops the textcat to leave the transformer alone."""
    import spacy
    from spacy.util import fix_random_seed, load_config, load_model_from_config

    fix_random_seed(seed)
    overrides: Dict[str, Any] = {"paths.model": str(model)}
    if quantization is not None:
        overrides["components.transformer.model.quantization"] = quantization
    config = load_config(CONFIG, overrides=overrides, interpolate=True)
    if not with_textcat:
        config["nlp"]["pipeline"] = ["transformer"]
        del config["components"]["textcat"]
    return load_model_from_config(config, auto_fill=True, validate=True)


def plugin_examples(nlp, data: Sequence[Tuple[str, Dict[str, float]]]):
    from spacy.training import Example

    return [Example.from_dict(nlp.make_doc(text), {"cats": cats}) for text, cats in data]


def plugin_decoder(nlp):
    """The peft model inside the plugin's shim."""
    shim = nlp.get_pipe("transformer").model.layers[0].shims[0]
    return shim.encoder.transformer


def lora_settings() -> Dict[str, Any]:
    """The LoRA settings of the shipped config, for the plain baseline."""
    from spacy.util import load_config

    lora = load_config(CONFIG, interpolate=True)["components"]["transformer"]["model"]["lora"]
    return dict(lora)


# --------------------------------------------------------------------------
# The plain transformers + peft baseline
# --------------------------------------------------------------------------


def build_plain(model: Path, *, quantization: Optional[str] = None):
    """AutoModel + peft LoRA with the config's settings, as a user would
    write it by hand; the tokenizer right-pads, with eos as pad if it has none."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    kwargs: Dict[str, Any] = {"attn_implementation": "sdpa", "torch_dtype": torch.float32}
    if quantization is not None:
        from transformers import BitsAndBytesConfig

        if quantization == "8bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.float32,
            )
        kwargs["device_map"] = {"": "cpu"}
    base = AutoModel.from_pretrained(model, **kwargs)
    if quantization is not None:
        for module in base.modules():  # as the plugin: keep 4-bit layers differentiable
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    from spacy_lsllama.decoder.lora_targets import resolve_targets
    from spacy_lsllama.decoder.settings import LoraSettings

    # The config names its targets by role (null: the family's default); the
    # baseline adapts the layers the plugin resolves them to.
    lora = LoraSettings.from_section(lora_settings())
    peft_model = get_peft_model(
        base,
        LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(resolve_targets(base, lora.target_modules)),
            bias="none",
        ),
    )
    return peft_model, tokenizer


def copy_adapters(source, target) -> None:
    """Give `target` (plain peft model) the adapter weights of `source`."""
    import torch

    source_params = {n: p for n, p in source.named_parameters() if p.requires_grad}
    target_params = {n: p for n, p in target.named_parameters() if p.requires_grad}
    assert set(source_params) == set(target_params), (
        sorted(set(source_params) ^ set(target_params))[:4]
    )
    with torch.no_grad():
        for name, parameter in target_params.items():
            parameter.copy_(source_params[name])


def common_args(parser, *, n_texts: int, batch_sizes: str, repeats: int) -> None:
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="HF folder of the base model")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help=".spacy file with textcat docs")
    parser.add_argument("--n-texts", type=int, default=n_texts)
    parser.add_argument("--batch-sizes", default=batch_sizes, help="comma-separated")
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--output", default=None, help="write the JSON result here")
