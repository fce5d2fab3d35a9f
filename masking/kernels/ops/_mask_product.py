"""``masking::mask_product``: ``x ⊙ mask`` with the mask broadcast, never expanded in memory."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import reference
from ..dispatch import run_kernel
from ._shared import mask_grad


@torch.library.custom_op("masking::mask_product", mutates_args=())
def mask_product(x: Tensor, mask: Tensor) -> Tensor:
    """``x ⊙ mask`` in ``x``'s dtype and layout: the Triton kernel where it serves ``x``, else the
    reference."""
    out = run_kernel("mask_product", x, mask)
    return reference.mask_product(x, mask) if out is None else out


@mask_product.register_fake
def _(x: Tensor, mask: Tensor) -> Tensor:
    return torch.empty_like(x)


def _setup(ctx, inputs, output) -> None:
    x, mask = inputs
    # x is needed only for the mask's gradient
    ctx.save_for_backward(x if mask.requires_grad else None, mask)


def _backward(ctx, grad: Tensor):
    x, mask = ctx.saved_tensors
    grad_x = mask_product(grad, mask) if ctx.needs_input_grad[0] else None
    grad_mask = mask_grad(grad, x, mask) if ctx.needs_input_grad[1] else None
    return grad_x, grad_mask


mask_product.register_autograd(_backward, setup_context=_setup)
