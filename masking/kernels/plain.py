"""Every ``masking::`` op written in plain aten ops, for programs that leave PyTorch.

``torch.export`` keeps a custom op as one opaque node, which ONNX and other inference runtimes do
not know. :data:`PLAIN_OPS` maps each op to a function of ordinary torch ops computing the same
values (the reference's formulas, without the fast paths that branch on values or write into
scratch buffers), for ``ExportedProgram.run_decompositions``. Shapes stay symbolic throughout, so an
exported program keeps its dynamic batch and image size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from . import reference
from .ops import valid_scale
from .ops._partial_conv_cpu import scale_dtype


def _as(mask: Tensor, x: Tensor) -> Tensor:
    return mask.to(x.dtype)


def mask_product(x: Tensor, mask: Tensor) -> Tensor:
    return x * _as(mask, x)


def mask_product_packed(x: Tensor, bits: Tensor, length: int) -> Tensor:
    return x * _as(reference.unpack_bits(bits, length), x)


def masked_linear(x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor | None) -> Tensor:
    return F.linear(x, weight * _as(mask, weight), bias)


def masked_conv2d(
    x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor | None, *geometry
) -> Tensor:
    """``geometry``: stride, padding, dilation, groups, as the op takes them."""
    return F.conv2d(x, weight * _as(mask, weight), bias, *geometry)


def partial_conv2d(
    x: Tensor, mask: Tensor, weight: Tensor, bias: Tensor | None, *geometry
) -> tuple[Tensor, Tensor, Tensor]:
    """``conv(x ⊙ m) · window / count + bias · valid``; ``ops.valid_scale`` gives the ratio and the
    new mask out of place while traced (a box sum of the mask: slices and adds)."""
    scale, valid = valid_scale(mask, weight.shape, *geometry, scale_dtype(x))
    out = F.conv2d(x * _as(mask, x), weight, None, *geometry)
    channels = weight.shape[0]
    acc = out.to(scale.dtype) * reference.expand_groups(scale, channels)
    if bias is not None:
        acc = acc + bias.view(1, -1, 1, 1).to(acc.dtype) * reference.expand_groups(valid, channels)
    return acc.to(x.dtype), scale, valid.to(x.dtype)


def plain_ops() -> dict[Callable, Callable]:
    """``{torch.ops.masking.<op>.default: plain function}`` for every op of the core but
    ``bsr_linear``, whose block-sparse weight exists only to serve in PyTorch (its dense-with-zeros
    weight is the one to export)."""
    ops = torch.ops.masking
    return {
        ops.mask_product.default: mask_product,
        ops.mask_product_packed.default: mask_product_packed,
        ops.masked_linear.default: masked_linear,
        ops.masked_conv2d.default: masked_conv2d,
        ops.partial_conv2d.default: partial_conv2d,
    }
