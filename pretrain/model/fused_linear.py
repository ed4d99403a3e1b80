"""One matrix multiplication for several linears that read the same input (q, k and v; SwiGLU's
gate and up), over their own parameters.

The parameters stay the canonical separate ``weight``/``bias`` of each linear, so
checkpoints, Hugging Face import and export, initialization and anything else that names
them never learn about the fusion. The forward pass concatenates the weights along the
output features, runs one GEMM and splits the output. The backward pass concatenates them
again instead of keeping the concatenation from the forward pass: a saved copy would hold
those weights a second time in every layer until the backward pass (and, under ZeRO-3,
keep every layer's gathered weights alive between the two passes).

The weight gradients come from one GEMM and are split from it, so the separate parameters'
``.grad`` tensors share one buffer: the memory of q's gradient returns once k's and v's are
dropped too (optimizers and ZeRO drop a layer's gradients together), and gradients must be
replaced, never resized in place.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _ConcatenatedLinear(torch.autograd.Function):
    """``F.linear(x, cat(weights), cat(biases))`` with the concatenations as temporaries."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, n_weights: int, *params: Tensor) -> Tensor:
        weights, biases = params[:n_weights], params[n_weights:]
        ctx.save_for_backward(x, *weights)
        ctx.with_bias = bool(biases)
        return F.linear(x, torch.cat(weights), torch.cat(biases) if biases else None)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Optional[Tensor], ...]:
        x, *weights = ctx.saved_tensors
        grad_x = grad @ torch.cat(weights) if ctx.needs_input_grad[0] else None
        sizes = [weight.shape[0] for weight in weights]
        n = len(weights)
        grad_rows = grad.reshape(-1, grad.shape[-1])  # (tokens, all output features)
        # Frozen weights (LoRA's base) get no gradient: the GEMM would be wasted work.
        needs_weights, needs_biases = any(ctx.needs_input_grad[2 : 2 + n]), any(ctx.needs_input_grad[2 + n :])
        grad_weights = (grad_rows.T @ x.reshape(-1, x.shape[-1])).split(sizes) if needs_weights else (None,) * n
        grad_biases = (grad_rows.sum(0).split(sizes) if needs_biases else (None,) * n) if ctx.with_bias else ()
        return grad_x, None, *grad_weights, *grad_biases


def with_adapter(linear: nn.Module, x: Tensor, out: Tensor) -> Tensor:
    """``out`` (what ``linear`` gave for ``x``) plus the update of the LoRA adapter attached
    to ``linear`` (``pretrain.model.lora``), if it has one."""
    adapter = getattr(linear, "lora", None)
    return out if adapter is None else out + adapter(x)


def fused_linear(x: Tensor, linears: Sequence[nn.Module]) -> tuple[Tensor, ...]:
    """What each of ``linears`` gives for ``x``, from one GEMM over their weights (plus
    their LoRA adapters' updates, computed apart). Each linear must compute
    ``F.linear(x, weight, bias)`` (a dense or column-parallel linear); all have a bias or
    none has. Without adapters the outputs are views of one tensor."""
    weights = [linear.weight for linear in linears]
    biases = [linear.bias for linear in linears]
    if any(bias is None for bias in biases) and any(bias is not None for bias in biases):
        raise ValueError("fused_linear: either every linear has a bias or none has")
    params = weights + ([] if biases[0] is None else biases)
    sizes = [weight.shape[0] for weight in weights]
    if not torch.is_grad_enabled():
        # No backward pass, so no copy to avoid keeping: plain autograd, which also keeps
        # torch.compile's graph whole (Dynamo breaks it at the function below under no_grad).
        bias = None if biases[0] is None else torch.cat(biases)
        outs = F.linear(x, torch.cat(weights), bias).split(sizes, dim=-1)
        return tuple(with_adapter(linear, x, part) for linear, part in zip(linears, outs))
    device = x.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        # Autocast does not reach into the function: cast as it would cast F.linear's inputs.
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device, enabled=False):
            out = _ConcatenatedLinear.apply(x.to(dtype), len(weights), *(param.to(dtype) for param in params))
    else:
        out = _ConcatenatedLinear.apply(x, len(weights), *params)
    outs = out.split(sizes, dim=-1)
    return tuple(with_adapter(linear, x, part) for linear, part in zip(linears, outs))


def fused_parameters(model: nn.Module) -> list[tuple[nn.Module, nn.Parameter]]:
    """``(module, parameter)`` for every parameter a module's forward reads from the linears
    it fuses (``module.fused_linears()``) without calling them (their adapters are called)."""
    pairs = []
    for module in model.modules():
        linears = getattr(module, "fused_linears", lambda: ())()
        pairs += [(module, param) for linear in linears for param in linear.parameters(recurse=False)]
    return pairs
