"""Specification of the inference form (decoder/inference.py): what `nlp(...)`
and `nlp.pipe` run when the pipeline is not training.

A loaded pipeline serves from a plain copy of its decoder with the LoRA deltas
folded into the weights, rows grouped by length into decoder calls and no
autograd state; training switches back to the peft model without a word, and
nothing that is saved or shared ever changes because a pipeline served.
"""
import threading

import numpy
import pytest
import spacy
import torch

from pipelines import (
    assert_same_predictions,
    build_pipeline,
    decoder_shim,
    largest_cats_difference,
    predictions,
    train_examples,
    train_pipeline,
)
from spacy_lsllama.decoder.inference import ServingError

TEXTS = [
    "I like London a lot",
    "Paris is awful, really",
    "Rome",
    "",
    "A longer text about Berlin and Rome, and the trip we took there last year with friends.",
    "We loved the trip to Rome",
]
MIXED = [("word " * n).strip() for n in (1, 2, 3, 5, 8, 13, 21, 34, 55)] * 4


def lora_layers(nlp):
    return [module for module in decoder_shim(nlp).encoder.transformer.modules() if hasattr(module, "lora_A") and module.lora_A]


def training_form_predictions(nlp, texts, monkeypatch):
    """Predictions through the peft model itself, as before the inference form."""
    shim = decoder_shim(nlp)
    with monkeypatch.context() as patch:
        patch.setattr(type(shim), "inference_encoder", lambda self: self.encoder)
        return predictions(nlp, texts)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
def test_inference_form_predicts_as_the_training_form(tiny_model, bidirectional, monkeypatch):
    nlp = train_pipeline(tiny_model, steps=3, bidirectional=bidirectional)
    served = predictions(nlp, TEXTS)
    assert_same_predictions(training_form_predictions(nlp, TEXTS, monkeypatch), served, tolerance=1e-5)


def test_serving_runs_no_lora_layer_and_keeps_no_autograd_state(metaspace_model):
    nlp = train_pipeline(metaspace_model, steps=2)
    calls = []
    hooks = [layer.register_forward_hook(lambda *args: calls.append(1)) for layer in lora_layers(nlp)]
    docs = list(nlp.pipe(TEXTS))
    assert calls == []
    hidden = docs[0]._.trf_data.model_output.last_hidden_state
    assert isinstance(hidden, numpy.ndarray)
    nlp.update(train_examples(nlp), sgd=nlp.create_optimizer())
    assert calls, "training must run the adapters"
    for hook in hooks:
        hook.remove()


def test_a_batch_of_mixed_lengths_runs_rows_grouped_by_length(metaspace_model):
    """Short rows do not pay for the longest row of their batch."""
    nlp = train_pipeline(metaspace_model, steps=1)
    shim = decoder_shim(nlp)
    shapes = []
    list(nlp.pipe(MIXED[:1]))  # build the inference form
    tree = shim.inference_encoder().transformer
    hook = tree.register_forward_pre_hook(lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    docs = list(nlp.pipe(MIXED, batch_size=len(MIXED)))
    hook.remove()
    real = sum(int(doc._.trf_data.wordpieces.attention_mask.sum()) for doc in docs)
    padded = sum(rows * length for rows, length in shapes)
    assert len(shapes) > 1
    assert padded <= 1.25 * real


def test_batch_composition_never_changes_a_prediction(tiny_model):
    nlp = train_pipeline(tiny_model, steps=2, bidirectional=True)
    texts = MIXED[:10] + TEXTS
    alone = [(doc.cats, [(e.start_char, e.end_char, e.label_) for e in doc.ents]) for doc in nlp.pipe(texts, batch_size=1)]
    together = [(doc.cats, [(e.start_char, e.end_char, e.label_) for e in doc.ents]) for doc in nlp.pipe(texts, batch_size=32)]
    assert_same_predictions(alone, together, tolerance=1e-5)


def adapters(nlp):
    return {name: parameter.detach().clone() for name, parameter in decoder_shim(nlp).trainable_weights().items()}


def test_training_after_serving_changes_the_adapters_exactly_as_without_serving(metaspace_model):
    def run(serve: bool):
        spacy.util.fix_random_seed(0)
        nlp = build_pipeline(metaspace_model)
        examples = train_examples(nlp)
        optimizer = nlp.initialize(lambda: examples)
        for _ in range(3):
            if serve:
                list(nlp.pipe(TEXTS))
            nlp.update(examples, sgd=optimizer)
        return adapters(nlp)

    without, with_serving = run(False), run(True)
    assert without.keys() == with_serving.keys()
    for name in without:
        assert torch.equal(without[name], with_serving[name]), name


def test_a_pipeline_saved_after_serving_holds_bit_identical_adapters(metaspace_model):
    nlp = train_pipeline(metaspace_model, steps=2)
    before = nlp.get_pipe("transformer").model.to_bytes()
    list(nlp.pipe(TEXTS))
    assert nlp.get_pipe("transformer").model.to_bytes() == before


def test_predictions_follow_the_adapters_after_every_update(metaspace_model):
    """A training step, or saved adapters loaded over the current ones, is
    seen by the next prediction."""
    nlp = train_pipeline(metaspace_model, steps=1)
    first = predictions(nlp, TEXTS)
    examples = train_examples(nlp)
    optimizer = nlp.resume_training()
    for _ in range(3):
        nlp.update(examples, sgd=optimizer)
    second = predictions(nlp, TEXTS)
    assert largest_cats_difference([c for c, _ in first], [c for c, _ in second]) > 1e-4
    shim = decoder_shim(nlp)
    with torch.no_grad():
        for parameter in shim.trainable_weights().values():
            parameter.add_(0.01)
    third = predictions(nlp, TEXTS)
    assert largest_cats_difference([c for c, _ in second], [c for c, _ in third]) > 1e-4


def test_a_shared_base_never_carries_another_pipelines_deltas(metaspace_model, tmp_path):
    trained = train_pipeline(metaspace_model, steps=2)
    trained.to_disk(tmp_path / "pipeline")
    serving = spacy.load(tmp_path / "pipeline")
    training = spacy.load(tmp_path / "pipeline")
    assert decoder_shim(serving)._shared_base is not None
    assert decoder_shim(serving)._shared_base is decoder_shim(training)._shared_base
    base = {name: tensor.clone() for name, tensor in decoder_shim(serving)._shared_base.parameters.items()}
    expected = predictions(serving, TEXTS)
    examples = train_examples(training)
    optimizer = training.resume_training()
    for _ in range(3):
        list(training.pipe(TEXTS))
        training.update(examples, sgd=optimizer)
        assert_same_predictions(expected, predictions(serving, TEXTS), tolerance=0.0)
    for name, tensor in decoder_shim(serving)._shared_base.parameters.items():
        assert torch.equal(tensor, base[name]), name


def test_threads_serving_one_pipeline_get_the_single_thread_predictions(metaspace_model, tmp_path):
    train_pipeline(metaspace_model, steps=2).to_disk(tmp_path / "pipeline")
    expected = predictions(spacy.load(tmp_path / "pipeline"), TEXTS * 3)
    nlp = spacy.load(tmp_path / "pipeline")  # its inference form is built by the threads
    results, errors = {}, []

    def serve(index):
        try:
            results[index] = predictions(nlp, TEXTS * 3)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=serve, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for index in range(4):
        assert_same_predictions(expected, results[index], tolerance=1e-5)


# Serving precision ----------------------------------------------------------------


def load_with(path, **model_settings):
    overrides = {f"components.transformer.model.{key}": value for key, value in model_settings.items()}
    return spacy.load(path, config=overrides)


@pytest.fixture
def saved_pipeline(metaspace_model, tmp_path):
    train_pipeline(metaspace_model, steps=3).to_disk(tmp_path / "pipeline")
    return tmp_path / "pipeline"


def test_bfloat16_serving_runs_a_bfloat16_tree_close_to_the_trained_answers(saved_pipeline, monkeypatch):
    monkeypatch.setattr("spacy_lsllama.decoder.inference.bfloat16_is_native", lambda device: True)
    expected = predictions(spacy.load(saved_pipeline), TEXTS)
    nlp = load_with(saved_pipeline, serving_precision="bfloat16")
    served = predictions(nlp, TEXTS)
    tree = decoder_shim(nlp).inference_encoder().transformer
    assert {parameter.dtype for parameter in tree.parameters()} == {torch.bfloat16}
    assert {parameter.dtype for parameter in decoder_shim(nlp).encoder.transformer.parameters()} == {torch.float32}
    assert largest_cats_difference([c for c, _ in expected], [c for c, _ in served]) < 0.02


def test_bfloat16_serving_is_refused_where_it_would_be_slow(saved_pipeline, monkeypatch):
    monkeypatch.setattr("spacy_lsllama.decoder.inference.bfloat16_is_native", lambda device: False)
    with pytest.raises(ServingError, match="no native bfloat16"):
        load_with(saved_pipeline, serving_precision="bfloat16")


def test_an_unknown_serving_precision_names_the_choices(saved_pipeline):
    with pytest.raises(Exception, match="serving_precision"):
        load_with(saved_pipeline, serving_precision="fp8")


def test_a_pipeline_saved_as_v2_serves_in_bfloat16_when_loaded_as_v3(metaspace_model, tmp_path, monkeypatch):
    monkeypatch.setattr("spacy_lsllama.decoder.inference.bfloat16_is_native", lambda device: True)
    nlp = train_pipeline(metaspace_model, steps=2, architecture="spacy-lsllama.LlamaTransformer.v2")
    nlp.to_disk(tmp_path / "v2")
    served = spacy.load(
        tmp_path / "v2",
        config={
            "components.transformer.model.@architectures": "spacy-lsllama.LlamaTransformer.v3",
            "components.transformer.model.serving_precision": "bfloat16",
        },
    )
    predictions(served, TEXTS)
    assert decoder_shim(served).inference_encoder().transformer.get_input_embeddings().weight.dtype == torch.bfloat16


def test_a_quantized_base_serves_unmerged_and_refuses_a_serving_precision(metaspace_model, tmp_path, monkeypatch):
    nlp = train_pipeline(metaspace_model, steps=2, quantization="8bit")
    shim = decoder_shim(nlp)
    assert shim.inference_encoder() is shim.encoder
    assert_same_predictions(training_form_predictions(nlp, TEXTS, monkeypatch), predictions(nlp, TEXTS), tolerance=0.0)
    nlp.to_disk(tmp_path / "quantized")
    with pytest.raises(ServingError, match="quantized"):
        load_with(tmp_path / "quantized", serving_precision="bfloat16")


def test_an_update_without_a_forward_pass_is_seen_by_the_next_prediction(metaspace_model, monkeypatch):
    """Adam moves the adapters on a batch of only empty docs (momentum) with no
    forward pass through the decoder, and the storage of a stepped tensor may
    come back at the same address."""
    nlp = train_pipeline(metaspace_model, steps=3)
    predictions(nlp, TEXTS)
    empty = [spacy.training.Example.from_dict(nlp.make_doc(""), {"cats": {"POS": 1.0, "NEG": 0.0}})] * 2
    optimizer = nlp.resume_training()
    nlp.update(train_examples(nlp), sgd=optimizer)
    for _ in range(3):
        predictions(nlp, TEXTS)
        nlp.update(empty, sgd=optimizer)
        assert_same_predictions(training_form_predictions(nlp, TEXTS, monkeypatch), predictions(nlp, TEXTS), tolerance=1e-5)


def test_a_rebuilt_decoder_does_not_keep_the_old_one_alive(metaspace_model):
    """nlp.initialize() builds a new decoder; the inference form of the old one,
    and the tensors it watched, go with it, before any prediction."""
    import gc
    import weakref

    nlp = train_pipeline(metaspace_model, steps=1, share_base=False)
    predictions(nlp, TEXTS)
    old = weakref.ref(decoder_shim(nlp).encoder.transformer)
    nlp.initialize(lambda: train_examples(nlp))
    gc.collect()
    assert old() is None
