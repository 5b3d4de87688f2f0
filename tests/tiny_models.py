"""Tiny, offline LLaMA-architecture models and tokenizers for the test suite.

Nothing here touches the network or the Hugging Face hub. Tokenizers are
trained with the ``tokenizers`` library on a small built-in English corpus and
models are randomly initialised from a fixed seed.

Public API
----------
build_metaspace_tokenizer(variant="normalizer") -> LlamaTokenizerFast
    LLaMA-2 / Mistral style SentencePiece-BPE: byte_fallback (``<0x00>``..
    ``<0xFF>`` at ids 3..258), ``<unk>``=0, ``<s>``=1, ``</s>``=2, BOS added
    automatically, no pad token.
    variant="normalizer" (default) mirrors the original LLaMA-2 tokenizer.json:
        normalizer Sequence[Prepend("▁"), Replace(" ", "▁")], pre_tokenizer null.
    variant="pretokenizer" mirrors newer conversions (e.g. recent Mistral):
        normalizer null, pre_tokenizer Metaspace("▁", prepend_scheme="first",
        split=False).
build_byte_level_tokenizer() -> PreTrainedTokenizerFast
    SmolLM2 / Llama-3 / Qwen style byte-level BPE: ByteLevel pre-tokenizer
    (add_prefix_space=False, use_regex=True), ByteLevel decoder, ByteLevel
    post-processor with trim_offsets=False (as in Llama-3/SmolLM2/Qwen2).
    Specials ``<|endoftext|>``=0 (unk), ``<|im_start|>``=1 (bos),
    ``<|im_end|>``=2 (eos). No automatic BOS, no pad token.
build_tiny_llama(tokenizer, seed=0, causal_lm=True) -> LlamaForCausalLM | LlamaModel
    Random, deterministic tiny LLaMA (vocab 512, hidden 32, 2 layers, 4 heads,
    2 kv heads). Does not disturb the global torch RNG.
save_tiny_llama(path, tokenizer_kind="metaspace"|"byte_level", seed=0) -> Path
    Writes a normal HF checkpoint folder (config.json, model.safetensors,
    tokenizer files) of a LlamaForCausalLM. ``AutoModel.from_pretrained(path)``
    gives the base LlamaModel, ``AutoTokenizer.from_pretrained(path)`` the
    tokenizer.

Every builder returns a *fresh* object (only the trained tokenizer JSON is
cached), so tests may mutate what they get (e.g. add a pad token).
"""
from __future__ import annotations

import functools
import itertools
import json
import random
import shutil
from pathlib import Path
from typing import List, Union

__all__ = [
    "TINY_CONFIG",
    "CORPUS",
    "build_corpus",
    "build_metaspace_tokenizer",
    "build_byte_level_tokenizer",
    "build_tokenizer",
    "build_tiny_llama",
    "save_tiny_llama",
]

MAX_TOKENIZER_VOCAB = 500

TINY_CONFIG = dict(
    vocab_size=512,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)

# --------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------

_SUBJECTS = [
    "The cat", "A young dog", "My neighbour", "The old teacher", "Our team",
    "The committee", "Every student", "The chef", "Anna", "Mr. Smith",
    "The café owner", "A naïve tourist", "The engineer", "Zoë", "José",
    "The children", "Her brother", "The president", "Nobody", "The robot",
]
_VERBS = [
    "reads", "writes", "sees", "buys", "sells", "finds", "loves", "hates",
    "opens", "closes", "visited", "painted", "cooked", "repaired", "sent",
    "will bring", "has found", "didn't like", "can't fix", "won't open",
]
_OBJECTS = [
    "a book", "the letter", "three apples", "a new car", "the red door",
    "his résumé", "a crème brûlée", "the façade", "some jalapeño peppers",
    "the old piano", "twelve eggs", "a piñata", "the map of Zürich",
    "an email", "the window", "a cup of coffee", "the blue bicycle",
    "forty-two tickets", "the garden", "a photo of São Paulo",
]
_TAILS = [
    ".", "!", "?", " yesterday.", " every morning.", " on Monday.",
    " in 1999.", " at 7:30 p.m.", " for $15.99.", " (again).", ", I think.",
    " -- really!", "; then left.", " with 100% effort.", ' and said "wow".',
    " on 2024-01-15.", " near the river.", " in the U.S.", " before noon.",
    " for the 3rd time.",
]
_EXTRA = [
    "Hello world!",
    "Hello, world. How are you today?",
    "It's 10:45 and the temperature is -3.5 degrees.",
    "She said: 'I'm not sure, but maybe.'",
    "E-mail me at test@example.com or call 555-0199.",
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs.",
    "Prices rose by 12.5% in Q3 of 2023.",
    "Wait... what? No way!!",
    "Naïve coöperation with the café's maître d' was a faux pas.",
    "He paid €20, £15 and ¥300 for the souvenirs.",
    "Über-fast trains run between Köln and München.",
    "The résumé listed Python, C++ and SQL.",
    "A spaCy pipeline splits text into tokens, sentences and entities.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 100 1000 2024.",
    "Use `pip install` (or conda) to get #packages & stuff *fast*.",
    "New York, Los Angeles, and San Francisco are big cities.",
    "Don't, can't, won't, shouldn't, I'd, you'll, they're.",
    "  Leading spaces and  double  spaces appear sometimes.",
    "Tabs\tand\nnewlines\nare whitespace too.",
]


def build_corpus(n: int = 400, seed: int = 0) -> List[str]:
    """Deterministic corpus of ``n`` generated sentences plus fixed extras."""
    rng = random.Random(seed)
    combos = list(itertools.product(_SUBJECTS, _VERBS, _OBJECTS, _TAILS))
    rng.shuffle(combos)
    sents = [f"{s} {v} {o}{t}" for s, v, o, t in combos[:n]]
    return sents + list(_EXTRA)


CORPUS: List[str] = build_corpus()

# --------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------

_SPIECE_UNDERLINE = "▁"


@functools.lru_cache(maxsize=None)
def _metaspace_tokenizer_json(variant: str) -> str:
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    n_fixed = len(specials) + len(byte_tokens)  # 259, as in LLaMA-2

    # Train word-internal merges: normalise like LLaMA-2, and split on "▁"
    # (kept as word prefix) only for training so no merge crosses words.
    trainer_tok = Tokenizer(BPE(unk_token="<unk>"))
    trainer_tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend(_SPIECE_UNDERLINE), normalizers.Replace(" ", _SPIECE_UNDERLINE)]
    )
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=_SPIECE_UNDERLINE, prepend_scheme="never", split=True
    )
    trainer = BpeTrainer(
        vocab_size=MAX_TOKENIZER_VOCAB - n_fixed,
        special_tokens=[],
        show_progress=False,
    )
    trainer_tok.train_from_iterator(CORPUS, trainer=trainer)
    trained = json.loads(trainer_tok.to_str())["model"]

    vocab = {tok: i for i, tok in enumerate(specials + byte_tokens)}
    for tok, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        if tok not in vocab and len(vocab) < MAX_TOKENIZER_VOCAB:
            vocab[tok] = len(vocab)
    merges = [tuple(m) if not isinstance(m, str) else tuple(m.split(" ", 1)) for m in trained["merges"]]
    merges = [m for m in merges if m[0] + m[1] in vocab and m[0] in vocab and m[1] in vocab]

    tok = Tokenizer(
        BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    )
    if variant == "normalizer":
        tok.normalizer = normalizers.Sequence(
            [normalizers.Prepend(_SPIECE_UNDERLINE), normalizers.Replace(" ", _SPIECE_UNDERLINE)]
        )
        tok.pre_tokenizer = None
        tok.decoder = decoders.Sequence(
            [
                decoders.Replace(_SPIECE_UNDERLINE, " "),
                decoders.ByteFallback(),
                decoders.Fuse(),
                decoders.Strip(content=" ", left=1, right=0),
            ]
        )
    elif variant == "pretokenizer":
        tok.normalizer = None
        tok.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement=_SPIECE_UNDERLINE, prepend_scheme="first", split=False
        )
        tok.decoder = decoders.Metaspace(
            replacement=_SPIECE_UNDERLINE, prepend_scheme="first", split=False
        )
    else:
        raise ValueError(f"unknown metaspace variant {variant!r}")
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    # LlamaTokenizerFast rebuilds an identical TemplateProcessing anyway.
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)]
    )
    return tok.to_str()


def build_metaspace_tokenizer(variant: str = "normalizer"):
    """Fresh LLaMA-2-like ``LlamaTokenizerFast`` (see module docstring)."""
    from tokenizers import Tokenizer
    from transformers import LlamaTokenizerFast

    backend = Tokenizer.from_str(_metaspace_tokenizer_json(variant))
    return LlamaTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        add_bos_token=True,
        add_eos_token=False,
        legacy=False,
        clean_up_tokenization_spaces=False,
        model_max_length=TINY_CONFIG["max_position_embeddings"],
    )


_BYTE_LEVEL_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@functools.lru_cache(maxsize=None)
def _byte_level_tokenizer_json() -> str:
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    tok = Tokenizer(BPE())
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=MAX_TOKENIZER_VOCAB,
        special_tokens=[AddedToken(s, special=True, normalized=False) for s in _BYTE_LEVEL_SPECIALS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    data = json.loads(tok.to_str())
    # Make the serialised post-processor look exactly like Llama-3's/SmolLM2's.
    data["post_processor"] = {
        "type": "ByteLevel",
        "add_prefix_space": True,
        "trim_offsets": False,
        "use_regex": True,
    }
    return json.dumps(data, ensure_ascii=False)


def build_byte_level_tokenizer():
    """Fresh SmolLM2/Llama-3-like byte-level ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_byte_level_tokenizer_json())
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<|endoftext|>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        clean_up_tokenization_spaces=False,
        model_max_length=TINY_CONFIG["max_position_embeddings"],
    )


def build_tokenizer(kind: str = "metaspace"):
    if kind == "metaspace":
        return build_metaspace_tokenizer()
    if kind == "metaspace_pretokenizer":
        return build_metaspace_tokenizer("pretokenizer")
    if kind == "byte_level":
        return build_byte_level_tokenizer()
    raise ValueError(f"unknown tokenizer kind {kind!r}")


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


def build_tiny_llama(tokenizer, seed: int = 0, causal_lm: bool = True):
    """Random tiny ``LlamaForCausalLM`` (or ``LlamaModel``), deterministic in ``seed``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

    if len(tokenizer) > TINY_CONFIG["vocab_size"]:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens > {TINY_CONFIG['vocab_size']}")
    config = LlamaConfig(
        **TINY_CONFIG,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = (LlamaForCausalLM if causal_lm else LlamaModel)(config)
    model.eval()
    return model


def save_tiny_llama(
    path: Union[str, Path], tokenizer_kind: str = "metaspace", seed: int = 0
) -> Path:
    """Write an HF checkpoint folder (LlamaForCausalLM + tokenizer); return its path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(tokenizer_kind)
    model = build_tiny_llama(tokenizer, seed=seed, causal_lm=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def folder_with_remote_code(base, folder, marker):
    """A copy of `base` whose config runs code that writes `marker` when trusted."""
    folder = shutil.copytree(base, folder)
    (folder / "configuration_custom.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import LlamaConfig\n"
        "class CustomConfig(LlamaConfig):\n    pass\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder
