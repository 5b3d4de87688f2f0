"""The decoder run over spans: right padding, positions, windows, dtypes."""
import numpy
import pytest
import torch

from spacy_lsllama.decoder.encoder import LongSpanWarning
from pipelines import decoder_shim, token_vectors, transformer_only

SHORT = "The cat sat."
LONG = "A much longer sentence that keeps going, with many more words than the short one has."


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_doc_vectors_do_not_depend_on_batch_padding(tiny_model, attn_implementation, bidirectional):
    nlp = transformer_only(tiny_model, attn_implementation=attn_implementation, bidirectional=bidirectional)
    (alone,) = token_vectors(nlp, [SHORT])
    batched, _ = token_vectors(nlp, [SHORT, LONG * 3])
    numpy.testing.assert_allclose(alone, batched, atol=1e-4)


def test_rows_longer_than_max_length_run_in_windows_and_lose_nothing(metaspace_model):
    nlp = transformer_only(metaspace_model, max_length=8)
    doc = nlp(LONG)
    data = doc._.trf_data
    assert data.wordpieces.input_ids.shape[1] > 8
    assert all(length > 0 for length in data.align.lengths[[not t.is_space for t in doc]])
    hidden = data.model_output.last_hidden_state
    real = hidden[0, : data.wordpieces.lengths[0]]
    assert numpy.abs(real).sum(axis=-1).min() > 0, "every real piece has a vector"


def test_windows_match_separate_runs(metaspace_model):
    """A row cut into windows gives each window the vectors it would have alone."""
    nlp = transformer_only(metaspace_model, max_length=8)
    encoder = decoder_shim(nlp).encoder
    ids = torch.arange(3, 23).reshape(1, 20)
    mask = torch.ones_like(ids, dtype=torch.float32)
    with torch.no_grad():
        windowed = encoder(ids, mask)
        first = encoder(ids[:, :8], mask[:, :8])
        last = encoder(ids[:, 16:], mask[:, 16:])
    torch.testing.assert_close(windowed[:, :8], first)
    torch.testing.assert_close(windowed[:, 16:], last)


def test_hidden_states_leave_as_float32_and_gradients_flow_in_compute_dtype(metaspace_model):
    nlp = transformer_only(metaspace_model, dtype="bfloat16")
    encoder = decoder_shim(nlp).encoder
    assert encoder.transformer.get_input_embeddings().weight.dtype == torch.bfloat16
    ids = torch.tensor([[1, 40, 50, 60]])
    hidden = encoder(ids, torch.ones_like(ids, dtype=torch.float32))
    assert hidden.dtype == torch.float32
    seen = []
    layer = encoder.transformer.base_model.model.layers[-1]

    def watch_gradient(module, inputs, output):
        hidden_out = output[0] if isinstance(output, tuple) else output
        hidden_out.register_hook(lambda grad: seen.append(grad.dtype))

    handle = layer.register_forward_hook(watch_gradient)
    hidden = encoder(ids, torch.ones_like(ids, dtype=torch.float32))
    hidden.sum().backward()
    handle.remove()
    assert seen == [torch.bfloat16]
    doc = nlp(SHORT)
    assert doc._.trf_data.model_output.last_hidden_state.dtype == numpy.float32


# Long docs: bounded decoder calls -------------------------------------------

WORDS = "the river ran past Berlin and Paris while people in Rome slept".split()


def long_text(n_words: int, offset: int = 0) -> str:
    return " ".join(WORDS[(i + offset) % len(WORDS)] for i in range(n_words))


def record_call_sizes(nlp):
    sizes = []
    transformer = decoder_shim(nlp).inference_encoder().transformer  # the module predictions run
    hook = transformer.register_forward_pre_hook(lambda module, args, kwargs: sizes.append(kwargs["input_ids"].numel()), with_kwargs=True)
    return sizes, hook


@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_long_doc_runs_in_calls_of_bounded_size_and_every_token_gets_a_vector(metaspace_model, bidirectional):
    nlp = transformer_only(metaspace_model, bidirectional=bidirectional, max_length=64, max_batch_pieces=256)
    sizes, hook = record_call_sizes(nlp)
    doc = nlp(long_text(20_000))
    hook.remove()
    assert len(sizes) > 10 and max(sizes) <= 256
    data = doc._.trf_data
    assert all(length > 0 for length in data.align.lengths[[not token.is_space for token in doc]])


def test_calls_of_any_size_give_the_same_vectors(metaspace_model):
    text = long_text(600)
    vectors = {}
    for cap in (64, 100, 100_000):
        nlp = transformer_only(metaspace_model, bidirectional=True, max_length=64, max_batch_pieces=cap)
        (vectors[cap],) = token_vectors(nlp, [text])
    numpy.testing.assert_allclose(vectors[64], vectors[100_000], atol=1e-5)
    numpy.testing.assert_allclose(vectors[100], vectors[100_000], atol=1e-5)


def test_a_span_longer_than_max_length_is_reported(metaspace_model):
    nlp = transformer_only(metaspace_model, max_length=16)
    with pytest.warns(LongSpanWarning, match="max_length"):
        nlp(long_text(40))


def test_rows_are_grouped_by_length_within_a_padding_slack_on_the_cpu_and_by_pieces_alone_on_a_gpu():
    from spacy_lsllama.decoder.encoder import _calls

    lengths = torch.tensor([3, 60, 0, 58, 4, 30, 57, 29])
    cpu = [(rows.tolist(), longest) for rows, longest in _calls(lengths, 4096, bound_padding=True)]
    assert cpu == [([1, 3, 6], 60), ([5, 7], 30), ([4, 0], 4)]  # the empty row 2 is left out
    gpu = [(rows.tolist(), longest) for rows, longest in _calls(lengths, 4096, bound_padding=False)]
    assert gpu == [([1, 3, 6, 5, 7, 4, 0], 60)]
    capped = [(rows.tolist(), longest) for rows, longest in _calls(lengths, 120, bound_padding=False)]
    assert capped == [([1, 3], 60), ([6, 5], 57), ([7, 4, 0], 29)]
