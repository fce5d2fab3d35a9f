"""``masking::masked_linear``: ``x @ (weight ⊙ mask)ᵀ + bias``, the training op of learned weight
masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import reference
from ..dispatch import run_kernel
from ._shared import mask_grad


@torch.library.custom_op("masking::masked_linear", mutates_args=())
def masked_linear(x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ (weight ⊙ mask)ᵀ + bias`` for a 2-D ``x``; ``mask`` broadcasts to ``weight``.

    The Triton path applies the mask while loading weight tiles and skips tiles whose mask is zero,
    so ``weight ⊙ mask`` never exists in memory; the reference forms it.
    """
    out = run_kernel("masked_linear", x, weight, mask)
    if out is None:
        return F.linear(x, reference.mask_product(weight, mask), bias)
    return out if bias is None else out.add_(bias)


@masked_linear.register_fake
def _(x, weight, mask, bias):
    return x.new_empty(x.shape[0], weight.shape[0])


def _setup(ctx, inputs, output) -> None:
    x, weight, mask, _bias = inputs
    ctx.save_for_backward(x, weight, mask)


def _backward(ctx, grad: Tensor):
    x, weight, mask = ctx.saved_tensors
    need_x, need_weight, need_mask, need_bias = ctx.needs_input_grad
    grad_x = grad_weight = grad_mask = grad_bias = None
    if need_x:
        # while the backward is traced (torch.compile) run_kernel declines, and the product below
        # is what the graph records
        grad_x = run_kernel("masked_linear_grad_input", grad, weight, mask)
        if grad_x is None:
            grad_x = grad @ reference.mask_product(weight, mask)
    if need_weight or need_mask:
        # d(W ⊙ M) = gradᵀ x, then split by the product rule
        grad_product = grad.t() @ x
        if need_weight:
            grad_weight = reference.mask_product(grad_product, mask)
        if need_mask:
            grad_mask = mask_grad(grad_product, weight, mask)
    if need_bias:
        grad_bias = grad.sum(0)
    return grad_x, grad_weight, grad_mask, grad_bias


masked_linear.register_autograd(_backward, setup_context=_setup)
