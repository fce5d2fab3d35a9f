"""``masking::masked_conv2d``: ``conv2d(x, weight ⊙ mask, bias)`` for learned weight masks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .. import reference
from ..dispatch import run_kernel
from ._shared import conv2d, conv_args, conv_grads, mask_grad, output_size


@torch.library.custom_op("masking::masked_conv2d", mutates_args=())
def masked_conv2d(
    x: Tensor,
    weight: Tensor,
    mask: Tensor,
    bias: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> Tensor:
    """``conv2d(x, weight ⊙ mask, bias)``; the Triton path applies the mask while loading weight
    tiles and skips tiles whose mask is zero (``weight ⊙ mask`` is formed only in the backward)."""
    conv = (stride, padding, dilation, groups)
    out = run_kernel("masked_conv2d", x, weight, mask, bias, conv)
    if out is None:
        out = conv2d(x, reference.mask_product(weight, mask), bias, conv)
    return out


@masked_conv2d.register_fake
def _(x, weight, mask, bias, stride, padding, dilation, groups):
    out_h, out_w = output_size(x, weight, stride, padding, dilation)
    return x.new_empty((x.shape[0], weight.shape[0], out_h, out_w))


def _setup(ctx, inputs, output) -> None:
    x, weight, mask, _bias, stride, padding, dilation, groups = inputs
    ctx.conv_args = conv_args(stride, padding, dilation, groups)
    ctx.save_for_backward(x, weight, mask)


def _backward(ctx, grad: Tensor):
    x, weight, mask = ctx.saved_tensors
    need_x, need_weight, need_mask, need_bias = ctx.needs_input_grad[:4]
    grad_x = grad_weight = grad_mask = grad_bias = None
    if need_x or need_weight or need_mask:
        product = reference.mask_product(weight, mask)
        grad_x, grad_product = conv_grads(
            grad, x, product, ctx.conv_args, need_x, need_weight or need_mask
        )
        if need_weight:
            grad_weight = reference.mask_product(grad_product, mask)
        if need_mask:
            grad_mask = mask_grad(grad_product, weight, mask)
    if need_bias:
        grad_bias = grad.sum((0, 2, 3))
    return grad_x, grad_weight, grad_mask, grad_bias, None, None, None, None


masked_conv2d.register_autograd(_backward, setup_context=_setup)
