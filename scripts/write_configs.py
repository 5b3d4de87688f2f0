"""Write configs/*.cfg: each is `init-config`'s output for its arguments below,
under a header that says what the recipe is for.

init-config is the one source of every default in the shipped configs; this
script only records which arguments make which file. After changing a default
in spacy_lsllama/cli/init_config.py, run

    python scripts/write_configs.py           # rewrite configs/
    python scripts/write_configs.py --check   # exit 1 if a file differs (the tests run this)
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence

import typer

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
CPU_MODEL = "assets/smollm2-135m"
GPU_MODEL = "meta-llama/Llama-2-7b-hf"


@dataclass(frozen=True)
class ShippedConfig:
    """One file of configs/: init-config's arguments and the header above them."""

    file: str
    tasks: Sequence[str]
    model: str
    header: Sequence[str]
    options: Dict[str, Any] = field(default_factory=dict)

    def command(self) -> str:
        """The init-config command line that writes this file's body."""
        words = ["python -m spacy_lsllama init-config", f"configs/{self.file}", f"--tasks {','.join(self.tasks)}"]
        for name, value in self.options.items():
            flag = "--" + name.replace("_", "-")
            words.append(flag if value is True else f"{flag} {value}")
        return " ".join(words + [f"--model {self.model}"])


CPU_TRAIN = "#   python -m spacy train configs/{file} --paths.train T --paths.dev D --paths.model MODEL"
GPU_TRAIN = (
    "#   python -m spacy train configs/{file} --gpu-id 0 \\\n"
    "#       --paths.train train.spacy --paths.dev dev.spacy [--paths.model /models/Llama-2-7b-hf]"
)
QLORA_MEMORY = [
    "Memory (estimate): 4-bit base ~3.9 GB, embeddings upcast to float32 by peft",
    "~0.5 GB, adapters + Adam < 0.1 GB, activations of a {words}-word batch with",
    "gradient checkpointing ~1-2 GB. Raise training.batcher.size if memory allows.",
    "The base is quantized while it loads, on the GPU selected by --gpu-id;",
    "pipelines saved from this config hold only the adapters (~25 MB).",
    "max_steps is about 10 epochs of {data}; the paper trains",
    "10-20 epochs: set it from the size of your training data.",
]

SHIPPED: List[ShippedConfig] = [
    ShippedConfig(
        "textcat-causal.cfg",
        ["textcat"],
        CPU_MODEL,
        [
            "LS-LLaMA text classification: a causal LoRA decoder, last-token pooling.",
            "CPU default: SmolLM2-135M (LLaMA architecture). Train with",
        ],
    ),
    ShippedConfig(
        "ner-bidirectional-linear.cfg",
        ["ner"],
        CPU_MODEL,
        [
            "LS-unLLaMA named entity recognition, the CPU default: a bidirectional LoRA",
            "decoder (the causal mask removed in every layer), LoRA on every linear layer,",
            "and the paper's linear tagger over the first piece of each word (lsllama_ner).",
            "Train with",
        ],
        {"ner_head": "linear"},
    ),
    ShippedConfig(
        "ner-bidirectional.cfg",
        ["ner"],
        CPU_MODEL,
        [
            "LS-unLLaMA named entity recognition with spaCy's transition-based ner as the",
            "head instead of the linear tagger of configs/ner-bidirectional-linear.cfg;",
            "everything else is the same. Train with",
        ],
        {"ner_head": "transition"},
    ),
    ShippedConfig(
        "llama2-7b-qlora-textcat.cfg",
        ["textcat"],
        GPU_MODEL,
        [
            "LS-LLaMA text classification with QLoRA: Llama-2-7B quantized to 4-bit NF4",
            "(bfloat16 compute), causal attention, last-token pooling, LoRA r=12 on",
            "q_proj/v_proj (arXiv 2310.01208). Sized for one 24 GB GPU:",
        ],
        {"gpu": True, "quantization": "4bit"},
    ),
    ShippedConfig(
        "llama2-7b-qlora-ner.cfg",
        ["ner"],
        GPU_MODEL,
        [
            "LS-unLLaMA named entity recognition with QLoRA: Llama-2-7B quantized to",
            "4-bit NF4 (bfloat16 compute), the causal mask removed in every layer,",
            "first-piece pooling (the paper labels the first piece of each word), LoRA",
            "r=12 on q_proj/v_proj (arXiv 2310.01208). Sized for one 24 GB GPU:",
        ],
        {"gpu": True, "quantization": "4bit"},
    ),
]
GPU_DETAILS = {
    "llama2-7b-qlora-textcat.cfg": {"words": 300, "data": "SST-2 (67k sentences, ~630k words) at 300 words a batch"},
    "llama2-7b-qlora-ner.cfg": {"words": 400, "data": "CoNLL-2003 (14k sentences, ~200k words) at 400 words a batch"},
}


def render(shipped: ShippedConfig) -> str:
    """The text of configs/<file>: the header, then init-config's output."""
    sys.path.insert(0, str(ROOT))
    from spacy_lsllama.cli.init_config import build_config, config_text, fill_config

    header = [f"# {line}" for line in shipped.header]
    if shipped.options.get("gpu"):
        header.append(GPU_TRAIN.format(file=shipped.file))
        header += [f"# {line}".format(**GPU_DETAILS[shipped.file]) for line in QLORA_MEMORY]
    else:
        header.append(CPU_TRAIN.format(file=shipped.file))
    header += ["# Written by scripts/write_configs.py as", f"#   {shipped.command()}"]
    config = fill_config(build_config(shipped.tasks, shipped.model, **shipped.options))
    return "\n".join(header) + "\n\n" + config_text(config)


def main(check: bool = typer.Option(False, "--check", help="Only compare; exit 1 if a file differs.")) -> None:
    """Write (or check) every file of configs/ from init-config."""
    stale = []
    for shipped in SHIPPED:
        path = CONFIGS / shipped.file
        text = render(shipped)
        if path.exists() and path.read_text(encoding="utf8") == text:
            continue
        stale.append(path)
        if not check:
            path.write_text(text, encoding="utf8")
    if check and stale:
        typer.echo(f"Out of date: {', '.join(p.name for p in stale)}: run python scripts/write_configs.py", err=True)
        raise typer.Exit(code=1)
    typer.echo("configs/ is up to date" if not stale else f"wrote {', '.join(p.name for p in stale)}")


if __name__ == "__main__":
    typer.run(main)
