"""The defaults of a LlamaTransformer, in one place, importable without torch.

The settings (settings.py), the architectures and the command line
(`init-config`, `info`) all read them from here; the command line must not
import torch at start-up, which is why they are not kept in settings.py.
"""
# The paper's reference LoRA hyperparameters (arXiv 2310.01208, section 4).
LORA_R = 12
LORA_ALPHA = 32
LORA_DROPOUT = 0.1
# null: the family's default targets, resolved when the model loads
# (lora_targets.py): q_proj and v_proj on LLaMA, the paper's.
LORA_TARGETS = None
# Every linear layer of the decoder blocks, resolved when the model loads.
ALL_LINEAR = "all-linear"
# LlamaTransformer.v1's default spans: windows of 128 tokens every 96 (v2 and
# later read whole docs), kept for the pipelines trained with v1.
V1_WINDOW = 128
V1_STRIDE = 96
# Padded pieces per decoder call; spacy-transformers' max_batch_items default.
MAX_BATCH_PIECES = 4096
# Docs per nlp.pipe batch ([nlp] batch_size in the shipped configs, apply's
# --batch-size): the inference form groups the rows of one batch by length, so
# a batch must hold enough docs to sort (spacy-transformers' default too).
PIPE_BATCH_SIZE = 128
