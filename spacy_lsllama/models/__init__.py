"""The registered thinc architectures that wrap the decoder for spaCy:
`LlamaTransformer` (the `transformer` component's model), its single-owner
`Tok2VecLlamaTransformer`, and `replace_listeners` support."""
