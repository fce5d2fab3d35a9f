"""``masking::mask_product_packed``: ``x ⊙ mask`` for a mask stored as bits."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import reference
from ..dispatch import run_kernel


@torch.library.custom_op("masking::mask_product_packed", mutates_args=())
def mask_product_packed(x: Tensor, bits: Tensor, length: int) -> Tensor:
    """``x ⊙ mask`` for a mask stored 8 entries per byte along its last dimension (``length``).

    The Triton kernel unpacks the bits in registers; the reference unpacks them into a bool mask.
    Differentiable in ``x`` only: a bit mask has no gradient.
    """
    out = run_kernel("mask_product_packed", x, bits, length)
    return reference.mask_product_packed(x, bits, length) if out is None else out


@mask_product_packed.register_fake
def _(x, bits, length):
    return torch.empty_like(x)


def _setup(ctx, inputs, output) -> None:
    _x, bits, length = inputs
    ctx.length = length
    ctx.save_for_backward(bits)


def _backward(ctx, grad: Tensor):
    (bits,) = ctx.saved_tensors
    return mask_product_packed(grad, bits, ctx.length), None, None


mask_product_packed.register_autograd(_backward, setup_context=_setup)
