"""Training overhead: `nlp.update` (transformer + textcat) against a plain
PyTorch + peft training step, over the same batches.

- plugin: the shipped `configs/textcat-causal.cfg` pipeline, the optimizer that
  `nlp.initialize` builds from it (thinc Adam, L2 0.01 as weight decay, grad
  clip 1.0), `nlp.update(batch, sgd=optimizer, drop=0.1)`.
- plain: the same base and LoRA adapters (copied from the plugin), the same
  texts right-padded per batch, a linear head on the last real token,
  cross-entropy, `clip_grad_norm_(1.0)` and a torch AdamW step (weight decay
  0.01) on the adapter and head parameters.

Each step is timed for both systems back to back (order alternating); the
ratio is plain step time / plugin step time (1.0: no overhead); its median
over the steps is reported, for wall time and for the process's CPU time
(less sensitive to other jobs on a shared machine). Raw pairs are kept.

    python benchmarks/bench_training.py --batch-sizes 8 --steps 20 \
        --output benchmarks/results/training.json
"""
import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Timer,
    batches,
    build_plain,
    build_plugin,
    common_args,
    copy_adapters,
    load_texts_and_cats,
    machine_info,
    plugin_decoder,
    plugin_examples,
    summarize,
    write_output,
)


class PlainTrainer:
    """The hand-written LoRA classification loop the plugin is compared with."""

    def __init__(self, model, tokenizer, labels: List[str], learn_rate: float = 5e-4):
        import torch

        self.torch = torch
        self.model = model
        self.tokenizer = tokenizer
        self.labels = labels
        hidden_size = model.get_input_embeddings().weight.shape[1]
        self.head = torch.nn.Linear(hidden_size, len(labels))
        self.parameters = [p for p in model.parameters() if p.requires_grad] + list(self.head.parameters())
        self.optimizer = torch.optim.AdamW(self.parameters, lr=learn_rate, weight_decay=0.01, eps=1e-8)
        self.model.train()

    def step(self, data) -> float:
        torch = self.torch
        texts = [text for text, _ in data]
        targets = torch.tensor(
            [self.labels.index(max(self.labels, key=lambda label: cats.get(label, 0.0))) for _, cats in data]
        )
        encoded = self.tokenizer(texts, padding=True, return_tensors="pt")
        hidden = self.model(**encoded, use_cache=False).last_hidden_state
        last = encoded["attention_mask"].sum(dim=1) - 1
        pooled = hidden[torch.arange(len(texts)), last]
        loss = torch.nn.functional.cross_entropy(self.head(pooled), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(parser, n_texts=160, batch_sizes="8", repeats=1)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per batch size")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    n_needed = max(batch_sizes) * (args.steps + 1)
    data = load_texts_and_cats(Path(args.data), max(args.n_texts, n_needed))
    labels = sorted({label for _, cats in data for label in cats})

    nlp = build_plugin(Path(args.model), with_textcat=True)
    optimizer = nlp.initialize(lambda: plugin_examples(nlp, data[:64]))
    model, tokenizer = build_plain(Path(args.model))
    copy_adapters(plugin_decoder(nlp), model)
    plain = PlainTrainer(model, tokenizer, labels)

    result: Dict[str, Any] = {
        "benchmark": "training",
        "machine": machine_info(),
        "model": args.model,
        "pipeline": nlp.pipe_names,
        "labels": labels,
        "steps": args.steps,
        "repeats": args.repeats,
        "batch_sizes": {},
    }
    for batch_size in batch_sizes:
        plugin_times, plain_times, ratios, cpu_ratios, widths = [], [], [], [], []
        pairs = []
        step_batches = list(batches(data, batch_size))[: args.steps + 1]
        for repeat in range(args.repeats):
            for step, batch in enumerate(step_batches):
                examples = plugin_examples(nlp, batch)
                order = ("plugin", "plain") if (step + repeat) % 2 == 0 else ("plain", "plugin")
                times, cpu_times = {}, {}
                for system in order:
                    with Timer() as timer:
                        if system == "plugin":
                            nlp.update(examples, sgd=optimizer, drop=0.1, losses={})
                        else:
                            plain.step(batch)
                    times[system] = timer.seconds
                    cpu_times[system] = timer.cpu_seconds
                if step == 0:  # warm-up step
                    continue
                widths.append(int(tokenizer([t for t, _ in batch], padding=True, return_tensors="pt")["input_ids"].shape[1]))
                plugin_times.append(times["plugin"])
                plain_times.append(times["plain"])
                ratios.append(times["plain"] / times["plugin"])
                cpu_ratios.append(cpu_times["plain"] / cpu_times["plugin"])
                pairs.append(
                    {
                        "width": widths[-1],
                        "first": order[0],
                        "plugin_s": times["plugin"],
                        "plain_s": times["plain"],
                        "plugin_cpu_s": cpu_times["plugin"],
                        "plain_cpu_s": cpu_times["plain"],
                    }
                )
        entry = {
            "ratio_plain_over_plugin_step_time": summarize(ratios),
            "ratio_plain_over_plugin_step_cpu_time": summarize(cpu_ratios),
            "plugin_seconds_per_step": summarize(plugin_times),
            "plain_seconds_per_step": summarize(plain_times),
            "mean_padded_width": sum(widths) / len(widths),
            "steps": pairs,
        }
        result["batch_sizes"][str(batch_size)] = entry
        print(
            f"batch {batch_size}: ratio {entry['ratio_plain_over_plugin_step_time']['median']:.3f} "
            f"(CPU-time ratio {entry['ratio_plain_over_plugin_step_cpu_time']['median']:.3f}) "
            f"(plugin {entry['plugin_seconds_per_step']['median']:.3f}s, "
            f"plain {entry['plain_seconds_per_step']['median']:.3f}s per step)",
            file=sys.stderr,
        )
    write_output(args.output, result)
    return result


if __name__ == "__main__":
    main()
