"""One optimizer step on a decoder's trainable parameters, with thinc's optimizer.

thinc's `PyTorchShim.finish_update` updates the parameters whose `.grad` is set,
so frozen base weights are skipped and only the LoRA adapters (everything under
full finetuning) are trained by spaCy's own optimizer. This step adds what a
decoder needs on top: thinc's optimizers work on NumPy or CuPy arrays, which
have no bfloat16, so low-precision parameters are updated in float32 and cast
back; and a step whose gradients hold NaN or inf (an fp16 overflow, a bad batch)
is skipped as a whole, so the adapters are never corrupted.
"""
import logging
from typing import cast

import torch
from thinc.api import torch2xp, xp2torch
from thinc.shims import PyTorchGradScaler
from thinc.types import FloatsXd

logger = logging.getLogger("spacy_lsllama")


def step_parameters_with_gradients(
    model: torch.nn.Module, optimizer, shim_id: int, grad_scaler: PyTorchGradScaler
) -> None:
    """Update every parameter of `model` that received a gradient, keyed for
    the optimizer by `(shim_id, name)` as thinc's shims do, then clear the
    gradients and let the gradient scaler adjust."""
    with_grad = [(name, p) for name, p in model.named_parameters() if p.grad is not None]
    finite = all(bool(torch.isfinite(p.grad).all()) for _, p in with_grad)
    if not finite and not grad_scaler.found_inf:
        logger.warning("Skipped a LlamaTransformer update: a gradient was NaN or inf.")
    if finite and not grad_scaler.found_inf:
        for name, parameter in with_grad:
            data, grad = parameter.data, parameter.grad
            if data.dtype != torch.float32:
                data, grad = data.float(), grad.float()
            new_data, _ = optimizer((shim_id, name), cast(FloatsXd, torch2xp(data)), cast(FloatsXd, torch2xp(grad)))
            parameter.data = xp2torch(new_data, device=parameter.device).to(parameter.dtype)
    for _, parameter in with_grad:
        parameter.grad = None
    grad_scaler.update()
