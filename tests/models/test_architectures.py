"""spacy-lsllama.LlamaTransformer.v3 (and v2, v1) as the model of the transformer component."""
import pytest
import spacy
import torch
from spacy.training import Example

from spacy_lsllama.heads.pooling import classifier_config
from pipelines import build_pipeline, decoder_shim, listener, train_examples, train_pipeline, transformer_config


def test_training_changes_every_adapter_and_no_base_weight(tiny_model):
    spacy.util.fix_random_seed(0)
    nlp = build_pipeline(tiny_model)
    examples = train_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    transformer = decoder_shim(nlp).encoder.transformer
    before = {name: tensor.clone() for name, tensor in transformer.state_dict().items()}
    for _ in range(3):
        nlp.update(examples, sgd=optimizer)
    after = transformer.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    adapters = {name for name in before if "lora_" in name}
    assert changed == adapters


def test_trainable_parameters_are_a_small_fraction_with_lora(metaspace_model):
    nlp = train_pipeline(metaspace_model, steps=0)
    transformer = decoder_shim(nlp).encoder.transformer
    trainable = sum(p.numel() for p in transformer.parameters() if p.requires_grad)
    total = sum(p.numel() for p in transformer.parameters())
    assert 0 < trainable < total / 4


def test_full_finetuning_trains_base_weights(metaspace_model):
    nlp = train_pipeline(metaspace_model, lora=None, steps=0)
    transformer = decoder_shim(nlp).encoder.transformer
    assert all(p.requires_grad for p in transformer.parameters())


def test_textcat_multilabel_listens_and_learns(metaspace_model):
    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config=transformer_config(metaspace_model))
    nlp.add_pipe(
        "textcat_multilabel",
        config={
            "model": {
                "@architectures": "spacy-lsllama.TextCatReduce.v1",
                "exclusive_classes": False,
                "use_reduce_last": True,
                "use_reduce_mean": True,
                "tok2vec": listener("reduce_mean.v1"),
            }
        },
    )
    data = [
        ("sunny and warm", {"cats": {"WEATHER": 1.0, "FOOD": 0.0}}),
        ("pasta with cheese", {"cats": {"WEATHER": 0.0, "FOOD": 1.0}}),
        ("rain at lunch with soup", {"cats": {"WEATHER": 1.0, "FOOD": 1.0}}),
    ]
    examples = [Example.from_dict(nlp.make_doc(text), annotations) for text, annotations in data]
    optimizer = nlp.initialize(lambda: examples)
    first = nlp.update(examples, sgd=optimizer)["textcat_multilabel"]
    for _ in range(30):
        last = nlp.update(examples, sgd=optimizer)["textcat_multilabel"]
    assert last < first / 2
    doc = nlp("sunny and warm")
    assert set(doc.cats) == {"WEATHER", "FOOD"}


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"dtype": "float8"}, "Unknown dtype"),
        ({"quantization": "3bit"}, "Unknown quantization"),
        ({"attn_implementation": "magic"}, "Unknown attn_implementation"),
        ({"lora": {"r": 0}}, "lora.r"),
        ({"lora": {"rank": 8}}, "Unknown lora setting"),
    ],
)
def test_bad_settings_fail_when_the_config_is_resolved(metaspace_model, settings, message):
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match=message):
        nlp.add_pipe("transformer", config=transformer_config(metaspace_model, **settings))


def test_lora_targets_missing_from_the_model_are_named(metaspace_model):
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config=transformer_config(metaspace_model, lora={"target_modules": ["query"]}))
    with pytest.raises(ValueError, match=r"(?s)\['query'\].*q_proj"):
        nlp.initialize()


def test_predicting_before_initialization_says_what_to_do(metaspace_model):
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config=transformer_config(metaspace_model))
    with pytest.raises(ValueError, match="initialize"):
        nlp("hello")


def test_training_on_the_cpu_with_a_fixed_seed_is_deterministic(metaspace_model):
    texts = ["I like London a lot", "Berlin was bad"]
    runs = []
    for _ in range(2):
        nlp = train_pipeline(metaspace_model, steps=3)
        runs.append([(doc.cats, [e.text for e in doc.ents]) for doc in nlp.pipe(texts)])
    assert runs[0] == runs[1]


def test_a_long_document_gives_every_token_pieces(metaspace_model):
    nlp = train_pipeline(metaspace_model, steps=0)
    text = " ".join(["The committee met in Geneva on Tuesday to discuss the budget."] * 120)
    doc = nlp(text)
    data = doc._.trf_data
    assert len(doc) > 1000
    assert len(data.align.lengths) == len(doc)
    assert (data.align.lengths > 0).all(), "strided spans leave no token without pieces"
    assert sum(doc.cats.values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_adapters_on_a_low_precision_base_train_in_float32(metaspace_model, dtype):
    """peft keeps LoRA weights float32 on a bfloat16/float16 base, so thinc's
    float32 updates are never rounded away (full finetuning in low precision
    is refused: tests/test_shim.py)."""
    nlp = build_pipeline(metaspace_model, dtype=dtype)
    examples = train_examples(nlp)
    optimizer = nlp.initialize(lambda: examples)
    transformer = decoder_shim(nlp).encoder.transformer
    adapters = {name: p for name, p in transformer.named_parameters() if p.requires_grad}
    assert adapters and all(p.dtype == torch.float32 for p in adapters.values())
    before = {name: p.detach().clone() for name, p in adapters.items()}
    for _ in range(2):
        nlp.update(examples, sgd=optimizer)
    assert all(not torch.equal(before[name], p) for name, p in adapters.items() if "lora_B" in name)
    assert sum(nlp("I like London").cats.values()) == pytest.approx(1.0, abs=1e-3)


def test_mixed_precision_on_the_cpu_is_refused_with_a_reason(metaspace_model):
    with pytest.raises(ValueError, match="mixed_precision = true .* CUDA GPU"):
        train_pipeline(metaspace_model, steps=1, mixed_precision=True)


# Long docs -------------------------------------------------------------------

FILLER = " ".join(["The plot follows a family that moves to a small town by the sea."] * 25)  # ~350 tokens


def textcat_pipeline(model_dir, architecture="spacy-lsllama.LlamaTransformer.v3", **settings):
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {"@architectures": architecture, "name": str(model_dir), **settings}})
    nlp.add_pipe("lsllama_textcat", name="textcat", config={"model": classifier_config(True, settings.get("bidirectional", False))})
    return nlp


def trained_on_first_words(nlp, steps):
    data = [(f"{word} {FILLER}", label) for word, label in [("Wonderful", "POS"), ("Terrible", "NEG")] * 2]
    examples = [
        Example.from_dict(nlp.make_doc(text), {"cats": {"POS": float(label == "POS"), "NEG": float(label == "NEG")}})
        for text, label in data
    ]
    spacy.util.fix_random_seed(0)
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(steps):
        nlp.update(examples, sgd=optimizer)
    return nlp


@pytest.mark.parametrize("bidirectional", [False, True])
def test_the_classifier_reads_a_long_doc_from_its_first_sentence(metaspace_model, bidirectional):
    """Two reviews longer than any v1 window, differing only in their first
    sentence: v1's strided windows gave a causal classifier's last token only
    the last 128 tokens, so both got bit-identical scores."""
    nlp = trained_on_first_words(textcat_pipeline(metaspace_model, bidirectional=bidirectional), steps=1)
    good, bad = nlp(f"Wonderful, moving, brilliant. {FILLER}"), nlp(f"Terrible, boring, awful. {FILLER}")
    assert len(good) > 300
    assert abs(good.cats["POS"] - bad.cats["POS"]) > 1e-6


def test_v1_keeps_its_strided_windows(metaspace_model):
    nlp = trained_on_first_words(textcat_pipeline(metaspace_model, "spacy-lsllama.LlamaTransformer.v1"), steps=1)
    good, bad = nlp(f"Wonderful, moving, brilliant. {FILLER}"), nlp(f"Terrible, boring, awful. {FILLER}")
    assert good.cats == bad.cats


def test_a_doc_is_classified_by_decisive_words_at_its_start(metaspace_model):
    nlp = trained_on_first_words(textcat_pipeline(metaspace_model), steps=25)
    assert nlp(f"Wonderful {FILLER}").cats["POS"] > 0.5 > nlp(f"Terrible {FILLER}").cats["POS"]


def test_ner_on_a_long_doc_does_not_depend_on_the_call_size(metaspace_model):
    strided = {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 32, "stride": 24}
    nlp = train_pipeline(metaspace_model, steps=3, bidirectional=True, get_spans=strided, max_batch_pieces=128)
    text = " ".join(["I like London a lot and Paris is awful, really."] * 2000)
    capped = nlp(text)
    nlp.get_pipe("transformer").model.layers[0].shims[0].encoder.max_batch_pieces = 10**9
    whole = nlp(text)
    assert [(e.start, e.end, e.label_) for e in capped.ents] == [(e.start, e.end, e.label_) for e in whole.ents]


@pytest.mark.parametrize(
    "architecture,added",
    [
        ("spacy-lsllama.LlamaTransformer.v2", {"serving_precision": "bfloat16"}),
        ("spacy-lsllama.LlamaTransformer.v1", {"max_batch_pieces": 128}),
    ],
)
def test_a_released_version_refuses_the_settings_added_after_it(metaspace_model, architecture, added):
    from thinc.api import ConfigValidationError

    nlp = spacy.blank("en")
    with pytest.raises(ConfigValidationError, match=next(iter(added))):
        nlp.add_pipe("transformer", config={"model": {"@architectures": architecture, "name": str(metaspace_model), **added}})
