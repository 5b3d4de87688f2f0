"""LlamaShim: the decoder's life in a process (threads, reloads, moves, re-initialization)."""
import gc
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import pytest
import spacy
import torch

from spacy_lsllama.decoder.settings import SettingsError
from pipelines import (
    TRAIN_DATA,
    build_pipeline,
    decoder_shim,
    largest_cats_difference,
    train_examples,
    train_pipeline,
)

TEXTS = [text for text, _ in TRAIN_DATA] * 3
ATOMIC = {"nlp": {"after_pipeline_creation": {"@callbacks": "spacy-lsllama.atomic_to_disk.v1"}}}


def cats(nlp, texts=TEXTS):
    return [doc.cats for doc in nlp.pipe(texts, batch_size=4)]


def test_threads_sharing_a_pipeline_get_the_single_thread_predictions(metaspace_model):
    """thinc's PyTorchShim.predict switches the module to train mode after
    each call, so a thread finishing its batch turned LoRA dropout on under
    another thread's forward pass."""
    nlp = train_pipeline(metaspace_model, steps=2, lora={"dropout": 0.5})
    expected = cats(nlp)
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(lambda _: cats(nlp), range(16)))
    assert max(largest_cats_difference(run, expected) for run in runs) <= 1e-5


def test_the_module_is_in_eval_mode_except_inside_a_training_step(metaspace_model):
    nlp = train_pipeline(metaspace_model, steps=1)
    module = decoder_shim(nlp).encoder
    assert not module.training
    nlp("I like London")
    assert not module.training
    seen = []
    hook = module.register_forward_pre_hook(lambda mod, args: seen.append(mod.training))
    nlp.update(train_examples(nlp), sgd=nlp.create_optimizer())
    hook.remove()
    assert seen == [True] and not module.training


def test_two_threads_can_load_pipelines_at_once(metaspace_model, tmp_path):
    train_pipeline(metaspace_model, steps=1).to_disk(tmp_path / "textcat")
    train_pipeline(metaspace_model, steps=2, bidirectional=True, share_base=False).to_disk(tmp_path / "other")
    expected = {name: cats(spacy.load(tmp_path / name)) for name in ("textcat", "other")}
    gc.collect()
    start = threading.Barrier(4)

    def load(name):
        start.wait()
        return name, cats(spacy.load(tmp_path / name))

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(load, ["textcat", "other", "textcat", "other"]))
    for name, got in results:
        assert largest_cats_difference(got, expected[name]) <= 1e-5


@pytest.mark.parametrize("atomic_saving", [False, True])
def test_a_dropped_pipeline_frees_its_decoder_without_a_garbage_collection(metaspace_model, tmp_path, atomic_saving):
    """A reference cycle through the model that owns the torch module keeps a
    base's weights alive until a full collection happens to run: a service
    that reloads pipelines grows."""
    nlp = train_pipeline(metaspace_model, steps=1)
    if atomic_saving:
        nlp = spacy.util.load_model_from_config(nlp.config.merge(ATOMIC), auto_fill=True)
        nlp.initialize(lambda: train_examples(nlp))
    nlp.to_disk(tmp_path / "pipeline")
    del nlp
    gc.collect()
    gc.disable()
    try:
        for _ in range(2):
            nlp = spacy.load(tmp_path / "pipeline")
            nlp("I like London")
            decoder = weakref.ref(decoder_shim(nlp).encoder)
            del nlp
            assert decoder() is None, "the decoder outlived its pipeline"
    finally:
        gc.enable()


def test_moving_a_pipeline_never_moves_the_base_another_one_shares(metaspace_model):
    first = train_pipeline(metaspace_model, steps=1)
    second = train_pipeline(metaspace_model, steps=2)
    weight = lambda nlp: decoder_shim(nlp).encoder.transformer.base_model.model.layers[0].mlp.up_proj.weight
    assert weight(first) is weight(second), "the test needs two pipelines sharing a base"
    expected = cats(second)
    decoder_shim(first).to_device("cpu", -1)
    assert weight(first) is not weight(second)
    decoder_shim(first).encoder.to(torch.float64)  # what a move to another device does in place
    assert weight(first).dtype == torch.float64 and weight(second).dtype == torch.float32
    assert largest_cats_difference(cats(second), expected) <= 1e-6


def test_initialize_starts_from_fresh_adapters(metaspace_model):
    nlp = train_pipeline(metaspace_model, steps=4)
    adapters = lambda: {
        name: tensor.detach().clone()
        for name, tensor in decoder_shim(nlp).encoder.transformer.named_parameters()
        if "lora_B" in name
    }
    assert any(bool(tensor.abs().sum() > 0) for tensor in adapters().values()), "training moved the adapters"
    nlp.initialize(lambda: train_examples(nlp))
    assert all(bool(tensor.abs().sum() == 0) for tensor in adapters().values())


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_full_finetuning_in_low_precision_is_refused(metaspace_model, dtype):
    """Without float32 master weights, thinc's updates are rounded back into
    bfloat16 weights, and small ones vanish: RMSNorm weights never moved."""
    nlp = build_pipeline(metaspace_model, lora=None, dtype=dtype)
    with pytest.raises(SettingsError, match="float32"):
        nlp.initialize(lambda: train_examples(nlp))
