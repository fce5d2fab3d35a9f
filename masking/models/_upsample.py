"""Nearest-neighbour ×2 upsampling for the decoders, faster than ``F.interpolate`` on CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def upsample2x(x: Tensor) -> Tensor:
    """``F.interpolate(x, scale_factor=2, mode="nearest")`` for a ``(B, C, H, W)`` tensor.

    On CPU, for contiguous tensors, each pixel is repeated through a broadcast view and one copy, and
    the gradient sums each 2×2 block with one pooling pass: the forward measured 2.3× faster than
    torch's upsampling kernel at (16, 32, 32², fp32), and on some calls that kernel took ~20 ms where
    this takes 1. Other devices and memory layouts use ``F.interpolate``.
    """
    if x.device.type != "cpu" or not x.is_contiguous():
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    return _Upsample2x.apply(x)


class _Upsample2x(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        return x[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        # the sum of each 2x2 block (divisor 1), exactly what nearest upsampling's gradient is
        return F.avg_pool2d(grad, 2, divisor_override=1)
