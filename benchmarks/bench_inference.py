"""Inference overhead: `nlp.pipe` of the plugin against a plain peft forward pass.

Both systems run the same base model with the same LoRA adapters (the
plugin's adapters are copied into the plain model, and the hidden states are
checked to agree) over the same texts, in the same batches, right-padded to
the longest row of each batch, under torch.no_grad.

- plugin: `for doc in nlp.pipe(texts, batch_size=B)` on a pipeline of just the
  transformer (or transformer + textcat with --with-textcat). This includes
  spaCy's tokenizer, piece alignment and `doc._.trf_data`.
- plain: for each batch of B texts, `tokenizer(batch, padding=True)` and
  `model(**encoded, use_cache=False).last_hidden_state` (converted to NumPy;
  no KV cache, as the plugin).

The ratio is plain time / plugin time = plugin throughput / plain throughput
(1.0: no overhead). Every batch is run by both systems back to back (order
alternating), over all batches and repeats; the median of these paired ratios
is the headline figure (robust to load changes on a shared machine); the
same ratio in process CPU time and the ratio of the summed times per pass are
reported beside it. Raw pairs are kept.

    python benchmarks/bench_inference.py --n-texts 256 --batch-sizes 8,32 --repeats 5 \
        --output benchmarks/results/inference.json
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


def run_plugin(nlp, texts: List[str], batch_size: int) -> List[int]:
    """Run nlp.pipe; return the padded piece width each doc was run at."""
    return [doc._.trf_data.wordpieces.input_ids.shape[1] for doc in nlp.pipe(texts, batch_size=batch_size)]


def run_plain(model, tokenizer, texts: List[str], batch_size: int) -> List[int]:
    import torch

    widths: List[int] = []
    with torch.no_grad():
        for batch in batches(texts, batch_size):
            encoded = tokenizer(list(batch), padding=True, return_tensors="pt")
            hidden = model(**encoded, use_cache=False).last_hidden_state
            hidden.numpy()
            widths.extend([int(encoded["input_ids"].shape[1])] * len(batch))
    return widths


def check_agreement(nlp, model, tokenizer, texts: List[str]) -> float:
    """Largest difference between the two systems' hidden states on real pieces."""
    import numpy
    import torch

    docs = list(nlp.pipe(texts, batch_size=len(texts)))
    with torch.no_grad():
        encoded = tokenizer(list(texts), padding=True, return_tensors="pt")
        plain = model(**encoded, use_cache=False).last_hidden_state.numpy()
    worst = 0.0
    for i, doc in enumerate(docs):
        data = doc._.trf_data
        if len(data.wordpieces.lengths) != 1:  # doc split into several spans: skip
            continue
        n = data.wordpieces.lengths[0]
        ours = numpy.asarray(data.model_output.last_hidden_state)[0, :n]
        worst = max(worst, float(numpy.abs(ours - plain[i, :n]).max()))
    return worst


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(parser, n_texts=256, batch_sizes="8,32", repeats=5)
    parser.add_argument("--with-textcat", action="store_true", help="time transformer + textcat")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_texts_and_cats(Path(args.data), args.n_texts)
    texts = [text for text, _ in data]
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]

    nlp = build_plugin(Path(args.model), with_textcat=args.with_textcat)
    if args.with_textcat:
        nlp.initialize(lambda: plugin_examples(nlp, data[:64]))
    else:
        nlp.initialize()
    # Fresh LoRA B matrices are zero; give the adapters random values so that
    # the agreement check below also covers how they are applied.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in plugin_decoder(nlp).named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    model, tokenizer = build_plain(Path(args.model))
    copy_adapters(plugin_decoder(nlp), model)
    model.eval()
    max_abs_diff = check_agreement(nlp, model, tokenizer, texts[: min(8, len(texts))])

    result: Dict[str, Any] = {
        "benchmark": "inference",
        "machine": machine_info(),
        "model": args.model,
        "n_texts": len(texts),
        "pipeline": nlp.pipe_names,
        "repeats": args.repeats,
        "hidden_state_max_abs_diff": max_abs_diff,
        "batch_sizes": {},
    }
    for batch_size in batch_sizes:
        text_batches = [list(batch) for batch in batches(texts, batch_size)]
        # warm-up, and a check that both systems pad the batches alike
        plugin_widths = run_plugin(nlp, texts, batch_size)
        plain_widths = run_plain(model, tokenizer, texts, batch_size)
        pair_ratios: List[float] = []
        cpu_ratios: List[float] = []
        pairs: List[Dict[str, Any]] = []
        plugin_totals: List[float] = []
        plain_totals: List[float] = []
        for repeat in range(args.repeats):
            totals = {"plugin": 0.0, "plain": 0.0}
            for index, batch in enumerate(text_batches):
                # each batch is timed for both systems back to back, order alternating
                order = ("plugin", "plain") if (index + repeat) % 2 == 0 else ("plain", "plugin")
                times, cpu_times = {}, {}
                for system in order:
                    with Timer() as timer:
                        if system == "plugin":
                            run_plugin(nlp, batch, batch_size)
                        else:
                            run_plain(model, tokenizer, batch, batch_size)
                    times[system] = timer.seconds
                    cpu_times[system] = timer.cpu_seconds
                    totals[system] += timer.seconds
                pair_ratios.append(times["plain"] / times["plugin"])
                cpu_ratios.append(cpu_times["plain"] / cpu_times["plugin"])
                pairs.append(
                    {
                        "first": order[0],
                        "plugin_s": times["plugin"],
                        "plain_s": times["plain"],
                        "plugin_cpu_s": cpu_times["plugin"],
                        "plain_cpu_s": cpu_times["plain"],
                    }
                )
            plugin_totals.append(totals["plugin"])
            plain_totals.append(totals["plain"])
        entry = {
            "ratio_plugin_over_plain_throughput": summarize(pair_ratios),
            "ratio_plugin_over_plain_throughput_cpu_time": summarize(cpu_ratios),
            "ratio_of_total_times_per_repeat": summarize(
                [plain / plugin for plain, plugin in zip(plain_totals, plugin_totals)]
            ),
            "plugin_seconds_per_pass": summarize(plugin_totals),
            "plain_seconds_per_pass": summarize(plain_totals),
            "plugin_texts_per_second": len(texts) / summarize(plugin_totals)["median"],
            "plain_texts_per_second": len(texts) / summarize(plain_totals)["median"],
            "same_padding": plugin_widths == plain_widths,
            "mean_padded_width": sum(plain_widths) / len(plain_widths),
            "batches": pairs,
        }
        result["batch_sizes"][str(batch_size)] = entry
        print(
            f"batch {batch_size}: ratio {entry['ratio_plugin_over_plain_throughput']['median']:.3f} "
            f"(CPU-time ratio {entry['ratio_plugin_over_plain_throughput_cpu_time']['median']:.3f}; "
            f"total-time ratio {entry['ratio_of_total_times_per_repeat']['median']:.3f}; per pass of "
            f"{len(texts)} texts: plugin {entry['plugin_seconds_per_pass']['median']:.2f}s, "
            f"plain {entry['plain_seconds_per_pass']['median']:.2f}s)",
            file=sys.stderr,
        )
    write_output(args.output, result)
    return result


if __name__ == "__main__":
    main()
