"""The decoder: a base LLM found, identified and loaded, with its LoRA adapters.

Everything between a `LlamaTransformer` config and a running PyTorch module:
validated settings (settings), where a base is and whether it is the one a
pipeline was trained on (identity), what differs between families (families,
lora_targets), loading with bitsandbytes and peft (loading), the attention
mask and the load-time probe that checks it (attention, attention_probe),
bases shared between pipelines (sharing), the module that runs piece rows
(encoder), its saved form (serialization), the optimizer step (updates), and
the thinc shim that owns all of it (shim).
"""
