"""QLoRA: LoRA adapters trained on a bitsandbytes-quantized base.

`quantization = "4bit"` (NF4, double quantization) or `"8bit"` (LLM.int8)
quantizes the frozen base while it loads, on the device it is loaded on; the
LoRA adapters on top train in float32 through spaCy's own optimizer. Saving
writes the adapters only; `spacy.load` quantizes the base again and attaches
them. Everything here runs on the CPU with the tiny random LLaMA.
"""
import sys

import bitsandbytes as bnb
import pytest
import spacy
import srsly
import torch

from pipelines import build_pipeline, decoder_shim, train_examples, train_pipeline
from spacy_lsllama.decoder.serialization import load_saved_transformer
from spacy_lsllama.decoder.settings import SettingsError

QUANTIZED_LINEAR = {"4bit": bnb.nn.Linear4bit, "8bit": bnb.nn.Linear8bitLt}
BASE_LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TEXTS = [
    "I like London a lot",
    "Paris is awful, really",
    "We flew from Rome to Berlin and back to London last year.",
]


@pytest.fixture(params=["4bit", "8bit"])
def quantization(request) -> str:
    return request.param


def initialized_pipeline(name, **settings):
    nlp = build_pipeline(name, **settings)
    examples = train_examples(nlp)
    return nlp, examples, nlp.initialize(lambda: examples)


def snapshot(module: torch.nn.Module):
    """Every tensor of the state dict, quantization statistics included."""
    return {
        key: value.detach().clone() if isinstance(value, torch.Tensor) else value
        for key, value in module.state_dict().items()
    }


def same(a, b) -> bool:
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def base_linears(transformer: torch.nn.Module):
    """The base layers of the decoder blocks, unwrapped from peft's LoRA layers."""
    found = {}
    for name, module in transformer.named_modules():
        if name.rsplit(".", 1)[-1] in BASE_LINEAR_NAMES:
            found[name] = getattr(module, "base_layer", module)
    return found


def saved_shim(model_file):
    """The LlamaTransformer's own saved form inside the component's model file."""
    (shim_bytes,) = [data for node in srsly.msgpack_loads(model_file.read_bytes())["shims"] for data in node]
    return load_saved_transformer(shim_bytes)


def entities(doc):
    return [(ent.start_char, ent.end_char, ent.label_) for ent in doc.ents]


def test_the_base_is_quantized_and_only_the_adapters_train(metaspace_model, quantization):
    nlp, _, _ = initialized_pipeline(metaspace_model, quantization=quantization)
    transformer = decoder_shim(nlp).encoder.transformer
    linears = base_linears(transformer)
    assert len(linears) == 2 * len(BASE_LINEAR_NAMES)
    for name, layer in linears.items():
        assert isinstance(layer, QUANTIZED_LINEAR[quantization]), name
        assert layer.weight.dtype in (torch.uint8, torch.int8), name
    trainable = [name for name, p in transformer.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in name for name in trainable)
    assert all(p.dtype == torch.float32 for name, p in transformer.named_parameters() if p.requires_grad)


def test_training_changes_the_adapters_and_leaves_the_base_bit_identical(metaspace_model, quantization):
    # Bidirectional (LS-unLLaMA): the 4D float mask must match the dtype of the
    # hidden states, which peft upcasts to float32 around the quantized layers.
    nlp, examples, optimizer = initialized_pipeline(
        metaspace_model, quantization=quantization, bidirectional=True
    )
    transformer = decoder_shim(nlp).encoder.transformer
    before = snapshot(transformer)
    for _ in range(3):
        nlp.update(examples, sgd=optimizer)
        nlp(TEXTS[0])  # spacy train evaluates between steps: inference must not alter the base
    after = snapshot(transformer)
    assert before.keys() == after.keys()
    adapters = [key for key in before if ".lora_" in key]
    assert len(adapters) == 2 * 2 * 2  # 2 layers x (q_proj, v_proj) x (lora_A, lora_B)
    assert not [key for key in adapters if torch.equal(before[key], after[key])]
    assert not [key for key in before if key not in adapters and not same(before[key], after[key])]


def test_gradient_checkpointing_trains_the_same_adapters(metaspace_model, quantization):
    trained = {}
    for checkpointing in (False, True):
        nlp = train_pipeline(
            metaspace_model, steps=2, quantization=quantization, gradient_checkpointing=checkpointing
        )
        trained[checkpointing] = decoder_shim(nlp).trainable_weights()
    assert trained[False].keys() == trained[True].keys()
    for name, weight in trained[False].items():
        torch.testing.assert_close(weight, trained[True][name], rtol=1e-5, atol=1e-6, msg=name)


def test_saved_pipeline_holds_adapters_only_and_reloads_quantized(
    tmp_path, metaspace_model, quantization
):
    nlp = train_pipeline(metaspace_model, steps=3, quantization=quantization)
    expected = list(nlp.pipe(TEXTS))
    assert any(doc.ents for doc in expected)
    nlp.to_disk(tmp_path / "pipeline")

    saved_file = tmp_path / "pipeline" / "transformer" / "model"
    saved = saved_shim(saved_file)
    assert saved.weights and all(".lora_" in name for name in saved.weights)
    assert saved_file.stat().st_size < (metaspace_model / "model.safetensors").stat().st_size / 2

    reloaded = spacy.load(tmp_path / "pipeline")
    transformer = decoder_shim(reloaded).encoder.transformer
    assert all(
        isinstance(layer, QUANTIZED_LINEAR[quantization]) for layer in base_linears(transformer).values()
    )
    for before, after in zip(expected, reloaded.pipe(TEXTS)):
        assert after.cats.keys() == before.cats.keys()
        for label, score in before.cats.items():
            assert after.cats[label] == pytest.approx(score, abs=1e-5)
        assert entities(after) == entities(before)


def test_a_quantized_base_is_placed_at_load_time_and_never_moved(metaspace_model):
    nlp, _, _ = initialized_pipeline(metaspace_model, quantization="4bit")
    with pytest.raises(ValueError, match="placed on its device while loading"):
        nlp.get_pipe("transformer").model.to_cpu()


@pytest.mark.parametrize(
    "setting",
    [
        "3bit",
        "int4",
        "nf4",
        {"bits": 2},
        {"bits": 4, "quant_type": "int4"},
        {"bits": 4, "compute_dtype": "float64"},
        {"bits": 4, "quant": "nf4"},
        {"bits": 8, "compute_dtype": "bfloat16"},
        {"bits": 8, "quant_type": "fp4"},
    ],
)
def test_an_unknown_quantization_fails_at_config_validation(metaspace_model, setting):
    with pytest.raises(SettingsError, match="quantization"):
        build_pipeline(metaspace_model, quantization=setting)


def test_quantization_without_bitsandbytes_fails_before_loading_and_names_the_setting(
    metaspace_model, monkeypatch
):
    nlp = build_pipeline(metaspace_model, quantization="4bit")
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes fails
    with pytest.raises(SettingsError, match='quantization = "4bit" needs bitsandbytes'):
        nlp.initialize(lambda: train_examples(nlp))


def test_quantization_on_a_device_bitsandbytes_does_not_support_names_the_setting(
    metaspace_model, monkeypatch
):
    nlp = build_pipeline(metaspace_model, quantization="8bit")
    monkeypatch.setattr(bnb, "supported_torch_devices", {"cuda"})
    with pytest.raises(SettingsError, match='quantization = "8bit" cannot run on cpu'):
        nlp.initialize(lambda: train_examples(nlp))
