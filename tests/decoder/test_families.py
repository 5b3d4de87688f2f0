"""Decoder families other than LLaMA: what is loaded, what attention runs.

Every family of tiny_families.FAMILIES is trained in causal and bidirectional
mode under eager and SDPA attention. Each case must train a step, attend in
its mode in every layer (or be refused with an error that names the family
and what works), keep a doc's vectors independent of padding, and predict the
same after a reload in a fresh process. The pipelines of all cases are trained
once per session and reloaded by one subprocess.
"""
import json
import math
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy
import pytest
import spacy
import torch

from pipelines import assert_same_predictions, build_pipeline, decoder_shim, predictions, token_vectors, train_examples
from pipelines import transformer_only
from tiny_families import FAMILIES, REFUSED_FAMILIES, save_tiny_family

IMPLEMENTATIONS = ("eager", "sdpa")
CASES = [(family, bidirectional, impl) for family in FAMILIES for bidirectional in (False, True) for impl in IMPLEMENTATIONS]
# (family, attn_implementation) refused for bidirectional = true -> the implementation the error must offer.
REFUSED = {("gpt2", "eager"): "sdpa"}
TEXTS = ["I like London a lot", "We loved the trip to Rome, and the food in Berlin was bad", "Paris"]


def case_id(case: Tuple[str, bool, str]) -> str:
    family, bidirectional, impl = case
    return f"{family}-{'bidirectional' if bidirectional else 'causal'}-{impl}"


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: save_tiny_family(root / family, family) for family in (*FAMILIES, *REFUSED_FAMILIES, "opt", "gemma3")}


@dataclass
class Outcome:
    """One case trained (two updates) and saved, or the error that refused it."""

    error: Optional[BaseException] = None
    caught: List[warnings.WarningMessage] = field(default_factory=list)
    nlp: Any = None
    losses: Dict[str, float] = field(default_factory=dict)
    changed: Tuple[set, set] = (set(), set())  # (changed adapter matrices, all of them)
    base_changed: set = field(default_factory=set)
    saved: Optional[Path] = None
    expected: Any = None


_OUTCOMES: Dict[Tuple[str, bool, str], Outcome] = {}


def train_case(case, folder: Path, saved: Path) -> Outcome:
    family, bidirectional, impl = case
    outcome = Outcome()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            spacy.util.fix_random_seed(0)
            nlp = build_pipeline(folder, bidirectional=bidirectional, attn_implementation=impl)
            examples = train_examples(nlp)
            optimizer = nlp.initialize(lambda: examples)
        except Exception as error:  # a refusal, checked by the tests
            outcome.error = error
            outcome.caught = list(caught)
            return outcome
        transformer = decoder_shim(nlp).encoder.transformer
        before = {name: tensor.clone() for name, tensor in transformer.state_dict().items()}
        # spacy-transformers applies a step's gradients to the decoder at the next update.
        for _ in range(2):
            outcome.losses = nlp.update(examples, sgd=optimizer)
        after = transformer.state_dict()
        changed = {name for name in before if not torch.equal(before[name], after[name])}
        adapters = {name for name in before if "lora_" in name}
        outcome.changed = (changed & adapters, adapters)
        outcome.base_changed = {name for name in changed if "lora_" not in name}
        outcome.caught = list(caught)
    outcome.nlp = nlp
    nlp.to_disk(saved)
    outcome.saved = saved
    outcome.expected = expectations(nlp)
    return outcome


def expectations(nlp) -> Dict[str, Any]:
    return {
        "predictions": predictions(nlp, TEXTS),
        "vectors": [vectors.tolist() for vectors in token_vectors(nlp, TEXTS)],
    }


@pytest.fixture(scope="session")
def outcomes(family_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("family-pipelines")

    def get(case) -> Outcome:
        if case not in _OUTCOMES:
            _OUTCOMES[case] = train_case(case, family_dirs[case[0]], root / case_id(case))
        return _OUTCOMES[case]

    return get


def outcome_or_skip(outcomes, case) -> Outcome:
    outcome = outcomes(case)
    if outcome.error is not None and (case[0], case[2]) in REFUSED and case[1]:
        pytest.skip("refused, as test_each_family_trains_a_step_or_is_refused checks")
    if outcome.error is not None:
        raise outcome.error
    return outcome


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_each_family_trains_a_step_or_is_refused(outcomes, case):
    family, bidirectional, impl = case
    outcome = outcomes(case)
    if bidirectional and (family, impl) in REFUSED:
        from spacy_lsllama.decoder.attention_probe import UnsupportedAttentionError

        assert isinstance(outcome.error, UnsupportedAttentionError), outcome.error
        message = str(outcome.error)
        assert family in message and impl in message and REFUSED[(family, impl)] in message
        return
    if outcome.error is not None:
        raise outcome.error
    assert all(math.isfinite(loss) and loss > 0 for loss in outcome.losses.values()), outcome.losses
    changed, adapters = outcome.changed
    assert adapters and changed == adapters, sorted(adapters - changed)
    assert outcome.base_changed == set()


def layers_reading_the_last_piece(nlp) -> List[bool]:
    """For each decoder layer, whether the first piece's output of that layer
    depends on the last piece's input to it: perturb only that layer's input
    at the last position, with full forward passes."""
    encoder = decoder_shim(nlp).encoder
    config = encoder.transformer.config.get_text_config()
    layers = next(
        module
        for module in encoder.transformer.modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) == config.num_hidden_layers
    )
    input_ids = torch.arange(5, 13)[None]
    mask = torch.ones_like(input_ids)
    reads = []
    for layer in layers:
        outputs = []
        for perturb in (False, True):
            def before(module, args, kwargs, perturb=perturb):
                if not perturb:
                    return None
                if args:
                    hidden = args[0].clone()
                    hidden[:, -1] = -hidden[:, -1] + 1.0
                    return (hidden, *args[1:]), kwargs
                hidden = kwargs["hidden_states"].clone()
                hidden[:, -1] = -hidden[:, -1] + 1.0
                return args, {**kwargs, "hidden_states": hidden}

            def after(module, args, output):
                outputs.append((output[0] if isinstance(output, tuple) else output)[0, 0].clone())

            handles = [layer.register_forward_pre_hook(before, with_kwargs=True), layer.register_forward_hook(after)]
            try:
                with torch.no_grad():
                    encoder(input_ids, mask)
            finally:
                for handle in handles:
                    handle.remove()
        reads.append(not torch.allclose(outputs[0], outputs[1], rtol=0, atol=1e-6))
    return reads


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_each_layer_attends_in_the_configured_mode(outcomes, case):
    outcome = outcome_or_skip(outcomes, case)
    assert layers_reading_the_last_piece(outcome.nlp) == [case[1]] * 2


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_a_docs_vectors_do_not_depend_on_padding(outcomes, case):
    nlp = outcome_or_skip(outcomes, case).nlp
    batched = token_vectors(nlp, TEXTS)
    for text, together in zip(TEXTS, batched):
        (alone,) = token_vectors(nlp, [text])
        numpy.testing.assert_allclose(together, alone, atol=1e-4, rtol=0)


RELOAD_SCRIPT = """
import json, os, sys
import spacy
sys.path[:0] = [sys.argv[1], os.path.dirname(sys.argv[1])]  # the test's folder, and tests/ for its helpers
from test_families import expectations
found = {}
for path in sys.argv[3:]:
    found[path] = expectations(spacy.load(path))
with open(sys.argv[2], "w") as out:
    json.dump(found, out)
"""


@pytest.fixture(scope="session")
def reloaded(request, outcomes, tmp_path_factory) -> Dict[str, Any]:
    """Every selected case's saved pipeline, loaded and run in one fresh process."""
    selected = [
        item.callspec.params["case"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_a_pipeline_reloaded_in_a_fresh_process_predicts_as_before"
    ]
    paths = [str(outcomes(case).saved) for case in selected if outcomes(case).saved is not None]
    result_file = tmp_path_factory.mktemp("reloaded") / "found.json"
    result = subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, str(Path(__file__).parent), str(result_file), *paths],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result_file.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_a_pipeline_reloaded_in_a_fresh_process_predicts_as_before(outcomes, reloaded, case):
    outcome = outcome_or_skip(outcomes, case)
    found = reloaded[str(outcome.saved)]
    expected = json.loads(json.dumps(outcome.expected))  # tuples as JSON lists, like the subprocess's
    assert_same_predictions(expected["predictions"], found["predictions"])
    for before, after in zip(expected["vectors"], found["vectors"]):
        numpy.testing.assert_allclose(numpy.array(after), numpy.array(before), atol=1e-4, rtol=0)


# What each family gets, and what is refused ---------------------------------------


def lora_targets(nlp) -> set:
    """The leaf names of the layers that carry LoRA adapters."""
    transformer = decoder_shim(nlp).encoder.transformer
    return {name.rsplit(".", 1)[-1] for name, module in transformer.named_modules() if hasattr(module, "lora_A")}


@pytest.mark.parametrize(
    "family,targets",
    [("llama", {"q_proj", "v_proj"}), ("gpt_neox", {"query_key_value"}), ("gpt2", {"c_attn"}), ("phi3", {"qkv_proj", "o_proj"})],
)
def test_the_default_lora_targets_come_from_the_model(outcomes, family, targets):
    """The paper's q_proj and v_proj on LLaMA; peft's default of the family
    elsewhere; every linear layer of the attention where peft has none (Phi-3).
    GPT-2's are Conv1D layers."""
    outcome = outcome_or_skip(outcomes, (family, False, "sdpa"))
    assert lora_targets(outcome.nlp) == targets
    assert set(decoder_shim(outcome.nlp).settings.lora.target_modules) == targets


@pytest.mark.parametrize(
    "family,targets",
    [
        ("llama", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
        ("phi3", {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}),
        ("gpt2", {"c_attn", "c_proj", "c_fc"}),
        ("gpt_neox", {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}),
    ],
)
def test_all_linear_targets_every_linear_layer_of_the_blocks(family_dirs, family, targets):
    nlp = transformer_only(family_dirs[family], lora={"target_modules": "all-linear"})
    assert lora_targets(nlp) == targets
    assert set(decoder_shim(nlp).settings.lora.target_modules) == targets


def test_explicit_lora_targets_must_exist_in_the_model(family_dirs):
    with pytest.raises(ValueError, match=r"(?s)q_proj.*c_attn"):
        transformer_only(family_dirs["gpt2"], lora={"target_modules": ["q_proj", "v_proj"]})


@pytest.mark.parametrize("family", REFUSED_FAMILIES)
def test_families_that_cannot_be_bidirectional_are_refused(family_dirs, family):
    from spacy_lsllama.decoder.attention_probe import UnsupportedAttentionError

    with pytest.raises(UnsupportedAttentionError, match=rf"(?s){family}.*bidirectional = false"):
        transformer_only(family_dirs[family], bidirectional=True, attn_implementation="eager")
    assert token_vectors(transformer_only(family_dirs[family], attn_implementation="eager"), ["Paris"])


def test_the_width_is_the_models_output_width(family_dirs):
    """OPT-350m's output (word_embed_proj_dim) is narrower than its hidden_size."""
    nlp = build_pipeline(family_dirs["opt"])
    examples = train_examples(nlp)
    nlp.update(examples, sgd=nlp.initialize(lambda: examples))
    assert decoder_shim(nlp).hidden_size == 16
    assert token_vectors(nlp, ["Paris is nice"])[0].shape[-1] == 16


def test_a_multimodal_gemma3_decoder_takes_its_width_from_the_text_config(family_dirs):
    """Gemma-3 4B and up: Gemma3Config has no hidden_size of its own."""
    nlp = build_pipeline(family_dirs["gemma3"], bidirectional=True)
    examples = train_examples(nlp)
    nlp.update(examples, sgd=nlp.initialize(lambda: examples))
    assert decoder_shim(nlp).hidden_size == 32
    assert layers_reading_the_last_piece(nlp) == [True, True]


def test_soft_capping_gets_eager_attention_by_default(family_dirs):
    """Gemma-2's attention logit soft-capping is honoured by eager attention only."""
    nlp = transformer_only(family_dirs["gemma2"])
    assert decoder_shim(nlp).encoder.transformer.config._attn_implementation == "eager"


def test_soft_capping_under_sdpa_warns(outcomes):
    outcome = outcome_or_skip(outcomes, ("gemma2", False, "sdpa"))
    assert any("attn_logit_softcapping" in str(caught.message) for caught in outcome.caught)
    assert not any("attn_logit_softcapping" in str(caught.message) for caught in outcomes(("gemma2", False, "eager")).caught)


# Weights that do not fit the model class ------------------------------------------


def test_a_checkpoint_missing_weights_is_refused_naming_them(family_dirs, tmp_path):
    from safetensors.torch import load_file, save_file
    import shutil

    from spacy_lsllama.decoder.loading import BaseModelError

    folder = shutil.copytree(family_dirs["llama"], tmp_path / "llama")
    weights = load_file(folder / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(BaseModelError, match=r"layers\.1\.mlp\.up_proj\.weight"):
        transformer_only(folder)


def test_weights_of_another_model_class_are_refused(family_dirs, tmp_path):
    """A LLaMA config over GPT-NeoX weights: none of the weights is found."""
    import shutil

    from spacy_lsllama.decoder.loading import BaseModelError

    folder = shutil.copytree(family_dirs["gpt_neox"], tmp_path / "mixed")
    shutil.copy(family_dirs["llama"] / "config.json", folder / "config.json")
    with pytest.raises(BaseModelError, match=r"(?s)not found.*embed_tokens\.weight"):
        transformer_only(folder)


def test_a_gemma3_text_checkpoint_loads_its_own_weights(family_dirs):
    """Saved as Gemma3ForCausalLM, which AutoModel alone loads as random weights."""
    from safetensors.torch import load_file

    nlp = transformer_only(family_dirs["gemma3_text"])
    transformer = decoder_shim(nlp).encoder.transformer
    expected = load_file(family_dirs["gemma3_text"] / "model.safetensors")["model.layers.0.mlp.up_proj.weight"]
    assert torch.equal(transformer.base_model.model.layers[0].mlp.up_proj.weight, expected)


def test_pipelines_on_a_gemma3_text_checkpoint_share_its_decoder(family_dirs, outcomes):
    """The second pipeline's module tree is built like the first (the decoder
    of the causal LM) and adopts the first one's tensors, read from the checkpoint."""
    from safetensors.torch import load_file

    first, second = (outcome_or_skip(outcomes, ("gemma3_text", mode, "sdpa")).nlp for mode in (False, True))
    decoders = [decoder_shim(nlp).encoder.transformer.base_model.model for nlp in (first, second)]
    assert type(decoders[0]) is type(decoders[1])
    weights = [decoder.layers[1].mlp.down_proj.weight for decoder in decoders]
    assert weights[0].data_ptr() == weights[1].data_ptr()
    expected = load_file(family_dirs["gemma3_text"] / "model.safetensors")["model.layers.1.mlp.down_proj.weight"]
    assert torch.equal(weights[1], expected)


def test_the_probe_runs_once_per_loaded_base_and_mode(family_dirs, tmp_path, monkeypatch):
    """A base shared by pipelines is probed once for each attention mode."""
    import shutil

    from spacy_lsllama.decoder import attention_probe as verification

    folder = shutil.copytree(family_dirs["qwen2"], tmp_path / "qwen2")
    probed = []
    probe = verification.probe_attention
    monkeypatch.setattr(verification, "probe_attention", lambda *args: probed.append(args) or probe(*args))
    pipelines = [transformer_only(folder, bidirectional=mode) for mode in (False, False, True, True)]
    assert len(probed) == 2
    assert {decoder_shim(nlp).hidden_size for nlp in pipelines} == {32}


@pytest.mark.parametrize("family,impl,refused", [("llama", "sdpa", False), ("gpt2", "eager", True)])
def test_models_whose_layers_cannot_be_probed_are_probed_by_their_outputs(family_dirs, monkeypatch, family, impl, refused):
    from spacy_lsllama.decoder import attention_probe as verification

    monkeypatch.setattr(verification, "decoder_layers", lambda model: None)
    if refused:
        with pytest.raises(verification.UnsupportedAttentionError, match=r"in the model's output"):
            transformer_only(family_dirs[family], bidirectional=True, attn_implementation=impl, share_base=False)
    else:
        assert decoder_shim(transformer_only(family_dirs[family], bidirectional=True, share_base=False)).hidden_size == 32
